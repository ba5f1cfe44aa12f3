"""Winograd convolutions F(4×4, 3×3) (`tconv.lowering.tvm.winograd`): the
three kernels' computes, run on this CPU through the whole lowering (the
weight transform, batch-norm folding, the epilogue, the intermediates in the
plan), against the reference executor on hypothesis-generated shapes; the
CUDA schedules of the same computes are compiled in
tests/integration/test_tvm_cuda.py and run on a GPU by bench/gpu."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from op_cases import EPILOGUES, conv_network
from test_tvm_ops import random_params
from tconv.ir.ops import shape_of
from tconv.lowering.tvm.build import TvmNetwork, lower_kernels
from tconv.lowering.tvm.schedule_winograd import MatmulTile, default_tile, matmul_tile
from tconv.lowering.tvm.winograd import A_T, B_T, G, applies, padded_tiles, tile_grid, transform_weight
from tconv.runtime.reference import run, single_function

WINOGRAD_KINDS = ["winograd_input", "winograd_matmul", "winograd_output"]


@st.composite
def winograd_cases(draw):
    """A 3×3, stride-1, padding-1 convolution: odd and tiny images (below
    one 4×4 tile), channels that fill no vector, batches above 1."""
    return dict(
        batch=draw(st.integers(1, 3)),
        channels=draw(st.integers(1, 13)),
        out_channels=8 * draw(st.integers(1, 3)),
        kernel=(3, 3), strides=(1, 1), padding=(1, 1, 1, 1), dilations=(1, 1), groups=1,
        size=(draw(st.integers(1, 13)), draw(st.integers(1, 13))),
        bias=draw(st.booleans()),
        epilogue=draw(EPILOGUES),
        seed=draw(st.integers(0, 2**16)),
    )


@given(winograd_cases())
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_winograd_convolution_matches_the_reference(case):
    module = conv_network(case)
    params = random_params(module, case["seed"])
    network = TvmNetwork(module, winograd=True)
    assert [call.symbol.split("_", 1)[1] for call in network.program.calls] == WINOGRAD_KINDS
    network.load_params(params)
    rng = np.random.default_rng(case["seed"])
    inputs = [rng.standard_normal(shape_of(a)).astype(np.float32) for a in single_function(module).body.block.args]
    (actual,) = network.run(*inputs)
    (expected,) = run(module, params, *inputs)
    error = np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30)
    assert error < 1e-5, f"relative error {error:.2e}"


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
    assert applies((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    for kernel, strides, padding, dilations, groups in [
        ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1), ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
        ((3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1), ((3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),
        ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),
    ]:
        assert not applies(kernel, strides, padding, dilations, groups)
    assert tile_grid(14, 7) == (4, 2)
    assert padded_tiles(64, 28, 28, 128) == 3200  # 64 × 49 tiles, rounded up


def test_product_tiles():
    assert matmul_tile(256, 256) == MatmulTile(64, 128, 8, 8, 8)
    assert matmul_tile(64, 64) == MatmulTile(64, 128, 8, 8, 8)
    assert matmul_tile(40, 6) == MatmulTile(8, 128, 4, 8, 2)
    assert matmul_tile(20, 8) is None
    assert MatmulTile(128, 128, 8, 8, 8).threads == 256


def test_winograd_where_it_pays_on_a_gpu(monkeypatch):
    """By default a GPU runs a 3×3 as Winograd with 32 output channels or
    more and 4 tiles or more, in large blocks where they fill the GPU;
    `$TCONV_GPU_WINOGRAD=0` turns it off; a CPU never does."""
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
    assert kinds(2, 16, 28, "cpu") == ["conv2d"]
    monkeypatch.setenv("TCONV_GPU_WINOGRAD", "0")
    assert kinds(64, 128, 28, "cuda") == ["conv2d"]
    monkeypatch.delenv("TCONV_GPU_WINOGRAD")
    assert default_tile(64, 128, 128, 28, 28) == MatmulTile(64, 128, 8, 8, 8)  # 36 × 2 × 25 blocks
    assert default_tile(64, 96, 96, 28, 28) == MatmulTile(32, 128, 4, 8, 8)
    assert default_tile(1, 128, 128, 28, 28) == MatmulTile(32, 32, 4, 4, 8)  # 36 × 2 × 1 large ones
    assert default_tile(64, 12, 128, 28, 28) is None  # input channels 8 does not divide
