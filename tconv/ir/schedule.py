"""The schedule of a convolution: how its loop nest runs, as data in the IR.

A `tconv.conv2d` computes the loop nest

    n, g, oc, oh, ow, ic, kh, kw        (oc and ic count within a group)

whose first five loops are data-parallel and last three a reduction. Its
optional `schedule` property transforms that nest, in the classic
vocabulary of loop transformations:

    schedule {tile = {oc = [8], ow = [4]},
              order = ["n", "g", "oc.0", "oh", "ow.0", "ic", "kh", "kw", "ow.1", "oc.1"],
              vectorize = "oc.1", unroll = ["kh", "kw", "ow.1"], parallel = ["n", "g", "oc.0", "oh"]}

- `tile`: a loop split by inner factors: `oc = [8]` makes `oc.0` (the
  blocks) and `oc.1` (8 channels); `[a, b]` makes three loops. A factor need
  not divide the extent: the last tile has a tail, which a backend handles
  or refuses.
- `order`: every loop (after tiling), outermost first. Default: the tiled
  loops in place of their loop, outer parts first.
- `vectorize`: the innermost loop, which must be data-parallel.
- `unroll`: loops to unroll.
- `parallel`: data-parallel loops run across threads, an outermost prefix of
  the order.
- `layout`: how the convolution's input and output activations are stored,
  `{input = "NCHW8c", output = "NCHW8c"}`: each `NCHW` or `NCHW<b>c` (the
  channels in blocks of b, N x C/b x H x W x b, b dividing the channels); a
  missing key, or no `layout` entry, is NCHW. It is not a loop
  transformation: the producer of a tensor and every reader must agree on
  its layout, which `tconv-pack` arranges (`tconv.passes.classical.pack`) and
  the backends check.
- `algorithm`: how the convolution is computed, `"direct"` (a loop nest
  of the convolution, with the entries above), `"winograd"` (F(4×4, 3×3):
  3×3 convolutions of stride 1, dilation 1 and padding 1 on every side,
  in three kernels of their own: no loop entries, NCHW activations) or
  `"gspc"` (the direct nest with a run of output columns in the vector
  lanes, `vectorize = "ow.1"` where it says; NCHW activations) or
  `"sparse"` (only the nonzero weights, for a convolution that declares
  `nonzeros`: a kernel of its own, no loop entries, NCHW activations). No entry:
  the backend's default for the convolution and target
  (`tconv.kernels.algorithm.default_algorithm`). A backend that lacks an
  algorithm refuses it with a located error; it never runs another.

This module checks what holds for any backend (`parse_schedule`, called by
the verifier); what a backend can honour beyond that is the backend's to
say, with a diagnostic (see `tconv.kernels.templates`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, IntegerAttr, StringAttr

LOOPS = ("n", "g", "oc", "oh", "ow", "ic", "kh", "kw")
"""The loops of a convolution, outermost first."""

REDUCTION_LOOPS = frozenset({"ic", "kh", "kw"})

KEYS = ("tile", "order", "vectorize", "unroll", "parallel", "layout", "algorithm")

DIRECT, WINOGRAD, GSPC, SPARSE = "direct", "winograd", "gspc", "sparse"
ALGORITHMS = (DIRECT, WINOGRAD, GSPC, SPARSE)
"""The values of a schedule's `algorithm` entry."""

NCHW = "NCHW"
"""The plain activation layout."""

_PACKED = re.compile(r"NCHW([1-9][0-9]*)c")


class ScheduleError(ValueError):
    """A schedule that breaks a rule; the message says which."""


def layout_block(layout: str) -> int | None:
    """The channel block of `layout` ("NCHW8c": 8), None for "NCHW"; a
    ScheduleError for anything else."""
    if layout == NCHW:
        return None
    match = _PACKED.fullmatch(layout)
    if match is None:
        raise ScheduleError(f"schedule: layout '{layout}' is neither NCHW nor NCHW<block>c (e.g. NCHW8c)")
    return int(match.group(1))


def packed_layout(block: int | None) -> str:
    """The layout of channel blocks of `block` (None: NCHW)."""
    return NCHW if block is None else f"NCHW{block}c"


@dataclass(frozen=True)
class ActivationLayouts:
    """The storage layouts of a convolution's input and output activations."""

    input: str = NCHW
    output: str = NCHW

    @property
    def input_block(self) -> int | None:
        return layout_block(self.input)

    @property
    def output_block(self) -> int | None:
        return layout_block(self.output)

    @property
    def packed(self) -> bool:
        """Whether either activation is stored in channel blocks."""
        return (self.input, self.output) != (NCHW, NCHW)

    def check_channels(self, in_channels: int, out_channels: int) -> None:
        """A ScheduleError unless each block divides its tensor's channels."""
        for role, block, channels in (
            ("input", self.input_block, in_channels), ("output", self.output_block, out_channels)
        ):
            if block is not None and channels % block:
                raise ScheduleError(
                    f"schedule: the {role} layout NCHW{block}c needs channels divisible by {block}, "
                    f"the {role} has {channels}"
                )


@dataclass(frozen=True)
class ConvSchedule:
    tiles: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    order: tuple[str, ...] = ()
    vectorize: str | None = None
    unroll: frozenset[str] = frozenset()
    parallel: tuple[str, ...] = ()
    layout: ActivationLayouts | None = None
    """None: no `layout` entry, both activations NCHW."""
    algorithm: str | None = None
    """One of ALGORITHMS; None: no `algorithm` entry, the backend's default."""

    @property
    def layouts(self) -> ActivationLayouts:
        """The activation layouts, NCHW where the schedule has no entry."""
        return self.layout or ActivationLayouts()

    @property
    def transforms_loops(self) -> bool:
        """Whether any loop entry is set (tile, order, vectorize, unroll,
        parallel): a schedule that only places the activations or names the
        algorithm leaves the loops to the backend's template."""
        return bool(self.tiles or self.order or self.vectorize or self.unroll or self.parallel)

    def loops(self) -> list[str]:
        """Every loop after tiling, in the default order."""
        names = []
        for loop in LOOPS:
            factors = self.tiles.get(loop, ())
            names += [f"{loop}.{i}" for i in range(len(factors) + 1)] if factors else [loop]
        return names

    def factor(self, loop: str) -> int | None:
        """The innermost tile factor of `loop`, or None where it is not tiled."""
        factors = self.tiles.get(loop, ())
        return factors[-1] if factors else None

    def to_attr(self) -> DictionaryAttr:
        """The schedule as the property `parse_schedule` reads."""
        entries: dict[str, object] = {}
        if self.tiles:
            entries["tile"] = DictionaryAttr(
                {loop: ArrayAttr([IntegerAttr(f, 64) for f in factors]) for loop, factors in self.tiles.items()}
            )
        if self.order:
            entries["order"] = ArrayAttr([StringAttr(name) for name in self.order])
        if self.vectorize is not None:
            entries["vectorize"] = StringAttr(self.vectorize)
        if self.unroll:
            entries["unroll"] = ArrayAttr([StringAttr(name) for name in sorted(self.unroll)])
        if self.parallel:
            entries["parallel"] = ArrayAttr([StringAttr(name) for name in self.parallel])
        if self.layout is not None:
            entries["layout"] = DictionaryAttr(
                {"input": StringAttr(self.layout.input), "output": StringAttr(self.layout.output)}
            )
        if self.algorithm is not None:
            entries["algorithm"] = StringAttr(self.algorithm)
        return DictionaryAttr(entries)  # type: ignore[arg-type]


def loop_name(loop: str) -> str:
    """The loop of the original nest a (possibly tiled) loop name comes from."""
    return loop.split(".", 1)[0]


def _names(value, key: str) -> list[str]:
    if not isinstance(value, ArrayAttr) or not all(isinstance(v, StringAttr) for v in value.data):
        raise ScheduleError(f"schedule: `{key}` must be a list of loop names")
    return [v.data for v in value.data]


def _tiles(value) -> dict[str, tuple[int, ...]]:
    if not isinstance(value, DictionaryAttr):
        raise ScheduleError("schedule: `tile` must be a dictionary {loop = [factor, ...]}")
    tiles = {}
    for loop, factors in value.data.items():
        if loop not in LOOPS:
            raise ScheduleError(f"schedule: cannot tile unknown loop '{loop}' (loops: {', '.join(LOOPS)})")
        if not isinstance(factors, ArrayAttr) or not factors.data or not all(
            isinstance(f, IntegerAttr) for f in factors.data
        ):
            raise ScheduleError(f"schedule: tile of '{loop}' must be a non-empty list of integers")
        values = tuple(f.value.data for f in factors.data)
        if any(f < 1 for f in values):
            raise ScheduleError(f"schedule: tile factors of '{loop}' must be at least 1, got {list(values)}")
        tiles[loop] = values
    return tiles


def _layouts(value) -> ActivationLayouts:
    if not isinstance(value, DictionaryAttr):
        raise ScheduleError('schedule: `layout` must be a dictionary {input = "NCHW8c", output = "NCHW8c"}')
    entries = dict(value.data)
    unknown = sorted(set(entries) - {"input", "output"})
    if unknown:
        raise ScheduleError(f"schedule: `layout` has unknown key '{unknown[0]}' (expected input, output)")
    names = {}
    for role, name in entries.items():
        if not isinstance(name, StringAttr):
            raise ScheduleError(f'schedule: the {role} layout must be a string ("NCHW" or "NCHW<block>c")')
        layout_block(name.data)
        names[role] = name.data
    return ActivationLayouts(**names)


def parse_schedule(attr: DictionaryAttr) -> ConvSchedule:
    """The schedule in the property `attr`, checked against the rules every
    backend shares; a ScheduleError says which rule it breaks."""
    entries = dict(attr.data)
    unknown = sorted(set(entries) - set(KEYS))
    if unknown:
        raise ScheduleError(f"schedule: unknown key '{unknown[0]}' (expected {', '.join(KEYS)})")
    tiles = _tiles(entries["tile"]) if "tile" in entries else {}
    schedule = ConvSchedule(tiles)
    loops = schedule.loops()

    def known(name: str, key: str) -> str:
        if name not in loops:
            raise ScheduleError(f"schedule: `{key}` names unknown loop '{name}' (loops: {', '.join(loops)})")
        return name

    order = tuple(known(n, "order") for n in _names(entries["order"], "order")) if "order" in entries else ()
    if order and sorted(order) != sorted(loops):
        missing = sorted(set(loops) - set(order)) or sorted(n for n in order if order.count(n) > 1)
        raise ScheduleError(
            f"schedule: `order` must name every loop once ({', '.join(loops)}); check '{missing[0]}'"
        )
    effective = order or tuple(loops)
    vectorize = None
    if "vectorize" in entries:
        if not isinstance(entries["vectorize"], StringAttr):
            raise ScheduleError("schedule: `vectorize` must be a loop name")
        vectorize = known(entries["vectorize"].data, "vectorize")
        if loop_name(vectorize) in REDUCTION_LOOPS:
            raise ScheduleError(
                f"schedule: cannot vectorize reduction loop '{vectorize}' (vectorize a data-parallel loop)"
            )
        if effective[-1] != vectorize:
            raise ScheduleError(
                f"schedule: the vectorized loop '{vectorize}' must be innermost (the order ends with "
                f"'{effective[-1]}')"
            )
    unroll = frozenset(known(n, "unroll") for n in _names(entries["unroll"], "unroll")) if "unroll" in entries else frozenset()
    parallel = tuple(known(n, "parallel") for n in _names(entries["parallel"], "parallel")) if "parallel" in entries else ()
    for name in parallel:
        if loop_name(name) in REDUCTION_LOOPS:
            raise ScheduleError(f"schedule: cannot run reduction loop '{name}' in parallel")
    if parallel and tuple(effective[: len(parallel)]) != parallel:
        raise ScheduleError(
            f"schedule: parallel loops must be the outermost ones, in order ({', '.join(effective[: len(parallel)])})"
        )
    layout = _layouts(entries["layout"]) if "layout" in entries else None
    schedule = ConvSchedule(tiles, order, vectorize, unroll, parallel, layout)
    if "algorithm" in entries:
        schedule = replace(schedule, algorithm=_algorithm(entries["algorithm"], schedule))
    return schedule


def _algorithm(value, schedule: ConvSchedule) -> str:
    """The `algorithm` entry, checked against the schedule's other entries."""
    if not isinstance(value, StringAttr) or value.data not in ALGORITHMS:
        shown = f"'{value.data}'" if isinstance(value, StringAttr) else "a non-string"
        names = ", ".join(f'"{name}"' for name in ALGORITHMS)
        raise ScheduleError(f"schedule: `algorithm` must be one of {names}, got {shown}")
    algorithm = value.data
    if algorithm in (WINOGRAD, GSPC, SPARSE) and schedule.layouts.packed:
        raise ScheduleError(
            f"schedule: algorithm {algorithm} reads and writes NCHW activations, the layout asks for "
            f"{schedule.layouts.input} / {schedule.layouts.output}"
        )
    if algorithm in (WINOGRAD, SPARSE) and schedule.transforms_loops:
        entries = [key for key, set_ in (
            ("tile", schedule.tiles), ("order", schedule.order), ("vectorize", schedule.vectorize),
            ("unroll", schedule.unroll), ("parallel", schedule.parallel),
        ) if set_]
        raise ScheduleError(
            f"schedule: algorithm {algorithm} runs kernels of its own and takes no loop entries, "
            f"this schedule sets {', '.join(entries)}"
        )
    if algorithm == GSPC and schedule.vectorize not in (None, "ow.1"):
        raise ScheduleError(
            f"schedule: algorithm gspc vectorizes the output columns (ow.1), not '{schedule.vectorize}'"
        )
    return algorithm


def conv_layouts(attr: DictionaryAttr | None) -> ActivationLayouts:
    """The activation layouts of a convolution whose `schedule` property is
    `attr` (None: no schedule, NCHW)."""
    return ActivationLayouts() if attr is None else parse_schedule(attr).layouts
