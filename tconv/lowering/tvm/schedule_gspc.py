"""GSPC: the CPU schedules of grouped and depthwise convolutions whose groups
are too narrow to fill a vector of output channels.

The direct convolution of `schedule_cpu` holds a block of output channels in
the vector lanes. A group of a 64-channel convolution with 16 groups has 4
output channels, with 32 groups 2, a depthwise one 1: such a vector is half,
a quarter or an eighth full, and the layer runs at that share of the peak.
GSPC holds output *columns* in the lanes instead, which every convolution
has plenty of, and blocks each group's channels on its own:

    parallel(batch·group)
      → copy the group's input channels, padded, in column phases
      → channel block → row tile → column tile
        → [init; for input channel of the group, tap row, tap column:
             unrolled channels of the block × unrolled rows of the tile ×
             vector of `width_tile` columns
               acc[c, r, x:x+w] += weight[c, tap] · input[r + tap, x + tap : …]]
        → epilogue of the tile, stored as vectors along the NCHW width.

(With fewer than MIN_PARALLEL_GROUPS groups, the channel blocks and row
tiles run in parallel too, after a parallel copy of the input: see
`runs_groups_in_parallel`.)

Each step broadcasts one weight per channel and loads one vector of inputs
per input row of the tile: `block` × `rows` × `width_tile / lanes`
accumulators for `block` + (`rows` + kh − 1) × `width_tile / lanes` loads,
where the direct template needs one broadcast per column. Input columns come
in phases (`ops.pad_phases`), so a strided window still reads a vector of
columns with one load; the accumulator keeps columns innermost (`ops.conv2d`
with `vector` "ow"), so the tile needs no transpose before its NCHW store.

Knobs (`tconv.kernels.blocking.ConvBlocking`, chosen by its `gspc_blocking`
or a schedule, see `tconv.kernels.templates`): channels per block (dividing a group's, so no tails),
rows per tile and columns per tile (any: the accumulation runs over the
output rounded up to whole tiles and the epilogue stores what is inside),
and whether the kernel-column loop is unrolled. A depthwise convolution is
the case of one channel per group: its block is 1, its tile rows × columns
of one channel.
"""

from __future__ import annotations

from tvm import s_tir, tirx

from tconv.kernels.blocking import ConvBlocking, runs_groups_in_parallel
from tconv.lowering.tvm.schedule_cpu import MAX_UNROLLED_TAPS, output_channel_blocks

Schedule = s_tir.Schedule
PrimFunc = tirx.PrimFunc


def _unroll_taps(sch: Schedule, ry, rx, kernel: tuple[int, int], blocking: ConvBlocking) -> None:
    if kernel[0] * kernel[1] <= MAX_UNROLLED_TAPS:
        sch.unroll(ry)
    if blocking.unroll_kw:
        sch.unroll(rx)


def _parallel_tiles(sch: Schedule, groups: int, planes: list, inner: list):
    """Run the tiles in parallel: over `planes` (the batch·group loops) where
    `runs_groups_in_parallel`, returning the fused loop, in which each task
    copies its group's input (`_schedule_phases`); else over `planes` and the
    `inner` loops that follow them (channel blocks, row tiles), returning
    None: the copy runs first, in parallel by itself."""
    if planes and runs_groups_in_parallel(groups):
        fused = sch.fuse(*planes)
        sch.parallel(fused)
        return fused
    sch.parallel(sch.fuse(*planes, *inner))
    return None


def _schedule_phases(sch: Schedule, planes) -> None:
    """The column-phase copy of the input. Computed in the parallel loop
    `planes` (over batch and groups) where there is one, just before the
    tiles that read it: each task copies its group's channels, which then
    stay in cache for the tiles, and the kernel is one parallel region, not
    two (faster than a separate copy: docs/benchmarks.md, Measurements
    behind the schedules). Otherwise parallel over batch and channels,
    first."""
    pad = sch.get_sblock("pad")
    if planes is not None:
        sch.compute_at(pad, planes, preserve_unit_loops=True)
    else:
        n, c = sch.get_loops(pad)[:2]
        sch.parallel(sch.fuse(n, c))
    phase, column = sch.get_loops(pad)[-2:]
    # Columns outermost, phases unrolled inside: the reads run along the input
    # row, and LLVM turns the phases into one load and a deinterleave.
    sch.reorder(column, phase)
    sch.unroll(phase)


def schedule_conv2d_columns(function: PrimFunc, groups: int, blocking: ConvBlocking) -> PrimFunc:
    """GSPC schedule of `ops.conv2d` built with `blocking.vector` "ow" (see
    the module docstring). The accumulator is a `local` tile of `block` ×
    `rows` × `width_tile`, so LLVM keeps it in registers."""
    sch, outer, oi, (p, q) = output_channel_blocks(Schedule(function), groups, blocking.block)
    conv = sch.get_sblock("conv")
    po, pi = sch.split(p, [None, blocking.rows])
    qo, qi = sch.split(q, [None, blocking.width_tile])
    sch.reorder(*outer, po, qo, oi, pi, qi)
    sch.set_scope(conv, 0, "local")
    sch.compute_at(conv, qo, preserve_unit_loops=True)
    # With groups, batch·group tasks run a group's channel blocks and row tiles
    # in order; with one group, the blocks and row tiles are the tasks.
    group_loops = outer[:2] if groups > 1 else []
    planes = _parallel_tiles(sch, groups, group_loops, [*outer[len(group_loops):], po])

    channel, row, column, rc, ry, rx = sch.get_loops(conv)[-6:]
    sch.reorder(rc, ry, rx, channel, row, column)
    sch.unroll(channel)
    sch.unroll(row)
    sch.vectorize(column)
    kernel = (sch.get(ry).extent.value, sch.get(rx).extent.value)
    _unroll_taps(sch, ry, rx, kernel, blocking)
    sch.decompose_reduction(conv, rc)
    sch.unroll(oi)
    sch.unroll(pi)
    sch.vectorize(qi)
    _schedule_phases(sch, planes)
    return sch.mod["main"]


def schedule_depthwise_columns(function: PrimFunc, blocking: ConvBlocking) -> PrimFunc:
    """GSPC schedule of `ops.depthwise_conv2d` built with `blocking.vector`
    "ow": parallel(batch·channel) → copy of the channel → row tile → column
    tile → [init; taps: unrolled rows × vector of columns] → epilogue."""
    sch = Schedule(function)
    conv = sch.get_sblock("conv")
    n, c, p, q = sch.get_loops(sch.get_sblock("output"))
    po, pi = sch.split(p, [None, blocking.rows])
    qo, qi = sch.split(q, [None, blocking.width_tile])
    sch.reorder(n, c, po, qo, pi, qi)
    # The tile's buffer keeps the "global" scope: TVM gives a CPU function's
    # "local" buffers heap memory (TVMBackendAllocWorkspace), a global one
    # under 1 KB the stack, which LLVM keeps in registers. The depthwise
    # kernel runs faster so; the GSPC grouped kernel ran slower with a global
    # tile, the direct template the same (docs/benchmarks.md, CPU kernels and
    # networks against the peers).
    sch.compute_at(conv, qo, preserve_unit_loops=True)
    planes = _parallel_tiles(sch, sch.get(c).extent.value, [n, c], [po])

    row, column, ry, rx = sch.get_loops(conv)[-4:]
    sch.reorder(ry, rx, row, column)
    sch.unroll(row)
    sch.vectorize(column)
    kernel = (sch.get(ry).extent.value, sch.get(rx).extent.value)
    _unroll_taps(sch, ry, rx, kernel, blocking)
    sch.decompose_reduction(conv, ry)
    sch.unroll(pi)
    sch.vectorize(qi)
    _schedule_phases(sch, planes)
    return sch.mod["main"]
