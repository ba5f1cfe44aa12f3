"""What the TVM backend makes of a convolution's schedule (`tconv.ir.schedule`).

The CPU backend runs convolutions by one template (`schedule_cpu`): the loop
nest in the order

    n, g, oc.0, oh, ow.0, ic, kh, kw, ow.1, oc.1

with `oc.1` (a block of output channels) vectorised, `kh`, `kw` and `ow.1`
unrolled, and `n, g, oc.0, oh` fused and parallel. Its knobs are the two
tile factors: the channel block (`tile = {oc = [b]}`) and the column tile
(`tile = {ow = [t]}`). A schedule within that template is honoured; any other
is refused with a diagnostic, never silently run another way. A missing
entry leaves the template's own choice (`schedule_cpu.conv2d_blocking`).
"""

from __future__ import annotations

from tconv.ir.schedule import ConvSchedule

TEMPLATE_ORDER = ("n", "g", "oc.0", "oh", "ow.0", "ic", "kh", "kw", "ow.1", "oc.1")
TEMPLATE_PARALLEL = ("n", "g", "oc.0", "oh")
TEMPLATE_UNROLL = frozenset({"kh", "kw", "ow.1"})


class UnsupportedSchedule(ValueError):
    """A valid schedule outside the backend's template; the message says what."""


def template_knobs(schedule: ConvSchedule, groups: int, out_group: int) -> tuple[int | None, int | None]:
    """The (channel block, column tile) that `schedule` asks of the template,
    None where it leaves the choice to the backend."""
    for loop, factors in schedule.tiles.items():
        if loop not in ("oc", "ow"):
            raise UnsupportedSchedule(f"it tiles only loops oc and ow, not '{loop}'")
        if len(factors) != 1:
            raise UnsupportedSchedule(f"it splits '{loop}' once, not {len(factors)} times")
    tiled = set(schedule.tiles) == {"oc", "ow"}
    if schedule.order and (not tiled or schedule.order != TEMPLATE_ORDER):
        raise UnsupportedSchedule(f"its loop order is {', '.join(TEMPLATE_ORDER)} (with oc and ow tiled)")
    if schedule.vectorize not in (None, "oc.1"):
        raise UnsupportedSchedule(f"it vectorizes oc.1 (a block of output channels), not '{schedule.vectorize}'")
    if schedule.unroll and schedule.unroll != TEMPLATE_UNROLL:
        raise UnsupportedSchedule(f"it unrolls {', '.join(sorted(TEMPLATE_UNROLL))}, no other set")
    if schedule.parallel and schedule.parallel != TEMPLATE_PARALLEL:
        raise UnsupportedSchedule(f"it runs {', '.join(TEMPLATE_PARALLEL)} in parallel, no other set")
    block, width_tile = schedule.factor("oc"), schedule.factor("ow")
    if block is not None and groups > 1 and out_group % block:
        raise UnsupportedSchedule(
            f"a channel block of {block} does not divide the {out_group} output channels of a group "
            "(no tails across groups)"
        )
    return block, width_tile
