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

Knobs (`ops.ConvBlocking`, chosen by `gspc_blocking` or a schedule, see
`conv_schedule`): channels per block (dividing a group's, so no tails),
rows per tile and columns per tile (any: the accumulation runs over the
output rounded up to whole tiles and the epilogue stores what is inside),
and whether the kernel-column loop is unrolled. A depthwise convolution is
the case of one channel per group: its block is 1, its tile rows × columns
of one channel.
"""

from __future__ import annotations

from tvm import s_tir, tirx

from tconv.lowering.tvm.ops import ConvBlocking
from tconv.lowering.tvm.schedule_cpu import (
    FMA_LATENCY,
    FMA_PORTS,
    LOAD_PORTS,
    MAX_UNROLLED_TAPS,
    accumulator_budget,
    output_channel_blocks,
)
from tconv.lowering.tvm.target import VectorUnit

Schedule = s_tir.Schedule
PrimFunc = tirx.PrimFunc


# Blocking choices ------------------------------------------------------------


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _tile_traffic(block: int, rows: int, width_tile: int, kernel: tuple[int, int], lanes: int) -> tuple[int, int]:
    """(FMAs, loads) of one accumulation step of a GSPC tile: per tap, one
    FMA per channel, row and vector of columns, and one weight broadcast per
    channel; the input vectors are shared between the rows of the tile (r
    rows under kh tap rows read r + kh - 1 input rows, not r·kh)."""
    kh, kw = kernel
    vectors = -(-width_tile // lanes)
    return kh * kw * block * rows * vectors, kh * kw * block + (rows + kh - 1) * kw * vectors


def column_efficiency(
    block: int, rows: int, width_tile: int, out_group: int, out_height: int, out_width: int,
    kernel: tuple[int, int], lanes: int, in_group: int = 2,
) -> float:
    """Useful FMAs per issued FMA slot of one GSPC accumulation step (one
    input channel, all taps), in the core model of
    `schedule_cpu.tile_efficiency`: the step takes as long as its FMAs, its
    loads (`_tile_traffic`) or the FMA latency of each accumulator's chain,
    whichever is longest; padded columns, rows and lanes of the last vector
    are wasted. `block` must divide `out_group`.

    With one input channel per group (`in_group` 1: depthwise) a tile is a
    few dozen instructions with no loop, and the core overlaps successive
    tiles: the latency bound does not hold."""
    fmas, loads = _tile_traffic(block, rows, width_tile, kernel, lanes)
    taps = kernel[0] * kernel[1]
    vectors = -(-width_tile // lanes)
    latency = taps * FMA_LATENCY if in_group > 1 else 0
    cycles = max(fmas / FMA_PORTS, loads / LOAD_PORTS, latency)
    useful = (
        out_width / (-(-out_width // width_tile) * vectors * lanes)
        * out_height / (-(-out_height // rows) * rows)
    )
    return useful * fmas / (FMA_PORTS * cycles)


def depthwise_accumulators(kernel: tuple[int, int], unit: VectorUnit) -> int:
    """Accumulators a depthwise GSPC tile should keep to: the registers
    that the kernel's weights (one broadcast each, kept across tiles) and
    two temporaries leave, where at least two are left (measured on AVX2,
    64 channels, 56², 3×3: 4 accumulators 1.2× faster than 8, which push
    the weights out of registers); else the accumulator budget."""
    left = unit.registers - 2 - kernel[0] * kernel[1]
    return left if left >= 2 else accumulator_budget(unit)


def gspc_candidates(
    out_group: int, out_height: int, out_width: int, unit: VectorUnit, max_block: int = 8, max_rows: int = 8,
    budget: int | None = None,
) -> list[ConvBlocking]:
    """Every GSPC blocking whose tile fits the accumulator `budget` (default
    `accumulator_budget`): blocks dividing a group's channels (up to
    `max_block`), up to `max_rows` rows (no more than the image has), column
    tiles of whole vectors narrower than the image, or the image's width."""
    lanes = unit.lanes
    budget = budget or accumulator_budget(unit)
    widths = sorted({lanes * v for v in range(1, out_width // lanes + 1)} | {out_width})
    return [
        ConvBlocking(block, width_tile, vector="ow", rows=rows)
        for block in _divisors(out_group) if block <= max_block
        for rows in range(1, min(out_height, max_rows) + 1)
        for width_tile in widths
        if block * rows * -(-width_tile // lanes) <= budget
    ]


def gspc_blocking(
    out_group: int, out_height: int, out_width: int, kernel: tuple[int, int], unit: VectorUnit,
    in_group: int = 2,
) -> ConvBlocking:
    """The GSPC blocking `column_efficiency` rates best (depthwise, with
    `in_group` 1: of those within `depthwise_accumulators`); on a tie, the
    one wasting the fewest columns and rows, then the one with the widest
    channel block up to 4 (measured on AVX2, 2 threads: 4 channels × 2 rows
    run 5–10% faster than 2 × 4 with 8 and 4 channels per group, though
    they load more), then the fewest loads per FMA."""
    depthwise = in_group == 1 and out_group == 1
    budget = depthwise_accumulators(kernel, unit) if depthwise else None

    def rank(b: ConvBlocking):
        efficiency = column_efficiency(
            b.block, b.rows, b.width_tile, out_group, out_height, out_width, kernel, unit.lanes, in_group
        )
        waste = b.padded_width(out_width) * b.padded_height(out_height) - out_width * out_height
        fmas, loads = _tile_traffic(b.block, b.rows, b.width_tile, kernel, unit.lanes)
        return (round(efficiency, 3), -waste, min(b.block, 4), -round(loads / fmas, 2), b.block, b.rows)

    return max(gspc_candidates(out_group, out_height, out_width, unit, budget=budget), key=rank)


# Schedules -------------------------------------------------------------------


def _unroll_taps(sch: Schedule, ry, rx, kernel: tuple[int, int], blocking: ConvBlocking) -> None:
    if kernel[0] * kernel[1] <= MAX_UNROLLED_TAPS:
        sch.unroll(ry)
    if blocking.unroll_kw:
        sch.unroll(rx)


MIN_PARALLEL_GROUPS = 8
"""Groups enough to be the parallel tasks by themselves (a few per thread)."""


def runs_groups_in_parallel(groups: int) -> bool:
    """Whether GSPC runs batch·group tasks, each copying its group's input
    and then running the group's channel blocks and row tiles in order (the
    schedule's `parallel = ["n", "g"]`), rather than batch·group·block·row
    tasks after a parallel copy of the whole input (`["n", "g", "oc.0",
    "oh.0"]`): where there are MIN_PARALLEL_GROUPS groups."""
    return groups >= MIN_PARALLEL_GROUPS


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
    two (measured on depthwise 64 channels, 56²: 1.4× faster than a
    separate copy). Otherwise parallel over batch and channels, first."""
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
    # under 1 KB the stack, which LLVM keeps in registers. 64 channels at
    # 56²: 0.0217 → 0.0181 ms (the GSPC grouped kernel ran 17% slower so,
    # the direct template the same).
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
