"""The default CUDA schedule of every kernel of `tconv.lowering.tvm.ops`.

One thread per output element: the kernel's data-parallel loops are fused
and spread over thread blocks of `THREADS` threads. A kernel with a reduction
(convolution, dense, pooling) accumulates in a register (`local` scope) and
applies its epilogue (bias, residual, activation) in the same thread, so a
kernel needs no global scratch memory — the nvcc route of PLATFORM.md
(`cuda_host`, `export_cuda_host`) refuses kernels that allocate a workspace.
Producer stages (padding, packing) are inlined into their readers.

Correct for every shape, not tuned: register tiling and shared-memory
staging belong to the schedule space.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.schedule.schedule import ScheduleError

Schedule = s_tir.Schedule

THREADS = 256
"""Threads per block: a multiple of the warp size that fills an SM with a few blocks."""

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


def _is_bound(sch: Schedule, block) -> bool:
    """Whether the block already runs under a thread binding (an epilogue placed with its reduction)."""
    return any(sch.get(loop).kind == tirx.ForKind.THREAD_BINDING for loop in sch.get_loops(block))


def schedule_gpu(function: tirx.PrimFunc) -> tirx.PrimFunc:
    """`function` scheduled for a CUDA GPU."""
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
