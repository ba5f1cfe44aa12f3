"""Tuning the TVM backend's CUDA convolutions on a GPU of this machine
(`tconv tune --target cuda`).

    schedules = CudaSchedules("sm_90")
    with TvmCudaMeasurer() as measurer:          # GPU 0: nvcc, torch with CUDA
        tune(module, database, 300, None, measure_fn=measurer.measure, schedules=measurer.schedules)
    apply_tuning(module, database, None, schedules)   # what `tconv compile --target cuda` does

The knob of a direct convolution's CUDA kernel is the tile a thread
accumulates: output channels × output columns (`schedule_gpu`), in the IR a
schedule `tile = {oc = [c], ow = [w]}` (`tconv.kernels.templates.gpu_tile`), as knobs
`Knobs("direct", channels=c, columns=w)`. The candidates are the tile
`schedule_gpu.conv_tile` would choose, then every tile of GPU_TILES whose
channels divide a group's; and Winograd (`{algorithm = "winograd"}`,
`tuning.WINOGRAD_KNOBS`) wherever the GPU computes it (one group, 8
output channels dividing): first where the lowering runs it by default
(`runs_winograd`, `algorithm.default_algorithm`), else second. A depthwise
convolution runs a thread per output and has no knob: it is not tuned.

A measurement compiles the workload's convolution alone with its tile (TVM,
then nvcc for the GPU's architecture) into an artifact, runs it with
`tconv.runtime.cuda` and times back-to-back launches between CUDA events:
the fastest of a few rounds, as on the CPU (`tuning.measure`).

Records are keyed `tvm cuda sm_XX kernels=N` (`CudaSchedules.target`): by
architecture, not by GPU, because `tconv compile --target cuda --arch sm_XX`
applies them without a GPU to ask. A tile tuned on one GPU of an
architecture is the one compiled for all of them.

Generating the kernels needs TVM, compiling and measuring them only nvcc,
torch with CUDA and tvm_ffi; a board or GPU server may have the one and not
the other. A `KernelStore` keeps each candidate as its plan and CUDA source
in a directory (`tconv tune --prepare --kernels DIR` writes every
candidate there, on a machine without a GPU), and a measurer given that
directory compiles and times those (`tconv tune --kernels DIR`, on the GPU
machine, without TVM): the candidates of a workload it holds are the ones
tuned, in the order prepared.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tconv.errors import TconvError
from tconv.ir.schedule import ConvSchedule
from tconv.kernels.algorithm import DIRECT, WINOGRAD, default_algorithm, winograd_tile
from tconv.runtime.plan import PLAN_FILE, read_plan, write_plan
from tconv.search.cuda_measure import fastest_round
from tconv.search.tuning import UNSCHEDULED, WINOGRAD_KNOBS, Knobs, Workload, conv_network

GPU_KERNELS = 2
"""The version of the CUDA kernels a thread tile builds, part of the target key (as `tuning.KERNELS`)."""

GPU_TILES = ((16, 2), (8, 4), (8, 2), (4, 4), (4, 2), (16, 1), (2, 2), (2, 1), (1, 1))
"""(output channels, columns) thread tiles tried: the seven of the H100 tile
run (`bench/gpu/tiles.sh`), the smaller ones `conv_tile` falls back to, and
a thread per output."""


def gpu_schedule(channels: int, columns: int) -> ConvSchedule:
    """The schedule that asks the CUDA kernel of a direct convolution for a
    thread tile of `channels` output channels × `columns` output columns
    (1 × 1: a thread per output; the lowering reads it with `tconv.kernels.templates.gpu_tile`)."""
    return ConvSchedule({"oc": (channels,), "ow": (columns,)})


@dataclass(frozen=True)
class CudaSchedules:
    """The TVM CUDA kernels' knobs for GPUs of architecture `arch` (the
    counterpart of `tuning.CpuSchedules`; see the module docstring).
    `prepared`: candidates by workload key, where a `KernelStore` holds
    them (those are tuned, and no TVM is needed to list them)."""

    arch: str
    prepared: Mapping[str, list[Knobs]] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"tvm cuda {self.arch} kernels={GPU_KERNELS}"

    def tunes(self, workload: Workload) -> bool:
        return not workload.depthwise

    def candidates(self, workload: Workload) -> list[Knobs]:
        if workload.key in self.prepared:
            return list(self.prepared[workload.key])
        from tconv.lowering.tvm.schedule_gpu import conv_tile

        outputs = workload.input[0] * workload.out_channels * workload.out_height * workload.out_width
        tiles = [conv_tile(outputs, workload.out_group)]
        tiles += [t for t in GPU_TILES if workload.out_group % t[0] == 0 and t not in tiles]
        direct = [Knobs(DIRECT, channels, columns) for channels, columns in tiles]
        if runs_winograd(workload):
            return [WINOGRAD_KNOBS, *direct]
        if winograd_tile(workload, None, default=False) is not None:
            return [direct[0], WINOGRAD_KNOBS, *direct[1:]]
        return direct

    def schedule(self, workload: Workload, knobs: Knobs) -> ConvSchedule | None:
        """`{algorithm = "winograd"}`, the thread tile of direct knobs
        (`gpu_schedule`), or None where the knobs are none."""
        if knobs.algorithm == WINOGRAD:
            return ConvSchedule(algorithm=WINOGRAD)
        if knobs.algorithm != DIRECT:
            return None
        return gpu_schedule(knobs.channels, knobs.columns)

    def runs(self, workload: Workload, knobs: Knobs) -> bool:
        """Whether the CUDA kernels run `workload` with `knobs`: Winograd's
        where they have a tile for it, a thread tile that divides a group's
        output channels (`templates.gpu_tile`), no schedule."""
        if knobs.algorithm == WINOGRAD:
            return winograd_tile(workload, None, default=False) is not None
        if knobs.algorithm == DIRECT:
            return workload.out_group % knobs.channels == 0
        return knobs == UNSCHEDULED


def runs_winograd(workload: Workload) -> bool:
    """Whether the lowering runs `workload` as a Winograd convolution on a
    GPU where it has no schedule (`algorithm.default_algorithm`): then
    Winograd is its first candidate."""
    return default_algorithm(workload, None) == WINOGRAD


def _stored_knobs(stored) -> Knobs:
    """Knobs as an index holds them: a database record's fields, or (a store
    prepared before `Knobs` named them) a list of positional values."""
    return Knobs.from_record(stored) if isinstance(stored, dict) else Knobs.from_legacy(stored)


INDEX_FILE = "index.json"
SOURCE_FILE = "kernels.cu"


class KernelStore:
    """Candidates' kernels in `directory` (see the module docstring): a
    subdirectory per (workload, knobs) with its artifact's plan and CUDA
    source, then, once built, its library and a parameter file of zeros
    (what the weights hold does not change a kernel's time); `index.json`
    names the architecture and, per workload, its candidates in order."""

    def __init__(self, directory: str | os.PathLike[str], arch: str | None = None) -> None:
        self.directory = Path(directory)
        index = self.directory / INDEX_FILE
        if index.exists():
            try:
                stored = json.loads(index.read_text())
                self.prepared = {w: [_stored_knobs(k) for k in knobs] for w, knobs in stored["candidates"].items()}
                self.entries: dict[str, str] = dict(stored["entries"])
                stored_arch = str(stored["arch"])
            except (OSError, ValueError, KeyError, TypeError):
                raise TconvError(f"error: {index}: not a tconv kernel store") from None
            if arch is not None and arch != stored_arch:
                raise TconvError(f"error: {self.directory} holds kernels for {stored_arch}, not {arch}")
            arch = stored_arch
        else:
            self.prepared, self.entries = {}, {}
        self.arch = arch

    @staticmethod
    def _key(workload: Workload, knobs: Knobs) -> str:
        return f"{workload.key} | {json.dumps(knobs.record(), sort_keys=True)}"

    def _save(self) -> None:
        candidates = {w: [k.record() for k in knobs] for w, knobs in self.prepared.items()}
        index = {"arch": self.arch, "candidates": candidates, "entries": self.entries}
        staging = self.directory / f".{INDEX_FILE}.tmp"
        staging.write_text(json.dumps(index, indent=1) + "\n")
        staging.replace(self.directory / INDEX_FILE)

    def prepare(self, workload: Workload, candidates: list[Knobs], schedules: CudaSchedules) -> int:
        """Write the plan and CUDA source of each of `candidates` not held
        yet (needs TVM, not a GPU), and record them as the workload's
        candidates; how many were written."""
        written = sum(self._write(workload, knobs, schedules) for knobs in candidates)
        self.prepared[workload.key] = list(candidates)
        self._save()
        return written

    def _write(self, workload: Workload, knobs: Knobs, schedules: CudaSchedules) -> bool:
        """Write the workload's plan and CUDA source with `knobs` unless held; whether it was written."""
        key = self._key(workload, knobs)
        if key in self.entries:
            return False
        from tconv.ir.params import bind_params, init_params
        from tconv.kernels.artifact import fingerprint_definition, plan_program
        from tconv.lowering.tvm.build import build_kernels
        from tconv.lowering.tvm.cuda_library import cuda_source

        assert self.arch is not None
        module = conv_network(workload, knobs, schedules)
        executable, program = build_kernels(module, "cuda", self.arch)
        plan, _ = plan_program(program, bind_params(module, init_params(module)), "cuda", self.arch)
        name = f"k{len(self.entries)}"
        (self.directory / name).mkdir(parents=True, exist_ok=True)
        write_plan(self.directory / name / PLAN_FILE, plan)
        (self.directory / name / SOURCE_FILE).write_text(cuda_source(executable) + fingerprint_definition(plan))
        self.entries[key] = name
        self._save()
        return True

    def artifact(self, workload: Workload, knobs: Knobs, schedules: CudaSchedules) -> Path:
        """The artifact of the workload with `knobs`, ready to run: written
        first where it is not held (TVM), its library compiled where it is
        not yet (nvcc)."""
        self._write(workload, knobs, schedules)
        return self._built(self.directory / self.entries[self._key(workload, knobs)])

    def _built(self, directory: Path) -> Path:
        """`directory`, its library compiled (nvcc) and its parameters written where they are not yet."""
        from tconv.lowering.tvm.cuda_library import compile_cuda_source

        plan = read_plan(directory)
        if not (directory / plan.library).exists():
            (directory / plan.params).write_bytes(bytes(plan.params_bytes))
            compile_cuda_source((directory / SOURCE_FILE).read_text(), directory / plan.library, self.arch)
        return directory

    def build_prepared(self, workloads: list[Workload], jobs: int) -> int:
        """Compile the prepared candidates of `workloads` not compiled yet,
        `jobs` nvcc processes at a time (a measurement run would otherwise
        compile them one by one, a few seconds each); how many."""
        from concurrent.futures import ThreadPoolExecutor

        pending = [
            self.directory / self.entries[self._key(w, k)]
            for w in workloads for k in self.prepared.get(w.key, [])
            if self._key(w, k) in self.entries
        ]
        pending = [d for d in pending if not (d / read_plan(d).library).exists()]
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            list(pool.map(self._built, pending))
        return len(pending)


def gpu_architecture(device: int = 0) -> str:
    """`sm_XY` of CUDA device `device` as torch sees it; a TconvError where there is none."""
    try:
        import torch
    except ImportError:
        raise TconvError("error: tuning for cuda needs torch with CUDA (and nvcc, and an NVIDIA GPU)") from None
    if not torch.cuda.is_available():
        raise TconvError(
            "error: tuning for cuda measures on an NVIDIA GPU of this machine, and torch sees none; "
            "tune with --target cpu, or on a GPU machine"
        )
    if device >= torch.cuda.device_count():
        raise TconvError(f"error: no CUDA device {device}: torch sees {torch.cuda.device_count()}")
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


class TvmCudaMeasurer:
    """Times workloads with thread-tile knobs on CUDA device `device` (see
    the module docstring). `kernels`: the `KernelStore` directory to keep
    the candidates' kernels in and take them from (default: a temporary
    one); `arch` overrides the architecture compiled for (default: the
    store's, else the device's)."""

    tunable = True

    def __init__(self, device: int = 0, arch: str | None = None, kernels: str | os.PathLike[str] | None = None,
                 rounds: int = 5, round_s: float = 0.02) -> None:
        self.device = device
        self._scratch = None if kernels else tempfile.TemporaryDirectory(prefix="tconv-cuda-tune-")
        self.store = KernelStore(kernels or self._scratch.name, arch)
        if self.store.arch is None:
            self.store.arch = gpu_architecture(device)
        self.schedules = CudaSchedules(self.store.arch, self.store.prepared)
        self.rounds = rounds
        self.round_s = round_s

    @property
    def target_key(self) -> str:
        return self.schedules.target

    def measure(self, workload: Workload, knobs: Knobs) -> float:
        """Seconds of one run of the workload's kernel with `knobs` on the GPU."""
        from tconv.runtime.cuda import CudaRuntime

        directory = self.store.artifact(workload, knobs, self.schedules)
        x = np.random.default_rng(0).standard_normal(workload.input, dtype=np.float32)
        with CudaRuntime(directory, self.device) as runtime:
            runtime.run(x)  # warm-up: loads the kernels, pages the memory in
            return time_torch_launches(runtime, self.rounds, self.round_s)

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()

    def __enter__(self) -> TvmCudaMeasurer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def time_torch_launches(runtime, rounds: int, round_s: float) -> float:
    """Seconds of one run of `runtime`'s launches (a `tconv.runtime.cuda.TorchRuntime`)
    on its tensors in place: the fastest of `rounds` rounds of back-to-back
    runs lasting about `round_s` each, timed by CUDA events on a GPU, by the
    host clock (synchronous kernels) on the CPU."""
    torch = runtime.torch
    if runtime.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def timed(runs: int) -> float:
            start.record()
            for _ in range(runs):
                runtime.execute()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / runs
    else:
        import time

        def timed(runs: int) -> float:
            began = time.perf_counter()
            for _ in range(runs):
                runtime.execute()
            return (time.perf_counter() - began) / runs

    return fastest_round(timed, rounds, round_s)
