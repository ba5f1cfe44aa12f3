"""The default CUDA schedule of every kernel of `tconv.lowering.tvm.ops`.

One thread per output element: the kernel's data-parallel loops are fused
and spread over thread blocks of `THREADS` threads. A kernel with a reduction
(convolution, dense, pooling) accumulates in a register (`local` scope) and
applies its epilogue (bias, residual, activation) in the same thread, so a
kernel needs no global scratch memory — the nvcc route of PLATFORM.md
(`cuda_host`, `export_cuda_host`) refuses kernels that allocate a workspace.
Producer stages (padding, packing) are inlined into their readers.

A direct convolution with many outputs (a large batch) is register-tiled
instead (`conv_tile`): a thread accumulates a block of output channels ×
a few columns, so that each input value it loads feeds a block of FMAs and
each weight (the same for the threads of a warp) a few. Loads, not FMAs,
bound the thread-per-output kernel: two per FMA.

Not tuned: shared-memory staging and the tiles' sizes belong to the
schedule space.
"""

from __future__ import annotations

import os

from tvm import s_tir, tirx
from tvm.s_tir.schedule.schedule import ScheduleError

Schedule = s_tir.Schedule

THREADS = 256
"""Threads per block: a multiple of the warp size that fills an SM with a few blocks."""

MIN_THREADS = 1 << 17
"""Threads a register-tiled convolution must keep: about one full wave of an
H100 (132 SMs at 1024 threads). With fewer outputs (batch 1), a thread per
output keeps the SMs fuller than tiles would."""

TILES = ((8, 2), (4, 2), (2, 2), (2, 1))
"""(output channels, columns) one thread of a direct convolution
accumulates, most reuse first. Measured on an H100 at batch 64
(`bench/gpu/tiles.sh`): 8×2 was the fastest of 1×1 … 16×1, 4×2, 8×2 on
the dense 3×3 layers (64ch 56²: 2.28 → 1.90 ms) and groups 8 (0.31 →
0.25 ms), 4×2 on groups 16 (0.160 → 0.135 ms); 8×4 was slower than a
thread per output (2.93 ms)."""

_REDUCE = 2
"""`IterVar.iter_type` of a reduction axis (`kCommReduce`)."""


def _is_reduction(sch: Schedule, block) -> bool:
    return any(int(v.iter_type) == _REDUCE for v in sch.get(block).iter_vars)


def _spatial_axes(sch: Schedule, block) -> int:
    """How many of the block's leading loops are data-parallel (the TE
    computes put every reduction axis after the spatial ones)."""
    return sum(1 for v in sch.get(block).iter_vars if int(v.iter_type) != _REDUCE)


def _bind(sch: Schedule, loops):
    """Fuse `loops` and spread them over blocks of THREADS threads; the thread loop."""
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    extent = int(sch.get(fused).extent)
    bx, tx = sch.split(fused, [None, min(THREADS, extent)])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    return tx


def conv_tile(outputs: int, out_group: int) -> tuple[int, int]:
    """The (output channels, columns) a thread accumulates, of a direct
    convolution with `outputs` output elements and `out_group` output
    channels per group: the first of TILES whose channels divide the group's
    and that leaves MIN_THREADS threads, else (1, 1), a thread per output."""
    override = os.environ.get("TCONV_GPU_CONV_TILE")  # "8x1": this tile where it fits (bench/gpu/tiles.sh)
    for channels, columns in [tuple(map(int, override.split("x")))] if override else TILES:
        if out_group % channels == 0 and outputs // (channels * columns) >= MIN_THREADS:
            return channels, columns
    return 1, 1


def _tile_conv(sch: Schedule, block, width_tile: int):
    """Register-tile the direct convolution's stage (loops n, g, ob, y, x, oi,
    then the reductions): a thread per (n, g, ob, y, `width_tile` columns),
    its columns × oi channels innermost, unrolled under the reduction over
    input channels. The thread loop."""
    n, g, ob, y, x, oi, rc, *taps = sch.get_loops(block)
    xo, xi = sch.split(x, [None, width_tile])
    thread = _bind(sch, [n, g, ob, y, xo])
    sch.reorder(rc, *taps, xi, oi)
    for loop in (*taps, xi, oi):
        sch.unroll(loop)
    return thread


def _is_bound(sch: Schedule, block) -> bool:
    """Whether the block already runs under a thread binding (an epilogue placed with its reduction)."""
    return any(sch.get(loop).kind == tirx.ForKind.THREAD_BINDING for loop in sch.get_loops(block))


def schedule_gpu(function: tirx.PrimFunc, conv_tile: tuple[int, int] = (1, 1)) -> tirx.PrimFunc:
    """`function` scheduled for a CUDA GPU; its direct convolution stage (if
    any) register-tiled by `conv_tile`, the (output channels, columns) its
    compute was blocked by."""
    sch = Schedule(function)
    root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root)[:-1]:
        if not _is_reduction(sch, block):
            try:
                sch.compute_inline(block)
            except ScheduleError:
                pass  # a stage that cannot be inlined gets its own grid below
    for block in [b for b in sch.get_child_blocks(root) if _is_reduction(sch, b)]:
        consumers = sch.get_consumers(block)
        if consumers:
            sch.set_scope(block, 0, "local")
        else:
            # It writes the kernel's output: accumulate in a register, then store.
            consumers = [sch.cache_write(block, 0, "local")]
        if conv_tile != (1, 1) and sch.get(block).name_hint == "conv":
            thread = _tile_conv(sch, block, conv_tile[1])
        else:
            thread = _bind(sch, sch.get_loops(block)[: _spatial_axes(sch, block)])
        for consumer in consumers:
            sch.reverse_compute_at(consumer, thread)
        reduction_loops = sch.get_loops(block)[2:]
        if reduction_loops:
            # Zero the accumulator once, before the reduction, not in its loop.
            sch.decompose_reduction(block, reduction_loops[0])
    for block in sch.get_child_blocks(root):
        if sch.get_loops(block) and not _is_bound(sch, block):
            _bind(sch, sch.get_loops(block))
    return sch.mod["main"]
