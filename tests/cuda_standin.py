"""Running the LLVM backend's cuda artifacts without a GPU (shared by
tests/integration/test_llvm_cuda.py and test_cuda_measure.py).

`HostEmulation` is a `cuda_driver.Device` on this CPU that runs the kernels'
host emulation (`nvptx.host_emulation_ir`: the GPU functions' bodies
compiled for this CPU); `FakeDriver` stands in for libcuda.so.1 under
`CudaDevice`, taking the very ctypes arguments the real one gets and
running each launch through a `HostEmulation`."""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

import numpy as np

from tconv.lowering.llvm.artifact import CUDA_PACKING
from tconv.lowering.llvm.build import lower_program
from tconv.lowering.llvm.nvptx import compile_host_emulation
from tconv.runtime.cuda_driver import KernelBundle, LaunchStep


class HostEmulation:
    """A `Device` on this CPU: memory from numpy, the bundle's functions
    taken from the kernels' host emulation (`nvptx.host_emulation_ir`, the
    same names and bodies), each launch running its grid × block threads."""

    def __init__(self, module, scratch: Path) -> None:
        kernels, _ = lower_program(module, CUDA_PACKING)
        scratch.mkdir(parents=True, exist_ok=True)
        self.path = scratch / "emulation.so"
        compile_host_emulation(kernels, self.path)
        self.library = ctypes.CDLL(str(self.path))
        self.functions = {}
        self.buffers: list[np.ndarray] = []
        self.launched: list[LaunchStep] = []

    def load(self, bundle: KernelBundle, functions) -> None:
        self.functions = {name: getattr(self.library, name) for name in functions}

    def allocate(self, nbytes: int) -> int:
        buffer = np.full(nbytes + 64, 0xFF, np.uint8)  # NaN-filled: an unwritten read shows
        self.buffers.append(buffer)
        return buffer.ctypes.data + (-buffer.ctypes.data) % 64

    def upload(self, address: int, data: np.ndarray) -> None:
        ctypes.memmove(address, data.ctypes.data, data.nbytes)

    def download(self, address: int, out: np.ndarray) -> None:
        ctypes.memmove(out.ctypes.data, address, out.nbytes)

    def launch(self, step: LaunchStep) -> None:
        self.launched.append(step)
        function = self.functions[step.function]  # KeyError: a function `load` was not asked for
        function.restype = None
        function(*map(ctypes.c_void_p, step.addresses), ctypes.c_int64(step.grid), ctypes.c_int64(step.block))

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        self.buffers = []


class FakeDriver:
    """A stand-in for libcuda.so.1 on this CPU, called by `CudaDevice` with
    the very ctypes arguments it gives the real one: device memory is host
    memory, and a launch decodes `kernelParams` (an array of pointers to the
    argument values) and runs the function's host emulation (`emulation`;
    None: a driver that opens the device and answers queries, but launches
    nothing). Launches run synchronously, so an event is the time it is
    recorded at."""

    def __init__(self, emulation: HostEmulation | None, capability=(9, 0), status_of_init=0,
                 name: bytes = b"Stand-in GPU", runs_cubins: bool = True) -> None:
        self.emulation = emulation
        self.runs_cubins = runs_cubins
        """False: every cubin is of another architecture (CUDA_ERROR_NO_BINARY_FOR_GPU); PTX loads."""
        self.capability = capability
        self.status_of_init = status_of_init
        self.device_name = name
        self.names: list[str] = []
        self.freed: list[int] = []
        self.launches: list[tuple[str, int, int, tuple[int, ...]]] = []
        self.loaded: list[bytes] = []
        self.events: dict[int, float | None] = {}
        """Live events: the perf_counter time each was last recorded at."""
        self.retained = 0
        """Primary-context references held (retained and not released)."""

    def cuInit(self, flags):
        return self.status_of_init

    def cuGetErrorName(self, status, name):
        name._obj.value = {100: b"CUDA_ERROR_NO_DEVICE"}.get(status, b"CUDA_ERROR_UNKNOWN")
        return 0

    def cuDeviceGetCount(self, count):
        count._obj.value = 1
        return 0

    def cuDeviceGet(self, device, ordinal):
        device._obj.value = ordinal
        return 0

    def cuDeviceGetName(self, buffer, length, device):
        ctypes.memmove(buffer, self.device_name + b"\0", min(len(self.device_name) + 1, length.value))
        return 0

    def cuDevicePrimaryCtxRetain(self, context, device):
        context._obj.value = 0xC0
        self.retained += 1
        return 0

    def cuCtxSetCurrent(self, context):
        assert context.value == 0xC0
        return 0

    def cuDeviceGetAttribute(self, value, attribute, device):
        value._obj.value = self.capability[attribute - 75]
        return 0

    def cuModuleLoadData(self, module, image):
        self.loaded.append(image.value)
        if not self.runs_cubins and image.value.startswith(b"\x7fELF"):
            return 209  # CUDA_ERROR_NO_BINARY_FOR_GPU
        module._obj.value = 0x30
        return 0

    def cuModuleGetFunction(self, function, module, name):
        self.names.append(name.decode())
        if self.emulation is not None:
            self.emulation.load(None, self.names)
        function._obj.value = len(self.names)
        return 0

    def cuMemAlloc_v2(self, address, size):
        if self.emulation is None:
            return 2  # CUDA_ERROR_OUT_OF_MEMORY: this stand-in has no memory
        address._obj.value = self.emulation.allocate(size.value)
        return 0

    def cuMemcpyHtoD_v2(self, address, data, size):
        ctypes.memmove(address.value, data.value, size.value)
        return 0

    def cuMemcpyDtoH_v2(self, data, address, size):
        ctypes.memmove(data.value, address.value, size.value)
        return 0

    def cuLaunchKernel(self, function, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        assert (gy, gz, by, bz, shared, stream, extra) == (1, 1, 1, 1, 0, None, None)
        name = self.names[function.value - 1]
        addresses = tuple(ctypes.c_uint64.from_address(pointer).value for pointer in params)
        self.launches.append((name, gx, bx, addresses))
        self.emulation.launch(LaunchStep(name, gx, bx, addresses))
        return 0

    def cuCtxSynchronize(self):
        return 0

    def cuEventCreate(self, event, flags):
        assert flags.value == 0
        handle = 0xE0 + len(self.events) + 1
        while handle in self.events:
            handle += 1
        self.events[handle] = None
        event._obj.value = handle
        return 0

    def cuEventRecord(self, event, stream):
        assert stream is None and event.value in self.events
        self.events[event.value] = time.perf_counter()
        return 0

    def cuEventSynchronize(self, event):
        return 0 if self.events.get(event.value) is not None else 400  # CUDA_ERROR_INVALID_HANDLE

    def cuEventElapsedTime(self, milliseconds, start, end):
        begun, ended = self.events.get(start.value), self.events.get(end.value)
        if begun is None or ended is None:
            return 600  # CUDA_ERROR_NOT_READY
        milliseconds._obj.value = (ended - begun) * 1e3
        return 0

    def cuEventDestroy_v2(self, event):
        return 0 if self.events.pop(event.value, False) is not False else 400

    def cuMemFree_v2(self, address):
        self.freed.append(address.value)
        return 0

    def cuModuleUnload(self, module):
        return 0

    def cuDevicePrimaryCtxRelease_v2(self, device):
        self.retained -= 1
        return 0
