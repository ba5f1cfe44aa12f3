"""Convolution layers timed on a CUDA GPU of this machine (`tconv optimize --target cuda`).

    measurer = CudaMeasurer()                    # GPU 0; "no CUDA device" without one
    latencies = LayerLatencies(database, measurer)

The kernels are the LLVM backend's (`tconv.lowering.llvm.nvptx`: a thread
per output point, blocks of 256 threads), compiled for the newest
architecture the backend has that the GPU runs (sm_80 or sm_90), and run by
`tconv.runtime.cuda_driver` (the CUDA driver API through ctypes). These
kernels take no schedule: the CPU templates' knobs (`tuning.Knobs`) mean
nothing to them. So the measurer is not `tunable` (the search measures
each workload once, at its default knobs, and spends no budget tuning), it
compiles each workload once whatever knobs it is asked for, and it records
the knobs as given, so the tuning database stays keyed like every other
target's. Its `target_key` is `cuda sm_<compute capability> <device
name>` (`cuda sm_90 NVIDIA H100 80GB HBM3`): GPUs of one architecture
differ in speed.

A measurement is one run of the workload's convolution alone (the network
`tuning.conv_network` builds, without its CPU schedule) on device memory in
place: a warm-up, then the fastest of `rounds` rounds of back-to-back
runs lasting about `round_s` each, timed by CUDA events recorded in the
launch stream before and after the round. The launches come from this
process as `DriverRuntime.execute` issues a network's, so a kernel shorter
than the host's interval between two launches (a few microseconds through
ctypes) counts as that interval, as it does in a network run this way; the
per-layer sums stay comparable with the networks' measured times. Fastest,
as on the CPU (`tuning.measure`): other work on the GPU only ever adds time.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.errors import TconvError
from tconv.runtime.cuda_driver import CudaDevice, Device, DriverRuntime, architecture_number
from tconv.search.tuning import UNSCHEDULED, Knobs, Workload, conv_network

DeviceFactory = Callable[[ModuleOp], Device]
"""A device to run the artifact of `module` on: by default a `CudaDevice`
(the module is for stand-ins that emulate the kernels on this CPU, as the
tests do)."""


def arch_for(capability: int) -> str:
    """The newest architecture the LLVM backend compiles cuda for
    (`nvptx.ARCHES`) that a GPU of `capability` (90 for sm_90) runs."""
    from tconv.lowering.llvm.nvptx import ARCHES

    usable = [arch for arch in ARCHES if architecture_number(arch) <= capability]
    if not usable:
        raise TconvError(
            f"error: the GPU is sm_{capability}; the llvm backend compiles cuda for {', '.join(ARCHES)} only"
        )
    return max(usable, key=architecture_number)


def conv_module(workload: Workload) -> ModuleOp:
    """The workload's convolution alone, as the GPU runs it: no schedule (the
    GPU kernels take none; a network compiled for cuda carries none either)."""
    return conv_network(workload, UNSCHEDULED)


class CudaMeasurer:
    """Times convolution workloads on GPU `ordinal` (see the module
    docstring). `arch` overrides the architecture compiled for (default:
    `arch_for` the device). `driver` and `device_for` are for tests: the
    driver library `CudaDevice` calls (default libcuda.so.1), and the
    device each artifact runs on (default: a `CudaDevice` of `ordinal`)."""

    tunable = False
    """The GPU kernels have no schedule knobs: each workload is measured once."""

    def __init__(self, ordinal: int = 0, arch: str | None = None, driver=None,
                 device_for: DeviceFactory | None = None, rounds: int = 5, round_s: float = 0.01) -> None:
        # Held for the measurer's life: the primary context stays alive between measurements.
        self.device = CudaDevice(ordinal, driver)
        try:
            capability = self.device.compute_capability()
            self.arch = arch or arch_for(capability)
            if architecture_number(self.arch) > capability:
                raise TconvError(f"error: --arch {self.arch}: the GPU is sm_{capability}")
            self._target_key = f"cuda sm_{capability} {self.device.name()}".rstrip()
        except BaseException:
            self.device.close()
            raise
        self.device_for: DeviceFactory = device_for or (lambda module: CudaDevice(ordinal, driver))
        self.rounds = rounds
        self.round_s = round_s
        self._scratch = tempfile.TemporaryDirectory(prefix="tconv-cuda-measure-")
        self._built: dict[str, tuple[Path, ModuleOp]] = {}

    @property
    def target_key(self) -> str:
        return self._target_key

    def build(self, workload: Workload, knobs: Knobs) -> tuple[Path, ModuleOp]:
        """The workload's artifact directory and module, compiled on first use
        (the knobs do not change the GPU kernel: one build per workload)."""
        if workload.key not in self._built:
            from tconv.ir.params import init_params
            from tconv.lowering.llvm.artifact import compile_artifact

            module = conv_module(workload)
            directory = Path(self._scratch.name) / f"w{len(self._built)}"
            compile_artifact(module, init_params(module), directory, "cuda", self.arch)
            self._built[workload.key] = (directory, module)
        return self._built[workload.key]

    def measure(self, workload: Workload, knobs: Knobs) -> float:
        """Seconds of one run of the workload's kernel(s): the fastest round (module docstring)."""
        directory, module = self.build(workload, knobs)
        x = np.random.default_rng(0).standard_normal(workload.input, dtype=np.float32)
        with DriverRuntime(directory, self.device_for(module)) as runtime:
            runtime.run(x)  # warm-up: loads the kernels, pages the memory in
            return time_launches(runtime, self.rounds, self.round_s)

    def close(self) -> None:
        self.device.close()
        self._scratch.cleanup()
        self._built = {}


def time_launches(runtime: DriverRuntime, rounds: int, round_s: float) -> float:
    """Seconds of one run of `runtime`'s launches on its device's memory in
    place: the fastest of `rounds` rounds of back-to-back runs lasting about
    `round_s` each, timed by events where the device has them (a
    `CudaDevice`), else by the host clock around the round and a synchronize."""
    device = runtime.device
    if isinstance(device, CudaDevice):
        start, end = device.create_event(), device.create_event()

        def timed(runs: int) -> float:
            device.record_event(start)
            for _ in range(runs):
                runtime.execute()
            device.record_event(end)
            return device.elapsed_seconds(start, end) / runs
    else:
        import time

        def timed(runs: int) -> float:
            device.synchronize()
            began = time.perf_counter()
            for _ in range(runs):
                runtime.execute()
            device.synchronize()
            return (time.perf_counter() - began) / runs

    return fastest_round(timed, rounds, round_s)


def fastest_round(timed: Callable[[int], float], rounds: int, round_s: float) -> float:
    """The fastest of `rounds` calls of `timed(runs)` (seconds per run of
    `runs` back-to-back runs), `runs` chosen from one run to last about `round_s`."""
    once = timed(1)
    runs = max(1, min(10_000, math.ceil(round_s / max(once, 1e-7))))
    seconds = min(timed(runs) for _ in range(rounds))
    if not (math.isfinite(seconds) and seconds > 0):
        raise TconvError(f"error: timing on the GPU gave {seconds} s per run")
    return seconds
