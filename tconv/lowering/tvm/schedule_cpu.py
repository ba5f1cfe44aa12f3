"""The default CPU schedules of the kernels of `tconv.lowering.tvm.ops`.

A convolution is blocked for register accumulation, the classic direct
convolution of x86 libraries: a tile of `block` output channels (whole
vectors) by `width_tile` output columns is accumulated in registers over all
input channels and kernel taps of its group, the inner loop a vector FMA of
`block` packed weights by one broadcast input value; the tile then goes
through the epilogue to the NCHW output, stored as vectors along the width.
Batch, groups, channel blocks and output rows are fused and run in parallel
(rows before channel blocks where that moves less data, `runs_rows_first`);
kernel taps and tile columns are unrolled. The blocking is chosen per shape
from the target's vector unit by `tconv.kernels.blocking` (`conv2d_blocking`,
`depthwise_blocking`, ...) and shapes the compute (the weight's packing, the padded
width), so it is fixed before the compute is built.

An activation stored in channel blocks (NCHW[b]c, the `layout` of a
convolution's schedule) changes only the ends of that nest: a packed output
is the register tile as it is (unrolled columns × a vector of `block`
channels, stored without the transpose), and a packed input's channels are
two reduction loops, blocks outside the taps and the channels of a block
inside them, so the broadcasts of one tap read one cache line.

A depthwise convolution has one input channel per output channel, so its
vector is a block of channels, read from a channel-blocked copy of the input
(NCHW[block]c, made in the kernel) with no gathers whatever the stride.
Dense layers block output features the same way as convolutions. The other
kernels are memory-bound: fused, parallel, vectorised where the shape allows.

Every schedule function takes a PrimFunc made by `te.create_prim_func` from
one compute of `ops`, finds its stages by the names `ops` gives them, and
returns the scheduled PrimFunc.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.schedule.schedule import ScheduleError

from tconv.kernels.blocking import ConvBlocking
from tconv.kernels.target import VectorUnit

Schedule = s_tir.Schedule
PrimFunc = tirx.PrimFunc

PARALLEL_MIN_ELEMENTS = 1 << 14
"""Elementwise kernels smaller than this run on one thread: waking the pool
costs more than the work."""

MAX_UNROLLED_TAPS = 25
"""Kernels up to 5×5 unroll both tap loops; larger ones only the inner one."""


# Convolutions -----------------------------------------------------------------


def _gspc():
    """The GSPC schedules, imported on first use: `schedule_gspc` builds on
    this module's helpers."""
    from tconv.lowering.tvm import schedule_gspc

    return schedule_gspc


def _stage(sch: Schedule, name: str):
    """The block of stage `name`, or None where the kernel has no such stage."""
    try:
        return sch.get_sblock(name)
    except ScheduleError:
        return None


def schedule_pad(sch: Schedule) -> None:
    """The padding copy, if the kernel has one: parallel over batch and
    channels (channel blocks, each a vector, for a packed input)."""
    pad = _stage(sch, "pad")
    if pad is None:
        return
    loops = sch.get_loops(pad)
    sch.parallel(sch.fuse(*loops[:2]))
    if len(loops) == 5:
        sch.vectorize(loops[4])


def relayout_output(sch: Schedule, index_map) -> Schedule:
    """A schedule whose `output` block iterates `index_map(b, o, y, x)`
    instead of (batch, channel, row, column), its accumulator reads simplified.

    The output reads the accumulator at divisions of its indices (the group
    and block of a channel; the row and column of a position); in the new
    variables these simplify away, so an output tile reads exactly one
    accumulator tile, which `compute_at` can then keep in registers. (Split
    and fused loops leave the divisions, and the accumulator in memory.)"""
    sch.transform_block_layout(sch.get_sblock("output"), index_map)
    return Schedule(tirx.transform.StmtSimplify()(sch.mod)["main"])


def channel_split(sch: Schedule, groups: int, block: int):
    """The channel o of the output as (group, channel block, channel in block),
    or (group, channel in block) where a group is one block (an index map may
    not have a dimension of extent 1). `block` must divide a group's channels."""
    out_channels = sch.get(sch.get_loops(sch.get_sblock("output"))[1]).extent.value
    out_group = out_channels // groups
    if out_group == block:
        return lambda o: (o // out_group, o % block)
    return lambda o: (o // out_group, o % out_group // block, o % block)


def packed_output_blocks(sch: Schedule, block: int, position):
    """The output of an ungrouped convolution stored in channel blocks (N x
    O/b x P x Q x b), its channels in compute blocks of `block` (a multiple
    of b): (the schedule, the batch, compute-block and `position(y, x)`
    loops, the layout blocks of a compute block (where there are several)
    and the channel-in-layout-block loop). `position` maps row and column to
    the spatial variables kept (both, or one flattened position)."""
    loops = sch.get_loops(sch.get_sblock("output"))
    layout_block = sch.get(loops[4]).extent.value
    parts = block // layout_block
    if parts > 1:
        sch = relayout_output(sch, lambda b, o, y, x, i: (b, o // parts, *position(y, x), o % parts, i))
    elif len(position(0, 0)) == 1:
        sch = relayout_output(sch, lambda b, o, y, x, i: (b, o, *position(y, x), i))
    loops = sch.get_loops(sch.get_sblock("output"))
    spatial = len(position(0, 0))
    return sch, loops[: 2 + spatial], loops[2 + spatial:]


def outer_loops(sch: Schedule, leading: int):
    """The output's loops as (batch·group·channel-block loops, channel-in-block
    loop, the rest), the first `leading` loops split off as they come."""
    loops = sch.get_loops(sch.get_sblock("output"))
    return loops[: leading - 1], loops[leading - 1], loops[leading:]


def output_channel_blocks(sch: Schedule, groups: int, block: int):
    """The output's channels in blocks of `block` within each group (the
    output relaid out by group where there are several): (the schedule, the
    batch·group·channel-block loops, the channel-in-block loop, the row and
    column loops)."""
    if groups > 1:
        split = channel_split(sch, groups, block)
        sch = relayout_output(sch, lambda b, o, y, x: (b, *split(o), y, x))
        outer, inner, rest = outer_loops(sch, len(split(0)) + 1)
        return sch, outer, inner, rest
    n, o, p, q = sch.get_loops(sch.get_sblock("output"))
    ob, inner = sch.split(o, [None, block])
    return sch, [n, ob], inner, [p, q]


def _reductions(sch: Schedule, conv, spatial: int) -> tuple[list, list]:
    """The accumulation's loops after its `spatial` innermost data-parallel
    ones (column, channel), split into (those, the reduction loops)."""
    loops = sch.get_loops(conv)
    count = sum(1 for var in sch.get(conv).iter_vars if var.iter_type == tirx.IterVar.CommReduce)
    return loops[-(spatial + count):-count], loops[-count:]


def vectorize_channels(sch: Schedule, loop) -> None:
    """Vectorise the accumulator's channel `loop`; one whose extent is not a
    power of two is split into unrolled vectors of the largest power of two
    dividing it. A <48 x float> accumulator (a tuner's block of 3 AVX-512
    vectors) was reassembled from the stack by shuffles at every step and
    ran 256 channels at 14² at 7 GFLOP/s, against 250 for 32 or 64
    (docs/benchmarks.md, Measurements behind the schedules)."""
    extent = sch.get(loop).extent.value
    width = extent & -extent
    if width != extent and width >= 4:
        parts, loop = sch.split(loop, [None, width])
        sch.unroll(parts)
    sch.vectorize(loop)


def _store_tile(sch: Schedule, packed_output: bool, channel_parts, column, channel) -> None:
    """The epilogue's store of a register tile. Packed, the tile as it is:
    each column's channels of a layout block one vector store (the other
    parts of the channel block and the columns unrolled). NCHW, rows of the
    tile as vectors along the width (the tile transposed in registers):
    faster where few input channels leave the epilogue a large share of the
    work, the same elsewhere (docs/benchmarks.md, Measurements behind the
    schedules)."""
    if packed_output:
        for loop in (*channel_parts, column):
            sch.unroll(loop)
        sch.vectorize(channel)
    else:
        sch.unroll(channel)
        sch.vectorize(column)


def schedule_conv2d(
    function: PrimFunc, groups: int, blocking: ConvBlocking, *, packed_output: bool = False,
) -> PrimFunc:
    """Register-blocked direct convolution (see the module docstring).

    Loop nest: parallel(batch·group·channel-block·row, or batch·row·channel-block
    with `rows_first`) → column tile →
    [init; for input channel, tap row, tap column: unrolled tile columns ×
    vector of `block` channels] → epilogue of the tile. The accumulator is a
    `local` buffer of one tile, so LLVM keeps it in registers. A blocking
    that vectorises columns (`vector` "ow") gets the GSPC schedule instead
    (`schedule_gspc`). With `packed_output` (`output` N x O/block x P x Q x
    block) the epilogue stores the tile's columns as vectors of channels;
    with an input in channel blocks, the input channels are two loops:
    for block, channel in block, tap row, tap column."""
    if blocking.vector == "ow":
        return _gspc().schedule_conv2d_columns(function, groups, blocking)
    if packed_output:
        sch, (n, ob, p, q), parts = packed_output_blocks(Schedule(function), blocking.block, lambda y, x: (y, x))
        outer, oi = [n, ob], parts[-1]
    else:
        sch, outer, oi, (p, q) = output_channel_blocks(Schedule(function), groups, blocking.block)
    conv = sch.get_sblock("conv")
    qo, qi = sch.split(q, [None, blocking.width_tile])
    if blocking.rows_first:
        if groups != 1:
            raise ValueError("conv blocking: rows before channel blocks needs one group")
        outer = [outer[0], p, outer[1]]  # batch, row, channel block
    else:
        outer = [*outer, p]
    sch.reorder(*outer, qo, *((*parts[:-1], qi, oi) if packed_output else (oi, qi)))
    sch.set_scope(conv, 0, "local")
    sch.compute_at(conv, qo, preserve_unit_loops=True)
    sch.parallel(sch.fuse(*outer))

    (column, channel), reductions = _reductions(sch, conv, 2)
    if len(reductions) == 4:  # input in channel blocks
        rc, rci, ry, rx = reductions
        # A block's channels outside the unrolled taps, as an NCHW input's
        # channels are: inside them, LLVM unrolled the channels too (72 taps ×
        # the tile in one body) and spilled accumulators on AVX2, 20% slower
        # (docs/benchmarks.md, Measurements behind the schedules).
        sch.reorder(rc, rci, ry, rx, column, channel)
    else:
        rc, ry, rx = reductions
        sch.reorder(rc, ry, rx, column, channel)
    sch.unroll(column)
    vectorize_channels(sch, channel)
    kh, kw = sch.get(ry).extent.value, sch.get(rx).extent.value
    if kh * kw <= MAX_UNROLLED_TAPS:
        sch.unroll(ry)
    if blocking.unroll_kw:
        sch.unroll(rx)
    sch.decompose_reduction(conv, rc)
    _store_tile(sch, packed_output, parts[:-1] if packed_output else (), qi, oi)
    schedule_pad(sch)
    return sch.mod["main"]


def schedule_pointwise_conv2d(
    function: PrimFunc, groups: int, blocking: ConvBlocking, *, packed_output: bool = False,
) -> PrimFunc:
    """`schedule_conv2d` for `ops.pointwise_conv2d`, over the flattened
    positions: parallel(batch·group·channel-block·position tile) → [init; for
    input channel: unrolled tile positions × vector of `block` channels] →
    epilogue, stored as vectors along the positions (or, with
    `packed_output`, each position's channels one vector)."""
    sch = Schedule(function)
    width = sch.get(sch.get_loops(sch.get_sblock("output"))[3]).extent.value
    # One variable for the positions, y·W + x, and with groups, the channel split.
    if packed_output:
        sch, (n, ob, position), parts = packed_output_blocks(sch, blocking.block, lambda y, x: (y * width + x,))
        outer, oi = [n, ob], parts[-1]
    elif groups > 1:
        split = channel_split(sch, groups, blocking.block)
        sch = relayout_output(sch, lambda b, o, y, x: (b, *split(o), y * width + x))
        outer, oi, (position,) = outer_loops(sch, len(split(0)) + 1)
    else:
        sch = relayout_output(sch, lambda b, o, y, x: (b, o, y * width + x))
        n, o, position = sch.get_loops(sch.get_sblock("output"))
        ob, oi = sch.split(o, [None, blocking.block])
        outer = [n, ob]
    conv = sch.get_sblock("conv")
    fo, fi = sch.split(position, [None, blocking.width_tile])
    sch.reorder(*outer, fo, *((*parts[:-1], fi, oi) if packed_output else (oi, fi)))
    sch.set_scope(conv, 0, "local")
    sch.compute_at(conv, fo, preserve_unit_loops=True)
    sch.parallel(sch.fuse(*outer, fo))

    (column, channel), reductions = _reductions(sch, conv, 2)
    sch.reorder(*reductions, column, channel)
    sch.unroll(column)
    vectorize_channels(sch, channel)
    sch.decompose_reduction(conv, reductions[0])
    _store_tile(sch, packed_output, parts[:-1] if packed_output else (), fi, oi)
    return sch.mod["main"]


def schedule_depthwise_conv2d(
    function: PrimFunc, blocking: ConvBlocking, *, packed_output: bool = False,
) -> PrimFunc:
    """Depthwise convolution vectorised over `block` channels (see
    `ops.depthwise_conv2d`): parallel(batch·channel-block·row) → column tile →
    [init; unrolled taps × unrolled tile columns × vector of channels] →
    epilogue, stored as vectors along the width (with `packed_output`, each
    column's channels one vector). The padded, channel-blocked copy of an
    NCHW input runs first, parallel over batch and channel blocks; an input
    already in channel blocks is padded per output row, the rows its taps
    read.
    A blocking that vectorises columns gets the GSPC schedule instead."""
    if blocking.vector == "ow":
        return _gspc().schedule_depthwise_columns(function, blocking)
    sch = Schedule(function)
    output = sch.get_sblock("output")
    conv = sch.get_sblock("conv")
    if packed_output:
        n, cb, p, q, ci = sch.get_loops(output)
    else:
        n, c, p, q = sch.get_loops(output)
        cb, ci = sch.split(c, [None, blocking.block])
    qo, qi = sch.split(q, [None, blocking.width_tile])
    sch.reorder(n, cb, p, qo, *((qi, ci) if packed_output else (ci, qi)))
    sch.set_scope(conv, 0, "local")
    sch.compute_at(conv, qo, preserve_unit_loops=True)
    rows = sch.fuse(n, cb, p)
    sch.parallel(rows)
    pad = _stage(sch, "pad")
    padded_by_row = pad is not None and len(sch.get(pad).reads[0].region) == 5
    if padded_by_row:
        # An input in channel blocks is padded row by row into a buffer that
        # stays in L1 (the taps' rows, re-copied by the next output row):
        # a whole padded copy is one more pass over memory, and the
        # network's largest depthwise layers ran twice as fast without it
        # (docs/benchmarks.md, MobileNetV2 in channel blocks).
        sch.compute_at(pad, rows, preserve_unit_loops=True)
        sch.vectorize(sch.get_loops(pad)[-1])
    column, channel, ry, rx = sch.get_loops(conv)[-4:]
    sch.reorder(ry, rx, column, channel)
    sch.unroll(ry)
    if blocking.unroll_kw:
        sch.unroll(rx)
    sch.unroll(column)
    sch.vectorize(channel)
    sch.decompose_reduction(conv, ry)
    _store_tile(sch, packed_output, (), qi, ci)
    if not padded_by_row:
        schedule_pad(sch)
    return sch.mod["main"]


def schedule_dense(function: PrimFunc) -> PrimFunc:
    """Dense as a blocked GEMV: parallel(batch·feature-block) → [for k:
    vector of `block` features] → epilogue."""
    sch = Schedule(function)
    output = sch.get_sblock("output")
    acc = sch.get_sblock("dense")
    block = sch.get(sch.get_loops(acc)[-2]).extent.value
    n, m = sch.get_loops(output)
    mb, mi = sch.split(m, [None, block])
    sch.set_scope(acc, 0, "local")
    sch.compute_at(acc, mb, preserve_unit_loops=True)
    sch.parallel(sch.fuse(n, mb))
    feature, rk = sch.get_loops(acc)[-2:]
    extent = sch.get(rk).extent.value
    unroll = 4 if extent % 4 == 0 else 1
    rko, rki = sch.split(rk, [None, unroll])
    sch.reorder(rko, rki, feature)
    sch.unroll(rki)
    sch.vectorize(feature)
    sch.decompose_reduction(acc, rko)
    return sch.mod["main"]


# Memory-bound kernels ------------------------------------------------------------


def schedule_elementwise(function: PrimFunc, unit: VectorUnit) -> PrimFunc:
    """One loop over all elements of `output`: vectors of `lanes` where the
    element count allows, chunks in parallel above PARALLEL_MIN_ELEMENTS."""
    sch = Schedule(function)
    output = sch.get_sblock("output")
    loop = sch.fuse(*sch.get_loops(output))
    extent = sch.get(loop).extent.value
    if extent % unit.lanes == 0 and extent >= unit.lanes:
        loop, vector = sch.split(loop, [None, unit.lanes])
        sch.vectorize(vector)
    if extent >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(loop)
    return sch.mod["main"]


def schedule_window(function: PrimFunc) -> PrimFunc:
    """Pooling: each output element reduces its window in a register (the
    `window_sum` stage, where there is one, computed at the element);
    batch·channel·rows in parallel."""
    sch = Schedule(function)
    output = sch.get_sblock("output")
    n, c, p, q = sch.get_loops(output)[:4]  # max pooling reduces in `output` itself
    total = _stage(sch, "window_sum")
    if total is not None:
        sch.set_scope(total, 0, "local")
        sch.compute_at(total, q)
    sch.parallel(sch.fuse(n, c, p))
    return sch.mod["main"]
