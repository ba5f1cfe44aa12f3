"""Pruning trained networks: the criteria of `tconv-prune-channels`, the
global ranking and the steps of `tconv.train.prune`, and `tconv prune`."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import assert_user_error, tconv
from xdsl.passes import PassPipeline

from tconv.cli.files import write_network
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import load_module, make_context
from tconv.ir.params import init_params, load_provenance, load_store, parameter_count
from tconv.passes.analyses.capacity import conv_blocks, minibatch
from tconv.passes.nas.prune_channels import channel_scores
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.registry import PASSES
from tconv.passes.select import layer_name
from tconv.train.data import load_dataset
from tconv.train.engine import train_network
from tconv.train.loop import TrainConfig
from tconv.train.network import TrainableNetwork
from tconv.train.prune import (
    PruneConfig, convolutions, global_scores, parameters_after, prunable, prune_network, removals,
)


def residual_network():
    """A stem and a residual block whose convolutions feed the add (not
    prunable), the block's first convolution and a strided head (prunable)."""
    b = NetworkBuilder("residual", (1, 1, 8, 8))
    stem = b.relu(b.batch_norm(b.conv2d(b.input, 8, 3, padding=1, name="stem"), name="bn0"))
    y = b.relu(b.batch_norm(b.conv2d(stem, 16, 3, padding=1, name="a"), name="bn1"))
    y = b.batch_norm(b.conv2d(y, 8, 3, padding=1, name="b"), name="bn2")
    x = b.relu(b.add(y, stem))
    x = b.relu(b.batch_norm(b.conv2d(x, 24, 3, padding=1, stride=2, name="head"), name="bn3"))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", (1, 1, 8, 8), 10)


@pytest.fixture(scope="module")
def trained(digits):
    """The network trained for two epochs: (module, parameters)."""
    module = residual_network()
    result = train_network(module, init_params(module), digits, TrainConfig(epochs=2, lr=0.1), None, "cpu",
                           progress=False, log=False)
    assert result.history[-1].val_accuracy > 0.5  # chance is 0.1
    return module, result.params


def prune(module, params, spec: str) -> tuple[object, dict[str, np.ndarray]]:
    pruned = module.clone()
    store = ParamStore(dict(params), provenance={"weights": "trained"})
    with using_store(store):
        PassPipeline.parse_spec(PASSES, spec).apply(make_context(), pruned)
    return pruned, store.values_for(pruned)


# The criteria ----------------------------------------------------------------


def test_the_fisher_ranking_of_a_trained_network_is_theis_saliency(trained):
    """Δc of `fisher_potential` is ½·mean over n of (Σ a·g)², g of the batch's
    mean loss; Theis et al. take g of each sample's own loss, N times larger:
    the same values times N², computed here by autograd in PyTorch."""
    module, params = trained
    x, labels = minibatch(module, 16, 0)
    scores = channel_scores(module, params, "fisher", x, labels)
    network = TrainableNetwork(module, params).train()
    outputs = {block.output: block.conv for block in conv_blocks(module)}
    seen = {}

    def observe(op, value):
        if op.results[0] in outputs:
            value.retain_grad()
            seen[outputs[op.results[0]]] = value

    logits = network(torch.tensor(x), observe)
    F.cross_entropy(logits, torch.tensor(labels), reduction="sum").backward()
    assert set(seen) == set(scores)
    for conv, a in seen.items():
        per_sample = (a.detach() * a.grad).sum(dim=(2, 3)).double()
        theis = 0.5 * (per_sample**2).mean(dim=0).numpy()
        np.testing.assert_allclose(scores[conv] * len(x) ** 2, theis, rtol=2e-3, atol=1e-9 * theis.max())


@pytest.mark.parametrize("criterion", ["fisher", "magnitude", "uniform"])
def test_each_criterion_keeps_the_channels_it_ranks_highest(trained, criterion):
    module, params = trained
    weight = params["a.weight"]
    expected = {
        "magnitude": np.argsort(-np.abs(weight).sum(axis=(1, 2, 3)), kind="stable")[:5],
        "uniform": np.arange(5),
        "fisher": np.argsort(-channel_scores(module, params, "fisher", *minibatch(module, 8, 0))[
            convolutions(module)[1]], kind="stable")[:5],
    }[criterion]
    _, pruned = prune(module, params, f'tconv-prune-channels{{keep=5 layers="a" criterion={criterion}}}')
    np.testing.assert_array_equal(pruned["a_p5.weight"], weight[np.sort(expected)])
    np.testing.assert_array_equal(pruned["b_p5.weight"], params["b.weight"][:, np.sort(expected)])


# The global ranking and the steps --------------------------------------------


def test_the_globally_lowest_channels_go_and_every_layer_keeps_one():
    scores = {"a": np.array([0.1, 5.0, 0.2]), "b": np.array([1.0, 0.05])}
    assert removals(scores, 2) == {"a": 1, "b": 1}
    assert removals(scores, 3) == {"a": 2, "b": 1}
    assert removals(scores, 99) == {"a": 2, "b": 1}
    # Norms are compared with their layer's: the same filters at ten times the scale rank the same.
    normalised = global_scores({"a": np.array([1.0, 3.0]), "b": np.array([10.0, 30.0])}, "magnitude")
    np.testing.assert_allclose(normalised["a"], normalised["b"])
    assert global_scores(scores, "fisher")["a"] is scores["a"]


def test_the_counted_parameters_are_those_of_the_pruned_network(trained):
    module, params = trained
    positions, skipped = prunable(module)
    assert [layer_name(convolutions(module)[i]) for i in positions] == ["a", "head"]
    assert set(skipped) == {"stem", "b"} and "residual add" in skipped["b"]
    a, head = (convolutions(module)[i] for i in positions)
    pruned, _ = prune(module, params, 'tconv-prune-channels{keep=5 layers="a"},'
                      'tconv-prune-channels{keep=3 layers="head"}')
    assert parameters_after(module, {a: 5, head: 3}) == parameter_count(pruned) < parameter_count(module)


def test_fisher_pruning_reaches_the_target_in_fine_tuned_steps(trained, digits):
    module, params = trained
    original = parameter_count(module)
    rows = []
    result = prune_network(module, params, digits, PruneConfig(0.5, step=0.25), "cpu", on_step=rows.append)
    steps = result.steps
    assert rows == steps and [s.step for s in steps] == list(range(len(steps)))
    assert result.target == original // 2 and steps[0].parameters == original == parameter_count(module)
    # It stops at the first step that reaches the target, and only the prunable layers lose channels.
    assert steps[-1].parameters <= result.target < steps[-2].parameters
    assert all(s.parameters < t.parameters for t, s in zip(steps, steps[1:]))
    assert parameter_count(result.module) == steps[-1].parameters
    assert steps[0].channels == {"a": 16, "head": 24} and set(result.skipped) == {"stem", "b"}
    assert sum(steps[-1].channels.values()) == 40 - sum(s.removed for s in steps)
    assert steps[-1].val_accuracy > 0.4  # chance is 0.1
    assert TrainableNetwork(result.module, result.params)  # the parameters fit the pruned IR


# The command -----------------------------------------------------------------


@pytest.fixture
def trained_file(trained, tmp_path):
    module, params = trained
    write_network(tmp_path / "net.mlir", module, params, {"weights": "trained"})
    return tmp_path / "net.mlir"


def test_tconv_prune_writes_the_pruned_network_and_its_steps(capsys, trained_file, trained, tmp_path):
    out = tmp_path / "pruned.npz"
    status, stdout, stderr = tconv(capsys, "prune", trained_file, "--data", "digits", "--params", "0.6",
                                   "--step", "0.25", "--criterion", "magnitude", "-o", out)
    assert status == 0, stderr
    log = json.loads((tmp_path / "pruned.train" / "prune.json").read_text())
    steps = log["steps"]
    assert log["criterion"] == "magnitude" and len(steps) >= 2
    table = [line for line in stdout.splitlines() if line.startswith("|")]
    assert table[0] == "| step | parameters | a | head | accuracy pruned | accuracy fine-tuned |"
    assert len(table) == 2 + len(steps)
    assert table[2].startswith(f"| 0 | {parameter_count(trained[0]):,} | 16 | 24 |")
    assert "\n".join(table) in (tmp_path / "pruned.train" / "report.md").read_text()
    module = load_module(tmp_path / "pruned.mlir")
    assert parameter_count(module) == steps[-1]["parameters"] <= log["target"]
    provenance = load_provenance(out)
    assert provenance["weights"] == "trained" and provenance["val_accuracy"] == steps[-1]["val_accuracy"]
    assert TrainableNetwork(module, load_store(out))


def test_tconv_prune_refuses_what_it_cannot_do_and_writes_nothing(capsys, trained, trained_file, tmp_path):
    out = tmp_path / "pruned.npz"
    prune_to = ("prune", trained_file, "--data", "digits", "-o", out, "--params")
    assert_user_error(tconv(capsys, *prune_to, "10"), "net.mlir: error: cannot prune to 10 parameters",
                      "with each of its 2 prunable convolutions down to one channel", "stem: it feeds a residual add")
    status, _, stderr = tconv(capsys, *prune_to, "0.5", "--criterion", "taylor")
    assert status == 2 and "invalid choice: 'taylor'" in stderr
    status, _, stderr = tconv(capsys, *prune_to, "2.5")
    assert status == 2 and "must be a ratio in (0, 1] or a whole count, got 2.5" in stderr
    module, _ = trained
    write_network(tmp_path / "fresh.mlir", module, init_params(module), {"weights": "initial"})
    assert_user_error(tconv(capsys, "prune", tmp_path / "fresh.mlir", "--data", "digits", "--params", "0.5", "-o", out),
                      "fresh.mlir: error: the weights in", "are initial, not trained", "run tconv train first")
    assert not out.exists() and not (tmp_path / "pruned.mlir").exists() and not (tmp_path / "pruned.train").exists()
