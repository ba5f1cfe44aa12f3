"""Liveness-based planning of the activation arena.

Every activation of a compiled network gets an offset in one arena. Two
activations share bytes only if they are never live at the same step, so the
arena needs far less than the sum of all activations.

A step is one kernel call of the plan, in program order. An activation is
live from the step that first uses it (the call that writes it) to the step
that last uses it (its last reader), inclusive: the result of a call never
shares bytes with that call's own operands. The runtime copies network
inputs in before the first step and outputs out after the last, so an input is
live from the first step and an output to the last; `buffers_for_steps` makes
them so.

Offsets are placed first-fit, largest activation first: each activation goes
to the lowest aligned offset that clears every already placed activation whose
lifetime overlaps its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ALIGNMENT = 64
"""Offsets are multiples of this: TVM kernels assume 64-byte aligned data."""


@dataclass(frozen=True)
class Buffer:
    """An activation of `size` bytes, live from step `first` to step `last`, inclusive."""

    size: int
    first: int
    last: int

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"buffer size {self.size} is negative")
        if not 0 <= self.first <= self.last:
            raise ValueError(f"buffer lifetime [{self.first}, {self.last}] is empty or negative")

    def overlaps(self, other: Buffer) -> bool:
        """Whether the two buffers are live at some common step."""
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class ArenaPlan:
    """Where each buffer lives: `offsets[i]` is the byte offset of buffer i."""

    offsets: tuple[int, ...]
    peak_bytes: int
    """The arena size: the end of the highest buffer, rounded up to the alignment."""
    total_bytes: int
    """The sum of all buffer sizes: the arena a plan without reuse would need."""


def align_up(value: int, alignment: int = ALIGNMENT) -> int:
    return -(-value // alignment) * alignment


def max_live_bytes(buffers: Sequence[Buffer]) -> int:
    """The most bytes live at one step: no arena can be smaller."""
    steps = {buffer.first for buffer in buffers}
    return max(
        (sum(b.size for b in buffers if b.first <= step <= b.last) for step in steps), default=0
    )


def plan_arena(buffers: Sequence[Buffer], alignment: int = ALIGNMENT) -> ArenaPlan:
    """Give every buffer an aligned offset such that buffers live at a common
    step never share a byte."""
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"alignment {alignment} is not a power of two")
    order = sorted(range(len(buffers)), key=lambda i: (-buffers[i].size, buffers[i].first, i))
    offsets = [0] * len(buffers)
    placed: list[int] = []
    for index in order:
        buffer = buffers[index]
        taken = sorted(
            (offsets[other], offsets[other] + buffers[other].size)
            for other in placed
            if buffer.overlaps(buffers[other])
        )
        offset = 0
        for start, end in taken:
            if offset + buffer.size <= start:
                break
            offset = max(offset, align_up(end, alignment))
        offsets[index] = offset
        placed.append(index)
    peak = max((offset + buffer.size for offset, buffer in zip(offsets, buffers)), default=0)
    return ArenaPlan(
        offsets=tuple(offsets),
        peak_bytes=align_up(peak, alignment),
        total_bytes=sum(buffer.size for buffer in buffers),
    )


def buffers_for_steps(
    sizes: Sequence[int],
    steps: Sequence[Sequence[int]],
    inputs: Iterable[int] = (),
    outputs: Iterable[int] = (),
) -> list[Buffer]:
    """The buffers of activations 0..len(sizes)-1, where step i uses the
    activations `steps[i]` (its operands and results). Inputs are live from
    the first step, outputs to the last; every other activation must be used."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for step, used in enumerate(steps):
        for activation in used:
            if not 0 <= activation < len(sizes):
                raise ValueError(f"step {step} uses activation {activation}, which does not exist")
            first.setdefault(activation, step)
            last[activation] = step
    final = max(len(steps) - 1, 0)
    for activation in inputs:
        first[activation] = 0
        last.setdefault(activation, 0)
    for activation in outputs:
        first.setdefault(activation, final)
        last[activation] = final
    unused = [i for i in range(len(sizes)) if i not in first]
    if unused:
        raise ValueError(f"activation {unused[0]} is never used")
    return [Buffer(size, first[i], last[i]) for i, size in enumerate(sizes)]
