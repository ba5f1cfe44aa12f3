"""Whole networks compiled and timed on this machine, side by side.

The search measures layers one at a time; before it answers it compiles the
networks it compares (with the tuning database's best schedules) into
artifacts and runs them with the C runtime, in alternating rounds
(`timing.interleaved_medians`), optionally beside ONNX Runtime running the
first of them (the original: the peer a user would otherwise deploy).
`NetworkTimer` does so on this machine's CPU; `CudaNetworkTimer` on a GPU
of it, with the LLVM backend's cuda artifacts and the CUDA driver runtime
(no ONNX Runtime there: its peer numbers are CPU ones, so `ort_seconds`
stays None and the report leaves them out).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tconv.compile import compile_network
from tconv.ir.ops import shape_of
from tconv.search.optimize import Candidate
from tconv.search.timing import OrtRunner, interleaved_medians
from tconv.search.tuning import TuningDatabase
from tconv.semantics.reference import single_function

if TYPE_CHECKING:
    from tconv.train.data import Dataset


class Builds:
    """Each candidate's latest artifact under `scratch`, built again only
    when the candidate changed (fine-tuning gives it new weights) or what
    its kernels are chosen from did (`schedules_version`)."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self._built: dict[str, tuple[tuple[object, object, object], Path]] = {}
        """By label: (its module, its weights, the schedules' version) when built, and the artifact."""
        self._builds = 0

    def build(self, candidate: Candidate, directory: Path) -> None:
        raise NotImplementedError

    def schedules_version(self) -> object:
        """What the schedules a build chooses depend on (None: nothing that changes)."""
        return None

    def artifact_of(self, candidate: Candidate) -> Path | None:
        """The artifact built from `candidate` as it is now (None: not built,
        or built before its module, its weights or the schedules changed)."""
        built = self._built.get(candidate.label)
        if built is None:
            return None
        (module, params, version), directory = built
        now = candidate.realised
        # Identity, not equality: fine-tuning assigns new weights (a new dict) to the same candidate.
        unchanged = module is now.module and params is now.params and version == self.schedules_version()
        return directory if unchanged else None

    def _state(self, candidate: Candidate) -> tuple[object, object, object]:
        return candidate.realised.module, candidate.realised.params, self.schedules_version()

    def compile(self, candidate: Candidate) -> Path:
        directory = self.artifact_of(candidate)
        if directory is None:
            self._builds += 1
            directory = self.scratch / f"net{self._builds}"
            self.build(candidate, directory)
            self._built[candidate.label] = (self._state(candidate), directory)
        return directory


class NetworkTimer(Builds):
    def __init__(self, database: TuningDatabase, threads: int, scratch: Path, rounds: int = 5, runs: int = 10,
                 with_ort: bool = True) -> None:
        super().__init__(scratch)
        self.database = database
        self.threads = threads
        self.rounds = rounds
        self.runs = runs
        self.with_ort = with_ort and importlib.util.find_spec("onnxruntime") is not None
        self.ort_seconds: float | None = None
        """ONNX Runtime on the first network of the latest call."""

    def build(self, candidate: Candidate, directory: Path) -> None:
        compile_network(candidate.realised.module, candidate.realised.params, directory, database=self.database,
                        threads=self.threads)

    def schedules_version(self) -> object:
        # The tuning database's best schedules: tuning between two timings changes them.
        return self.database.version

    def accuracy(self, candidate: Candidate, data: Dataset) -> float:
        """The share of `data`'s validation inputs its artifact classifies right."""
        from tconv.runtime.driver import Runtime

        with Runtime(self.compile(candidate), threads=self.threads) as runtime:
            return classified_share(runtime.run, runtime.arena_inputs()[0].shape[0], data)

    def __call__(self, candidates: list[Candidate]) -> list[float]:
        from tconv.runtime.driver import Runtime

        runtimes = [Runtime(self.compile(candidate), threads=self.threads) for candidate in candidates]
        first = candidates[0].realised
        x = np.random.default_rng(0).standard_normal(shape_of(single_function(first.module).body.block.args[0]),
                                                    dtype=np.float32)
        for runtime in runtimes:
            runtime.arena_inputs()[0][...] = x
        runners = [runtime.execute for runtime in runtimes]
        if self.with_ort:
            runners.append(OrtRunner(first.module, first.params, x, self.threads))
        try:
            seconds = interleaved_medians(runners, self.rounds, self.runs)
        finally:
            for runtime in runtimes:
                runtime.close()
        if self.with_ort:
            self.ort_seconds = seconds.pop()
        return seconds


def classified_share(run: Callable[[np.ndarray], list[np.ndarray]], batch: int, data: Dataset) -> float:
    """The share of `data`'s validation inputs whose largest output is their
    label; `run(x)` gives the outputs of `batch` inputs (the last batch is
    padded with zeros, and the padding's outputs ignored)."""
    x, labels = data.x_val, data.y_val
    right = 0
    for start in range(0, len(labels), batch):
        chunk = x[start : start + batch]
        padded = np.zeros((batch, *x.shape[1:]), np.float32)
        padded[: len(chunk)] = chunk
        scores = run(padded)[0].reshape(batch, -1)[: len(chunk)]
        right += int(np.sum(scores.argmax(axis=1) == labels[start : start + batch]))
    return right / len(labels)


class CudaNetworkTimer(Builds):
    """Whole networks on a GPU: each compiled as an LLVM-backend cuda artifact
    for `arch` (the GPU kernels take no schedules, so no tuning is applied)
    and run by `cuda_driver.DriverRuntime` on `device_for(module)` (for a
    `cuda_measure.CudaMeasurer`, its own: `CudaNetworkTimer(scratch,
    measurer.arch, measurer.device_for)`). A run is every launch of the plan
    and a synchronize, timed by the host clock: the latency a caller sees.
    Same interface as `NetworkTimer`."""

    def __init__(self, scratch: Path, arch: str, device_for, rounds: int = 5, runs: int = 10) -> None:
        super().__init__(scratch)
        self.arch = arch
        self.device_for = device_for
        self.rounds = rounds
        self.runs = runs
        self.with_ort = False
        self.ort_seconds: float | None = None
        """Always None: ONNX Runtime is not run beside a GPU."""

    def build(self, candidate: Candidate, directory: Path) -> None:
        compile_network(candidate.realised.module, candidate.realised.params, directory, backend="llvm",
                        target="cuda", arch=self.arch)

    def __call__(self, candidates: list[Candidate]) -> list[float]:
        from tconv.runtime.cuda_driver import DriverRuntime

        first = candidates[0].realised
        x = np.random.default_rng(0).standard_normal(shape_of(single_function(first.module).body.block.args[0]),
                                                    dtype=np.float32)
        runtimes = []
        try:
            for candidate in candidates:
                directory = self.compile(candidate)
                runtimes.append(DriverRuntime(directory, self.device_for(candidate.realised.module)))
                runtimes[-1].run(x)  # the input in place, and the kernels loaded

            def runner(runtime):
                def run() -> None:
                    runtime.execute()
                    runtime.device.synchronize()
                return run

            return interleaved_medians([runner(runtime) for runtime in runtimes], self.rounds, self.runs)
        finally:
            for runtime in runtimes:
                runtime.close()
