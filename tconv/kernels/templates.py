"""The convolution templates as schedules (`tconv.ir.schedule`): what a
backend makes of a convolution's schedule, and the schedule of a blocking.

The CPU backends run convolutions by two templates, each a loop nest of the
schedule language with its knobs as tile factors
(`tconv.kernels.blocking.ConvBlocking`); the TVM backend runs both, the
LLVM backend the direct one (`TEMPLATE_ORDER`, `TEMPLATE_PARALLEL`,
`TEMPLATE_UNROLL`, defined here for both):

- the direct convolution (TVM: `schedule_cpu`), a block of output channels in
  the vector lanes:

      n, g, oc.0, oh, ow.0, ic, kh, kw, ow.1, oc.1

  `oc.1` vectorised, `kh`, `kw` and `ow.1` unrolled, `n, g, oc.0, oh` fused
  and parallel; knobs: the channel block (`tile = {oc = [b]}`), the
  column tile (`tile = {ow = [t]}`) and, with one group, the order of the
  parallel loops (`n, g, oh, oc.0`: rows before channel blocks). For a
  depthwise convolution the channels are the groups: `tile = {g = [b],
  ow = [t]}`, order n, g.0, oc, oh, ow.0, ic, kh, kw, ow.1, g.1, `g.1`
  vectorised;

- GSPC (TVM: `schedule_gspc`), a run of output columns in the lanes:

      n, g, oc.0, oh.0, ow.0, ic, kh, kw, oc.1, oh.1, ow.1

  `ow.1` vectorised, `kh`, `kw`, `oc.1`, `oh.1` unrolled, `n, g` parallel
  (`n, g, oc.0, oh.0` with fewer than 8 groups); knobs: the channel block
  (`oc`), rows (`oh`) and columns (`ow`) of the register tile. In a loop
  order, a loop left untiled is a tile of 1 (and keeps its plain name: `oh`
  for `oh.0`, with no `oh.1`).

In both, leaving `kw` out of `unroll` keeps the kernel-column loop rolled
(the kernel-width unroll knob). A schedule within a template is honoured;
any other is refused with a diagnostic, never silently run another way. A
missing entry leaves the template's own choice (`tconv.kernels.blocking`).
"""

from __future__ import annotations

from dataclasses import replace

from tconv.ir.schedule import ConvSchedule
from tconv.kernels.blocking import ConvBlocking, runs_groups_in_parallel

TEMPLATE_ORDER = ("n", "g", "oc.0", "oh", "ow.0", "ic", "kh", "kw", "ow.1", "oc.1")
TEMPLATE_PARALLEL = ("n", "g", "oc.0", "oh")
ROWS_FIRST_ORDER = ("n", "g", "oh", "oc.0", *TEMPLATE_ORDER[4:])
ROWS_FIRST_PARALLEL = ROWS_FIRST_ORDER[:4]
TEMPLATE_UNROLL = frozenset({"kh", "kw", "ow.1"})


class UnsupportedSchedule(ValueError):
    """A valid schedule outside the backend's templates; the message says what."""


def _named(loop: str, tiled: bool, part: int) -> str | None:
    """Loop `loop`'s part 0 (outer) or 1 (inner) under the tiling: its plain
    name (outer) or nothing (inner) where it is not tiled."""
    if tiled:
        return f"{loop}.{part}"
    return loop if part == 0 else None


def template_schedule(
    blocking: ConvBlocking, groups: int, depthwise: bool = False, tiles: frozenset[str] | None = None,
) -> ConvSchedule:
    """The complete schedule of the template that runs `blocking` on a
    convolution of `groups` groups: its tiles, order, vectorised loop,
    unrolled and parallel loops (GSPC's depend on the groups:
    `blocking.runs_groups_in_parallel`).

    `tiles`: which loops carry a tile entry; by default every loop a knob
    sets (a GSPC schedule leaves `oh` untiled where the tile has one row)."""
    if blocking.vector == "oc":
        vector_loop = "g" if depthwise else "oc"
        factors = {vector_loop: (blocking.block,), "ow": (blocking.width_tile,)}
        if depthwise:
            order = ("n", "g.0", "oc", "oh", "ow.0", "ic", "kh", "kw", "ow.1", "g.1")
            parallel = ("n", "g.0", "oc", "oh")
        elif blocking.rows_first:
            order, parallel = ROWS_FIRST_ORDER, ROWS_FIRST_PARALLEL
        else:
            order, parallel = TEMPLATE_ORDER, TEMPLATE_PARALLEL
        unroll = {"kh", "ow.1"} | ({"kw"} if blocking.unroll_kw else set())
        return ConvSchedule(factors, order, f"{vector_loop}.1", frozenset(unroll), parallel)

    if tiles is None:
        tiles = frozenset({"oc", "ow"} | ({"oh"} if blocking.rows > 1 else set()))
    tiled = {loop: loop in tiles for loop in ("oc", "oh", "ow")}
    factors = {"oc": (blocking.block,), "oh": (blocking.rows,), "ow": (blocking.width_tile,)}
    factors = {loop: f for loop, f in factors.items() if tiled[loop]}
    outer = ("n", "g", _named("oc", tiled["oc"], 0), _named("oh", tiled["oh"], 0), "ow.0")
    inner = tuple(n for n in (_named("oc", tiled["oc"], 1), _named("oh", tiled["oh"], 1)) if n)
    order = (*outer, "ic", "kh", "kw", *inner, "ow.1")
    unroll = {"kh", *inner} | ({"kw"} if blocking.unroll_kw else set())
    parallel = outer[:2] if groups > 1 and runs_groups_in_parallel(groups) else outer[:4]
    return ConvSchedule(factors, order, "ow.1", frozenset(unroll), parallel)


def template_blocking(
    schedule: ConvSchedule, groups: int, out_group: int, default: ConvBlocking, depthwise: bool = False,
) -> ConvBlocking:
    """The blocking `schedule` asks of the templates, `default`'s knobs where
    it leaves them open; UnsupportedSchedule where no template runs it.

    The template is GSPC where the schedule vectorises `ow.1` or tiles `oh`,
    else the direct convolution (as before GSPC, so that existing schedules
    keep their meaning)."""
    allowed = ("g", "oc", "oh", "ow") if depthwise else ("oc", "oh", "ow")
    for loop, factors in schedule.tiles.items():
        if loop not in allowed:
            raise UnsupportedSchedule(f"it tiles only loops {', '.join(allowed[:-1])} and {allowed[-1]}, not '{loop}'")
        if len(factors) != 1:
            raise UnsupportedSchedule(f"it splits '{loop}' once, not {len(factors)} times")
    vector = "ow" if schedule.vectorize == "ow.1" or "oh" in schedule.tiles else "oc"
    channel_loop = "g" if depthwise and vector == "oc" else "oc"
    if vector == "oc" and schedule.vectorize not in (None, f"{channel_loop}.1"):
        raise UnsupportedSchedule(
            f"it vectorizes {channel_loop}.1 (a block of output channels) or ow.1 (columns), "
            f"not '{schedule.vectorize}'"
        )
    other = "oc" if channel_loop == "g" else "g"
    if other in schedule.tiles:
        raise UnsupportedSchedule(f"its channel block here is a tile of '{channel_loop}', not of '{other}'")

    if vector == default.vector:
        base = default
    elif vector == "ow":
        base = ConvBlocking(1, default.width_tile, vector="ow")
    else:
        base = ConvBlocking(1 if depthwise else default.block, default.width_tile)
    # In a loop order, an untiled oc or oh is a tile of one (its `.1` part is
    # absent); without one (tiles only), a missing tile is the default's. A
    # GSPC schedule without an `oh` tile has an order (`ow.1` innermost).
    untiled = 1 if schedule.order and vector == "ow" else None
    blocking = replace(
        base,
        block=schedule.factor(channel_loop) or untiled or base.block,
        width_tile=schedule.factor("ow") or base.width_tile,
        rows=schedule.factor("oh") or 1,
        unroll_kw=("kw" in schedule.unroll) if schedule.unroll else base.unroll_kw,
        rows_first=_rows_first(schedule, base.rows_first) if vector == "oc" and not depthwise else False,
    )
    if blocking.rows_first and groups > 1:
        raise UnsupportedSchedule("it runs rows before channel blocks only in a convolution of one group")
    if vector == "ow" and depthwise and blocking.block != 1:
        raise UnsupportedSchedule(
            f"a depthwise convolution has one channel per group: tile oc by 1, not {blocking.block}"
        )
    if groups > 1 and not depthwise and out_group % blocking.block:
        raise UnsupportedSchedule(
            f"a channel block of {blocking.block} does not divide the {out_group} output channels of a group "
            "(no tails across groups)"
        )

    expected = template_schedule(blocking, groups, depthwise, frozenset(schedule.tiles))
    gspc = " (GSPC)" if vector == "ow" else ""
    if schedule.order and schedule.order != expected.order:
        raise UnsupportedSchedule(f"its loop order is {', '.join(expected.order)}{gspc} for these tiles")
    required = expected.unroll - {"kw"}
    if schedule.unroll and schedule.unroll - {"kw"} != required:
        raise UnsupportedSchedule(
            f"it unrolls {', '.join(sorted(required | {'kw'}))}{gspc}, "
            f"or {', '.join(sorted(required))} with kw rolled, no other set"
        )
    if schedule.parallel and schedule.parallel != expected.parallel:
        others = f" or {', '.join(ROWS_FIRST_PARALLEL)}" if expected.parallel == TEMPLATE_PARALLEL and groups == 1 else ""
        raise UnsupportedSchedule(f"it runs {', '.join(expected.parallel)}{others} in parallel{gspc}, no other set")
    return blocking


def _rows_first(schedule: ConvSchedule, default: bool) -> bool:
    """Whether `schedule` puts the output rows before the channel blocks (in
    its loop order, else in its parallel loops); `default` where it says
    neither."""
    for loops in (schedule.order, schedule.parallel):
        if "oh" in loops and "oc.0" in loops:
            return loops.index("oh") < loops.index("oc.0")
    return default


def template_knobs(schedule: ConvSchedule, groups: int, out_group: int) -> tuple[int | None, int | None]:
    """The (channel block, column tile) that `schedule` asks of the direct
    convolution template, None where it leaves the choice to the backend.

    The refusals are `template_blocking`'s; a schedule that needs more than
    these two knobs (GSPC, a rolled kernel-column loop) is refused too, as a
    caller of this form cannot run it: `template_blocking` reads every knob."""
    blocking = template_blocking(schedule, groups, out_group, ConvBlocking(1, 1))
    if blocking.vector != "oc" or not blocking.unroll_kw or blocking.rows_first:
        raise UnsupportedSchedule(
            "this backend honours only the direct template's channel block and column tile "
            "(GSPC, kernel-column unroll and rows-first knobs need `template_blocking`)"
        )
    return schedule.factor("oc"), schedule.factor("ow")


def gpu_tile(schedule: ConvSchedule, out_group: int, default: tuple[int, int]) -> tuple[int, int]:
    """The (output channels, columns) thread tile `schedule` asks of the CUDA
    kernel of a direct convolution with `out_group` output channels per
    group, `default`'s where it leaves one open (the schedule
    `tconv.search.cuda_tuning.gpu_schedule` writes); UnsupportedSchedule for any
    other request: on the GPU a schedule tiles `oc` and `ow` once each, and
    the kernel chooses its own loop order, thread binding and unrolling
    (`schedule_gpu`)."""
    for loop, factors in schedule.tiles.items():
        if loop not in ("oc", "ow"):
            raise UnsupportedSchedule(f"on cuda it tiles only loops oc and ow (the thread's tile), not '{loop}'")
        if len(factors) != 1:
            raise UnsupportedSchedule(f"on cuda it splits '{loop}' once, not {len(factors)} times")
    others = [name for name, value in (("order", schedule.order), ("vectorize", schedule.vectorize),
                                       ("unroll", schedule.unroll), ("parallel", schedule.parallel)) if value]
    if others:
        raise UnsupportedSchedule(
            f"on cuda it sets only tiles of oc and ow (the thread's tile), not {', '.join(others)}"
        )
    channels, columns = schedule.factor("oc") or default[0], schedule.factor("ow") or default[1]
    if out_group % channels:
        raise UnsupportedSchedule(
            f"a thread tile of {channels} channels does not divide the {out_group} output channels of a group"
        )
    return channels, columns
