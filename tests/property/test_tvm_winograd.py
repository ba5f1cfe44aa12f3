"""Winograd convolutions F(4×4, 3×3) (`tconv.kernels.winograd`), run
on this CPU through the whole lowering (the weight transform, batch-norm
folding, the epilogue, the intermediates in the plan), against the
reference executor on hypothesis-generated shapes: the CPU's scheduled
kernels (`schedule_winograd_cpu`), and the GPU's computes, unscheduled;
their CUDA schedules are compiled in tests/integration/test_tvm_cuda.py and
run on a GPU by bench/gpu."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from op_cases import EPILOGUES, conv_network
from test_tvm_ops import random_params

from tconv.ir.loader import TconvError, parse_module
from tconv.ir.ops import Conv2dOp, shape_of
from tconv.ir.schedule import ConvSchedule
from tconv.kernels.algorithm import DIRECT, GSPC, WINOGRAD, conv_shape, default_algorithm
from tconv.kernels.winograd import (
    A_T,
    B_T,
    G,
    MatmulTile,
    RegisterTile,
    applies,
    matmul_tile,
    padded_tiles,
    register_tile,
    tile_grid,
    transform_weight,
)
from tconv.kernels.winograd import gpu_default_tile as default_tile
from tconv.lowering.llvm.build import lower_program
from tconv.lowering.tvm.build import LoweringError, TvmNetwork, lower_kernels
from tconv.lowering.tvm.target import VectorUnit, cpu_target, vector_unit
from tconv.semantics.reference import run, single_function

WINOGRAD_KINDS = ["winograd_input", "winograd_matmul", "winograd_output"]
LANES = vector_unit(cpu_target()).lanes


@st.composite
def winograd_cases(draw, groups=st.just(1), out_group=st.sampled_from([8, 24, 40])):
    """A 3×3, stride-1, padding-1 convolution: odd and tiny images (below
    one 4×4 tile), channels that fill no vector, batches above 1. By
    default output channels no AVX-512 vector divides, which this CPU
    computes with the GPU's kernels."""
    groups = draw(groups)
    return dict(
        batch=draw(st.integers(1, 3)),
        channels=groups * draw(st.integers(1, 13)),
        out_channels=groups * draw(out_group),
        kernel=(3, 3), strides=(1, 1), padding=(1, 1, 1, 1), dilations=(1, 1), groups=groups,
        size=(draw(st.integers(1, 13)), draw(st.integers(1, 13))),
        bias=draw(st.booleans()),
        epilogue=draw(EPILOGUES),
        seed=draw(st.integers(0, 2**16)),
    )


def check_winograd(case, cpu_kernels: bool) -> None:
    """`case` lowered with `winograd=True`, its kernels the CPU's (or the
    GPU's computes), matches the reference executor."""
    module = conv_network(case)
    params = random_params(module, case["seed"])
    network = TvmNetwork(module, winograd=True)
    assert ("staged" in lower_kernels(module, winograd=True)[0].script()) == cpu_kernels
    assert_winograd_matches(network, module, params, case["seed"])


def assert_winograd_matches(network: TvmNetwork, module, params, seed: int) -> None:
    """`network` (of `module`) runs Winograd's three kernels and computes
    what the reference executor does, within Winograd's rounding."""
    assert [call.symbol.split("_", 1)[1] for call in network.program.calls] == WINOGRAD_KINDS
    network.load_params(params)
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(shape_of(a)).astype(np.float32) for a in single_function(module).body.block.args]
    (actual,) = network.run(*inputs)
    (expected,) = run(module, params, *inputs)
    error = np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30)
    assert error < 1e-5, f"relative error {error:.2e}"


@given(winograd_cases())
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_gpu_computes_match_the_reference(case):
    check_winograd(case, cpu_kernels=case["out_channels"] % LANES == 0)


@given(winograd_cases(groups=st.sampled_from([1, 1, 2, 3]), out_group=st.sampled_from([LANES, 2 * LANES, 3 * LANES])))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_cpu_kernels_match_the_reference(case):
    """The CPU's kernels: channel blocks padded past the input channels,
    one or two vectors of output channels a register tile, groups, tiles
    that no register tile of 28 divides (batch 1 of 5 × 13: 2 × 4 tiles)."""
    check_winograd(case, cpu_kernels=True)


def test_transforms_are_lavin_and_grays():
    """Aᵀ[(Gg) ⊙ (Bᵀd)] of a 1-d window d and filter g is their 4-output correlation."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal(6), rng.standard_normal(3)
    want = [d[i:i + 3] @ g for i in range(4)]
    np.testing.assert_allclose(A_T @ ((G @ g) * (B_T @ d)), want, rtol=1e-12, atol=1e-12)


def test_weight_transform_layout():
    """U[e, c, k] = (G g[k, c] Gᵀ)[e // 6, e % 6]."""
    weight = np.random.default_rng(1).standard_normal((5, 3, 3, 3)).astype(np.float32)
    u = transform_weight(weight)
    assert u.shape == (36, 3, 5) and u.dtype == np.float32
    np.testing.assert_allclose(u[7, 2, 4], (G @ weight[4, 2] @ G.T)[1, 1], rtol=1e-6)


def test_what_winograd_computes():
    assert applies((3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    for kernel, strides, padding, dilations in [
        ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1)), ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
        ((3, 3), (1, 1), (0, 0, 0, 0), (1, 1)), ((3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),
    ]:
        assert not applies(kernel, strides, padding, dilations)
    assert tile_grid(14, 7) == (4, 2)
    assert padded_tiles(64, 28, 28, 128) == 3200  # 64 × 49 tiles, rounded up


def test_product_tiles():
    assert matmul_tile(256, 256) == MatmulTile(64, 128, 8, 8, 8)
    assert matmul_tile(64, 64) == MatmulTile(64, 128, 8, 8, 8)
    assert matmul_tile(40, 6) == MatmulTile(8, 128, 4, 8, 2)
    assert matmul_tile(20, 8) is None
    assert MatmulTile(128, 128, 8, 8, 8).threads == 256


def test_winograd_where_it_pays_on_a_gpu(monkeypatch):
    """By default a GPU runs a 3×3 of one group as Winograd with 32 output
    channels or more and 4 tiles or more, in large blocks where they fill
    the GPU; `$TCONV_GPU_WINOGRAD=0` turns it off."""
    from tconv.ir.builder import NetworkBuilder

    def kinds(batch, channels, size, target, **options):
        b = NetworkBuilder("c", (batch, channels, size, size))
        module = b.finish(b.conv2d(b.input, channels, 3, padding=1))
        return [call.symbol.split("_", 1)[1] for call in lower_kernels(module, target, **options)[1].calls]

    assert kinds(64, 128, 28, "cuda") == WINOGRAD_KINDS
    assert kinds(1, 128, 28, "cuda") == WINOGRAD_KINDS
    assert kinds(1, 512, 4, "cuda") == ["conv2d"]  # one tile
    assert kinds(64, 16, 28, "cuda") == ["conv2d"]
    assert kinds(64, 128, 28, "cuda", winograd=False) == ["conv2d"]
    monkeypatch.setenv("TCONV_GPU_WINOGRAD", "0")
    assert kinds(64, 128, 28, "cuda") == ["conv2d"]
    monkeypatch.delenv("TCONV_GPU_WINOGRAD")
    assert default_tile(64, 128, 128, 28, 28) == MatmulTile(64, 128, 8, 8, 8)  # 36 × 2 × 25 blocks
    assert default_tile(64, 96, 96, 28, 28) == MatmulTile(32, 128, 4, 8, 8)
    assert default_tile(1, 128, 128, 28, 28) == MatmulTile(32, 32, 4, 4, 8)  # 36 × 2 × 1 large ones
    assert default_tile(64, 12, 128, 28, 28) is None  # input channels 8 does not divide


def kinds_on_cpu(batch, channels, size, groups=1, schedule=False, **options):
    from tconv.ir.builder import NetworkBuilder
    from tconv.search.tuning import Workload, direct, schedule_of

    b = NetworkBuilder("c", (batch, channels, size, size))
    module = b.finish(b.conv2d(b.input, channels, 3, padding=1, groups=groups))
    if schedule:
        (conv,) = [op for op in module.walk() if op.name == "tconv.conv2d"]
        workload = Workload((batch, channels, size, size), channels, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), groups)
        conv.properties["schedule"] = schedule_of(workload, direct(LANES, 4)).to_attr()
    return [call.symbol.split("_", 1)[1] for call in lower_kernels(module, "cpu", **options)[1].calls]


def test_winograd_where_it_pays_on_a_cpu(monkeypatch):
    """By default a CPU runs a 3×3 as Winograd with 16 tiles or more, 16
    input channels a group or more, 32 output channels or more and a
    group's output channels a multiple of the vector: not with a schedule
    in the IR, not where `$TCONV_CPU_WINOGRAD=0`."""
    assert kinds_on_cpu(1, 4 * LANES, 16) == WINOGRAD_KINDS  # 16 tiles
    assert kinds_on_cpu(1, 32, 28, groups=2) == WINOGRAD_KINDS
    assert kinds_on_cpu(1, 4 * LANES, 12) == ["conv2d"]  # 9 tiles
    assert kinds_on_cpu(1, 16, 28) == ["conv2d"]  # 16 output channels
    assert kinds_on_cpu(1, 32, 28, groups=4) == ["conv2d"]  # 8 input channels a group
    assert kinds_on_cpu(1, 2 * LANES, 56, groups=4) == ["conv2d"]  # half a vector a group
    assert kinds_on_cpu(1, 4 * LANES, 16, schedule=True) == ["conv2d"]
    assert kinds_on_cpu(1, 4 * LANES, 16, winograd=False) == ["conv2d"]
    monkeypatch.setenv("TCONV_CPU_WINOGRAD", "0")
    assert kinds_on_cpu(1, 4 * LANES, 16) == ["conv2d"]


def test_cpu_register_tiles():
    """Two vectors of output channels where they divide a group, and the most
    tiles that divide the tile count, leaving 4 registers free: 28
    accumulators on AVX-512, 12 on AVX2."""
    avx512, avx2 = VectorUnit(16, 32), VectorUnit(8, 16)
    assert register_tile(196, 64, avx512) == RegisterTile(14, 2, 16)  # 64 channels at 56²
    assert register_tile(49, 128, avx512) == RegisterTile(7, 2, 16)
    assert register_tile(196, 16, avx512) == RegisterTile(28, 1, 16)
    assert register_tile(13, 48, avx512) == RegisterTile(13, 1, 16)
    assert register_tile(17, 32, avx512) == RegisterTile(1, 2, 16)  # a prime above 14
    assert register_tile(64, 8, avx512) is None
    assert register_tile(196, 64, avx2) == RegisterTile(4, 2, 8)
    assert register_tile(196, 8, avx2) == RegisterTile(7, 1, 8)


# The schedule's `algorithm` ---------------------------------------------------------


def with_algorithm(module, algorithm: str):
    """`module` with its convolution's schedule `{algorithm = ...}`."""
    (conv,) = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    conv.properties["schedule"] = ConvSchedule(algorithm=algorithm).to_attr()
    module.verify()
    return module


def kinds(module, target="cpu"):
    return [call.symbol.split("_", 1)[1] for call in lower_kernels(module, target)[1].calls]


@given(winograd_cases(groups=st.sampled_from([1, 1, 2]), out_group=st.sampled_from([8, LANES, 2 * LANES])))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_schedule_asking_for_winograd_matches_the_reference(case):
    """`algorithm = "winograd"` in the IR: the TVM backend computes the
    convolution as Winograd's (the CPU's kernels, or the GPU's computes
    where a vector does not divide a group's channels), as the reference
    executor does; the LLVM backend, which has no Winograd kernel, refuses
    it at the op."""
    if case["groups"] > 1 and (case["out_channels"] // case["groups"]) % LANES:
        case = {**case, "groups": 1}
    module = with_algorithm(conv_network(case), WINOGRAD)
    assert_winograd_matches(TvmNetwork(module), module, random_params(module, case["seed"]), case["seed"])
    with pytest.raises(TconvError, match="llvm backend: has no Winograd kernel"):
        lower_program(module)


ASKS_FOR_WINOGRAD = """func.func @f(%x: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 schedule {algorithm = "ALGORITHM"} : (tensor<1x8x8x8xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}
"""


@pytest.mark.parametrize("algorithm, kernel", [("winograd", "Winograd"), ("gspc", "GSPC")])
def test_the_llvm_backend_refuses_an_algorithm_it_lacks_at_the_op(algorithm, kernel):
    module = parse_module(ASKS_FOR_WINOGRAD.replace("ALGORITHM", algorithm), "net.mlir")
    with pytest.raises(TconvError) as refusal:
        lower_program(module)
    assert str(refusal.value).startswith(
        f"net.mlir:3:3: error: llvm backend: has no {kernel} kernel (algorithm {algorithm})"
    )
    direct = parse_module(ASKS_FOR_WINOGRAD.replace("ALGORITHM", "direct"), "net.mlir")
    assert len(lower_program(direct)[1].calls) == 1


def test_an_explicit_algorithm_overrides_the_default():
    """A 3×3 the CPU runs as Winograd by default runs direct where its
    schedule says so, and a grouped convolution GSPC or the direct template
    as asked; on cuda, GSPC is refused at the op."""
    from tconv.ir.builder import NetworkBuilder

    def conv(channels, size, groups=1):
        b = NetworkBuilder("c", (1, channels, size, size))
        return b.finish(b.conv2d(b.input, channels, 3, padding=1, groups=groups))

    dense = conv(4 * LANES, 16)
    assert default_algorithm(conv_shape(next(iter(_convs(dense)))), vector_unit(cpu_target())) == WINOGRAD
    assert kinds(dense) == WINOGRAD_KINDS
    assert kinds(with_algorithm(conv(4 * LANES, 16), DIRECT)) == ["conv2d"]
    grouped = conv(32, 28, groups=8)  # 4 channels a group: GSPC by default
    unit = vector_unit(cpu_target())
    assert default_algorithm(conv_shape(next(iter(_convs(grouped)))), unit) == GSPC
    for algorithm in (GSPC, DIRECT):
        module = with_algorithm(conv(32, 28, groups=8), algorithm)
        network = TvmNetwork(module)
        params = random_params(module, 0)
        network.load_params(params)
        x = np.random.default_rng(0).standard_normal((1, 32, 28, 28)).astype(np.float32)
        np.testing.assert_allclose(network.run(x)[0], run(module, params, x)[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(LoweringError, match="tvm backend: cuda has no GSPC kernel"):
        lower_kernels(with_algorithm(conv(32, 28, groups=8), GSPC), "cuda")


def _convs(module):
    return [op for op in module.walk() if isinstance(op, Conv2dOp)]


def test_one_decision_of_winograd_on_a_gpu(monkeypatch):
    """The lowering and the CUDA tuner ask the same function, which honours
    `$TCONV_GPU_WINOGRAD` (0: never by default; 1: every convolution it
    computes with one group)."""
    from tconv.search.cuda_tuning import runs_winograd
    from tconv.search.tuning import workload_of

    def module(batch, channels, size):
        from tconv.ir.builder import NetworkBuilder

        b = NetworkBuilder("c", (batch, channels, size, size))
        return b.finish(b.conv2d(b.input, channels, 3, padding=1))

    big, small = module(1, 64, 28), module(1, 12, 4)
    assert runs_winograd(workload_of(_convs(big)[0])) and kinds(big, "cuda") == WINOGRAD_KINDS
    assert not runs_winograd(workload_of(_convs(small)[0])) and kinds(small, "cuda") == ["conv2d"]
    monkeypatch.setenv("TCONV_GPU_WINOGRAD", "0")
    assert not runs_winograd(workload_of(_convs(big)[0])) and kinds(big, "cuda") == ["conv2d"]
    monkeypatch.setenv("TCONV_GPU_WINOGRAD", "1")
    small = module(1, 16, 4)
    assert runs_winograd(workload_of(_convs(small)[0])) and kinds(small, "cuda") == WINOGRAD_KINDS
