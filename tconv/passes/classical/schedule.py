"""Schedule passes: loop transformations of convolutions, written into
their `schedule` property (`tconv.ir.schedule`). They change how a
convolution runs, never what it computes.

    tconv-opt net.mlir -p 'tconv-tile{loop=oc factors=16},tconv-tile{loop=ow factors=4},tconv-vectorize{loop="oc.1"}'

Loop names with a dot are quoted in a pipeline (`loop="oc.1"`). Each pass
takes `layers` (see `tconv.passes.select`; default: every
convolution) and updates the schedule of each selected convolution; a
result that breaks a rule every backend shares (an unknown loop, a
vectorised reduction loop, an inner parallel loop...) fails the pass with
the layer and the rule. What a given backend can honour is checked when it
compiles (`tconv.kernels.templates` for TVM).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from tconv.ir.schedule import ConvSchedule, ScheduleError, parse_schedule
from tconv.passes.select import select_convs


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


@dataclass(frozen=True)
class SchedulePass(ModulePass):
    """Updates the schedule of every selected convolution with `update`."""

    layers: str = ""
    """Comma-separated layer names and patterns; empty: every convolution."""

    def update(self, schedule: ConvSchedule) -> ConvSchedule:
        raise NotImplementedError

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        selected = select_convs(op, self.layers, self.name)
        if not selected:
            raise PassFailedException(f"{self.name}: no convolution matches layers='{self.layers}'")
        for layer in selected:
            conv = layer.conv
            try:
                current = parse_schedule(conv.schedule) if conv.schedule is not None else ConvSchedule()
                schedule = parse_schedule(self.update(current).to_attr())
            except ScheduleError as err:
                raise PassFailedException(f"{self.name}: layer '{layer.name}': {err}") from None
            conv.properties["schedule"] = schedule.to_attr()


@dataclass(frozen=True)
class TilePass(SchedulePass):
    """Split `loop` by the inner `factors` (outer first):
    `tconv-tile{loop=oc factors=16}` makes loops `oc.0` and `oc.1`,
    `factors=2,8` three loops."""

    name = "tconv-tile"

    loop: str = ""
    """The loop to split: oc, oh, ow, ic, kh, kw (or a part made by an earlier split, `oc.1`)."""
    factors: tuple[int, ...] = ()
    """The inner loops' extents, outermost first (`16`, or `2,8`)."""

    def update(self, schedule: ConvSchedule) -> ConvSchedule:
        if not self.factors:
            raise ScheduleError("give the tile factors: factors=16 or factors=2,8")
        return replace(schedule, tiles={**schedule.tiles, self.loop: tuple(self.factors)})


@dataclass(frozen=True)
class ReorderPass(SchedulePass):
    """Run the loops in `order` (every loop, outermost first)."""

    name = "tconv-reorder"

    order: str = ""
    """Every loop of the convolution, comma-separated, outermost first."""

    def update(self, schedule: ConvSchedule) -> ConvSchedule:
        return replace(schedule, order=_names(self.order))


@dataclass(frozen=True)
class UnrollPass(SchedulePass):
    """Unroll the loops `loops` (added to those unrolled already)."""

    name = "tconv-unroll"

    loops: str = ""
    """The loops to unroll, comma-separated."""

    def update(self, schedule: ConvSchedule) -> ConvSchedule:
        return replace(schedule, unroll=schedule.unroll | frozenset(_names(self.loops)))


@dataclass(frozen=True)
class VectorizePass(SchedulePass):
    """Vectorize `loop`, which must be innermost and data-parallel."""

    name = "tconv-vectorize"

    loop: str = ""
    """The loop to vectorize: the innermost, data-parallel."""

    def update(self, schedule: ConvSchedule) -> ConvSchedule:
        return replace(schedule, vectorize=self.loop)


@dataclass(frozen=True)
class ParallelPass(SchedulePass):
    """Run the loops `loops` (an outermost prefix, data-parallel) across threads."""

    name = "tconv-parallel"

    loops: str = ""
    """The loops to run across threads, comma-separated: an outermost prefix."""

    def update(self, schedule: ConvSchedule) -> ConvSchedule:
        return replace(schedule, parallel=_names(self.loops))
