"""CUDA schedules of the three kernels of a Winograd convolution (`winograd`).

The transforms run a thread per tile and channel: the 6×6 window (or the
36 products) in registers, every transform loop unrolled so that the
transform matrices fold into constants, consecutive threads on consecutive
tiles so that V and M are read and written in whole lines.

The batched matrix product is the classic shared-memory GEMM: a thread
block computes `MatmulTile.rows` output channels × `MatmulTile.columns`
tiles of one position, a thread `thread_rows` × `thread_columns` of them in
registers; each step stages `depth` input channels of U and V in shared
memory, which every thread of the block then reads.
`tconv.kernels.winograd.gpu_default_tile` sizes it
by how many blocks the product makes: 64 × 128 (8 × 8 a thread) where they
fill the GPU (batch 64), 32 × 32 (4 × 4) where they would not (batch 1).
"""

from __future__ import annotations

from tvm import s_tir, tirx

from tconv.kernels.winograd import OUT_TILE, MatmulTile
from tconv.lowering.tvm.schedule_gpu import bind_threads, loops_under, unroll_all

Schedule = s_tir.Schedule


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
