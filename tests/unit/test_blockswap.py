"""tconv-blockswap at the value level: residual blocks are found by
structure; each block type's parameter count, computed arithmetically, is
what the built network has; the chosen network is within the budget, is the
best-scoring in-budget sample, runs in the reference executor and is the
same for the same seed; the selector, option errors, an unreachable budget
and the capacity check."""

import re

import numpy as np
import pytest
from xdsl.passes import PassPipeline
from xdsl.utils.exceptions import PassFailedException

from tconv.cli.files import write_network
from tconv.cli.opt import main as opt_main
from tconv.frontends import zoo
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import load_module, make_context, module_text, verify_module
from tconv.ir.ops import Conv2dOp, ParamOp, shape_of
from tconv.ir.params import init_params, initial_value, load_store, param_ops, store_path_for
from tconv.passes.analyses.capacity import fisher_potential, measure, minibatch
from tconv.passes.analyses.summary import summarize
from tconv.passes.nas.blockswap import BLOCK_TYPES, BlockSwapPass, block_choices, residual_blocks
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.registry import PASSES
from tconv.semantics.reference import run


def two_block_net(width: int = 8):
    """A stem, an identity block at `width` channels and a strided block to
    2·width channels with a projection shortcut, then the classifier."""
    b = NetworkBuilder("two_blocks", (1, 4, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, width, 3, name="conv1"), name="bn1"))
    for stage, (planes, stride) in enumerate([(width, 1), (2 * width, 2)]):
        with b.scope(f"layer{stage + 1}"), b.scope(0):
            y = b.relu(b.batch_norm(b.conv2d(x, planes, 3, stride=stride, name="conv1"), name="bn1"))
            y = b.batch_norm(b.conv2d(y, planes, 3, name="conv2"), name="bn2")
            shortcut = x
            if stride != 1:
                with b.scope("shortcut"):
                    shortcut = b.batch_norm(b.conv2d(x, planes, 1, stride=stride, name="0"), name="1")
            x = b.relu(b.add(y, shortcut))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="linear"))


def apply(module, spec: str, store: ParamStore | None = None) -> ParamStore:
    store = store if store is not None else ParamStore()
    with using_store(store):
        PassPipeline.parse_spec(PASSES, spec).apply(make_context(), module)
    verify_module(module)
    return store


def weight_names(module) -> set[str]:
    return {op.weight.owner.param_name for op in module.walk() if isinstance(op, Conv2dOp)}


# Residual blocks and block types --------------------------------------------------


def test_blocks_are_found_by_structure():
    blocks = residual_blocks(two_block_net())
    assert [b.name for b in blocks] == ["layer1.0.conv1", "layer2.0.conv1"]
    # The projection shortcut is not on the branch.
    assert [[c.weight.owner.param_name for c in b.convs] for b in blocks] == [
        ["layer1.0.conv1.weight", "layer1.0.conv2.weight"],
        ["layer2.0.conv1.weight", "layer2.0.conv2.weight"],
    ]
    resnet50 = residual_blocks(zoo.build("resnet50", "cifar10"))
    assert len(resnet50) == 16
    assert [len(b.convs) for b in resnet50] == [3] * 16
    # Only the bottleneck's 3x3 is swapped; its 1x1s stay.
    assert {c.weight.owner.param_name.split(".")[-2] for b in resnet50 for c in b.swappable} == {"conv2"}
    # WRN's pre-activation blocks (bn → relu before conv0): BlockSwap's 18.
    wrn = residual_blocks(zoo.build("wrn40_2"))
    assert len(wrn) == 18 and wrn[6].name == "group1.block0.conv0"
    assert all(len(b.convs) == len(b.swappable) == 2 for b in wrn)
    # ResNeXt's and MobileNet-V2's blocks have nothing to swap: 1x1s and a grouped 3x3.
    for name, count in [("resnext29_2x64d", 9), ("mobilenet_v2", 10)]:
        blocks = residual_blocks(zoo.build(name))
        assert len(blocks) == count and not any(b.swappable for b in blocks)


def test_block_type_parameter_counts_are_those_of_the_built_network():
    """Every type of every block, built alone: the parameter count is the
    original's plus the type's arithmetic extra, and the network verifies and runs."""
    module = two_block_net()
    original = summarize(module).parameters
    blocks = residual_blocks(module)
    choices = [block_choices(block) for block in blocks]
    assert [t.name for t in choices[0].types] == [
        "keep", "g2", "g4", "g8", "dw", "b2", "b2g2", "b2g4", "b4", "b4g2",
    ]  # 8 channels: no g16, and b4's width 2 takes no more than 2 groups
    assert len(choices[1].types) == 12 and "g16" not in [t.name for t in choices[1].types]  # conv1 reads 8 channels
    swap = BlockSwapPass(budget=1.0)
    x = minibatch(module, 2, 0)[0]
    for block, choice in enumerate(choices):
        for index, block_type in enumerate(choice.types):
            network = module.clone()
            assignment = tuple(index if i == block else 0 for i in range(len(choices)))
            swap.build(network, choices, assignment, ParamStore())
            verify_module(network)
            assert summarize(network).parameters == original + choice.extra[index], block_type.name
            assert run(network, init_params(network), x)[0].shape == (2, 10)
    # By hand, for layer2.0's two convolutions (8 → 16 and 16 → 16, 3x3):
    extra = dict(zip((t.name for t in choices[1].types), choices[1].extra.tolist()))
    original_weights = 16 * 8 * 9 + 16 * 16 * 9
    assert extra["g4"] == 16 * 2 * 9 + 16 * 4 * 9 - original_weights
    assert extra["dw"] == (8 * 9 + 16 * 8) + (16 * 9 + 16 * 16) - original_weights
    assert extra["b2g2"] == (8 * 8 + 8 * 4 * 9 + 16 * 8) + (8 * 16 + 8 * 4 * 9 + 16 * 8) - original_weights
    assert {t.name for t in BLOCK_TYPES} >= {"keep", "g16", "dw", "b4g8"}


# The search -------------------------------------------------------------------------


def test_budget_is_met_and_the_network_runs(capsys):
    module = two_block_net()
    before = summarize(module)
    store = apply(module, "tconv-blockswap{budget=0.3 samples=6 batch=4 seed=1}")
    after = summarize(module)
    assert abs(after.parameters - 0.3 * before.parameters) <= 0.025 * 0.3 * before.parameters
    assert after.flops < before.flops
    remark = capsys.readouterr().err
    assert re.search(
        r"remark: tconv-blockswap: layer1\.0\.conv1=\w+, layer2\.0\.conv1=\w+; "
        rf"{after.parameters:,} parameters \(budget {0.3 * before.parameters:,.0f} ± 2\.5%, "
        rf"original {before.parameters:,}\); fisher [-0-9.e]+, the best of 6 in-budget networks",
        remark,
    ), remark
    # Every new parameter is in the store, at its initial value.
    new = [op for op in param_ops(module) if op.param_name not in {p.param_name for p in param_ops(two_block_net())}]
    assert new
    for op in new:
        np.testing.assert_array_equal(
            store.arrays[op.param_name], initial_value(op.param_name, shape_of(op.result), op.init.data, 0)
        )
    x = minibatch(module, 2, 0)[0]
    (logits,) = run(module, store.values_for(module), x)
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))


def test_same_seed_same_network_other_seed_other_samples():
    spec = "tconv-blockswap{budget=0.3 samples=4 batch=4 seed=%d}"
    first, second, other = two_block_net(), two_block_net(), two_block_net()
    apply(first, spec % 3)
    apply(second, spec % 3)
    assert module_text(first) == module_text(second)
    swap = BlockSwapPass(budget=0.3, samples=4, seed=3)
    choices = [block_choices(b) for b in residual_blocks(other)]
    total = summarize(other).parameters
    window = (0.975 * 0.3 * total, 1.025 * 0.3 * total)
    drawn = [c.assignment for c in swap.sample(choices, total, *window)]
    assert len(set(drawn)) == 4
    assert drawn != [c.assignment for c in BlockSwapPass(budget=0.3, samples=4, seed=4).sample(choices, total, *window)]


def test_the_winner_has_the_highest_fisher_potential_at_the_original_blocks():
    """Recomputed here from the samples: each built alone, its Fisher potential
    summed over the convolutions that are not the inner ones a rewrite adds
    (named `_dw`, `_down`, `_mid`)."""
    module = two_block_net()
    swap = BlockSwapPass(budget=0.3, samples=5, batch=4, seed=2)
    choices = [block_choices(b) for b in residual_blocks(module)]
    total = summarize(module).parameters
    x, labels = minibatch(module, 4, 2)
    scores = []
    for candidate in swap.sample(choices, total, 0.975 * 0.3 * total, 1.025 * 0.3 * total):
        network = module.clone()
        swap.build(network, choices, candidate.assignment, ParamStore())
        fisher = fisher_potential(network, init_params(network), x, labels)
        inner = ("_dw.", "_down.", "_mid.", "_mid_")
        scores.append((
            sum(b.total for b in fisher.blocks if not any(tag in b.block.weight for tag in inner)),
            weight_names(network),
        ))
    apply(module, "tconv-blockswap{budget=0.3 samples=5 batch=4 seed=2}")
    best = max(range(len(scores)), key=lambda i: scores[i][0])
    assert weight_names(module) == scores[best][1]


@pytest.mark.parametrize("metric", ["naswot", "synflow"])
def test_rank_metric_picks_the_highest_score(metric):
    module = two_block_net()
    swap = BlockSwapPass(budget=0.3, samples=4, batch=4, rank_metric=metric)
    choices = [block_choices(b) for b in residual_blocks(module)]
    total = summarize(module).parameters
    x, labels = minibatch(module, 4, 0)
    scored = []
    for candidate in swap.sample(choices, total, 0.975 * 0.3 * total, 1.025 * 0.3 * total):
        network = module.clone()
        swap.build(network, choices, candidate.assignment, ParamStore())
        scored.append((measure(network, init_params(network), metric, x, labels).value, weight_names(network)))
    apply(module, 'tconv-blockswap{budget=0.3 samples=4 batch=4 rank-metric="%s"}' % metric)
    assert weight_names(module) == max(scored, key=lambda s: s[0])[1]


def test_layers_selects_blocks_by_their_first_convolution(capsys):
    module = two_block_net()
    apply(module, 'tconv-blockswap{budget=0.5 samples=3 batch=4 layers="layer2.*"}')
    names = weight_names(module)
    assert {"conv1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight", "layer2.0.shortcut.0.weight"} <= names
    assert "layer2.0.conv2.weight" not in names  # at half the parameters, layer2.0 must change
    remark = capsys.readouterr().err
    assert "layer2.0.conv1=" in remark and "layer1.0.conv1=" not in remark
    assert "the best of 1 in-budget networks" in remark  # only one type of layer2.0 fits


def residual_1x1_net():
    """One block whose branch is two 1x1 convolutions: nothing to swap."""
    b = NetworkBuilder("pointwise", (1, 4, 4, 4))
    x = b.relu(b.conv2d(b.input, 8, 3, name="stem"))
    y = b.conv2d(b.relu(b.conv2d(x, 8, 1, name="a")), 8, 1, name="b")
    x = b.relu(b.add(x, y))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("tconv-blockswap{budget=0}", "tconv-blockswap: budget must be a fraction in (0, 1] or a parameter count, got 0"),
        ("tconv-blockswap{budget=2.5}", "budget 2.5 is above 1, so it is a parameter count, and must be a whole number"),
        ("tconv-blockswap{budget=0.5 tolerance=1.5}", "tolerance must be in (0, 1), got 1.5"),
        ("tconv-blockswap{budget=0.5 samples=0}", "samples must be at least 1, got 0"),
        ('tconv-blockswap{budget=0.5 rank-metric="snip"}', "unknown rank-metric 'snip' (expected one of fisher, naswot, synflow)"),
        ("tconv-blockswap{budget=0.5 batch=1}", "batch must be at least 2, got 1"),
        (
            'tconv-blockswap{budget=0.5 layers="layer3.0.conv1"}',
            "unknown block 'layer3.0.conv1' (the residual blocks are: layer1.0.conv1, layer2.0.conv1)",
        ),
        ('tconv-blockswap{budget=0.5 layers="stem*"}', "no residual block with an ungrouped KxK convolution selected by layers='stem*'"),
        # The smallest network (layer1.0 at b4g2, layer2.0 at b4g4) keeps the stem, batch-norms and classifier.
        (
            "tconv-blockswap{budget=0.05}",
            "no network within 260 to 274 parameters (budget ± 2.5%): the block types reach 1,126 to 5,338 "
            "parameters (21.1% to 100.0% of the original 5,338)",
        ),
        ("tconv-blockswap{budget=6000}", "no network within 5,850 to 6,150 parameters"),
    ],
)
def test_bad_options_are_refused_and_the_module_is_unchanged(spec, message):
    module = two_block_net()
    text = module_text(module)
    with pytest.raises(PassFailedException, match=re.escape(message)):
        apply(module, spec)
    assert module_text(module) == text


def test_no_sample_in_a_reachable_but_narrow_window_is_a_clear_error():
    # 2,700 is between the extremes, but no assignment has exactly that many parameters.
    with pytest.raises(PassFailedException, match=re.escape(
        "none of 262,144 random networks has 2,700 to 2,700 parameters (budget ± 1e-05%); the block types reach 1,126 to 5,338"
    )):
        apply(two_block_net(), "tconv-blockswap{budget=2700 tolerance=0.0000001}")


def test_a_block_without_a_kxk_convolution_is_refused_by_name_and_skipped_by_default(capsys):
    with pytest.raises(PassFailedException, match="cannot swap block a: its branch has no ungrouped KxK convolution"):
        apply(residual_1x1_net(), 'tconv-blockswap{budget=0.5 layers="a"}')
    with pytest.raises(PassFailedException, match="no residual block with an ungrouped KxK convolution in the module"):
        apply(residual_1x1_net(), "tconv-blockswap{budget=0.5}")
    assert "remark: tconv-blockswap: skipped a: its branch has no ungrouped KxK convolution" in capsys.readouterr().err


def test_capacity_check_refuses_and_accepts():
    module = two_block_net()
    text = module_text(module)
    spec = "tconv-blockswap{budget=0.3 samples=3 batch=4 check-capacity=true min-capacity=%s}"
    with pytest.raises(PassFailedException, match=r"tconv-blockswap: rewrite of layer1\.0\.conv1, layer2\.0\.conv1 refused: naswot capacity"):
        apply(module, spec % "100")
    assert module_text(module) == text
    apply(module, spec % "0")
    unchecked = two_block_net()
    apply(unchecked, "tconv-blockswap{budget=0.3 samples=3 batch=4}")
    assert module_text(module) == module_text(unchecked)


def test_tconv_opt_writes_a_complete_store(tmp_path):
    module = two_block_net()
    source = tmp_path / "net.mlir"
    arrays = init_params(module, seed=5)
    write_network(source, module, arrays)
    out = tmp_path / "out.mlir"
    assert opt_main([str(source), "-p", "tconv-blockswap{budget=0.3 samples=2 batch=4}", "-o", str(out)]) == 0
    store = load_store(store_path_for(out))
    params = {op.param_name: shape_of(op.result) for op in load_module(out).walk() if isinstance(op, ParamOp)}
    assert set(store) == set(params)
    assert all(store[name].shape == shape for name, shape in params.items())
    np.testing.assert_array_equal(store["linear.weight"], arrays["linear.weight"])  # kept unchanged
