"""Winograd convolution F(4×4, 3×3): a 3×3, stride-1 convolution in 4× fewer multiplies.

Lavin & Gray's minimal filtering (points 0, ±1, ±2, ∞): each 4×4 tile of
the output comes from the 6×6 window of input around it as

    Y = Aᵀ [ Σ_c (G g G ᵀ) ⊙ (Bᵀ d B) ] A

so that, with the 36 products of a tile gathered by position, the
convolution becomes 36 independent matrix products over the channels. Three
kernels compute it (`winograd_ops`), each over NCHW and the intermediates
below (every tensor dense, float32):

- `input_transform`: V[e, c, p] = (Bᵀ d B)[e] for the window d of tile p
  (tiles numbered image, tile row, tile column; the padding and the tiles
  past the image's edge read zeros). V's tile axis is `tiles` rounded up to
  `tile_align`, its extra tiles zero, so the product needs no tail;
- `batched_matmul`: M[e, k, p] = Σ_c U[e, c, k] · V[e, c, p], where
  U[e, c, k] = (G g G ᵀ)[e] of the weight g[k, c] is computed once, from
  the parameters (`transform_weight`);
- `output_transform`: Y[n, k, y, x] = epilogue((Aᵀ M A)[y mod 4, x mod 4])
  of tile (n, y div 4, x div 4), the rows and columns past the image dropped.

That is the GPU's layout, tiles innermost. A CPU's kernels (`*_channels`,
`grouped_matmul`) keep the channels innermost instead, V[e, p, c] and
M[e, p, k], for its vector unit, and compute each group's product apart.

In fp32 the result differs from a direct convolution's by about 3e-6
(relative, in norm) on ResNet's layers, against 2e-7 for direct fp32.

How big a product's tile is, and whether a target computes a convolution
as Winograd's by default, are choices of shape alone, here too: a CPU's
register tile (`register_tile`, `cpu_default_tile`) and a GPU's thread
block tile (`matmul_tile`, `gpu_default_tile`); `tconv.kernels.algorithm`
decides the algorithm by them.

This module is numpy alone: the weight transform runs where an artifact's
parameters are written, which may have no TVM.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tconv.kernels.packing import blocks
from tconv.kernels.target import VectorUnit

OUT_TILE = 4
"""Output rows and columns per tile (the m of F(m×m, 3×3))."""

WINDOW = OUT_TILE + 2
"""Input rows and columns per tile's window."""

POSITIONS = WINDOW * WINDOW
"""Products per tile: the batch of the matrix products."""

B_T = np.array([
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
], np.float64)
G = np.array([
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
], np.float64)
A_T = np.array([
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
], np.float64)


def applies(kernel: Sequence[int], strides: Sequence[int], padding: Sequence[int], dilations: Sequence[int]) -> bool:
    """Whether a convolution is one this algorithm computes: 3×3, stride 1,
    no dilation, padding 1 on every side (any groups: each group's product
    is its own; the GPU's kernels take one group)."""
    return (tuple(kernel) == (3, 3) and tuple(strides) == (1, 1) and tuple(dilations) == (1, 1)
            and tuple(padding) == (1, 1, 1, 1))


def tile_grid(height: int, width: int) -> tuple[int, int]:
    """Tile rows and columns covering an output of `height` × `width`."""
    return blocks(height, OUT_TILE), blocks(width, OUT_TILE)


def padded_tiles(batch: int, height: int, width: int, tile_align: int) -> int:
    """The tile axis of V and M: every tile of the batch, rounded up to `tile_align`."""
    rows, columns = tile_grid(height, width)
    return blocks(batch * rows * columns, tile_align) * tile_align


def transform_weight(weight: np.ndarray) -> np.ndarray:
    """U (POSITIONS × C × K) of a K × C × 3 × 3 weight, computed in float64."""
    u = np.einsum("xi,kcij,yj->xyck", G, weight.astype(np.float64), G)
    return np.ascontiguousarray(u.reshape(POSITIONS, *u.shape[2:]), np.float32)


# A CPU's product tile ----------------------------------------------------------

SPARE_REGISTERS = 4
"""Vector registers a product tile leaves free of accumulators: its step's
two loads of output channels, the broadcast tile value, one more. On
AVX-512 that is 28 accumulators (14 × 2); 7 × 4 (28 accumulators with 4
loads, 33 live) spills and runs far slower than 7 × 2 (docs/benchmarks.md,
Measurements behind the schedules)."""

CPU_MIN_TILES = 16
"""The fewest tiles (batch × tile rows × tile columns) a CPU computes as a
Winograd convolution by default: below, U (36 × C × K) is read for too few
products: 512 channels at 7² (4 tiles) runs slower than direct, 256 at
14² (16 tiles) about twice as fast (docs/benchmarks.md, Measurements
behind the schedules, Winograd on the CPU)."""


MIN_GROUP_CHANNELS = 16
MIN_OUT_CHANNELS = 32
"""The fewest input channels a group and output channels a CPU computes as
a Winograd convolution by default: with fewer, the transforms (a pass over
the input and one over the output) outweigh the product's savings: at
32², 3 → 64, 16 → 16 and 64 → 16 channels run slower than the best of five
direct tilings, 16 → 64 and 32 → 32 faster. (Groups 4 of 64 channels at
56², 16 a group, run as Winograd by default, faster than the untuned direct
kernel; GSPC's tuned kernel can be faster still.) The figures:
docs/benchmarks.md, Measurements behind the schedules, Winograd on the CPU."""


@dataclass(frozen=True)
class RegisterTile:
    """A CPU product's register tile: `tiles` rows of V × `vectors` vectors of
    `lanes` output channels (`tconv.lowering.tvm.schedule_winograd_cpu`)."""

    tiles: int
    vectors: int
    lanes: int


def register_tile(tiles: int, out_group: int, unit: VectorUnit) -> RegisterTile | None:
    """The register tile of a product over `tiles` tiles into groups of
    `out_group` output channels: two vectors of channels where they divide
    a group, else one, and the most tiles that divide `tiles` and leave
    SPARE_REGISTERS. None where a vector does not divide a group's channels."""
    lanes = unit.lanes
    if out_group % lanes:
        return None
    vectors = 2 if out_group % (2 * lanes) == 0 else 1
    rows = max(d for d in range(1, (unit.registers - SPARE_REGISTERS) // vectors + 1) if tiles % d == 0)
    return RegisterTile(rows, vectors, lanes)


def cpu_default_tile(batch: int, channels: int, out_channels: int, groups: int, height: int, width: int,
                 unit: VectorUnit) -> RegisterTile | None:
    """The register tile of a convolution Winograd computes (`winograd.applies`)
    that a CPU runs as one by default, or None where it runs direct: CPU_MIN_TILES
    tiles, MIN_GROUP_CHANNELS input channels a group, MIN_OUT_CHANNELS output
    channels, and a group's output channels a multiple of the vector.
    `$TCONV_CPU_WINOGRAD` 0 makes it none."""
    rows, columns = tile_grid(height, width)
    tiles = batch * rows * columns
    if (os.environ.get("TCONV_CPU_WINOGRAD") == "0" or tiles < CPU_MIN_TILES
            or channels // groups < MIN_GROUP_CHANNELS or out_channels < MIN_OUT_CHANNELS):
        return None
    return register_tile(tiles, out_channels // groups, unit)


# A GPU's product tile ----------------------------------------------------------


@dataclass(frozen=True)
class MatmulTile:
    """A GPU thread block's tile of the batched product: `rows` output
    channels × `columns` tiles of one position, a thread `thread_rows` ×
    `thread_columns` of them in registers, `depth` input channels staged in
    shared memory a step (`tconv.lowering.tvm.schedule_winograd`)."""

    rows: int = 64
    columns: int = 128
    thread_rows: int = 8
    thread_columns: int = 8
    depth: int = 8

    @property
    def threads(self) -> int:
        return (self.rows // self.thread_rows) * (self.columns // self.thread_columns)

    @classmethod
    def parse(cls, text: str) -> MatmulTile:
        """'64x128x8x8x8': rows, columns, thread rows, thread columns, depth."""
        return cls(*map(int, text.split("x")))


def matmul_tile(out_channels: int, in_channels: int) -> MatmulTile | None:
    """The tile of a product over `in_channels` into `out_channels`: the
    most output channels of 64, 32, 16 and 8 that divide them (8 × 8 of
    them a thread at 64, 4 × 8 below), 128 tiles, and the most of 8, 4, 2
    and 1 input channels a step that divide them. None where 8 does not
    divide the output channels. `$TCONV_GPU_WINOGRAD_TILE`, "RxCxTRxTCxD"
    (bench/gpu), sets it, where it divides them. (Every convolution
    Winograd computes, for tests; `gpu_default_tile` picks the GPU's.)"""
    override = os.environ.get("TCONV_GPU_WINOGRAD_TILE")
    if override:
        tile = MatmulTile.parse(override)
        if out_channels % tile.rows == 0 and in_channels % tile.depth == 0:
            return tile
    rows = next((r for r in (64, 32, 16, 8) if out_channels % r == 0), None)
    if rows is None:
        return None
    depth = next(d for d in (8, 4, 2, 1) if in_channels % d == 0)
    return MatmulTile(rows, 128, 8 if rows == 64 else 4, 8, depth)


FILL_BLOCKS = 512
"""Thread blocks of 64 × 128 products that fill an H100 (132 SMs) well
enough; with fewer, 32 × 32 blocks are more and keep more SMs busy."""

GPU_MIN_TILES = 4
"""The fewest tiles a Winograd convolution computes by default: 512
channels at 7² at batch 1 (4 tiles) still runs about twice as fast as
direct (docs/benchmarks.md, Measurements behind the schedules, CUDA
Winograd tiles)."""


def gpu_default_tile(batch: int, in_channels: int, out_channels: int, height: int, width: int) -> MatmulTile | None:
    """The product tile of a convolution Winograd computes (`winograd.applies`)
    that a GPU runs as one by default, or None where it runs direct: one
    with 32 output channels or a multiple, input channels a multiple of 8,
    and GPU_MIN_TILES tiles. The tile: 64 (or 32) output channels × 128 tiles a
    block, 8 × 8 a thread, where that makes FILL_BLOCKS blocks; else 32 × 32
    a block, 4 × 4 a thread. `$TCONV_GPU_WINOGRAD_TILE` sets it (bench/gpu).

    At batch 1 the small tile runs 64 to 512 channels faster than the
    large one and the direct kernels (`bench/gpu/winograd.sh`;
    docs/benchmarks.md, Measurements behind the schedules, CUDA Winograd
    tiles)."""
    rows, columns = tile_grid(height, width)
    tiles = batch * rows * columns
    if out_channels % 32 or in_channels % 8 or tiles < GPU_MIN_TILES:
        return None
    if os.environ.get("TCONV_GPU_WINOGRAD_TILE"):
        return matmul_tile(out_channels, in_channels)
    block = 64 if out_channels % 64 == 0 else 32
    large = MatmulTile(block, 128, block // 8, 8, 8)
    thread_blocks = POSITIONS * (out_channels // large.rows) * blocks(tiles, large.columns)
    return large if thread_blocks >= FILL_BLOCKS else MatmulTile(32, 32, 4, 4, 8)
