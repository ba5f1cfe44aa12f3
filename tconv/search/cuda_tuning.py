"""Tuning the TVM backend's CUDA convolutions on a GPU of this machine
(`tconv tune --target cuda`).

    schedules = CudaSchedules("sm_90")
    with TvmCudaMeasurer() as measurer:          # GPU 0: nvcc, torch with CUDA
        tune(module, database, 300, None, measure_fn=measurer.measure, schedules=measurer.schedules)
    apply_tuning(module, database, None, schedules)   # what `tconv compile --target cuda` does

The knob of a direct convolution's CUDA kernel is the tile a thread
accumulates: output channels × output columns (`schedule_gpu`), in the IR a
schedule `tile = {oc = [c], ow = [w]}` (`conv_schedule.gpu_tile`), as knobs
(c, w). The candidates are the tile `schedule_gpu.conv_tile` would choose,
then every tile of GPU_TILES whose channels divide a group's. A depthwise
convolution runs a thread per output and has no knob: it is not tuned.

A measurement compiles the workload's convolution alone with its tile (TVM,
then nvcc for the GPU's architecture) into an artifact, runs it with
`tconv.runtime.cuda` and times back-to-back launches between CUDA events:
the fastest of a few rounds, as on the CPU (`tuning.measure`).

Records are keyed `tvm cuda sm_XX kernels=N` (`CudaSchedules.target`): by
architecture, not by GPU, because `tconv compile --target cuda --arch sm_XX`
applies them without a GPU to ask. A tile tuned on one GPU of an
architecture is the one compiled for all of them.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tconv.errors import TconvError
from tconv.ir.schedule import ConvSchedule
from tconv.search.tuning import Knobs, Workload, conv_network, full_knobs

GPU_KERNELS = 1
"""The version of the CUDA kernels a thread tile builds, part of the target key (as `tuning.KERNELS`)."""

GPU_TILES = ((16, 2), (8, 4), (8, 2), (4, 4), (4, 2), (16, 1), (2, 2), (2, 1), (1, 1))
"""(output channels, columns) thread tiles tried: the seven of the H100 tile
run (`bench/gpu/tiles.sh`), the smaller ones `conv_tile` falls back to, and
a thread per output."""


@dataclass(frozen=True)
class CudaSchedules:
    """The TVM CUDA kernels' knobs for GPUs of architecture `arch` (the
    counterpart of `tuning.CpuSchedules`; see the module docstring)."""

    arch: str

    @property
    def target(self) -> str:
        return f"tvm cuda {self.arch} kernels={GPU_KERNELS}"

    def tunes(self, workload: Workload) -> bool:
        return not workload.depthwise

    def candidates(self, workload: Workload) -> list[Knobs]:
        from tconv.lowering.tvm.schedule_gpu import conv_tile

        outputs = workload.input[0] * workload.out_channels * workload.out_height * workload.out_width
        tiles = [conv_tile(outputs, workload.out_group)]
        tiles += [t for t in GPU_TILES if workload.out_group % t[0] == 0 and t not in tiles]
        return [full_knobs(t) for t in tiles]

    def schedule(self, workload: Workload, knobs: Knobs) -> ConvSchedule:
        from tconv.lowering.tvm.conv_schedule import gpu_schedule

        channels, columns = full_knobs(knobs)[:2]
        return gpu_schedule(channels, columns)


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
    the module docstring); `arch` overrides the architecture compiled for.
    Each (workload, knobs) is compiled once and kept for the measurer's life."""

    tunable = True

    def __init__(self, device: int = 0, arch: str | None = None, rounds: int = 5, round_s: float = 0.02) -> None:
        self.device = device
        self.schedules = CudaSchedules(arch or gpu_architecture(device))
        self.rounds = rounds
        self.round_s = round_s
        self._scratch = tempfile.TemporaryDirectory(prefix="tconv-cuda-tune-")
        self._built: dict[tuple[str, Knobs], Path] = {}

    @property
    def target_key(self) -> str:
        return self.schedules.target

    def build(self, workload: Workload, knobs: Knobs) -> Path:
        """The artifact of the workload's convolution with `knobs`, compiled on first use."""
        key = (workload.key, full_knobs(knobs))
        if key not in self._built:
            from tconv.ir.params import init_params
            from tconv.lowering.tvm.artifact import compile_artifact

            module = conv_network(workload, knobs, self.schedules)
            directory = Path(self._scratch.name) / f"k{len(self._built)}"
            compile_artifact(module, init_params(module), directory, target="cuda", arch=self.schedules.arch)
            self._built[key] = directory
        return self._built[key]

    def measure(self, workload: Workload, knobs: Knobs) -> float:
        """Seconds of one run of the workload's kernel with `knobs` on the GPU."""
        from tconv.runtime.cuda import CudaRuntime

        directory = self.build(workload, knobs)
        x = np.random.default_rng(0).standard_normal(workload.input, dtype=np.float32)
        with CudaRuntime(directory, self.device) as runtime:
            runtime.run(x)  # warm-up: loads the kernels, pages the memory in
            return time_torch_launches(runtime, self.rounds, self.round_s)

    def close(self) -> None:
        self._scratch.cleanup()
        self._built = {}

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

    once = timed(1)
    runs = max(1, min(10_000, math.ceil(round_s / max(once, 1e-7))))
    seconds = min(timed(runs) for _ in range(rounds))
    if not (math.isfinite(seconds) and seconds > 0):
        raise TconvError(f"error: timing on the GPU gave {seconds} s per run")
    return seconds
