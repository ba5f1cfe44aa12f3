"""Each tconv op compiled by the TVM lowering for this CPU, against the
reference executor, on hypothesis-generated shapes and properties.

Every example compiles its kernels (a fraction of a second each), so the
example counts are small; the strategies reach for the awkward cases: groups
and depthwise, stride 2, dilation, asymmetric padding, 1×1/3×3/7×7 kernels,
channel counts that fill no vector, batches above 1, and the fused epilogues
(batch-norm, residual add, ReLU/ReLU6).
"""

import re
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from op_cases import (
    EPILOGUES,
    conv_cases,
    conv_network,
    epilogue,
    pool_cases,
    slice_cases,
    slice_network,
    with_second_input,
)
from xdsl.dialects.builtin import ModuleOp

from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError
from tconv.ir.ops import Conv2dOp, shape_of
from tconv.ir.params import init_params
from tconv.ir.schedule import ConvSchedule
from tconv.kernels.templates import (
    ROWS_FIRST_ORDER,
    ROWS_FIRST_PARALLEL,
    TEMPLATE_ORDER,
    TEMPLATE_PARALLEL,
    TEMPLATE_UNROLL,
)
from tconv.lowering.tvm.build import lower_kernels, run_tvm
from tconv.semantics.reference import run

FEW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_params(module: ModuleOp, seed: int) -> dict[str, np.ndarray]:
    """Random values for every parameter, batch-norm variances positive, so
    that folding and biases are exercised (the initial values are trivial)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, value in init_params(module).items():
        if name.endswith("running_var"):
            params[name] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        else:
            params[name] = rng.standard_normal(value.shape).astype(np.float32)
    return params


def assert_matches_reference(module: ModuleOp, params: Mapping[str, np.ndarray], seed: int = 0) -> None:
    from tconv.semantics.reference import single_function

    rng = np.random.default_rng(seed + 1)
    inputs = [rng.standard_normal(shape_of(a)).astype(np.float32) for a in single_function(module).body.block.args]
    (actual,) = run_tvm(module, params, *inputs)
    (expected,) = run(module, params, *inputs)
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    error = np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30)
    assert error < 1e-4, f"relative error {error:.2e}"



# Convolution -------------------------------------------------------------------



@SOME
@given(conv_cases())
def test_conv2d(case):
    module = conv_network(case)
    assert_matches_reference(module, random_params(module, case["seed"]), case["seed"])


@FEW
@given(
    channels=st.integers(1, 20),
    kernel=st.sampled_from([3, 5]),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    size=st.integers(5, 17),
    batch=st.integers(1, 2),
    kind=EPILOGUES,
    seed=st.integers(0, 2**16),
)
def test_depthwise_conv2d(channels, kernel, stride, dilation, size, batch, kind, seed):
    b = NetworkBuilder("depthwise", (batch, channels, size, size))
    x = b.conv2d(b.input, channels, kernel, stride=stride, dilation=dilation, groups=channels, name="conv")
    module = b.finish(epilogue(b, x, kind))
    assert_matches_reference(module, random_params(module, seed), seed)


@FEW
@given(
    block=st.sampled_from([4, 8, 16]),
    blocks=st.integers(1, 3),
    kernel=st.sampled_from([3, 5]),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    padding=st.sampled_from([None, 0, (0, 1, 2, 1)]),
    size=st.integers(5, 17),
    batch=st.integers(1, 2),
    kind=st.sampled_from(["none", "relu6", "bn_relu6", "bn_add_relu6"]),
    seed=st.integers(0, 2**16),
)
def test_depthwise_conv2d_in_channel_blocks(block, blocks, kernel, stride, dilation, padding, size, batch, kind, seed):
    """MobileNet's inverted residual under `tconv-pack`: the depthwise
    convolution reads the expansion's NCHW[b]c and writes its own for the
    projection (padded row by row, or not at all without padding)."""
    from xdsl.passes import PassPipeline

    from tconv.ir.loader import make_context
    from tconv.ir.schedule import conv_layouts
    from tconv.passes.registry import PASSES

    channels = block * blocks
    size = max(size, dilation * (kernel - 1) + 1)
    b = NetworkBuilder("inverted_residual", (batch, 3, size, size))
    x = b.relu6(b.conv2d(b.input, channels, 1, name="expand"))
    if padding is None:
        padding = dilation * (kernel // 2)
    y = b.conv2d(x, channels, kernel, stride=stride, dilation=dilation, padding=padding, groups=channels, name="dw")
    if stride != 1 or padding != dilation * (kernel // 2):
        kind = "relu6"  # a residual needs the input's shape
    y = epilogue(b, y, kind)
    module = b.finish(b.conv2d(y, 5, 1, name="project"))
    PassPipeline.parse_spec(dict(PASSES), f"tconv-pack{{block={block}}}").apply(make_context(), module)
    (depthwise,) = [op for op in module.walk() if isinstance(op, Conv2dOp) and op.groups.value.data > 1]
    # A residual from the network's input (NCHW) keeps the fused output NCHW.
    packed = f"NCHW{block}c"
    layouts = conv_layouts(depthwise.schedule)
    assert (layouts.input, layouts.output) == (packed, "NCHW" if "add" in kind else packed)
    assert_matches_reference(module, random_params(module, seed), seed)


def scheduled(module: ModuleOp, schedule: ConvSchedule) -> ModuleOp:
    """`module` with `schedule` on its (one) convolution."""
    (conv,) = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    conv.properties["schedule"] = schedule.to_attr()
    module.verify()
    return module


@FEW
@given(conv_cases(), st.data())
def test_conv2d_honours_the_schedule_knobs(case, data):
    """Any channel block (dividing a group's channels where there are several
    groups) and any column tile compute the same numbers, in the template's
    full form or with only the tiles given."""
    out_group = case["out_channels"] // case["groups"]
    if case["channels"] == case["groups"] and out_group == 1:
        return  # depthwise: its own kernel, no schedule knobs yet
    blocks = [b for b in range(1, 33) if case["groups"] == 1 or out_group % b == 0]
    block = data.draw(st.sampled_from(blocks))
    width_tile = data.draw(st.integers(1, 9))
    # With one group, the parallel loops may run rows before channel blocks
    # (a loop order, so the template's full form).
    rows_first = case["groups"] == 1 and data.draw(st.booleans())
    full = rows_first or data.draw(st.booleans())
    order, parallel = (ROWS_FIRST_ORDER, ROWS_FIRST_PARALLEL) if rows_first else (TEMPLATE_ORDER, TEMPLATE_PARALLEL)
    schedule = ConvSchedule(
        {"oc": (block,), "ow": (width_tile,)},
        order if full else (), "oc.1" if full else None,
        TEMPLATE_UNROLL if full else frozenset(), parallel if full else (),
    )
    module = scheduled(conv_network(case), schedule)
    _, program = lower_kernels(module)
    assert any(re.search(rf"GxOBxCxKHxKWx{block}\b", t.name) for t in program.tensors), "block not honoured"
    assert_matches_reference(module, random_params(module, case["seed"]), case["seed"])


@pytest.mark.parametrize("rows_first", [False, True])
def test_the_parallel_loops_run_rows_first_where_the_order_says(rows_first):
    """The fused parallel loop of the direct template: batch, channel block,
    row; or batch, row, channel block."""
    b = NetworkBuilder("conv", (1, 8, 10, 10))
    order, parallel = (ROWS_FIRST_ORDER, ROWS_FIRST_PARALLEL) if rows_first else (TEMPLATE_ORDER, TEMPLATE_PARALLEL)
    schedule = ConvSchedule({"oc": (16,), "ow": (5,)}, order, "oc.1", TEMPLATE_UNROLL, parallel)
    module = scheduled(b.finish(b.conv2d(b.input, 32, 3, padding=1, name="conv")), schedule)
    kernels, _ = lower_kernels(module)
    fused = re.findall(r"for (\w+) in T\.parallel\(20\)", kernels.script())
    assert fused == (["b_y_o_0_fused"] if rows_first else ["b_o_0_y_fused"])
    assert_matches_reference(module, random_params(module, 0))


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        (ConvSchedule({"ic": (4,)}), "it tiles only loops oc, oh and ow, not 'ic'"),
        (ConvSchedule({"oc": (2, 4)}), "it splits 'oc' once, not 2 times"),
        (ConvSchedule({"oc": (3,)}), "a channel block of 3 does not divide the 4 output channels of a group"),
        (ConvSchedule(unroll=frozenset({"kh"})), "it unrolls kh, kw, ow.1, or kh, ow.1 with kw rolled, no other set"),
        (ConvSchedule(parallel=("n",)), "it runs n, g, oc.0, oh in parallel, no other set"),
        (ConvSchedule({"oc": (4,), "ow": (2,)}, order=ROWS_FIRST_ORDER, parallel=ROWS_FIRST_PARALLEL),
         "it runs rows before channel blocks only in a convolution of one group"),
        (ConvSchedule({"oc": (4,), "ow": (2,)}, order=("n", "g", "oc.0", "oh", "ow.0", "ic", "kh", "ow.1", "kw", "oc.1")),
         "its loop order is n, g, oc.0, oh, ow.0, ic, kh, kw, ow.1, oc.1"),
    ],
)
def test_schedules_outside_the_template_are_refused(schedule, reason):
    b = NetworkBuilder("conv", (1, 8, 6, 6))
    module = scheduled(b.finish(b.conv2d(b.input, 8, 3, padding=1, groups=2, name="conv")), schedule)
    with pytest.raises(TconvError, match=re.escape(f"tvm backend: cannot honour this schedule: {reason}")):
        run_tvm(module, init_params(module), np.zeros((1, 8, 6, 6), np.float32))


def test_conv2d_with_wide_blocks_and_tails():
    """Output channels past two vectors with a tail (40), a width tile tail (7
    columns), stride 2 and asymmetric padding together."""
    b = NetworkBuilder("wide", (1, 24, 14, 13))
    x = b.conv2d(b.input, 40, 3, stride=2, padding=(1, 0, 2, 1), name="conv")
    module = b.finish(epilogue(b, x, "bn_add_relu"))
    assert_matches_reference(module, random_params(module, 3))


@pytest.mark.parametrize("kernel", [1, 3])
def test_a_channel_block_of_three_vectors_is_vectorised_in_powers_of_two(kernel):
    """A block of 48 channels (3 AVX-512 vectors, 6 AVX2 ones) is vectorised
    as unrolled vectors of 16, not one <48 x float> (which LLVM rebuilt by
    shuffles through the stack at every step, 40x slower), and computes
    the same values."""
    b = NetworkBuilder("wide", (1, 24, 9, 9))
    x = b.conv2d(b.input, 96, kernel, padding=kernel // 2, name="conv")
    module = scheduled(b.finish(epilogue(b, x, "bn_relu")), ConvSchedule(tiles={"oc": (48,), "ow": (3,)}))
    assert_matches_reference(module, random_params(module, 4))
    kernels, _ = lower_kernels(module)
    text = kernels.script()
    assert "T.vectorized(16)" in text and "T.vectorized(48)" not in text


@pytest.mark.parametrize(("out_channels", "lanes"), [(12, 16), (3, 4), (6, 8)])
def test_a_channel_block_narrower_than_a_vector_is_padded_to_a_native_width(out_channels, lanes):
    """12 output channels run in one vector of 16 (4 zero-padded channels),
    not a <12 x float> the code generator splits into 8 + 4; 3 in 4 and 6
    in 8, on any host that has those lanes. The padded lanes are not stored."""
    from tconv.kernels.blocking import conv2d_blocking
    from tconv.kernels.target import host_vector_unit

    b = NetworkBuilder("narrow", (1, 20, 10, 11))
    x = b.conv2d(b.input, out_channels, 3, padding=1, name="conv")
    module = b.finish(epilogue(b, x, "bn_add_relu"))
    assert_matches_reference(module, random_params(module, 5))
    unit = host_vector_unit()
    if conv2d_blocking(1, out_channels, 11, unit).vector == "oc" and lanes <= unit.lanes:
        kernels, _ = lower_kernels(module)
        assert f"T.vectorized({lanes})" in kernels.script()


def test_pointwise_conv2d_with_a_position_tail():
    """The pointwise kernel over 7² = 49 flattened positions, batch 2, 40
    output channels: the models choose it for AVX2 and AVX-512 alike, in
    tiles of positions that leave a tail (10 and 25), and on AVX-512 a block
    of channels with a tail (16)."""
    b = NetworkBuilder("pointwise", (2, 24, 7, 7))
    x = b.conv2d(b.input, 40, 1, name="conv")
    module = b.finish(epilogue(b, x, "bn_add_relu"))
    (kernel,) = [name for name in lower_kernels(module)[0].functions if "conv" in name.name_hint]
    assert "pointwise" in kernel.name_hint
    assert_matches_reference(module, random_params(module, 5))


# Dense ---------------------------------------------------------------------------


@FEW
@given(
    batch=st.integers(1, 3),
    features=st.integers(1, 70),
    out_features=st.integers(1, 40),
    bias=st.booleans(),
    relu=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_dense(batch, features, out_features, bias, relu, seed):
    b = NetworkBuilder("dense", (batch, features, 1, 1))
    x = b.dense(b.flatten(b.input), out_features, bias=bias, name="fc")
    module = b.finish(b.relu(x) if relu else x)
    assert_matches_reference(module, random_params(module, seed), seed)


# Pooling -------------------------------------------------------------------------



@SOME
@given(pool_cases())
def test_pool2d(case):
    b = NetworkBuilder("pool", case["shape"])
    if case["kind"] == "max":
        x = b.max_pool2d(b.input, case["kernel"], stride=case["strides"], padding=case["padding"])
    else:
        x = b.avg_pool2d(
            b.input, case["kernel"], stride=case["strides"], padding=case["padding"],
            count_include_pad=case["kind"] == "avg_include_pad",
        )
    module = b.finish(x)
    assert_matches_reference(module, {}, case["seed"])


# Elementwise and layout ----------------------------------------------------------

SHAPES = st.tuples(st.integers(1, 2), st.integers(1, 12), st.integers(1, 9), st.integers(1, 9))


@FEW
@given(shape=SHAPES, kind=st.sampled_from(["bn", "bn_relu", "bn_relu6", "relu", "relu6", "add", "add_relu"]),
       seed=st.integers(0, 2**16))
def test_elementwise(shape, kind, seed):
    b = NetworkBuilder("elementwise", shape)
    x = b.input
    if kind.startswith("bn"):
        x = b.batch_norm(x, name="bn")
    elif kind.startswith("add"):
        x = b.add(x, with_second_input(b, shape))
    if kind.endswith("relu6"):
        x = b.relu6(x)
    elif kind.endswith("relu"):
        x = b.relu(x)
    module = b.finish(x)
    assert_matches_reference(module, random_params(module, seed), seed)


def test_batch_norm_of_dense_features():
    """batch_norm over NC input (after a dense layer that does not absorb it
    because the dense result has two users)."""
    b = NetworkBuilder("bn_nc", (3, 5, 1, 1))
    x = b.dense(b.flatten(b.input), 6, name="fc")
    module = b.finish(b.add(b.batch_norm(x, name="bn"), x))
    assert_matches_reference(module, random_params(module, 5))


@FEW
@given(shape=SHAPES, axis=st.integers(1, 3), extents=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       seed=st.integers(0, 2**16))
def test_concat(shape, axis, extents, seed):
    shapes = [tuple(e if d == axis else s for d, s in enumerate(shape)) for e in extents]
    b = NetworkBuilder("concat", shapes[0])
    parts = [b.input] + [with_second_input(b, s) for s in shapes[1:]]
    module = b.finish(b.concat(parts, axis=axis))
    assert_matches_reference(module, {}, seed)


@FEW
@given(slice_cases())
def test_slice(case):
    """A slice along any axis but the batch: a copy kernel."""
    assert_matches_reference(slice_network(case), {}, case["seed"])


@FEW
@given(
    batch=st.integers(1, 2),
    groups=st.integers(1, 4),
    per_group=st.integers(1, 4),
    size=st.integers(1, 6),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_layout_ops(batch, groups, per_group, size, data, seed):
    """slice_channels → channel_shuffle → global_avg_pool → flatten, every
    intermediate checked through the final result."""
    channels = groups * per_group + data.draw(st.integers(0, 5))
    start = data.draw(st.integers(0, channels - groups * per_group))
    b = NetworkBuilder("layout", (batch, channels, size, size + 1))
    x = b.slice_channels(b.input, start, groups * per_group)
    x = b.channel_shuffle(x, groups)
    # The flattened spatial values too, not only their means.
    module = b.finish(b.concat([b.flatten(x), b.flatten(b.global_avg_pool(x))], axis=1))
    assert_matches_reference(module, {}, seed)
