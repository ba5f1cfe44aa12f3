"""Timing whole networks side by side: alternating rounds, medians.

These machines are shared and noisy; a comparison is only fair when every
contender runs under the same load. `interleaved_medians` therefore runs
them in turn, round after round, and takes medians; `OrtRunner` is ONNX
Runtime (the peer) on tconv's ONNX export, with its output pre-allocated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from xdsl.dialects.builtin import ModuleOp


def aligned(shape: Sequence[int], alignment: int = 64) -> np.ndarray:
    """An uninitialised float32 array whose data is `alignment`-byte aligned
    (ONNX Runtime's and the kernels' vector loads are faster, or only
    possible, on aligned data)."""
    count = int(np.prod(shape))
    raw = np.empty(count + alignment // 4, np.float32)
    offset = (-raw.ctypes.data % alignment) // 4
    return raw[offset : offset + count].reshape(shape)


class OrtRunner:
    """An ONNX Runtime session of the network with its input bound and its
    output pre-allocated (64-byte aligned); calling it runs the network once.
    With `profile_prefix`, ONNX Runtime's profiler records every node's time
    into a file of that prefix (`session.end_profiling()` writes it). Needs
    `onnxruntime` (a test dependency of tconv)."""

    def __init__(
        self, module: ModuleOp, params: Mapping[str, np.ndarray], x: np.ndarray, threads: int,
        profile_prefix: str | None = None,
    ) -> None:
        from tconv.frontends.onnx.exporter import export_model

        self._open(export_model(module, params).SerializeToString(), x, threads, profile_prefix)

    @classmethod
    def of_model(cls, model: bytes, x: np.ndarray, threads: int) -> OrtRunner:
        """The runner of a serialized ONNX model rather than of a tconv network."""
        runner = cls.__new__(cls)
        runner._open(model, x, threads)
        return runner

    def _open(self, model: bytes, x: np.ndarray, threads: int, profile_prefix: str | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if profile_prefix is not None:
            options.enable_profiling, options.profile_file_prefix = True, profile_prefix
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        name = self.session.get_inputs()[0].name
        (result,) = self.session.run(None, {name: x})
        self.output = aligned(result.shape)
        self.binding = self.session.io_binding()
        self.binding.bind_cpu_input(name, x)
        self.binding.bind_output(
            self.session.get_outputs()[0].name, "cpu", 0, np.float32, self.output.shape, self.output.ctypes.data
        )

    def __call__(self) -> None:
        self.session.run_with_iobinding(self.binding)


# The first milliseconds of calls after an idle pause run slower, whichever
# library runs them, which weighs most on short kernels (docs/benchmarks.md,
# How it is timed, and why).
WARMUP_S = 0.005


def interleaved_rounds(
    runners: Sequence[Callable[[], object]], rounds: int, runs: int | Sequence[int], pause_s: float = 0.5
) -> list[list[float]]:
    """Seconds of one call of each runner in each round (`result[i][r]`):
    `rounds` rounds, each timing `runs` calls of every runner (or `runs[i]`
    of runner i) in turn and keeping their median, with a pause between
    runners so that the idle threads of one pool stop spinning before the
    other runs (TVM's spin for tens of milliseconds, enough to slow ORT
    several times over: docs/benchmarks.md, How it is timed, and why), and
    WARMUP_S of untimed calls after it. Alternating keeps load from other
    processes on the machine from favouring either side."""
    for runner in runners:
        for _ in range(3):
            runner()
    per_round: list[list[float]] = [[] for _ in runners]
    counts = [runs] * len(runners) if isinstance(runs, int) else list(runs)
    for _ in range(rounds):
        for index, runner in enumerate(runners):
            time.sleep(pause_s)
            warm_until = time.perf_counter() + WARMUP_S
            runner()
            while time.perf_counter() < warm_until:
                runner()
            samples = []
            for _ in range(counts[index]):
                start = time.perf_counter()
                runner()
                samples.append(time.perf_counter() - start)
            per_round[index].append(float(np.median(samples)))
    return per_round


def interleaved_medians(
    runners: Sequence[Callable[[], object]], rounds: int, runs: int | Sequence[int], pause_s: float = 0.5
) -> list[float]:
    """Median seconds of one call of each runner over `interleaved_rounds`."""
    return [float(np.median(r)) for r in interleaved_rounds(runners, rounds, runs, pause_s)]
