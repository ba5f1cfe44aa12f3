"""tconv-spatial-strip at the value level: each strip's input rows and
padding by hand; with copied weights the strips compute exactly what the
original convolution did (any kernel, stride, dilation and padding, and
compiled by the LLVM backend); with `init=random` each strip starts on its
own; refusals are located; the capacity check gates it."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xdsl.passes import PassPipeline
from xdsl.utils.exceptions import PassFailedException

from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import make_context, module_text, parse_module, verify_module
from tconv.ir.ops import ConcatOp, Conv2dOp, SliceOp, shape_of
from tconv.ir.params import init_params
from tconv.lowering.llvm.artifact import run_llvm
from tconv.passes.analyses.capacity import measure, minibatch
from tconv.passes.analyses.summary import summarize
from tconv.passes.nas.spatial_strip import Strip, plan_strips
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.registry import PASSES
from tconv.semantics.reference import run


def apply(module, spec: str, store: ParamStore | None = None) -> ParamStore:
    store = store if store is not None else ParamStore()
    with using_store(store):
        PassPipeline.parse_spec(PASSES, spec).apply(make_context(), module)
    verify_module(module)
    return store


def net(height=9, kernel=3, stride=1, dilation=1, padding=(1, 1, 1, 1), bias=True, groups=1, channels=4, width=7):
    """conv (the one rewritten) → relu → global pool → fc."""
    b = NetworkBuilder("strip", (1, channels, height, width))
    x = b.conv2d(b.input, 2 * channels, kernel, stride=stride, padding=padding, dilation=dilation,
                 groups=groups, bias=bias, name="conv")
    return b.finish(b.dense(b.flatten(b.global_avg_pool(b.relu(x))), 3, name="fc"))


def strips_of(module) -> list[Conv2dOp]:
    return [op for op in module.walk() if isinstance(op, Conv2dOp)]


def test_strip_rows_and_padding_by_hand():
    # 3x3, stride 1, padding 1 on 9 rows: 9 output rows as 3 + 3 + 3.
    assert plan_strips(9, 9, 3, 1, 1, 1, 3) == [
        Strip(0, 3, 0, 4, 1, 0),  # the top strip keeps the top padding
        Strip(3, 3, 2, 5, 0, 0),  # an interior strip reads a halo row on each side
        Strip(6, 3, 5, 4, 0, 1),  # the bottom strip keeps the bottom padding
    ]
    # Stride 2 on 8 rows, padding 1: 4 output rows as 2 + 1 + 1; the last
    # output row ends at the last input row, so the bottom padding goes unread.
    assert plan_strips(8, 4, 3, 2, 1, 1, 3) == [Strip(0, 2, 0, 4, 1, 0), Strip(2, 1, 3, 3, 0, 0), Strip(3, 1, 5, 3, 0, 0)]
    # Dilation 2 with padding 2: an interior strip may still reach into the padding.
    assert plan_strips(3, 3, 3, 1, 2, 2, 3) == [Strip(0, 1, 0, 3, 2, 0), Strip(1, 1, 0, 3, 1, 1), Strip(2, 1, 0, 3, 0, 2)]


def test_rewrite_slices_rows_and_joins_the_strips_on_the_height():
    module = net()
    params, flops = summarize(module).parameters, summarize(module).flops
    apply(module, "tconv-spatial-strip{strips=3}")
    slices = [op for op in module.walk() if isinstance(op, SliceOp)]
    assert [op.bounds for op in slices] == [(2, 0, 4), (2, 2, 5), (2, 5, 4)]
    paddings = [tuple(c.padding.get_values()) for c in strips_of(module)]
    assert paddings == [(1, 1, 0, 1), (0, 1, 0, 1), (0, 1, 1, 1)]
    (concat,) = [op for op in module.walk() if isinstance(op, ConcatOp)]
    assert concat.axis.value.data == 2 and shape_of(concat.output) == (1, 8, 9, 7)
    # Each strip has its own weight and bias; the work is the original's.
    conv_params = 8 * 4 * 9 + 8
    assert summarize(module).parameters == params + 2 * conv_params
    assert summarize(module).flops == flops


@settings(max_examples=25, deadline=None)
@given(
    kernel=st.sampled_from([1, 2, 3, 5]),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    data=st.data(),
)
def test_copied_strips_compute_what_the_original_did(kernel, stride, dilation, data):
    span = dilation * (kernel - 1) + 1
    padding = tuple(data.draw(st.integers(0, span // 2 + 1)) for _ in range(4))
    height = data.draw(st.integers(max(span - padding[0] - padding[2], 1), 16))
    groups = data.draw(st.sampled_from([1, 2, 4]))
    # The strips cut rows; the width only has to hold the window.
    module = net(height, kernel, stride, dilation, padding, bias=data.draw(st.booleans()), groups=groups,
                 width=max(7, span))
    rows = shape_of(strips_of(module)[0].output)[2]
    strips = data.draw(st.integers(2, max(rows, 2)))
    store = ParamStore(init_params(module, seed=3))
    x = minibatch(module, 2, 0)[0]
    expected = run(module, store.values_for(module), x)[0]
    spec = f'tconv-spatial-strip{{strips={strips} init="inherit" layers="conv"}}'
    if strips > rows:
        with pytest.raises(PassFailedException, match=f"strips {strips} exceed its {rows} output rows"):
            apply(module, spec, store)
        return
    try:
        apply(module, spec, store)
    except PassFailedException as err:
        # Padding wider than the window: a strip of output rows made of padding alone.
        assert "reads only padding" in str(err) and max(padding[0], padding[2]) >= span
        return
    assert len(strips_of(module)) == strips
    np.testing.assert_allclose(run(module, store.values_for(module), x)[0], expected, rtol=1e-5, atol=1e-5)


def test_auto_on_a_trained_store_copies_and_random_starts_each_strip_afresh():
    module = net()
    store = ParamStore(init_params(module, seed=1), provenance={"weights": "trained"})
    x = minibatch(module, 2, 0)[0]
    expected = run(module, store.values_for(module), x)[0]
    copied = net()
    apply(copied, "tconv-spatial-strip{strips=2}", store)
    np.testing.assert_allclose(run(copied, store.values_for(copied), x)[0], expected, rtol=1e-5, atol=1e-5)
    assert store.provenance["weights"] == "inherited" and store.provenance["init"] == "inherit"

    fresh = ParamStore(init_params(module, seed=1), provenance={"weights": "trained"})
    apply(module, 'tconv-spatial-strip{strips=2 init="random"}', fresh)
    values = fresh.values_for(module)
    top, bottom = (values[f"conv_strip{i}.weight"] for i in range(2))
    assert top.shape == bottom.shape == fresh.arrays["conv.weight"].shape
    assert not np.allclose(top, bottom) and not np.allclose(top, fresh.arrays["conv.weight"])
    assert not np.allclose(run(module, values, x)[0], expected, atol=1e-3)


def test_the_llvm_backend_computes_the_strips_as_the_reference_does():
    module = net(height=10, stride=2, padding=(1, 0, 2, 1))
    apply(module, "tconv-spatial-strip{strips=3}")
    params = init_params(module, seed=2)
    x = np.random.default_rng(0).standard_normal((1, 4, 10, 7)).astype(np.float32)
    (actual,) = run_llvm(module, params, x, threads=1)
    np.testing.assert_allclose(actual, run(module, params, x)[0], rtol=1e-4, atol=1e-4)


def test_too_many_strips_is_a_located_refusal_and_a_pattern_skips():
    text = module_text(net(height=4, kernel=3, padding=0))
    module = parse_module(text, "strip.mlir")
    with pytest.raises(PassFailedException, match=re.escape(
        "tconv-spatial-strip: cannot rewrite conv: strips 3 exceed its 2 output rows (the convolution at strip.mlir:"
    )):
        apply(module, 'tconv-spatial-strip{strips=3 layers="conv"}')
    assert module_text(module) == text
    with pytest.raises(PassFailedException, match="no eligible convolution selected by layers='co\\*'"):
        apply(module, 'tconv-spatial-strip{strips=3 layers="co*"}')
    with pytest.raises(PassFailedException, match="strips must be at least 2, got 1"):
        apply(module, "tconv-spatial-strip{strips=1}")


def test_capacity_check_keeps_exact_strips_and_refuses_with_both_values():
    module = net()
    text = module_text(module)
    store = ParamStore(init_params(module))
    apply(module, 'tconv-spatial-strip{strips=2 check-capacity=true min-capacity=1 batch=4 seed=1}', store)
    assert len(strips_of(module)) == 2

    refused = parse_module(text)
    x, labels = minibatch(refused, 4, 1)
    before = measure(refused, init_params(refused), "naswot", x, labels).value
    with pytest.raises(PassFailedException) as err:
        apply(refused, 'tconv-spatial-strip{strips=2 init="random" check-capacity=true min-capacity=100 batch=4 seed=1}')
    assert f"naswot capacity {before:.6g} before" in str(err.value) and "the module is unchanged" in str(err.value)
    assert module_text(refused) == text
