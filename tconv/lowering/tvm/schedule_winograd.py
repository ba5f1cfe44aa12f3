"""CUDA schedules of the three kernels of a Winograd convolution (`winograd`).

The transforms run a thread per tile and channel: the 6×6 window (or the
36 products) in registers, every transform loop unrolled so that the
transform matrices fold into constants, consecutive threads on consecutive
tiles so that V and M are read and written in whole lines.

The batched matrix product is the classic shared-memory GEMM: a thread
block computes `MatmulTile.rows` output channels × `MatmulTile.columns`
tiles of one position, a thread `thread_rows` × `thread_columns` of them in
registers; each step stages `depth` input channels of U and V in shared
memory, which every thread of the block then reads. `default_tile` sizes it
by how many blocks the product makes: 64 × 128 (8 × 8 a thread) where they
fill the GPU (batch 64), 32 × 32 (4 × 4) where they would not (batch 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tvm import s_tir, tirx

from tconv.kernels.packing import blocks
from tconv.kernels.winograd import OUT_TILE, POSITIONS, tile_grid
from tconv.lowering.tvm.schedule_gpu import bind_threads, loops_under, unroll_all

Schedule = s_tir.Schedule


@dataclass(frozen=True)
class MatmulTile:
    """A thread block's tile of the batched product (see the module docstring)."""

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
    Winograd computes, for tests; `default_tile` picks the GPU's.)"""
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

MIN_TILES = 4
"""The fewest tiles a Winograd convolution computes by default (512
channels at 7², batch 1: 4 tiles, 0.06 ms against 0.13 direct)."""


def default_tile(batch: int, in_channels: int, out_channels: int, height: int, width: int) -> MatmulTile | None:
    """The product tile of a convolution Winograd computes (`winograd.applies`)
    that a GPU runs as one by default, or None where it runs direct: one
    with 32 output channels or a multiple, input channels a multiple of 8,
    and MIN_TILES tiles. The tile: 64 (or 32) output channels × 128 tiles a
    block, 8 × 8 a thread, where that makes FILL_BLOCKS blocks; else 32 × 32
    a block, 4 × 4 a thread. `$TCONV_GPU_WINOGRAD_TILE` sets it (bench/gpu).

    On an H100 (`bench/gpu/winograd.sh`), at batch 64 the large tile ran
    64 to 512 channels in 0.18–0.27 ms; at batch 1, the small one ran them
    in 0.015–0.058 ms (the large 0.018–0.094; direct 0.046–0.126)."""
    rows, columns = tile_grid(height, width)
    tiles = batch * rows * columns
    if out_channels % 32 or in_channels % 8 or tiles < MIN_TILES:
        return None
    if os.environ.get("TCONV_GPU_WINOGRAD_TILE"):
        return matmul_tile(out_channels, in_channels)
    block = 64 if out_channels % 64 == 0 else 32
    large = MatmulTile(block, 128, block // 8, 8, 8)
    thread_blocks = POSITIONS * (out_channels // large.rows) * blocks(tiles, large.columns)
    return large if thread_blocks >= FILL_BLOCKS else MatmulTile(32, 32, 4, 4, 8)


def schedule_input_transform(function: tirx.PrimFunc) -> tirx.PrimFunc:
    """A thread per (channel, tile): its window in registers, its 36 values unrolled."""
    sch = Schedule(function)
    transform = sch.get_sblock("transform")
    window = sch.get_sblock("window")
    accumulator = sch.cache_write(transform, 0, "local")
    e, c, p, i, j = sch.get_loops(transform)
    sch.reorder(c, p, e, i, j)
    thread = bind_threads(sch, [c, p])
    sch.reverse_compute_at(accumulator, thread)
    sch.set_scope(window, 0, "local")
    sch.compute_at(window, thread)
    init = sch.decompose_reduction(transform, e)
    for block in (window, init, transform, accumulator):
        unroll_all(sch, loops_under(sch, block, thread))
    return sch.mod["main"]


def schedule_output_transform(function: tirx.PrimFunc) -> tirx.PrimFunc:
    """A thread per (output channel, tile): its 36 products in registers, its
    4×4 outputs unrolled (the epilogue is in their expression)."""
    sch = Schedule(function)
    output = sch.get_sblock("output")
    n, k, y, x = sch.get_loops(output)
    yo, yi = sch.split(y, [None, OUT_TILE])
    xo, xi = sch.split(x, [None, OUT_TILE])
    sch.reorder(k, n, yo, xo, yi, xi)
    thread = bind_threads(sch, [k, n, yo, xo])
    products = sch.cache_read(output, 0, "local")
    sch.compute_at(products, thread)
    for block in (products, output):
        unroll_all(sch, loops_under(sch, block, thread))
    return sch.mod["main"]


def schedule_batched_matmul(function: tirx.PrimFunc, tile: MatmulTile) -> tirx.PrimFunc:
    """The shared-memory GEMM of the module docstring. A thread's rows (and
    columns) are runs of 4, `rows / (thread_rows / 4)` apart: the threads of
    a warp then read consecutive float4s of shared memory, without bank
    conflicts."""
    sch = Schedule(function)
    matmul = sch.get_sblock("matmul")
    accumulator = sch.cache_write(matmul, 0, "local")
    e, k, p, c = sch.get_loops(matmul)
    run = lambda extent: min(4, extent)
    ko, kv, kt, k4 = sch.split(k, [None, tile.thread_rows // run(tile.thread_rows),
                                   tile.rows // tile.thread_rows, run(tile.thread_rows)])
    po, pv, pt, p4 = sch.split(p, [None, tile.thread_columns // run(tile.thread_columns),
                                   tile.columns // tile.thread_columns, run(tile.thread_columns)])
    co, ci = sch.split(c, [None, tile.depth])
    sch.reorder(e, ko, po, kv, pv, kt, pt, co, ci, k4, p4)
    sch.bind(sch.fuse(e, ko, po), "blockIdx.x")
    sch.bind(kv, "vthread.y")
    sch.bind(pv, "vthread.x")
    thread = sch.fuse(kt, pt)
    sch.bind(thread, "threadIdx.x")
    sch.reverse_compute_at(accumulator, thread)
    for operand in (0, 1):
        shared = sch.cache_read(matmul, operand, "shared")
        sch.compute_at(shared, co)
        fused = sch.fuse(*sch.get_loops(shared)[-2:])
        _, threads, lanes = sch.split(fused, [None, tile.threads, 4])
        sch.bind(threads, "threadIdx.x")
        sch.vectorize(lanes)
        local = sch.cache_read(matmul, operand, "local")
        sch.compute_at(local, ci)
        sch.vectorize(sch.get_loops(local)[-1])
    unroll_all(sch, (ci, k4, p4))
    sch.decompose_reduction(matmul, co)
    sch.vectorize(sch.get_loops(accumulator)[-1])
    return sch.mod["main"]
