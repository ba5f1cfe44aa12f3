"""The schedules the LLVM backend runs its nests by.

A convolution with a `schedule` in the IR (`tconv.ir.schedule.ConvSchedule`)
runs by it literally: its tiles, order, vectorized loop, unrolled loops and
parallel loops, over the loops n, g, oc, oh, ow, ic, kh, kw. The one
completion: a schedule that only tiles `oc` and `ow` once each (what
`tconv tune` writes, and the knobs the TVM backend honours) takes the other
entries from the template below, as the TVM backend does. The weight is packed
in blocks of the innermost `oc` tile factor.

Without a schedule, a convolution runs by the register-blocked template

    n, g, oc.0, oh, ow.0, ic, kh, kw, ow.1, oc.1

`oc.1` (a block of output channels, one or two vectors) vectorized, `kh`,
`kw`, `ow.1` unrolled, `n, g, oc.0, oh` parallel; the column tile is as wide
as half the vector registers allow for the accumulators
(`conv2d_blocking`). A depthwise convolution
(one input and one output channel per group) vectorizes a tile of output
columns instead. The other ops vectorize their innermost loop (or a tile of
it) and run their outer loops in parallel when they are large enough to
repay a launch.
"""

from __future__ import annotations

from collections.abc import Sequence

from tconv.ir.schedule import ConvSchedule
from tconv.kernels.target import VectorUnit
from tconv.kernels.templates import TEMPLATE_ORDER, TEMPLATE_PARALLEL, TEMPLATE_UNROLL
from tconv.lowering.llvm.loops import Nest, NestSchedule

PARALLEL_MIN_ELEMENTS = 1 << 14
"""Outputs below this size run on the calling thread alone."""


def channel_blocks(out_group: int, unit: VectorUnit) -> list[int]:
    """Output-channel blocks worth trying: two vectors and one, where the
    group fills them, else the whole group."""
    blocks = [b for b in (2 * unit.lanes, unit.lanes) if out_group >= b]
    return blocks or [out_group]


def conv2d_blocking(out_group: int, out_width: int, unit: VectorUnit) -> tuple[int, int]:
    """(channel block, column tile) of the template: at most half the vector
    registers hold accumulators (block vectors × tile; more spill the
    weights and inputs). Chosen by accumulators times the fraction of the
    last tile's columns that are real, then the wider block."""
    candidates = []
    for block in channel_blocks(out_group, unit):
        vectors = -(-block // unit.lanes)
        budget = max(1, unit.registers // 2 // vectors)
        for tile in range(1, min(out_width, budget) + 1):
            used = out_width / (-(-out_width // tile) * tile)
            candidates.append(((round(vectors * tile * used, 6), block, tile), block, tile))
    _, block, tile = max(candidates)
    return block, tile


def template_schedule(block: int, width_tile: int) -> NestSchedule:
    return NestSchedule(
        {"oc": (block,), "ow": (width_tile,)}, TEMPLATE_ORDER, "oc.1" if block > 1 else None,
        TEMPLATE_UNROLL, TEMPLATE_PARALLEL,
    )


def default_conv2d_schedule(in_group: int, out_group: int, out_width: int, unit: VectorUnit) -> NestSchedule:
    """The template for a convolution with no schedule of its own (see the module docstring)."""
    if in_group == 1 and out_group == 1:
        lanes = min(unit.lanes, out_width)
        return NestSchedule(
            {"ow": (lanes,)}, ("n", "g", "oc", "oh", "ow.0", "ic", "kh", "kw", "ow.1"), "ow.1",
            frozenset({"kh", "kw"}), ("n", "g"),
        )
    return template_schedule(*conv2d_blocking(out_group, out_width, unit))


def conv2d_schedule(schedule: ConvSchedule | None, in_group: int, out_group: int, out_width: int,
                    unit: VectorUnit) -> NestSchedule:
    """How a convolution runs: its own schedule (completed from the template
    when it only tiles oc and ow), or the default (also for a schedule with
    only a `layout` entry; packed layouts themselves are refused before, by
    `ProgramBuilder.refuse_layouts`)."""
    if schedule is None or not schedule.transforms_loops:
        return default_conv2d_schedule(in_group, out_group, out_width, unit)
    tiles = dict(schedule.tiles)
    knobs_only = (
        set(tiles) == {"oc", "ow"} and all(len(f) == 1 for f in tiles.values())
        and not (schedule.order or schedule.vectorize or schedule.unroll or schedule.parallel)
    )
    if knobs_only:
        return template_schedule(tiles["oc"][0], tiles["ow"][0])
    return NestSchedule(tiles, schedule.order, schedule.vectorize, schedule.unroll, schedule.parallel)


def oc_tiles(schedule: NestSchedule) -> tuple[int, ...]:
    return tuple(schedule.tiles.get("oc", ()))


def dense_schedule(out_features: int, unit: VectorUnit, batch: int, features: int) -> NestSchedule:
    """m tiled by one or two vectors (vectorized), k inside, n and the
    blocks of m parallel on large layers."""
    block = channel_blocks(out_features, unit)[0]
    parallel = ("n", "m.0") if batch * out_features * features >= PARALLEL_MIN_ELEMENTS * 16 else ()
    return NestSchedule({"m": (block,)}, ("n", "m.0", "k", "m.1"), "m.1" if block > 1 else None, frozenset(), parallel)


def _total(nest: Nest) -> int:
    total = 1
    for loop in nest.loops:
        if not loop.reduction:
            total *= loop.extent
    return total


def pool_schedule(nest: Nest, unit: VectorUnit) -> NestSchedule:
    """A tile of output columns vectorized, the window unrolled, n, c, oh parallel."""
    lanes = min(unit.lanes, nest.loop("ow").extent)
    kernel = nest.loop("kh").extent * nest.loop("kw").extent
    parallel = ("n", "c", "oh") if _total(nest) >= PARALLEL_MIN_ELEMENTS else ()
    return NestSchedule(
        {"ow": (lanes,)}, ("n", "c", "oh", "ow.0", "kh", "kw", "ow.1"), "ow.1" if lanes > 1 else None,
        frozenset({"kh", "kw"}) if kernel <= 64 else frozenset(), parallel,
    )


def reduction_schedule(nest: Nest) -> NestSchedule:
    """Data-parallel loops outside, parallel when large; the reduction serial."""
    outer = tuple(loop.name for loop in nest.loops if not loop.reduction)
    return NestSchedule(parallel=outer if _total(nest) * 16 >= PARALLEL_MIN_ELEMENTS else ())


def elementwise_schedule(nest: Nest, unit: VectorUnit) -> NestSchedule:
    """The innermost loop vectorized (tiled by a vector when longer), the
    others parallel on large outputs."""
    names = [loop.name for loop in nest.loops]
    inner = nest.loops[-1]
    if inner.extent < 4:
        vector, tiles, order = None, {}, ()
        inside: Sequence[str] = names
    elif inner.extent > unit.lanes:
        vector, tiles = f"{inner.name}.1", {inner.name: (unit.lanes,)}
        order = (*names[:-1], f"{inner.name}.0", vector)
        inside = order
    else:
        vector, tiles, order = inner.name, {}, ()
        inside = names
    parallel = tuple(inside[:-1]) if _total(nest) >= PARALLEL_MIN_ELEMENTS else ()
    return NestSchedule(tiles, order, vector, frozenset(), parallel)
