"""A tiny loop-nest IR: what one kernel computes, and how its loops run.

A `Nest` is a perfect loop nest over named loops of constant extent, some of
them data-parallel and some a reduction, around one statement:

    for every point of the loops:
        acc[data-parallel point] = combine(acc[...], value)
    for every data-parallel point:
        output[...] = finalize(acc)

(without reduction loops: `output[...] = finalize(value)`). `value` and
`finalize` are `Expr` trees over `Load`s of the kernel's arguments, whose
indices are `Affine` functions of the loops; an index outside its tensor's
dimension reads the load's `fill` (zero padding of a convolution, -inf of a
max pool), so padding needs no branch in the nest's text.

A `NestSchedule` says how the loops run (the vocabulary of
`tconv.ir.schedule`, for any loop names): `tile` splits a loop by inner
factors (`ow = [4]` makes `ow.0` and `ow.1`; a factor need not divide the
extent), `order` permutes the loops, `vectorize` runs the innermost loop as
SIMD lanes, `unroll` replicates loops, `parallel` runs an outermost prefix of
data-parallel loops across threads. `schedule_nest` applies it and returns a
`ScheduledNest`: the loops in execution order, each original loop as an
affine function of the new ones, and the bounds checks that tiles with tails
need. A schedule this backend cannot run is refused with `UnsupportedSchedule`
naming the entry, never run another way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

# Affine index expressions -------------------------------------------------------


@dataclass(frozen=True)
class Affine:
    """`constant + Σ coefficient · loop`, over loop names."""

    terms: tuple[tuple[str, int], ...] = ()
    constant: int = 0

    def __post_init__(self) -> None:
        # One form per function: terms sorted by loop name, none zero.
        object.__setattr__(self, "terms", tuple(sorted((n, c) for n, c in self.terms if c)))

    @staticmethod
    def of(value: Affine | int | str) -> Affine:
        """An int is a constant, a str the loop of that name."""
        if isinstance(value, Affine):
            return value
        if isinstance(value, str):
            return Affine(((value, 1),))
        return Affine((), int(value))

    def _combine(self, other: Affine | int | str, sign: int) -> Affine:
        other = Affine.of(other)
        terms = dict(self.terms)
        for name, coefficient in other.terms:
            terms[name] = terms.get(name, 0) + sign * coefficient
        return Affine(tuple((n, c) for n, c in terms.items() if c), self.constant + sign * other.constant)

    def __add__(self, other: Affine | int | str) -> Affine:
        return self._combine(other, 1)

    __radd__ = __add__

    def __sub__(self, other: Affine | int | str) -> Affine:
        return self._combine(other, -1)

    def __mul__(self, factor: int) -> Affine:
        if factor == 0:
            return Affine()
        return Affine(tuple((n, c * factor) for n, c in self.terms), self.constant * factor)

    __rmul__ = __mul__

    def coefficient(self, name: str) -> int:
        return dict(self.terms).get(name, 0)

    def substitute(self, values: Mapping[str, Affine]) -> Affine:
        """Every loop named in `values` replaced by its expression."""
        result = Affine((), self.constant)
        for name, coefficient in self.terms:
            result = result + (values[name] if name in values else Affine.of(name)) * coefficient
        return result

    def bounds(self, extents: Mapping[str, int]) -> tuple[int, int]:
        """The least and greatest value over loops ranging over [0, extent)."""
        low = high = self.constant
        for name, coefficient in self.terms:
            span = coefficient * (extents[name] - 1)
            low, high = low + min(0, span), high + max(0, span)
        return low, high


# Expressions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """Element `index` of kernel argument `arg` (a dense row-major tensor);
    `fill` where an index is outside its dimension."""

    arg: int
    index: tuple[Affine, ...]
    fill: float = 0.0


@dataclass(frozen=True)
class Const:
    value: float


@dataclass(frozen=True)
class Binary:
    """`op` is add, sub, mul, div, max or min."""

    op: str
    lhs: Expr
    rhs: Expr


@dataclass(frozen=True)
class Acc:
    """The accumulated value, in `finalize`."""


@dataclass(frozen=True)
class WindowCount:
    """How many of the positions start, start + 1, ..., start + window - 1
    lie in [0, extent), as a float (the divisor of an average pool that does
    not count padding)."""

    start: Affine
    window: int
    extent: int


Expr = Load | Const | Binary | Acc | WindowCount

COMBINES = {"sum": 0.0, "max": float("-inf")}
"""The reductions and their identities."""


def loads(expr: Expr) -> Iterable[Load]:
    """Every load in `expr`."""
    if isinstance(expr, Load):
        yield expr
    elif isinstance(expr, Binary):
        yield from loads(expr.lhs)
        yield from loads(expr.rhs)


def activate(value: Expr, activation: str | None) -> Expr:
    """`value` after `activation` (None, relu or relu6)."""
    if activation == "relu":
        return Binary("max", value, Const(0.0))
    if activation == "relu6":
        return Binary("min", Binary("max", value, Const(0.0)), Const(6.0))
    if activation is not None:
        raise ValueError(f"unknown activation '{activation}' (expected relu or relu6)")
    return value


# Nests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loop:
    name: str
    extent: int
    reduction: bool = False


@dataclass(frozen=True)
class Nest:
    """One loop nest of a kernel (see the module docstring). `output` is the
    element each data-parallel point writes; its `arg` is the kernel's output
    argument and its indices name only data-parallel loops."""

    loops: tuple[Loop, ...]
    value: Expr
    output: Load
    combine: Literal["sum", "max"] | None = None
    finalize: Expr = Acc()

    def __post_init__(self) -> None:
        names = [loop.name for loop in self.loops]
        if len(set(names)) != len(names):
            raise ValueError(f"nest: loop names repeat: {names}")
        if any(loop.extent < 1 for loop in self.loops):
            raise ValueError(f"nest: every loop needs at least one iteration: {self.loops}")
        reductions = {loop.name for loop in self.loops if loop.reduction}
        if reductions and self.combine is None:
            raise ValueError("nest: reduction loops need a combine (sum or max)")
        for index in self.output.index:
            if any(name in reductions for name, _ in index.terms):
                raise ValueError(f"nest: the output index {self.output.index} uses a reduction loop")

    def loop(self, name: str) -> Loop:
        for loop in self.loops:
            if loop.name == name:
                return loop
        raise KeyError(name)


# Schedules --------------------------------------------------------------------------

MAX_LANES = 64
"""The widest vector a vectorized loop becomes."""
MAX_UNROLLED = 1024
"""The most copies of the statement that unrolling may make."""


DONE = {"unroll": "unrolled", "vector": "vectorized"}


class UnsupportedSchedule(ValueError):
    """A schedule the LLVM backend cannot honour; the message names the entry."""


@dataclass(frozen=True)
class NestSchedule:
    """How a nest's loops run (see the module docstring); empty: as written, serially."""

    tiles: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    order: tuple[str, ...] = ()
    vectorize: str | None = None
    unroll: frozenset[str] = frozenset()
    parallel: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScheduledLoop:
    name: str
    extent: int
    reduction: bool
    kind: Literal["serial", "unroll", "vector", "parallel"]


@dataclass(frozen=True)
class DomainCheck:
    """`index < extent`: a tiled loop with a tail stays within its original extent."""

    index: Affine
    extent: int
    reduction: bool


@dataclass(frozen=True)
class ScheduledNest:
    nest: Nest
    loops: tuple[ScheduledLoop, ...]
    """In execution order, outermost first."""
    origin: Mapping[str, Affine]
    """Each original loop as a function of the scheduled loops."""
    checks: tuple[DomainCheck, ...]

    @property
    def extents(self) -> dict[str, int]:
        return {loop.name: loop.extent for loop in self.loops}

    @property
    def vector(self) -> ScheduledLoop | None:
        return self.loops[-1] if self.loops and self.loops[-1].kind == "vector" else None

    def index(self, index: Sequence[Affine]) -> tuple[Affine, ...]:
        """An index over the original loops, over the scheduled ones."""
        return tuple(i.substitute(self.origin) for i in index)


def _tiled_loops(loop: Loop, factors: tuple[int, ...]) -> tuple[list[Loop], Affine, DomainCheck | None]:
    """`loop` split by `factors` (inner factors, outermost first): the new
    loops, the original index as their function, and the tail check."""
    if not factors:
        return [loop], Affine.of(loop.name), None
    if any(f < 1 for f in factors):
        raise UnsupportedSchedule(f"tile of '{loop.name}': factors must be at least 1, got {list(factors)}")
    inner = 1
    for f in factors:
        inner *= f
    extents = [-(-loop.extent // inner), *factors]
    names = [f"{loop.name}.{i}" for i in range(len(extents))]
    index, stride = Affine(), 1
    for name, extent in reversed(list(zip(names, extents))):
        index = index + Affine.of(name) * stride
        stride *= extent
    check = DomainCheck(index, loop.extent, loop.reduction) if loop.extent % inner else None
    return [Loop(n, e, loop.reduction) for n, e in zip(names, extents)], index, check


def schedule_nest(nest: Nest, schedule: NestSchedule) -> ScheduledNest:
    """`nest` with `schedule` applied; `UnsupportedSchedule` says which entry
    cannot be honoured and why."""
    names = [loop.name for loop in nest.loops]
    for name in schedule.tiles:
        if name not in names:
            raise UnsupportedSchedule(f"tile: unknown loop '{name}' (loops: {', '.join(names)})")
    loops: list[Loop] = []
    origin: dict[str, Affine] = {}
    checks: list[DomainCheck] = []
    for loop in nest.loops:
        tiled, index, check = _tiled_loops(loop, tuple(schedule.tiles.get(loop.name, ())))
        loops += tiled
        origin[loop.name] = index
        if check is not None:
            checks.append(check)
    by_name = {loop.name: loop for loop in loops}

    def known(name: str, key: str) -> Loop:
        if name not in by_name:
            raise UnsupportedSchedule(f"{key}: unknown loop '{name}' (loops: {', '.join(by_name)})")
        return by_name[name]

    if schedule.order:
        order = [known(name, "order") for name in schedule.order]
        if sorted(schedule.order) != sorted(by_name):
            raise UnsupportedSchedule(f"order: must name every loop once ({', '.join(by_name)})")
        loops = order
    kinds: dict[str, str] = {loop.name: "serial" for loop in loops}
    unrolled = 1
    for name in sorted(schedule.unroll):
        loop = known(name, "unroll")
        kinds[name] = "unroll"
        unrolled *= loop.extent
        if unrolled > MAX_UNROLLED:
            raise UnsupportedSchedule(
                f"unroll: unrolling {', '.join(sorted(schedule.unroll))} makes more than {MAX_UNROLLED} "
                f"copies of the loop body ('{name}' has {loop.extent} iterations); tile it and unroll the tile"
            )
    if schedule.vectorize is not None:
        loop = known(schedule.vectorize, "vectorize")
        if loop.reduction:
            raise UnsupportedSchedule(f"vectorize: '{loop.name}' is a reduction loop (vectorize a data-parallel one)")
        if loops[-1].name != loop.name:
            raise UnsupportedSchedule(
                f"vectorize: '{loop.name}' must be the innermost loop (the order ends with '{loops[-1].name}')"
            )
        if loop.extent > MAX_LANES:
            raise UnsupportedSchedule(
                f"vectorize: '{loop.name}' has {loop.extent} iterations, more than the {MAX_LANES} lanes "
                "this backend makes one vector of; tile it and vectorize the tile"
            )
        if loop.name in schedule.unroll:
            raise UnsupportedSchedule(f"vectorize: '{loop.name}' cannot be both unrolled and vectorized")
        kinds[loop.name] = "vector"
    for position, name in enumerate(schedule.parallel):
        loop = known(name, "parallel")
        if loop.reduction:
            raise UnsupportedSchedule(f"parallel: '{name}' is a reduction loop")
        if loops[position].name != name:
            raise UnsupportedSchedule(
                f"parallel: the parallel loops must be the outermost ones, in order "
                f"(expected '{loops[position].name}' at position {position}, got '{name}')"
            )
        if kinds[name] != "serial":
            raise UnsupportedSchedule(f"parallel: '{name}' cannot also be {DONE[kinds[name]]}")
        kinds[name] = "parallel"
    scheduled = tuple(ScheduledLoop(l.name, l.extent, l.reduction, kinds[l.name]) for l in loops)  # type: ignore[arg-type]
    return ScheduledNest(nest, scheduled, origin, tuple(checks))
