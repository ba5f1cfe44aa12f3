"""NAS passes at the value level: every rewrite verifies and runs in the
reference executor; exact rewrites compute what the original did; the others
change parameters and FLOPs by the hand-computed amounts. Also: the layer
selector, channel propagation (hypothesis), the capacity check and the
parameter store that tconv-opt writes."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xdsl.passes import PassPipeline
from xdsl.utils.exceptions import PassFailedException

from tconv.cli.files import write_network
from tconv.cli.opt import main as opt_main
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import load_module, make_context, module_text, verify_module
from tconv.ir.ops import ConcatOp, Conv2dOp, ParamOp, shape_of
from tconv.ir.params import init_params, load_store, store_path_for
from tconv.passes.analyses.capacity import METRICS, fisher_potential, measure, minibatch
from tconv.passes.analyses.summary import summarize
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.registry import PASSES
from tconv.semantics.reference import run, run_all

BATCH = 2


def small_net(batch: int = 1, width: int = 8):
    """A stem, a residual block (conv2 → bn2 → relu → conv3 → bn3 → add) and a
    strided head conv with bias feeding the classifier."""
    b = NetworkBuilder("small", (batch, 4, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, width, 3, name="conv1"), name="bn1"))
    y = b.relu(b.batch_norm(b.conv2d(x, width, 3, name="conv2"), name="bn2"))
    y = b.batch_norm(b.conv2d(y, width, 3, name="conv3"), name="bn3")
    x = b.relu(b.add(x, y))
    x = b.relu(b.conv2d(x, 16, 3, stride=2, bias=True, name="head"))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


def apply(module, spec: str, store: ParamStore | None = None) -> ParamStore:
    store = store if store is not None else ParamStore()
    with using_store(store):
        PassPipeline.parse_spec(PASSES, spec).apply(make_context(), module)
    verify_module(module)
    return store


def conv_named(module, name: str) -> Conv2dOp:
    (conv,) = [
        op for op in module.walk()
        if isinstance(op, Conv2dOp) and op.weight.owner.param_name == f"{name}.weight"
    ]
    return conv


def inputs(module, seed: int = 0) -> np.ndarray:
    return minibatch(module, BATCH, seed)[0]


def outputs(module, store: ParamStore, x: np.ndarray) -> np.ndarray:
    return run(module, store.values_for(module), x)[0]


def totals(module) -> tuple[int, int]:
    summary = summarize(module)
    return summary.parameters, summary.flops


def conv_work(out_channels, in_per_group, kernel, out_area, batch=1):
    """(weight parameters, FLOPs) of a bias-free convolution, by hand."""
    weights = out_channels * in_per_group * kernel * kernel
    return weights, 2 * batch * out_area * weights


# The passes -----------------------------------------------------------------


def test_group_halves_weights_and_macs_of_eligible_convs():
    module = small_net()
    params, flops = totals(module)
    apply(module, "tconv-group{groups=2}")
    # conv1 reads 4 channels (eligible), conv2, conv3 and head 8: all eligible.
    assert [c.groups.value.data for c in module.walk() if isinstance(c, Conv2dOp)] == [2, 2, 2, 2]
    saved = [conv_work(8, 2, 3, 64), conv_work(8, 4, 3, 64), conv_work(8, 4, 3, 64), conv_work(16, 4, 3, 16)]
    assert totals(module) == (params - sum(p for p, _ in saved), flops - sum(f for _, f in saved))
    assert outputs(module, ParamStore(), inputs(module)).shape == (BATCH, 10)


def test_bottleneck_narrows_consumers_and_skips_residual_convs(capsys):
    module = small_net()
    params, flops = totals(module)
    apply(module, "tconv-bottleneck{factor=2}")
    remarks = capsys.readouterr().err
    assert "remark: tconv-bottleneck: skipped conv1, conv3: it feeds a residual add" in remarks
    assert shape_of(conv_named(module, "conv2_b2").output) == (1, 4, 8, 8)
    assert shape_of(conv_named(module, "conv3_b2").weight) == (8, 4, 3, 3)
    assert shape_of(conv_named(module, "head_b2").output) == (1, 8, 4, 4)
    names = {op.param_name: shape_of(op.result) for op in module.walk() if isinstance(op, ParamOp)}
    assert names["bn2_b2.running_var"] == (4,) and names["head_b2.bias"] == (8,)
    assert names["fc_b2.weight"] == (10, 8) and "fc.weight" not in names
    # conv2: 8→4 rows, bn2: 8 fewer scale+shift, conv3: 8x8 → 8x4 inputs;
    # head: 16→8 rows and bias, fc: 16→8 input features.
    saved_params = 4 * 8 * 9 + 2 * 4 + 8 * 4 * 9 + 8 * 8 * 9 + 8 + 10 * 8
    saved_flops = (
        2 * 64 * (4 * 8 * 9)            # conv2 MACs
        + 2 * 4 * 64 + 1 * 4 * 64       # bn2 (2/element) and relu (1/element)
        + 2 * 64 * (8 * 4 * 9)          # conv3 reads half the channels
        + 2 * 16 * (8 * 8 * 9) + 8 * 16  # head: MACs and bias adds
        + 8 * 16 + 8 * 16               # relu and global_avg_pool over 8 fewer channels
        + 2 * 10 * 8                    # fc
    )
    assert totals(module) == (params - saved_params, flops - saved_flops)
    assert outputs(module, ParamStore(), inputs(module)).shape == (BATCH, 10)


def test_depthwise_separable_factorises_the_conv():
    module = small_net()
    params, flops = totals(module)
    apply(module, 'tconv-depthwise-separable{layers="head"}')
    depthwise, pointwise = conv_named(module, "head_dw"), conv_named(module, "head_pw")
    assert depthwise.groups.value.data == 8 and list(depthwise.strides.get_values()) == [2, 2]
    assert pointwise.input is depthwise.output and pointwise.bias is not None
    old = 16 * 8 * 9
    new = 8 * 9 + 16 * 8
    assert totals(module) == (params - old + new, flops - 2 * 16 * (old - new))
    assert outputs(module, ParamStore(), inputs(module)).shape == (BATCH, 10)


def test_split_output_with_sliced_weights_is_exact():
    module = small_net()
    x = inputs(module)
    expected = outputs(module, ParamStore(), x)
    params, flops = totals(module)
    store = apply(module, "tconv-split-output{splits=2}")
    concats = [op for op in module.walk() if isinstance(op, ConcatOp)]
    assert len(concats) == 4
    assert totals(module) == (params, flops)
    np.testing.assert_allclose(outputs(module, store, x), expected, rtol=1e-5, atol=1e-5)
    # Without the sliced values the parts are freshly initialised: not the same network.
    assert not np.allclose(outputs(module, ParamStore(), x), expected, atol=1e-3)


def test_split_output_with_groups_changes_the_work():
    module = small_net()
    params, flops = totals(module)
    apply(module, 'tconv-split-output{splits=2 groups=4 layers="head"}')
    # two parts of 8 output channels over 8 inputs in 4 groups: 2 inputs per group
    new = 2 * 8 * 2 * 9
    assert totals(module) == (params - 16 * 8 * 9 + new, flops - 2 * 16 * (16 * 8 * 9 - new))


def test_unroll_conv_keeps_the_dense_channels():
    module = small_net()
    x = inputs(module)
    original = conv_named(module, "head")
    before = run_all(module, ParamStore().values_for(module), x)[original.output]
    params, flops = totals(module)
    store = apply(module, 'tconv-unroll-conv{dense=4 groups=4 layers="head"}')
    (concat,) = [op for op in module.walk() if isinstance(op, ConcatOp)]
    after = run_all(module, store.values_for(module), x)[concat.output]
    np.testing.assert_allclose(after[:, :4], before[:, :4], rtol=1e-5, atol=1e-5)
    assert not np.allclose(after[:, 4:], before[:, 4:], atol=1e-3)
    new = 4 * 8 * 9 + 12 * 2 * 9
    assert totals(module) == (params - 16 * 8 * 9 + new, flops - 2 * 16 * (16 * 8 * 9 - new))


def test_bottleneck_block_replaces_the_conv_by_three():
    module = small_net()
    params, flops = totals(module)
    apply(module, 'tconv-bottleneck-block{factor=4 layers="conv2"}')
    down, mid, up = (conv_named(module, f"conv2_{part}") for part in ("down", "mid", "up"))
    assert mid.input is down.output and up.input is mid.output
    assert [shape_of(c.weight) for c in (down, mid, up)] == [(2, 8, 1, 1), (2, 2, 3, 3), (8, 2, 1, 1)]
    new = 16 + 36 + 16
    assert totals(module) == (params - 8 * 8 * 9 + new, flops - 2 * 64 * (8 * 8 * 9 - new))
    assert outputs(module, ParamStore(), inputs(module)).shape == (BATCH, 10)


def test_prune_keeps_the_highest_fisher_channels_exactly():
    module = small_net(width=8)
    store = ParamStore(init_params(module, seed=3))
    x, labels = minibatch(module, 4, 0)
    fisher = fisher_potential(module, store.values_for(module), x, labels).by_name()["conv2"]
    kept = sorted(np.argsort(-fisher.per_channel, kind="stable")[:3].tolist())
    weight = store.arrays["conv2.weight"].copy()
    # The original with the pruned channels' weights zeroed: with running mean 0
    # and shift 0, those channels are 0 after bn2 and relu, as if removed.
    zeroed = dict(store.arrays)
    zeroed["conv2.weight"] = np.where(np.isin(np.arange(8), kept)[:, None, None, None], weight, 0)
    expected = run(module, zeroed, x)[0]
    apply(module, 'tconv-prune-channels{keep=3 layers="conv2" batch=4}', store)
    np.testing.assert_array_equal(store.arrays["conv2_p3.weight"], weight[kept])
    np.testing.assert_array_equal(store.arrays["conv3_p3.weight"], store.arrays["conv3.weight"][:, kept])
    assert shape_of(conv_named(module, "conv2_p3").output)[1] == 3
    np.testing.assert_allclose(run(module, store.values_for(module), x)[0], expected, rtol=1e-5, atol=1e-5)


def test_prune_ratio_on_the_head_resizes_the_classifier():
    module = small_net()
    params, _ = totals(module)
    store = apply(module, 'tconv-prune-channels{keep=0.25 layers="head"}')
    assert shape_of(conv_named(module, "head_p4").weight) == (4, 8, 3, 3)
    assert store.arrays["fc_p4.weight"].shape == (10, 4)
    assert totals(module)[0] == params - 12 * (8 * 9 + 1) - 12 * 10


# Options and selection --------------------------------------------------------


@pytest.mark.parametrize(
    "spec, message",
    [
        ("tconv-group{groups=1}", "tconv-group: groups must be at least 2, got 1"),
        ("tconv-bottleneck{factor=0}", "tconv-bottleneck: factor must be at least 2, got 0"),
        ('tconv-group{groups=2 layers="conv9"}', "unknown layer 'conv9' (the convolutions are: conv1, conv2, conv3, head)"),
        ('tconv-bottleneck{factor=2 layers="conv3"}', "cannot rewrite conv3: it feeds a residual add"),
        ('tconv-group{groups=3 layers="conv2"}', "cannot rewrite conv2: its input channels 8 are not divisible by groups 3"),
        ("tconv-group{groups=3}", "tconv-group: no eligible convolution in the module"),
        ('tconv-depthwise-separable{layers="nothing*"}', "no eligible convolution selected by layers='nothing*'"),
        ("tconv-prune-channels{keep=2.5}", "keep 2.5 is above 1, so it is a count, and must be a whole number"),
        ("tconv-unroll-conv{dense=16 groups=2 layers=\"head\"}", "dense 16 leaves none of its 16 output channels"),
        ("tconv-group{groups=2 metric=\"snip\"}", f"unknown metric 'snip' (expected one of {', '.join(METRICS)})"),
    ],
)
def test_bad_options_and_layers_are_refused(spec, message):
    module = small_net()
    text = module_text(module)
    with pytest.raises(PassFailedException, match=re.escape(message)):
        apply(module, spec)
    assert module_text(module) == text


def test_patterns_select_by_layer_name():
    module = small_net()
    apply(module, 'tconv-group{groups=2 layers="conv[23],he*"}')
    groups = {c.weight.owner.param_name: c.groups.value.data for c in module.walk() if isinstance(c, Conv2dOp)}
    assert groups == {"conv1.weight": 1, "conv2_g2.weight": 2, "conv3_g2.weight": 2, "head_g2.weight": 2}


@settings(max_examples=12, deadline=None)
@given(
    channels=st.sampled_from([2, 4, 6, 8]),
    factor=st.sampled_from([2, 3]),
    kernel=st.sampled_from([1, 3]),
    stride=st.sampled_from([1, 2]),
    consumer_groups=st.sampled_from([1, 2]),
)
def test_bottleneck_propagates_through_random_chains(channels, factor, kernel, stride, consumer_groups):
    """conv A → bn → relu → conv B (grouped) → relu → concat with A's relu → pool → fc:
    narrowing A reaches bn, B's weight, the concat and the classifier."""
    b = NetworkBuilder("chain", (1, 3, 6, 6))
    a = b.relu(b.batch_norm(b.conv2d(b.input, channels * factor, kernel, stride=stride, name="a"), name="bn"))
    out = b.relu(b.conv2d(a, 4, 3, groups=consumer_groups, name="b"))
    x = b.flatten(b.global_avg_pool(b.concat([a, out])))
    module = b.finish(b.dense(x, 5, name="fc"))
    module.verify()
    narrowed = channels
    if narrowed % consumer_groups:
        with pytest.raises(PassFailedException, match="do not divide"):
            apply(module, 'tconv-bottleneck{factor=%d layers="a"}' % factor)
        return
    apply(module, 'tconv-bottleneck{factor=%d layers="a"}' % factor)
    assert shape_of(conv_named(module, "a_b%d" % factor).output)[1] == narrowed
    assert shape_of(conv_named(module, "b_b%d" % factor).weight)[1] == narrowed // consumer_groups
    fc = [op for op in module.walk() if isinstance(op, ParamOp) and op.param_name.endswith("weight") and op.param_name.startswith("fc")]
    assert shape_of(fc[0].result) == (5, narrowed + 4)
    assert run(module, init_params(module), np.ones((2, 3, 6, 6), np.float32))[0].shape == (2, 5)


@settings(max_examples=10, deadline=None)
@given(
    channels=st.integers(3, 6),
    data=st.data(),
    first=st.booleans(),
    pooled=st.booleans(),
)
def test_prune_through_concat_is_exact(channels, data, first, pooled):
    """conv a → bn → relu, concatenated (first or second) with conv b, → conv c
    → [max_pool] → flatten → fc. Pruning a equals zeroing its pruned rows: the
    kept slices of bn, c and (through the concat offset) nothing else move."""
    keep = data.draw(st.integers(2, channels - 1))  # a count: keep=1 is the ratio 1
    b = NetworkBuilder("joined", (1, 3, 4, 4))
    a = b.relu(b.batch_norm(b.conv2d(b.input, channels, 3, name="a"), name="bn"))
    other = b.conv2d(b.input, 3, 1, name="b")
    x = b.conv2d(b.concat([a, other] if first else [other, a]), 5, 3, name="c")
    if pooled:
        x = b.max_pool2d(x, 2)
    module = b.finish(b.dense(b.flatten(x), 4, name="fc"))
    store = ParamStore(init_params(module, seed=channels))
    x_in = minibatch(module, 4, 0)[0]
    apply(module, 'tconv-prune-channels{keep=%d layers="a" batch=4}' % keep, store)
    pruned = store.arrays[f"a_p{keep}.weight"]
    original = store.arrays["a.weight"]
    kept = [i for i in range(channels) if any(np.array_equal(row, original[i]) for row in pruned)]
    assert len(kept) == keep
    zeroed = dict(store.arrays)
    zeroed["a.weight"] = np.where(np.isin(np.arange(channels), kept)[:, None, None, None], original, 0)
    expected = run(small_original(channels, first, pooled), zeroed, x_in)[0]
    np.testing.assert_allclose(run(module, store.values_for(module), x_in)[0], expected, rtol=1e-5, atol=1e-5)


def small_original(channels, first, pooled):
    b = NetworkBuilder("joined", (1, 3, 4, 4))
    a = b.relu(b.batch_norm(b.conv2d(b.input, channels, 3, name="a"), name="bn"))
    other = b.conv2d(b.input, 3, 1, name="b")
    x = b.conv2d(b.concat([a, other] if first else [other, a]), 5, 3, name="c")
    if pooled:
        x = b.max_pool2d(x, 2)
    return b.finish(b.dense(b.flatten(x), 4, name="fc"))


# Capacity check ---------------------------------------------------------------


def test_capacity_check_refuses_with_both_values():
    module = small_net()
    text = module_text(module)
    x, labels = minibatch(module, 4, 1)
    before = measure(module, init_params(module), "naswot", x, labels).value
    rewritten = small_net()
    apply(rewritten, "tconv-group{groups=4}")
    after = measure(rewritten, init_params(rewritten), "naswot", x, labels).value
    with pytest.raises(PassFailedException) as err:
        apply(module, "tconv-group{groups=4 check-capacity=true metric=\"naswot\" min-capacity=1.5 batch=4 seed=1}")
    message = str(err.value)
    assert f"naswot capacity {before:.6g} before, {after:.6g} after" in message
    assert f"(ratio {after / before:.4g}, min-capacity 1.5; batch 4, seed 1)" in message
    assert module_text(module) == text
    apply(module, "tconv-group{groups=4 check-capacity=true metric=\"naswot\" min-capacity=0 batch=4 seed=1}")
    assert module_text(module) == module_text(rewritten)


# tconv-opt and the parameter store ------------------------------------------


def test_tconv_opt_writes_the_pruned_store(tmp_path):
    module = small_net()
    source = tmp_path / "net.mlir"
    arrays = init_params(module, seed=5)
    write_network(source, module, arrays)
    out = tmp_path / "out.mlir"
    assert opt_main([str(source), "-p", 'tconv-prune-channels{keep=0.5 layers="head"}', "-o", str(out)]) == 0
    store = load_store(store_path_for(out))
    names = {op.param_name for op in load_module(out).walk() if isinstance(op, ParamOp)}
    assert set(store) == names and "head.weight" not in store
    np.testing.assert_array_equal(store["conv2.weight"], arrays["conv2.weight"])  # survives unchanged
    # The kept rows of head's weight, found by value, select fc's columns.
    pruned, original = store["head_p8.weight"], arrays["head.weight"]
    kept = [i for i in range(16) if any(np.array_equal(row, original[i]) for row in pruned)]
    assert len(kept) == 8
    np.testing.assert_array_equal(store["fc_p8.weight"], arrays["fc.weight"][:, kept])


def test_tconv_opt_writes_nothing_when_refused(tmp_path, capsys):
    module = small_net()
    source = tmp_path / "net.mlir"
    write_network(source, module, init_params(module))
    out = tmp_path / "out.mlir"
    status = opt_main([str(source), "-p", "tconv-group{groups=2 check-capacity=true min-capacity=100}", "-o", str(out)])
    assert status == 1
    assert "refused: naswot capacity" in capsys.readouterr().err
    assert not out.exists() and not store_path_for(out).exists()
    assert opt_main([str(source), "-p", "tconv-group{groups=3 layers=\"conv2\"}", "-o", str(out)]) == 1
    assert not out.exists()


def test_tconv_opt_writes_a_store_only_where_the_input_has_one(tmp_path):
    module = small_net()
    bare = tmp_path / "bare.mlir"
    bare.write_text(module_text(module))
    out = tmp_path / "out.mlir"
    assert opt_main([str(bare), "-p", "tconv-group{groups=2}", "-o", str(out)]) == 0
    assert out.exists() and not store_path_for(out).exists()
    source = tmp_path / "net.mlir"
    write_network(source, module, init_params(module))
    batched = tmp_path / "batched.mlir"
    assert opt_main([str(source), "-p", "tconv-set-batch{batch=4}", "-o", str(batched)]) == 0
    assert batched.exists() and load_store(store_path_for(batched)).keys() == init_params(module).keys()
