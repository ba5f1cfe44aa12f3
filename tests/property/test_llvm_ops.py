"""Each tconv op compiled by the LLVM backend and run by the C runtime,
against the reference executor, on hypothesis-generated shapes, and
convolutions under hypothesis-generated schedules.

Every example compiles a kernel library (a fraction of a second), so the
example counts are small; the strategies reach for the awkward cases: groups
and depthwise, stride 2, dilation, asymmetric padding, 1×1/3×3/7×7 kernels,
channel counts that fill no vector, batches above 1, the fused epilogues,
and schedules whose tiles leave tails, in any loop order.
"""

from collections.abc import Mapping

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from op_cases import (
    EPILOGUES, conv_cases, conv_network, epilogue, pool_cases, slice_cases, slice_network, with_second_input,
)
from support import relative_error
from xdsl.dialects.builtin import ModuleOp

from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import Conv2dOp, shape_of
from tconv.ir.params import init_params
from tconv.ir.schedule import LOOPS, REDUCTION_LOOPS, ConvSchedule, loop_name
from tconv.lowering.llvm.artifact import run_llvm
from tconv.semantics.reference import run, single_function

FEW = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_params(module: ModuleOp, seed: int) -> dict[str, np.ndarray]:
    """Random values for every parameter, batch-norm variances positive."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, value in init_params(module).items():
        low = 0.5 if name.endswith("running_var") else -1.0
        params[name] = rng.uniform(low, 2.0 if low > 0 else 1.0, value.shape).astype(np.float32)
    return params


def assert_matches_reference(module: ModuleOp, params: Mapping[str, np.ndarray], seed: int = 0, threads: int = 2) -> None:
    rng = np.random.default_rng(seed + 1)
    inputs = [rng.standard_normal(shape_of(a)).astype(np.float32) for a in single_function(module).body.block.args]
    (actual,) = run_llvm(module, params, *inputs, threads=threads)
    (expected,) = run(module, params, *inputs)
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    error = relative_error(actual, expected)
    assert error < 1e-4, f"relative error {error:.2e}"



# Convolution ---------------------------------------------------------------------



@SOME
@given(conv_cases())
def test_conv2d(case):
    module = conv_network(case)
    assert_matches_reference(module, random_params(module, case["seed"]), case["seed"])


@FEW
@given(
    channels=st.integers(1, 20), kernel=st.sampled_from([3, 5]), stride=st.integers(1, 2),
    dilation=st.integers(1, 2), size=st.integers(5, 17), batch=st.integers(1, 2), kind=EPILOGUES,
    seed=st.integers(0, 2**16),
)
def test_depthwise_conv2d(channels, kernel, stride, dilation, size, batch, kind, seed):
    b = NetworkBuilder("depthwise", (batch, channels, size, size))
    x = b.conv2d(b.input, channels, kernel, stride=stride, dilation=dilation, padding=kernel // 2,
                 groups=channels, name="conv")
    module = b.finish(epilogue(b, x, kind))
    assert_matches_reference(module, random_params(module, seed), seed)


def conv_extents(module: ModuleOp) -> dict[str, int]:
    """The extent of each loop n, g, oc, oh, ow, ic, kh, kw of the module's convolution."""
    (conv,) = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    groups = conv.groups.value.data
    batch, _, _, _ = shape_of(conv.input)
    out_channels, in_group, kh, kw = shape_of(conv.weight)
    _, _, out_height, out_width = shape_of(conv.output)
    return dict(n=batch, g=groups, oc=out_channels // groups, oh=out_height, ow=out_width, ic=in_group, kh=kh, kw=kw)


@st.composite
def schedules(draw, extents: Mapping[str, int]) -> ConvSchedule:
    """Any schedule the verifier accepts and the backend's limits allow:
    tiles (with tails) of any loops, any order, the innermost loop
    vectorized where data-parallel, small loops unrolled, a data-parallel
    prefix parallel."""
    tiles = {}
    for loop in draw(st.lists(st.sampled_from(LOOPS), unique=True, max_size=3)):
        tiles[loop] = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=2)))
    names = ConvSchedule(tiles).loops()

    def extent(name: str) -> int:
        factors = tiles.get(loop_name(name), ())
        if not factors or name.endswith(".0"):
            inner = int(np.prod(factors)) if factors else 1
            return -(-extents[loop_name(name)] // inner)
        return factors[int(name.split(".")[1]) - 1]

    order = tuple(draw(st.permutations(names)))
    innermost = order[-1]
    vectorize = None
    if loop_name(innermost) not in REDUCTION_LOOPS and 1 < extent(innermost) <= 64 and draw(st.booleans()):
        vectorize = innermost
    unroll, copies = set(), 1
    for name in draw(st.lists(st.sampled_from(order), unique=True, max_size=3)):
        if name != vectorize and copies * extent(name) <= 64:
            unroll.add(name)
            copies *= extent(name)
    prefix = 0
    while prefix < len(order) - 1 and loop_name(order[prefix]) not in REDUCTION_LOOPS and order[prefix] not in unroll:
        prefix += 1
    parallel = order[: draw(st.integers(0, prefix))]
    return ConvSchedule(tiles, order, vectorize, frozenset(unroll), parallel)


def scheduled(module: ModuleOp, schedule: ConvSchedule) -> ModuleOp:
    """`module` with `schedule` on its (one) convolution, verified."""
    (conv,) = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    conv.properties["schedule"] = schedule.to_attr()
    module.verify()
    return module


@SOME
@given(conv_cases(), st.data())
def test_conv2d_under_any_schedule(case, data):
    """Whatever the tiles (tails included), order, vectorized, unrolled and
    parallel loops, the numbers are the reference's."""
    module = conv_network(case)
    schedule = data.draw(schedules(conv_extents(module)))
    module = scheduled(module, schedule)
    assert_matches_reference(module, random_params(module, case["seed"]), case["seed"])


@FEW
@given(conv_cases(), st.integers(1, 20), st.integers(1, 9))
def test_conv2d_template_knobs(case, block, width_tile):
    """A schedule of only the two tile knobs (what `tconv tune` writes) runs
    the template with them, whatever tails they leave."""
    module = scheduled(conv_network(case), ConvSchedule({"oc": (block,), "ow": (width_tile,)}))
    assert_matches_reference(module, random_params(module, case["seed"]), case["seed"])


# Dense, pooling, elementwise, layout ------------------------------------------------


@FEW
@given(
    batch=st.integers(1, 3), features=st.integers(1, 70), out_features=st.integers(1, 40),
    bias=st.booleans(), relu=st.booleans(), seed=st.integers(0, 2**16),
)
def test_dense(batch, features, out_features, bias, relu, seed):
    b = NetworkBuilder("dense", (batch, features, 1, 1))
    x = b.dense(b.flatten(b.input), out_features, bias=bias, name="fc")
    module = b.finish(b.relu(x) if relu else x)
    assert_matches_reference(module, random_params(module, seed), seed)



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
    assert_matches_reference(b.finish(x), {}, case["seed"])


SHAPES = st.tuples(st.integers(1, 2), st.integers(1, 12), st.integers(1, 9), st.integers(1, 19))


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


@FEW
@given(shape=SHAPES, axis=st.integers(1, 3), extents=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       seed=st.integers(0, 2**16))
def test_concat(shape, axis, extents, seed):
    shapes = [tuple(e if d == axis else s for d, s in enumerate(shape)) for e in extents]
    b = NetworkBuilder("concat", shapes[0])
    parts = [b.input] + [with_second_input(b, s) for s in shapes[1:]]
    assert_matches_reference(b.finish(b.concat(parts, axis=axis)), {}, seed)


@FEW
@given(slice_cases())
def test_slice(case):
    """A slice along any axis but the batch: a copy kernel."""
    assert_matches_reference(slice_network(case), {}, case["seed"])


@FEW
@given(batch=st.integers(1, 2), groups=st.integers(1, 4), per_group=st.integers(1, 4), size=st.integers(1, 6),
       data=st.data(), seed=st.integers(0, 2**16))
def test_layout_ops(batch, groups, per_group, size, data, seed):
    """slice_channels → channel_shuffle → global_avg_pool → flatten, every
    intermediate checked through the final result."""
    channels = groups * per_group + data.draw(st.integers(0, 5))
    start = data.draw(st.integers(0, channels - groups * per_group))
    b = NetworkBuilder("layout", (batch, channels, size, size + 1))
    x = b.channel_shuffle(b.slice_channels(b.input, start, groups * per_group), groups)
    module = b.finish(b.concat([b.flatten(x), b.flatten(b.global_avg_pool(x))], axis=1))
    assert_matches_reference(module, {}, seed)
