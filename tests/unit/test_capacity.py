"""Capacity analyses: which values end convolution blocks, the Fisher
potential against torch autograd, the NASWOT score against its definition,
the seeded minibatch and the report."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tconv.frontends import zoo
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError
from tconv.ir.ops import BatchNormOp, Conv2dOp, ReluOp
from tconv.ir.params import init_params
from tconv.passes.analyses import capacity
from tconv.passes.analyses.summary import summarize


def residual_network(batch: int = 1):
    """conv-bn-relu, a residual block (conv-bn-relu, conv-bn, add, relu), a
    conv straight into a relu, and a classifier."""
    b = NetworkBuilder("residual", (batch, 3, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 4, 3, name="stem"), name="bn0"))
    y = b.relu(b.batch_norm(b.conv2d(x, 4, 3, name="conv1"), name="bn1"))
    y = b.batch_norm(b.conv2d(y, 4, 3, name="conv2"), name="bn2")
    x = b.relu(b.add(x, y))
    x = b.relu(b.conv2d(x, 6, 3, stride=2, bias=True, name="head"))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 5, name="fc"))


def params_of(module, seed=1):
    """Initial parameters, with batch-norm scales and shifts away from 1 and 0."""
    params = init_params(module, seed=seed)
    rng = np.random.default_rng(seed)
    for name, value in params.items():
        if name.endswith((".weight", ".bias")) and value.ndim == 1:
            params[name] = (value + 0.3 * rng.standard_normal(value.shape)).astype(np.float32)
    return params


# Convolution blocks -----------------------------------------------------------


def test_blocks_follow_batch_norm_then_relu():
    blocks = capacity.conv_blocks(residual_network())
    assert [(b.name, b.weight, b.output.owner.short_name()) for b in blocks] == [
        ("stem", "stem.weight", "relu"),
        ("conv1", "conv1.weight", "relu"),
        ("conv2", "conv2.weight", "batch_norm"),  # the add is not followed
        ("head", "head.weight", "relu"),  # a relu without batch-norm
    ]


def test_block_stops_where_a_value_has_two_users():
    b = NetworkBuilder("fork", (1, 3, 8, 8))
    x = b.conv2d(b.input, 4, 3, name="conv")
    y = b.relu(b.batch_norm(x, name="bn"))
    module = b.finish(b.dense(b.flatten(b.global_avg_pool(b.add(x, y))), 2, name="fc"))
    (block,) = capacity.conv_blocks(module)
    assert isinstance(block.output.owner, Conv2dOp)


def test_resnet_blocks_are_named_as_the_summary_names_layers():
    module = zoo.build("resnet18", "cifar10")
    blocks = capacity.conv_blocks(module)
    layer_names = {layer.name for layer in summarize(module).layers if layer.kind == "conv2d"}
    assert {block.name for block in blocks} == layer_names
    kinds = {block.name: type(block.output.owner) for block in blocks}
    assert kinds["layer1.0.conv1"] is ReluOp
    assert kinds["layer1.0.conv2"] is BatchNormOp
    assert kinds["layer2.0.shortcut.0"] is BatchNormOp


# Fisher potential -------------------------------------------------------------


def torch_fisher(params, x, labels):
    """The Fisher potential of `residual_network` by torch autograd in float64,
    written out by hand: per block output, ½·mean_n(Σ_hw a·g)² per channel."""
    p = {name: torch.tensor(np.asarray(value, np.float64), requires_grad=True) for name, value in params.items()}

    def bn(value, name):
        return F.batch_norm(value, None, None, p[f"{name}.weight"], p[f"{name}.bias"], training=True, eps=1e-5)

    outputs = {}
    x = torch.tensor(np.asarray(x, np.float64))
    outputs["stem"] = x = F.relu(bn(F.conv2d(x, p["stem.weight"], padding=1), "bn0"))
    outputs["conv1"] = y = F.relu(bn(F.conv2d(x, p["conv1.weight"], padding=1), "bn1"))
    outputs["conv2"] = y = bn(F.conv2d(y, p["conv2.weight"], padding=1), "bn2")
    x = F.relu(x + y)
    outputs["head"] = x = F.relu(F.conv2d(x, p["head.weight"], p["head.bias"], stride=2, padding=1))
    logits = F.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), p["fc.weight"], p["fc.bias"])
    for value in outputs.values():
        value.retain_grad()
    F.cross_entropy(logits, torch.from_numpy(labels)).backward()
    return {
        name: (0.5 * ((value * value.grad).sum(dim=(2, 3)) ** 2).mean(dim=0)).detach().numpy()
        for name, value in outputs.items()
    }


def test_fisher_potential_matches_torch_autograd():
    module = residual_network()
    params = params_of(module)
    x, labels = capacity.minibatch(module, batch=6, seed=3)
    fisher = capacity.fisher_potential(module, params, x, labels)
    expected = torch_fisher(params, x, labels)
    assert [block.name for block in fisher.blocks] == list(expected)
    for block in fisher.blocks:
        assert block.per_channel.dtype == np.float64
        np.testing.assert_allclose(block.per_channel, expected[block.name], rtol=1e-4, atol=1e-12)
        assert block.total == pytest.approx(expected[block.name].sum(), rel=1e-4)
    assert fisher.total == pytest.approx(sum(v.sum() for v in expected.values()), rel=1e-4)
    assert fisher.by_name()["conv2"].per_channel.shape == (4,)


def test_fisher_potential_is_deterministic_and_depends_on_the_seed():
    module = residual_network()
    params = params_of(module)
    first = capacity.fisher_potential(module, params, *capacity.minibatch(module, 8, seed=0))
    again = capacity.fisher_potential(module, params, *capacity.minibatch(module, 8, seed=0))
    other = capacity.fisher_potential(module, params, *capacity.minibatch(module, 8, seed=1))
    assert first.total == again.total
    for a, b in zip(first.blocks, again.blocks):
        np.testing.assert_array_equal(a.per_channel, b.per_channel)
    assert first.total != other.total


# NASWOT -----------------------------------------------------------------------


def naswot_by_definition(module, params, x) -> float:
    """log|det K| with K_ij summed over the live ReLUs as the number of units
    where samples i and j are both active or both inactive, pair by pair."""
    from tconv.semantics.backward import forward_values

    values = forward_values(module, params, [x])
    ops = list(module.ops.first.body.block.ops)
    relus = [op for op in ops if isinstance(op, ReluOp) and op.results[0].uses]
    kernel = np.zeros((len(x), len(x)))
    for op in relus:
        codes = values[op.input].reshape(len(x), -1) > 0
        for i in range(len(x)):
            for j in range(len(x)):
                kernel[i, j] += np.sum(codes[i] == codes[j])
    return float(np.linalg.slogdet(kernel)[1])


def test_naswot_matches_its_definition():
    module = residual_network()
    params = params_of(module)
    x, _ = capacity.minibatch(module, batch=5, seed=2)
    result = capacity.naswot_score(module, params, x)
    assert result.relus == 4
    assert result.score == pytest.approx(naswot_by_definition(module, params, x), rel=1e-12)
    np.testing.assert_array_equal(result.kernel, result.kernel.T)


def test_naswot_ignores_relus_off_the_live_path():
    b = NetworkBuilder("dead", (1, 3, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 4, 3, name="conv"), name="bn"))
    b.relu6(b.conv2d(x, 4, 3, name="unused"))  # computed, never returned
    module = b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 3, name="fc"))
    params = params_of(module)
    x_batch, _ = capacity.minibatch(module, 4, seed=0)
    assert capacity.naswot_score(module, params, x_batch).relus == 1


def test_naswot_of_identical_samples_is_minus_infinity():
    module = residual_network()
    x = np.repeat(capacity.minibatch(module, 1, seed=0)[0], 3, axis=0) + np.zeros((3, 1, 1, 1), np.float32)
    # Training-mode batch-norm of identical samples gives identical codes: K has rank 1.
    assert capacity.naswot_score(module, params_of(module), x).score == -np.inf


# The minibatch and the report -------------------------------------------------


def test_gaussian_minibatch_is_seeded_and_shaped_by_the_network():
    module = residual_network(batch=2)
    x, labels = capacity.minibatch(module, batch=7, seed=4, source="gaussian")
    assert x.shape == (7, 3, 8, 8) and x.dtype == np.float32
    assert labels.shape == (7,) and np.issubdtype(labels.dtype, np.integer)
    assert labels.min() >= 0 and labels.max() < 5
    x_again, labels_again = capacity.minibatch(module, batch=7, seed=4, source="gaussian")
    np.testing.assert_array_equal(x, x_again)
    np.testing.assert_array_equal(labels, labels_again)
    # The inputs `tconv run --seed 4` draws.
    np.testing.assert_array_equal(x, np.random.default_rng(4).standard_normal((7, 3, 8, 8), dtype=np.float32))


def test_minibatch_needs_logits():
    b = NetworkBuilder("maps", (1, 3, 8, 8))
    module = b.finish(b.conv2d(b.input, 4, 3))
    with pytest.raises(TconvError, match="N x classes"):
        capacity.minibatch(module, 2, seed=0)


@pytest.mark.parametrize("metric", capacity.METRICS)
def test_report_carries_the_summary_counts(metric):
    module = residual_network()
    params = params_of(module)
    x, labels = capacity.minibatch(module, 4, seed=0)
    report = capacity.measure(module, params, metric, x, labels)
    summary = summarize(module)
    assert (report.parameters, report.flops, report.activation_bytes) == (
        summary.parameters, summary.flops, summary.activation_bytes,
    )
    assert report.batch == (1 if metric == "synflow" else 4)  # SynFlow runs one all-ones input
    assert report.ir_batch == 1 and report.network == "residual"
    expected = {
        "fisher": lambda: capacity.fisher_potential(module, params, x, labels).total,
        "naswot": lambda: capacity.naswot_score(module, params, x).score,
        "synflow": lambda: capacity.synflow_score(module, params),
    }[metric]()
    assert report.value == expected


def test_measure_rejects_an_unknown_metric_and_fisher_without_labels():
    module = residual_network()
    x, _ = capacity.minibatch(module, 2, seed=0)
    with pytest.raises(TconvError, match="unknown metric 'snip'"):
        capacity.measure(module, params_of(module), "snip", x)
    with pytest.raises(TconvError, match="needs labels"):
        capacity.measure(module, params_of(module), "fisher", x)


# SynFlow ----------------------------------------------------------------------


def torch_synflow(params) -> float:
    """SynFlow of `residual_network` by torch autograd: |θ| everywhere,
    inference batch-norm, an all-ones input, R the sum of the logits."""
    p = {
        name: torch.tensor(np.abs(np.asarray(v, np.float64)), requires_grad="running" not in name)
        for name, v in params.items()
    }

    def bn(value, name):
        return F.batch_norm(
            value, p[f"{name}.running_mean"], p[f"{name}.running_var"], p[f"{name}.weight"], p[f"{name}.bias"],
            training=False, eps=1e-5,
        )

    x = torch.ones((1, 3, 8, 8), dtype=torch.float64)
    x = F.relu(bn(F.conv2d(x, p["stem.weight"], padding=1), "bn0"))
    y = F.relu(bn(F.conv2d(x, p["conv1.weight"], padding=1), "bn1"))
    y = bn(F.conv2d(y, p["conv2.weight"], padding=1), "bn2")
    x = F.relu(x + y)
    x = F.relu(F.conv2d(x, p["head.weight"], p["head.bias"], stride=2, padding=1))
    logits = F.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), p["fc.weight"], p["fc.bias"])
    logits.sum().backward()
    weights = ("stem.weight", "conv1.weight", "conv2.weight", "head.weight", "fc.weight")
    return float(sum((p[name] * p[name].grad).abs().sum().item() for name in weights))


def test_synflow_matches_torch_autograd():
    module = residual_network()
    params = params_of(module)
    params["bn1.running_mean"] = np.full(4, -0.5, np.float32)  # |mean| is used, as every |θ|
    params["bn2.running_var"] = np.full(4, 2.0, np.float32)
    assert capacity.synflow_score(module, params) == pytest.approx(torch_synflow(params), rel=1e-9)


def test_synflow_ignores_the_data():
    module = residual_network()
    params = params_of(module)
    x = capacity.minibatch(module, 4, seed=0)[0]
    y = capacity.minibatch(module, 6, seed=1)[0]
    assert capacity.measure(module, params, "synflow", x).value == capacity.measure(module, params, "synflow", y).value


# Several seeds ----------------------------------------------------------------


def test_measure_seeds_repeats_measure_with_each_seeds_data_and_initialisation():
    module = residual_network()
    result = capacity.measure_seeds(module, "naswot", seeds=(3, 4, 5), batch=6)
    expected = [
        capacity.measure(module, init_params(module, seed), "naswot", *capacity.minibatch(module, 6, seed)).value
        for seed in (3, 4, 5)
    ]
    assert result.seeds == (3, 4, 5) and list(result.values) == expected
    assert result.median == float(np.median(expected))
    assert (result.low, result.high) == (min(expected), max(expected))
    assert result.relative_spread == pytest.approx((max(expected) - min(expected)) / abs(np.median(expected)))
    assert result.relative_spread > 0


def test_measure_seeds_with_fixed_parameters_and_data():
    module = residual_network()
    params = params_of(module)
    # SynFlow uses no data: with the parameters fixed, every seed agrees.
    synflow = capacity.measure_seeds(module, "synflow", seeds=(0, 1), params=params)
    assert synflow.low == synflow.high == capacity.synflow_score(module, params)
    # With the data fixed, the seeds differ only by the initialisation.
    data = capacity.minibatch(module, 5, seed=9)
    fisher = capacity.measure_seeds(module, "fisher", seeds=(0, 1), data=data)
    assert list(fisher.values) == [
        capacity.fisher_potential(module, init_params(module, seed), *data).total for seed in (0, 1)
    ]


def test_measure_seeds_needs_a_seed():
    with pytest.raises(TconvError, match="at least one seed"):
        capacity.measure_seeds(residual_network(), "naswot", seeds=())
