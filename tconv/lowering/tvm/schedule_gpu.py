"""The default CUDA schedule of every kernel of `tconv.lowering.tvm.ops`.

One thread per output element: the kernel's data-parallel loops are fused
and spread over thread blocks of `THREADS` threads. A kernel with a reduction
(convolution, dense, pooling) accumulates in a register (`local` scope) and
applies its epilogue (bias, residual, activation) in the same thread, so a
kernel needs no global scratch memory — the nvcc route of `cuda_library`
(`cuda_host`, `export_cuda_host`) refuses kernels that allocate a workspace.
Producer stages (padding, packing) are inlined into their readers.

A direct convolution with many outputs (a large batch) is tiled instead
(`conv_tile`, `_stage_conv`): a thread accumulates a block of output
channels × 2 columns, and a thread block (32 output channels × some
rows × the whole width) copies its input window and weights into shared
memory, 8 input channels at a time, so that each value comes from global
memory once per block and each staged input value feeds 32 FMAs. At batch
64 this runs the dense 3×3 layers and ResNet-34 CIFAR several times
faster than a thread per output (`bench/gpu`; docs/benchmarks.md,
Measurements behind the schedules, CUDA direct convolution's tiles).

Not tuned per shape: the tiles' sizes belong to the schedule space.
"""

from __future__ import annotations

import os

from tvm import s_tir, tirx
from tvm.s_tir.schedule.schedule import ScheduleError

Schedule = s_tir.Schedule

THREADS = 256
"""Threads per block: a multiple of the warp size that fills an SM with a few blocks."""

MIN_THREADS = 1 << 17
"""Threads a tiled convolution must keep: about one full wave of an
H100 (132 SMs at 1024 threads). With fewer outputs (batch 1), a thread per
output keeps the SMs fuller than tiles would."""

TILES = ((16, 2), (8, 2), (4, 2), (2, 2), (2, 1))
"""(output channels, columns) one thread of a direct convolution
accumulates, most reuse first. In `bench/gpu/tiles.sh` at batch 64, staged,
16×2 ran 64ch 56² 3×3 fastest and 128ch 28² faster than 8×2; groups 8 ran
best at 4×2 or 8×2, 8×4 slower, so 8×4 is left out (docs/benchmarks.md,
Measurements behind the schedules, CUDA direct convolution's tiles)."""

_REDUCE = 2
"""`IterVar.iter_type` of a reduction axis (`kCommReduce`)."""


def _is_reduction(sch: Schedule, block) -> bool:
    return any(int(v.iter_type) == _REDUCE for v in sch.get(block).iter_vars)


def _spatial_axes(sch: Schedule, block) -> int:
    """How many of the block's leading loops are data-parallel (the TE
    computes put every reduction axis after the spatial ones)."""
    return sum(1 for v in sch.get(block).iter_vars if int(v.iter_type) != _REDUCE)


def bind_threads(sch: Schedule, loops):
    """Fuse `loops` and spread them over blocks of THREADS threads; the thread loop."""
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    extent = int(sch.get(fused).extent)
    bx, tx = sch.split(fused, [None, min(THREADS, extent)])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    return tx


def loops_under(sch: Schedule, block, loop) -> list:
    """The loops of `block` nested under `loop`, outermost first."""
    loops = sch.get_loops(block)
    return loops[1 + next(i for i, outer in enumerate(loops) if sch.get(outer).same_as(sch.get(loop))):]


def unroll_all(sch: Schedule, loops) -> None:
    for loop in loops:
        sch.unroll(loop)


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


SHARED_THREADS = 256
"""The most threads of a block that stages its convolution's operands in shared memory."""

SHARED_CHANNELS = 32
"""Output channels of such a block: each staged input value feeds this many FMAs."""

SHARED_REDUCTION = (8, 4, 2, 1)
"""Input channels staged at a time: the most whose staging fits SHARED_BYTES."""

SHARED_BYTES = 48 * 1024
"""The static shared memory a thread block may have (CUDA's limit)."""


class _Unstageable(Exception):
    """The convolution's operands do not fit the thread block's shared memory."""


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def _cooperative(sch: Schedule, block, after, threads: int) -> int:
    """Spread a staging block's own loops (those under loop `after`) over the
    `threads` threads of its thread block; the values it stages."""
    own = loops_under(sch, block, after)
    fused = sch.fuse(*own) if len(own) > 1 else own[0]
    values = int(sch.get(fused).extent)
    _, tx = sch.split(fused, [None, threads])
    sch.bind(tx, "threadIdx.x")
    return values


def _stage_conv(sch: Schedule, block, width_tile: int, reduction: int):
    """Tile the direct convolution's stage (loops n, g, ob, y, x, oi, then
    the reductions): a thread per (n, g, ob, y, `width_tile` columns), its
    columns × oi channels innermost and unrolled under the reduction over
    input channels; a thread block of SHARED_CHANNELS output channels × some
    rows × the whole (padded) width, whose input window and weights are
    copied to shared memory `reduction` input channels at a time. The
    thread loop; `_Unstageable` where a row of threads or the staged
    values are too many for a thread block."""
    n, g, ob, y, x, oi, rc, *taps = sch.get_loops(block)
    extent = lambda loop: int(sch.get(loop).extent)
    xo, xi = sch.split(x, [None, width_tile])
    if extent(xo) > SHARED_THREADS:
        raise _Unstageable
    ob_t = _largest_divisor(extent(ob), min(SHARED_CHANNELS // extent(oi), SHARED_THREADS // extent(xo)))
    y_t = _largest_divisor(extent(y), max(1, SHARED_THREADS // (ob_t * extent(xo))))
    threads = ob_t * y_t * extent(xo)
    ob_o, ob_i = sch.split(ob, [None, ob_t])
    y_o, y_i = sch.split(y, [None, y_t])
    rc_o, rc_i = sch.split(rc, [None, _largest_divisor(extent(rc), reduction)])
    sch.reorder(n, g, ob_o, y_o, ob_i, y_i, xo, rc_o, rc_i, *taps, xi, oi)
    blocks = sch.fuse(n, g, ob_o, y_o)
    thread = sch.fuse(ob_i, y_i, xo)
    sch.bind(blocks, "blockIdx.x")
    sch.bind(thread, "threadIdx.x")
    for loop in (*taps, xi, oi):
        sch.unroll(loop)
    reads = [region.source.name for region in sch.get(block).reads]
    weight = sch.cache_read(block, reads.index("arg1"), "shared")
    producers = [p for p in sch.get_producers(block) if sch.get(p).name_hint == "pad"]
    if producers:  # the padding stage itself writes the window into shared memory
        (data,) = producers
        sch.set_scope(data, 0, "shared")
    else:
        data = sch.cache_read(block, reads.index("arg0"), "shared")
    values = 0
    for stage in (data, weight):
        sch.compute_at(stage, rc_o)
        values += _cooperative(sch, stage, rc_o, threads)
    if 4 * values > SHARED_BYTES:
        raise _Unstageable
    return thread


def _tile_conv(sch: Schedule, block, width_tile: int) -> tuple[Schedule, object]:
    """`_stage_conv` with the most input channels at a time that fit, on a
    copy of `sch`; where none fit, a thread per output of the blocked stage
    on `sch` itself. (The schedule, the thread loop.)"""
    for reduction in SHARED_REDUCTION:
        trial = sch.copy()
        try:
            return trial, _stage_conv(trial, block, width_tile, reduction)
        except _Unstageable:
            continue
    for pad in sch.get_producers(block):  # kept for staging: read in place instead
        sch.compute_inline(pad)
    return sch, bind_threads(sch, sch.get_loops(block)[: _spatial_axes(sch, block)])


def _is_bound(sch: Schedule, block) -> bool:
    """Whether the block already runs under a thread binding (an epilogue placed with its reduction)."""
    return any(sch.get(loop).kind == tirx.ForKind.THREAD_BINDING for loop in sch.get_loops(block))


def schedule_gpu(function: tirx.PrimFunc, conv_tile: tuple[int, int] = (1, 1)) -> tirx.PrimFunc:
    """`function` scheduled for a CUDA GPU; its direct convolution stage (if
    any) tiled by `conv_tile`, the (output channels, columns) its compute
    was blocked by."""
    sch = Schedule(function)
    root = sch.get_sblock("root")
    staged = conv_tile != (1, 1)
    for block in sch.get_child_blocks(root)[:-1]:
        if staged and sch.get(block).name_hint == "pad":
            continue
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
        if staged and sch.get(block).name_hint == "conv":
            sch, thread = _tile_conv(sch, block, conv_tile[1])
        else:
            thread = bind_threads(sch, sch.get_loops(block)[: _spatial_axes(sch, block)])
        for consumer in consumers:
            sch.reverse_compute_at(consumer, thread)
        reduction_loops = sch.get_loops(block)[2:]
        if reduction_loops:
            # Zero the accumulator once, before the reduction, not in its loop.
            sch.decompose_reduction(block, reduction_loops[0])
    for block in sch.get_child_blocks(root):
        if sch.get_loops(block) and not _is_bound(sch, block):
            bind_threads(sch, sch.get_loops(block))
    return sch.mod["main"]
