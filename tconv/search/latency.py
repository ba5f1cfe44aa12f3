"""Layer latencies measured on the target, and network latencies built
from them.

A `Measurer` times one convolution workload with one set of schedule knobs
on some device: `LocalMeasurer` on this machine's CPU (`tuning.measure`),
`tconv.search.rpc.RpcMeasurer` on a device behind a TVM RPC tracker,
`tconv.search.cuda_measure.CudaMeasurer` on a GPU of this machine (whose
kernels take no knobs: it is not `tunable`, so each workload has one
candidate, `UNSCHEDULED`, see `LayerLatencies.candidates`). Every
measurement goes into the tuning database under the measurer's
`target_key`, so the search and `tconv tune` share what they learnt, and a second
`tconv optimize` resumes instead of measuring again.

`LayerLatencies` answers "how long does this convolution take at its best
known schedule?" (measuring the backend's default schedule the first time a
workload is seen), and sums them over a network's convolutions (the
search scales that sum to a network estimate, see `optimize`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from xdsl.dialects.builtin import ModuleOp

from tconv.errors import TconvError
from tconv.ir.ops import Conv2dOp
from tconv.passes.select import layer_name
from tconv.search.tuning import (
    UNSCHEDULED, Knobs, TuningDatabase, Workload, candidates, confirm_leaders, target_key, workload_of,
)


class Measurer(Protocol):
    @property
    def target_key(self) -> str:
        """The tuning database's key of the device measured."""
        ...

    def measure(self, workload: Workload, knobs: Knobs) -> float:
        """Median seconds of one run of the workload's kernel with `knobs`."""
        ...

    # Optionally `tunable: bool` (True where absent): whether the knobs change
    # the kernel measured. A measurer whose kernels take none says False.


@dataclass
class LocalMeasurer:
    """This machine's CPU, with the threads kernels are compiled for;
    `layout`: measuring convolutions with their activations in channel
    blocks of `layout` where they can be (`tuning.CpuSchedules.layout`), as
    `tconv compile --layout auto` runs them."""

    threads: int
    layout: int = 0

    @property
    def target_key(self) -> str:
        return target_key(self.threads, self.layout)

    def measure(self, workload: Workload, knobs: Knobs) -> float:
        from tconv.search.tuning import measure

        return measure(workload, knobs)


@dataclass(frozen=True)
class ConvLatency:
    layer: str
    workload: Workload
    knobs: Knobs
    seconds: float


class LayerLatencies:
    """Best known latency of each workload on one target (see the module docstring)."""

    def __init__(self, database: TuningDatabase, measurer: Measurer,
                 on_measure: Callable[[Workload, Knobs, float], None] | None = None) -> None:
        self.database = database
        self.measurer = measurer
        self.on_measure = on_measure
        self.measurements = 0
        """Measurements this object made (the database may hold older ones)."""
        self.measured_here: set[tuple[str, Knobs]] = set()
        """(workload key, knobs) this object measured."""
        self.failures: dict[str, str] = {}
        """Workloads (by key) whose default schedule failed to build or run, and the error."""

    @property
    def target(self) -> str:
        return self.measurer.target_key

    @property
    def tunable(self) -> bool:
        """Whether the measurer's kernels take schedule knobs (see `Measurer`)."""
        return getattr(self.measurer, "tunable", True)

    def candidates(self, workload: Workload) -> list[Knobs]:
        """The knobs worth measuring for `workload`, the default first:
        `tuning.candidates` (in the measurer's `layout`, where it has one);
        where the target is not `tunable`, only `UNSCHEDULED` (its kernels
        take no schedule, and no CPU template's default is built for it, so
        this needs no TVM)."""
        return candidates(workload, getattr(self.measurer, "layout", 0)) if self.tunable else [UNSCHEDULED]

    def _measure(self, workload: Workload, knobs: Knobs) -> float:
        seconds = self.measurer.measure(workload, knobs)
        self.measurements += 1
        self.measured_here.add((workload.key, knobs))
        if self.on_measure:
            self.on_measure(workload, knobs, seconds)
        return seconds

    def measure(self, workload: Workload, knobs: Knobs) -> float:
        """Measure one candidate and record it."""
        seconds = self._measure(workload, knobs)
        self.database.add(workload, self.target, knobs, seconds)
        return seconds

    def confirm(self, workload: Workload, stop: Callable[[], bool] = lambda: False) -> bool:
        """Measure the workload's `tuning.CONFIRM` leaders side by side and
        record them as a round (see `tuning`), unless this object measured
        them all itself: records of earlier runs, which a loaded moment may
        have left too slow. Whether a round was recorded (not where `stop()`
        cut it short)."""
        return confirm_leaders(
            self.database, workload, self.target, self._measure, stop=stop,
            done=lambda knobs: all((workload.key, k) in self.measured_here for k in knobs),
        ) is not None

    def measured_count(self) -> int:
        """Measurements of this target in the database."""
        return sum(len(knobs) for (_, target), knobs in self.database.records.items() if target == self.target)

    def known(self, workload: Workload) -> bool:
        return bool(self.database.measured(workload, self.target))

    def best(self, workload: Workload) -> tuple[Knobs, float]:
        """The best measured knobs and seconds, measuring the default first if
        none is known. A workload the backend cannot build or run takes
        forever (math.inf), so no network holding it is chosen; why is in
        `failures`."""
        best = self.database.best(workload, self.target)
        if best is not None:
            return best
        knobs = self.candidates(workload)[0]
        if workload.key not in self.failures:
            try:
                return knobs, self.measure(workload, knobs)
            except TconvError as err:
                self.failures[workload.key] = str(err)
        return knobs, math.inf

    def convs(self, module: ModuleOp) -> list[ConvLatency]:
        """Each convolution of `module` at its workload's best known schedule."""
        rows = []
        for op in module.walk():
            if isinstance(op, Conv2dOp):
                workload = workload_of(op)
                knobs, seconds = self.best(workload)
                rows.append(ConvLatency(layer_name(op), workload, knobs, seconds))
        return rows

    def conv_seconds(self, module: ModuleOp) -> float:
        return sum(row.seconds for row in self.convs(module))

    @staticmethod
    def workloads(module: ModuleOp) -> list[Workload]:
        """The distinct workloads of `module`'s convolutions, in program order."""
        found = {w.key: w for w in (workload_of(op) for op in module.walk() if isinstance(op, Conv2dOp))}
        return list(found.values())

    def unknown_workloads(self, module: ModuleOp) -> list[Workload]:
        """The distinct workloads of `module` with no measurement yet."""
        return [w for w in self.workloads(module) if not self.known(w) and w.key not in self.failures]
