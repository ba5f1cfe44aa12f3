"""GSPC, the column-vectorised kernels of grouped and depthwise convolutions
(`tconv.lowering.tvm.schedule_gspc`): values against the reference executor
on hypothesis-generated shapes × knobs, the schedule language's mapping to
the knobs and its refusals, and the default choice between GSPC and the
direct template.

The kernel tests compile the compute of `ops` with the schedule of
`schedule_cpu` directly, for any knobs; the IR tests go through the
lowering, where a convolution's `schedule` sets the knobs.
"""

import re

import numpy as np
import pytest
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm import te

from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError
from tconv.ir.ops import Conv2dOp
from tconv.ir.params import init_params
from tconv.ir.schedule import ConvSchedule, parse_schedule
from tconv.kernels import blocking as kernel_blocking
from tconv.kernels.blocking import ConvBlocking
from tconv.kernels.packing import blocks, pack_conv2d_weight, pack_depthwise_weight
from tconv.kernels.templates import UnsupportedSchedule, template_blocking, template_schedule
from tconv.lowering.tvm import ops, schedule_cpu
from tconv.lowering.tvm.build import run_tvm
from tconv.lowering.tvm.target import VectorUnit, cpu_target
from tconv.semantics.reference import run

FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

AVX2 = VectorUnit(8, 16)
AVX512 = VectorUnit(16, 32)


# Cases ---------------------------------------------------------------------------


@st.composite
def grouped_cases(draw):
    """A grouped or depthwise convolution: groups 2..64, per-group channel
    counts that fill no vector, 1×1 to 7×7 windows, strides, dilations,
    padding, batches above 1."""
    groups = draw(st.sampled_from([2, 3, 4, 8, 16, 32, 64]))
    depthwise = draw(st.booleans())
    in_group = 1 if depthwise else draw(st.integers(1, 5))
    out_group = 1 if depthwise else draw(st.integers(1, 6))
    kernel = draw(st.sampled_from([1, 3, 3, 5, 7]))
    dilation = draw(st.integers(1, 2))
    extent = dilation * (kernel - 1) + 1
    pad = draw(st.integers(0, kernel // 2))
    return dict(
        batch=draw(st.integers(1, 2)),
        channels=groups * in_group,
        out_channels=groups * out_group,
        groups=groups,
        kernel=kernel,
        stride=draw(st.integers(1, 2)),
        dilation=dilation,
        padding=(pad, draw(st.integers(0, kernel // 2)), pad, draw(st.integers(0, kernel // 2))),
        size=(draw(st.integers(max(extent - 2 * pad, 1), 13)), draw(st.integers(max(extent, 1), 21))),
        seed=draw(st.integers(0, 2**16)),
    )


def depthwise(case) -> bool:
    return case["channels"] == case["groups"] == case["out_channels"]


@st.composite
def gspc_knobs(draw, case):
    """Knobs of the GSPC template for `case`: a channel block dividing a
    group's, 1 to 4 rows, any column tile (whole vectors or not), the
    kernel-column loop unrolled or not."""
    out_group = case["out_channels"] // case["groups"]
    block = draw(st.sampled_from([b for b in range(1, out_group + 1) if out_group % b == 0]))
    return ConvBlocking(
        block, draw(st.sampled_from([1, 3, 8, 12, 16])), vector="ow",
        rows=draw(st.integers(1, 4)), unroll_kw=draw(st.booleans()),
    )


def conv_network(case):
    b = NetworkBuilder("conv", (case["batch"], case["channels"], *case["size"]))
    return b.finish(b.conv2d(
        b.input, case["out_channels"], case["kernel"], stride=case["stride"], padding=case["padding"],
        dilation=case["dilation"], groups=case["groups"], bias=False, name="conv",
    ))


def random_inputs(module, seed):
    rng = np.random.default_rng(seed)
    params = {name: rng.standard_normal(v.shape).astype(np.float32) for name, v in init_params(module).items()}
    (conv,) = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    x = rng.standard_normal(tuple(conv.input.type.get_shape())).astype(np.float32)
    return params, x


def assert_close(actual, expected):
    assert actual.shape == expected.shape
    error = np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30)
    assert error < 1e-4, f"relative error {error:.2e}"


def run_kernel(case, blocking: ConvBlocking, params, x) -> np.ndarray:
    """The case's convolution computed by the kernel of `ops` with
    `blocking`, scheduled by `schedule_cpu`, compiled for this CPU."""
    weight = params["conv.weight"]
    stride, dilation = (case["stride"],) * 2, (case["dilation"],) * 2
    data = te.placeholder(x.shape, "float32", name="data")
    if depthwise(case):
        packed = pack_depthwise_weight(weight, blocking.block)
        w = te.placeholder(packed.shape, "float32", name="weight")
        out = ops.depthwise_conv2d(data, w, stride, case["padding"], dilation, blocking)
        function = schedule_cpu.schedule_depthwise_conv2d(te.create_prim_func([data, w, out]), blocking)
    else:
        packed = pack_conv2d_weight(weight, case["groups"], blocking.block)
        w = te.placeholder(packed.shape, "float32", name="weight")
        out = ops.conv2d(data, w, case["out_channels"], stride, case["padding"], dilation, blocking)
        function = schedule_cpu.schedule_conv2d(te.create_prim_func([data, w, out]), case["groups"], blocking)
    kernel = tvm.compile(tvm.IRModule({"main": function.with_attr("global_symbol", "main")}), cpu_target()).jit()
    device = tvm.cpu()
    result = tvm.runtime.empty(tuple(int(d) for d in out.shape), "float32", device)
    kernel["main"](tvm.runtime.tensor(x, device), tvm.runtime.tensor(packed, device), result)
    return result.numpy()


# Kernels ---------------------------------------------------------------------------


@FEW
@given(st.data())
def test_gspc_kernels_match_the_reference(data):
    case = data.draw(grouped_cases())
    blocking = data.draw(gspc_knobs(case))
    module = conv_network(case)
    params, x = random_inputs(module, case["seed"])
    (expected,) = run(module, params, x)
    assert_close(run_kernel(case, blocking, params, x), expected)


@FEW
@given(st.data())
def test_default_blockings_match_the_reference(data):
    """Whatever the backend picks by itself (GSPC or the direct template)
    computes the reference's numbers."""
    case = data.draw(grouped_cases())
    module = conv_network(case)
    params, x = random_inputs(module, case["seed"])
    (expected,) = run(module, params, x)
    (actual,) = run_tvm(module, params, x)
    assert_close(actual, expected)


def test_gspc_with_tails_in_rows_and_columns():
    """57 output columns in tiles of 16 and 7 rows in tiles of 3: both
    accumulate past the image and store only what is in it; stride 2 reads
    the second column phase."""
    case = dict(batch=2, channels=24, out_channels=12, groups=4, kernel=3, stride=2, dilation=1,
                padding=(1, 1, 1, 1), size=(13, 113), seed=5)
    module = conv_network(case)
    params, x = random_inputs(module, 5)
    (expected,) = run(module, params, x)
    assert_close(run_kernel(case, ConvBlocking(3, 16, vector="ow", rows=3), params, x), expected)


def test_depthwise_gspc_needs_a_block_of_one_channel():
    data = te.placeholder((1, 8, 6, 6), "float32")
    weight = te.placeholder((4, 3, 3, 2), "float32")
    with pytest.raises(ValueError, match="vectorised over columns, the weight block must be 1, got 2"):
        ops.depthwise_conv2d(data, weight, (1, 1), (1, 1, 1, 1), (1, 1), ConvBlocking(2, 8, vector="ow"))


def test_the_pointwise_kernel_refuses_a_column_blocking():
    data = te.placeholder((1, 8, 7, 7), "float32")
    weight = te.placeholder((4, 1, 2, 1, 1, 2), "float32")
    with pytest.raises(ValueError, match="pointwise conv2d: vectorises channels"):
        ops.pointwise_conv2d(data, weight, 8, ConvBlocking(2, 8, vector="ow"))


def test_blockings_that_cannot_be_run_are_rejected():
    with pytest.raises(ValueError, match="row tiles need the columns vectorised"):
        ConvBlocking(8, 4, rows=2)
    with pytest.raises(ValueError, match=r"vector must be one of \('oc', 'ow'\), got 'oh'"):
        ConvBlocking(8, 4, vector="oh")
    with pytest.raises(ValueError, match="rows before channel blocks is a choice of the direct template"):
        ConvBlocking(1, 8, vector="ow", rows_first=True)


# Schedules --------------------------------------------------------------------------


@pytest.mark.parametrize("is_depthwise", [False, True])
@pytest.mark.parametrize(
    "blocking",
    [
        ConvBlocking(1, 8, vector="ow"),
        ConvBlocking(1, 8, vector="ow", rows=4),
        ConvBlocking(1, 16, vector="ow", rows=2, unroll_kw=False),
        ConvBlocking(8, 4),
        ConvBlocking(8, 7, unroll_kw=False),
    ],
)
def test_the_template_schedule_of_a_blocking_maps_back_to_it(blocking, is_depthwise):
    """template_schedule writes the knobs in the schedule language;
    parse_schedule accepts it and template_blocking reads the same knobs
    back, whatever the default they override."""
    groups, out_group = (8, 1) if is_depthwise else (4, 8)
    schedule = parse_schedule(template_schedule(blocking, groups, is_depthwise).to_attr())
    for default in (ConvBlocking(2, 3), ConvBlocking(1, 5, vector="ow", rows=3)):
        assert template_blocking(schedule, groups, out_group, default, is_depthwise) == blocking


def test_a_rows_first_schedule_maps_back_to_its_blocking():
    blocking = ConvBlocking(16, 4, rows_first=True)
    schedule = parse_schedule(template_schedule(blocking, 1).to_attr())
    assert schedule.parallel == ("n", "g", "oh", "oc.0") and schedule.order[:4] == schedule.parallel
    assert template_blocking(schedule, 1, 64, ConvBlocking(8, 3)) == blocking
    assert template_blocking(schedule, 1, 64, ConvBlocking(8, 3, rows_first=True)) == blocking
    plain = template_schedule(ConvBlocking(16, 4), 1)
    assert template_blocking(plain, 1, 64, ConvBlocking(8, 3, rows_first=True)) == ConvBlocking(16, 4)
    # Tiles alone keep the default's order.
    assert template_blocking(ConvSchedule({"ow": (5,)}), 1, 64, ConvBlocking(8, 3, rows_first=True)).rows_first


def test_a_gspc_schedule_in_the_ir_names_the_loop_nest():
    schedule = template_schedule(ConvBlocking(2, 8, vector="ow", rows=4), 4)
    assert schedule.order == ("n", "g", "oc.0", "oh.0", "ow.0", "ic", "kh", "kw", "oc.1", "oh.1", "ow.1")
    assert schedule.vectorize == "ow.1" and schedule.parallel == ("n", "g", "oc.0", "oh.0")
    assert schedule.unroll == {"kh", "kw", "oc.1", "oh.1"}
    # With 8 groups or more, a task is a group: its channel blocks and row tiles run in order.
    one_row = template_schedule(ConvBlocking(1, 8, vector="ow"), 64, depthwise=True)
    assert one_row.order == ("n", "g", "oc.0", "oh", "ow.0", "ic", "kh", "kw", "oc.1", "ow.1")
    assert one_row.parallel == ("n", "g")


def test_partial_gspc_schedules_take_the_other_knobs_from_the_default():
    default = ConvBlocking(2, 8, vector="ow", rows=4)
    assert template_blocking(ConvSchedule({"oh": (2,)}), 4, 4, default) == ConvBlocking(2, 8, vector="ow", rows=2)
    # Tiles of oc and ow alone are the direct template's, as before GSPC.
    assert template_blocking(ConvSchedule({"oc": (4,), "ow": (3,)}), 4, 4, default) == ConvBlocking(4, 3)


GSPC_ORDER = ("n", "g", "oc.0", "oh.0", "ow.0", "ic", "kh", "kw", "oc.1", "oh.1", "ow.1")


@pytest.mark.parametrize(
    ("schedule", "is_depthwise", "reason"),
    [
        (ConvSchedule({"ic": (2,)}, vectorize=None), False, "it tiles only loops oc, oh and ow, not 'ic'"),
        (ConvSchedule({"oc": (3,), "oh": (2,)}), False,
         "a channel block of 3 does not divide the 4 output channels of a group (no tails across groups)"),
        (ConvSchedule({"oc": (2,), "oh": (2,), "ow": (8,)}, order=GSPC_ORDER[:8] + ("oh.1", "oc.1", "ow.1")), False,
         "its loop order is n, g, oc.0, oh.0, ow.0, ic, kh, kw, oc.1, oh.1, ow.1 (GSPC) for these tiles"),
        (ConvSchedule({"oc": (2,), "oh": (2,), "ow": (8,)}, unroll=frozenset({"kh", "oc.1"})), False,
         "it unrolls kh, kw, oc.1, oh.1 (GSPC), or kh, oc.1, oh.1 with kw rolled, no other set"),
        (ConvSchedule({"oc": (2,), "oh": (2,), "ow": (8,)}, parallel=("n", "g")), False,
         "it runs n, g, oc.0, oh.0 in parallel (GSPC), no other set"),
        (ConvSchedule({"oc": (2,), "oh": (2,)}), True,
         "a depthwise convolution has one channel per group: tile oc by 1, not 2"),
        (ConvSchedule({"g": (8,), "oh": (2,)}), True, "its channel block here is a tile of 'oc', not of 'g'"),
        (ConvSchedule({"oc": (8,), "ow": (4,)}), True, "its channel block here is a tile of 'g', not of 'oc'"),
        (ConvSchedule({"g": (8,), "ow": (4,)}), False, "it tiles only loops oc, oh and ow, not 'g'"),
    ],
)
def test_schedules_outside_the_templates_are_refused(schedule, is_depthwise, reason):
    default = ConvBlocking(1, 8, vector="ow", rows=4)
    with pytest.raises(UnsupportedSchedule, match=re.escape(reason)):
        template_blocking(schedule, 2, 1 if is_depthwise else 4, default, is_depthwise)


def scheduled(case, blocking: ConvBlocking):
    module = conv_network(case)
    (conv,) = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    conv.properties["schedule"] = template_schedule(blocking, case["groups"], depthwise(case)).to_attr()
    module.verify()
    return module


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_gspc_schedules_in_the_ir_are_honoured(data):
    case = data.draw(grouped_cases())
    module = scheduled(case, data.draw(gspc_knobs(case)))
    params, x = random_inputs(module, case["seed"])
    (expected,) = run(module, params, x)
    (actual,) = run_tvm(module, params, x)
    assert_close(actual, expected)


def test_a_direct_depthwise_schedule_in_the_ir_is_honoured():
    case = dict(batch=1, channels=12, out_channels=12, groups=12, kernel=3, stride=2, dilation=1,
                padding=(1, 1, 1, 1), size=(9, 11), seed=2)
    module = scheduled(case, ConvBlocking(8, 3, unroll_kw=False))
    params, x = random_inputs(module, 2)
    (expected,) = run(module, params, x)
    (actual,) = run_tvm(module, params, x)
    assert_close(actual, expected)


def test_a_schedule_outside_the_templates_is_refused_by_the_lowering():
    b = NetworkBuilder("conv", (1, 8, 6, 6))
    module = b.finish(b.conv2d(b.input, 8, 3, padding=1, groups=4, name="conv"))
    (conv,) = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    conv.properties["schedule"] = ConvSchedule({"oc": (2,), "oh": (2,)}, parallel=("n",)).to_attr()
    with pytest.raises(TconvError, match=re.escape(
        "tvm backend: cannot honour this schedule: it runs n, g, oc.0, oh.0 in parallel (GSPC)"
    )):
        run_tvm(module, init_params(module), np.zeros((1, 8, 6, 6), np.float32))


# Default choices ---------------------------------------------------------------------


@pytest.mark.parametrize("unit", [AVX2, AVX512])
@pytest.mark.parametrize(("groups", "out_group"), [(2, 32), (8, 8), (16, 4), (32, 2), (4, 12), (3, 5)])
def test_narrow_groups_vectorise_columns(unit, groups, out_group):
    blocking = kernel_blocking.conv2d_blocking(groups, out_group, 56, unit, out_height=56)
    narrow = out_group <= unit.lanes or out_group % unit.lanes != 0
    assert (blocking.vector == "ow") == narrow
    assert out_group % blocking.block == 0
    if narrow:
        vectors = -(-blocking.width_tile // unit.lanes)
        assert blocking.block * blocking.rows * vectors <= kernel_blocking.accumulator_budget(unit)
        assert not kernel_blocking.tiles_positions(groups, out_group, 7, 7, unit)


def test_dense_convolutions_keep_the_direct_template():
    assert kernel_blocking.conv2d_blocking(1, 4, 56, AVX2).vector == "oc"


def test_depthwise_convolutions_vectorise_columns_on_wide_images_only():
    wide = kernel_blocking.depthwise_blocking(64, 56, AVX2, out_height=56)
    assert wide.vector == "ow" and wide.block == 1
    assert kernel_blocking.depthwise_blocking(960, 7, AVX2, out_height=7).vector == "oc"


def test_the_gspc_model_prefers_full_vectors_and_shared_loads():
    lanes = AVX2.lanes
    full = kernel_blocking.column_efficiency(1, 8, 8, 1, 56, 56, (3, 3), lanes)
    ragged = kernel_blocking.column_efficiency(1, 8, 12, 1, 56, 56, (3, 3), lanes)  # 12 columns in 2 vectors
    short = kernel_blocking.column_efficiency(1, 1, 8, 1, 56, 56, (3, 3), lanes)  # one accumulator: latency-bound
    assert full == pytest.approx(1.0) and ragged < full and short < 0.2
    assert kernel_blocking.gspc_blocking(4, 56, 56, (3, 3), AVX2) in kernel_blocking.gspc_candidates(4, 56, 56, AVX2)


def test_gspc_candidates_fit_the_registers():
    for b in kernel_blocking.gspc_candidates(6, 9, 30, AVX2):
        assert 6 % b.block == 0 and b.rows <= 8 and b.width_tile <= 30
        assert b.block * b.rows * blocks(b.width_tile, AVX2.lanes) <= kernel_blocking.accumulator_budget(AVX2)


def test_the_depthwise_tile_lives_on_the_stack():
    """The GSPC depthwise kernel's accumulator tile is a stack array (which
    LLVM keeps in registers), not heap memory from TVMBackendAllocWorkspace
    as a "local" buffer of a CPU function gets: one workspace call per
    channel, for its padded copy, none for the tile."""
    from tconv.lowering.tvm.build import build_kernels
    from tconv.search.tuning import GSPC, Knobs, Workload, conv_network

    workload = Workload((1, 16, 20, 20), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 16)
    module = conv_network(workload, Knobs(GSPC, channels=1, columns=16, rows=8))
    executable, program = build_kernels(module, "cpu")
    assert [call.symbol for call in program.calls] == ["k0_depthwise_conv2d"]
    ir = executable.jit().inspect_source("ll")
    assert ir.count("load ptr, ptr @__TVMBackendAllocWorkspace") == 1
