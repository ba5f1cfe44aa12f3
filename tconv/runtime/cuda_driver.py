"""Runs an LLVM-backend cuda artifact on an NVIDIA GPU through the CUDA driver API.

    with DriverRuntime("out/resnet18-ptx") as runtime:
        logits, = runtime.run(image)

Such an artifact (`tconv compile --backend llvm --target cuda`) is the plan
of every other artifact (`target cuda <arch>`, the parameter file, one arena)
with, as its kernel library, a *kernel bundle*: `kernels.cuda.json`, one
JSON object

    {"format": "tconv-cuda-kernels", "version": 2, "arch": "sm_90",
     "plan_fingerprint": "<16 hex digits: plan_fingerprint of the plan it was compiled with>",
     "image_kind": "cubin" | "ptx", "image": "<base64 of the cubin or PTX>",
     "ptx": "<base64 of the PTX, beside a cubin>",
     "kernels": [{"symbol": "k0_conv2d", "args": 5,
                  "launches": [{"function": "k0_conv2d_0", "grid": 98, "block": 256}]}, ...]}

A bundle from another compile (another batch: the same symbols and
argument counts, other shapes) is refused by its `plan_fingerprint`, as the
C runtime refuses a cpu library by its `tconv_plan_fingerprint`.

A plan call `call <symbol> <n> <ids...>` runs the kernel's launches in
order, each a one-dimensional launch of `grid` blocks of `block` threads of
`function` on the device addresses of the call's tensors (pointers to
float32, in the call's order). A `cubin` image was assembled by ptxas for
`arch`; a `ptx` image is compiled by the driver when it is loaded. A cubin
runs only on GPUs of its architecture's major version (an sm_80 cubin does
not load on an sm_90 GPU), so a bundle keeps the PTX beside it (`ptx`,
optional), which the driver compiles where the cubin does not load, as it
does with the PTX nvcc embeds in a fat binary.

The runtime needs only numpy and the driver library (`libcuda.so.1`, through
ctypes): no torch, TVM or xDSL. Memory is two driver allocations (the
parameters, the arena), each plan tensor an offset into one; launches go to
the legacy default stream, so they are ordered with torch's default stream
on the same (primary) context. `DriverRuntime` works over any `Device`: the
tests use one that runs the kernels' host emulation
(`tconv.lowering.llvm.nvptx.host_emulation_ir`).
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from tconv.errors import TconvError
from tconv.runtime.driver import TensorInfo, check_inputs
from tconv.runtime.plan import PLAN_FILE, Plan, plan_fingerprint, read_plan, require_f32

BUNDLE_FILE = "kernels.cuda.json"
BUNDLE_FORMAT = "tconv-cuda-kernels"
BUNDLE_VERSION = 2
"""2: with `plan_fingerprint`."""
IMAGE_KINDS = ("cubin", "ptx")

CUDA_ERROR_NO_BINARY_FOR_GPU = 209
"""What cuModuleLoadData answers for a cubin of another architecture."""


# The kernel bundle ------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """One launch: `grid` blocks of `block` threads of the GPU function `function`."""

    function: str
    grid: int
    block: int


@dataclass(frozen=True)
class KernelLaunches:
    """What a plan call of `symbol` (on `args` tensors) launches, in order."""

    symbol: str
    args: int
    launches: tuple[Launch, ...]


@dataclass(frozen=True)
class KernelBundle:
    """A cuda artifact's kernel library: the GPU image and every kernel's launches."""

    arch: str
    image_kind: str
    """`cubin` (assembled by ptxas) or `ptx` (compiled by the driver on load)."""
    image: bytes
    kernels: tuple[KernelLaunches, ...]
    ptx: bytes | None = None
    """The PTX a cubin was assembled from, for GPUs the cubin does not run on."""
    plan_fingerprint: int = 0
    """`plan.plan_fingerprint` of the plan the kernels were compiled with."""

    def to_bytes(self) -> bytes:
        """The bundle file's contents."""
        return json.dumps({
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "arch": self.arch,
            "plan_fingerprint": f"{self.plan_fingerprint:016x}",
            "image_kind": self.image_kind,
            "kernels": [
                {"symbol": k.symbol, "args": k.args,
                 "launches": [{"function": l.function, "grid": l.grid, "block": l.block} for l in k.launches]}
                for k in self.kernels
            ],
            "image": base64.b64encode(self.image).decode(),
            **({"ptx": base64.b64encode(self.ptx).decode()} if self.ptx is not None else {}),
        }, indent=1).encode()

    def kernel(self, symbol: str) -> KernelLaunches | None:
        return next((k for k in self.kernels if k.symbol == symbol), None)

    def check_plan(self, plan: Plan, fingerprint: int, where: str) -> None:
        """Raise a TconvError unless the bundle suits `plan` (whose text has
        `fingerprint`): compiled with it, for the same architecture, every
        call's symbol present with its argument count."""
        if fingerprint != self.plan_fingerprint:
            raise TconvError(
                f"error: {where}: the kernels were compiled with another plan (fingerprint "
                f"{self.plan_fingerprint:016x}, the plan's {fingerprint:016x}): the files come from different "
                "compiles; compile the artifact again"
            )
        if plan.arch != self.arch:
            raise TconvError(f"error: {where}: the plan is for {plan.arch}, its kernels for {self.arch}")
        for call in plan.calls:
            kernel = self.kernel(call.symbol)
            if kernel is None:
                raise TconvError(f"error: {where}: no kernel `{call.symbol}` (the plan calls it)")
            if kernel.args != len(call.args):
                raise TconvError(
                    f"error: {where}: kernel `{call.symbol}` takes {kernel.args} arguments, "
                    f"the plan passes {len(call.args)}"
                )


def _field(table: dict, key: str, kind: type, where: str):
    value = table.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 1):
        expected = "a positive integer" if kind is int else f"a {kind.__name__}"
        raise TconvError(f"error: {where}: `{key}` must be {expected}, found {value!r}")
    return value


def parse_bundle(data: bytes, where: str) -> KernelBundle:
    """The bundle in `data` (a file's contents; `where` names it in errors)."""
    try:
        table = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TconvError(f"error: {where}: not a tconv cuda kernel bundle (bad JSON: {error})") from None
    if not isinstance(table, dict) or table.get("format") != BUNDLE_FORMAT:
        raise TconvError(f"error: {where}: not a tconv cuda kernel bundle (no \"format\": \"{BUNDLE_FORMAT}\")")
    if table.get("version") != BUNDLE_VERSION:
        raise TconvError(f"error: {where}: bundle version {table.get('version')!r}, expected {BUNDLE_VERSION}")
    if table.get("image_kind") not in IMAGE_KINDS:
        raise TconvError(
            f"error: {where}: `image_kind` must be one of {', '.join(IMAGE_KINDS)}, found {table.get('image_kind')!r}"
        )
    try:
        image = base64.b64decode(_field(table, "image", str, where), validate=True)
        ptx = base64.b64decode(_field(table, "ptx", str, where), validate=True) if "ptx" in table else None
    except ValueError:
        raise TconvError(f"error: {where}: `image` or `ptx` is not base64") from None
    fingerprint = table.get("plan_fingerprint")
    if not (isinstance(fingerprint, str) and len(fingerprint) == 16
            and all(c in "0123456789abcdef" for c in fingerprint)):
        raise TconvError(f"error: {where}: `plan_fingerprint` must be 16 hex digits, found {fingerprint!r}")
    kernels = []
    for position, entry in enumerate(_field(table, "kernels", list, where)):
        at = f"{where}: kernel {position}"
        if not isinstance(entry, dict):
            raise TconvError(f"error: {at}: expected an object, found {entry!r}")
        launches = []
        for launch in _field(entry, "launches", list, at):
            if not isinstance(launch, dict):
                raise TconvError(f"error: {at}: a launch must be an object, found {launch!r}")
            launches.append(Launch(_field(launch, "function", str, at), _field(launch, "grid", int, at),
                                   _field(launch, "block", int, at)))
        kernels.append(KernelLaunches(_field(entry, "symbol", str, at), _field(entry, "args", int, at), tuple(launches)))
    return KernelBundle(_field(table, "arch", str, where), table["image_kind"], image, tuple(kernels), ptx,
                        int(fingerprint, 16))


def read_bundle(path: str | os.PathLike[str]) -> KernelBundle:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TconvError(f"error: cannot read {path}: {error.strerror}") from None
    return parse_bundle(data, str(path))


def is_bundle_artifact(plan: Plan) -> bool:
    """Whether `plan`'s kernel library is a kernel bundle (an LLVM-backend cuda artifact)."""
    return plan.target == "cuda" and plan.library == BUNDLE_FILE


# The plan as launches -----------------------------------------------------------------


@dataclass(frozen=True)
class LaunchStep:
    """One launch of a run: `function`'s grid and block, and its arguments' device addresses."""

    function: str
    grid: int
    block: int
    addresses: tuple[int, ...]


def launch_steps(plan: Plan, bundle: KernelBundle, arena: int, params: int) -> list[LaunchStep]:
    """Every launch of one run of `plan`, in order, with the arena at device
    address `arena` and the parameters at `params`: each call's launches on
    its tensors' addresses (the region's address plus the tensor's offset)."""
    bases = {"arena": arena, "param": params}
    addresses = [bases[t.location] + t.offset for t in plan.tensors]
    steps = []
    for call in plan.calls:
        kernel = bundle.kernel(call.symbol)
        assert kernel is not None, "checked by KernelBundle.check_plan"
        arguments = tuple(addresses[i] for i in call.args)
        steps += [LaunchStep(l.function, l.grid, l.block, arguments) for l in kernel.launches]
    return steps


# Devices ------------------------------------------------------------------------------


class Device(Protocol):
    """Memory and kernels of one device, as `DriverRuntime` uses them."""

    def load(self, bundle: KernelBundle, functions: Sequence[str]) -> None:
        """Load the bundle's image and look up `functions` in it."""

    def allocate(self, nbytes: int) -> int:
        """The address of `nbytes` (≥ 1) new bytes, at least 64-byte aligned."""

    def upload(self, address: int, data: np.ndarray) -> None:
        """Copy the contiguous host array `data` to `address`."""

    def download(self, address: int, out: np.ndarray) -> None:
        """Copy `out.nbytes` bytes at `address` into the contiguous host array `out`."""

    def launch(self, step: LaunchStep) -> None:
        """Queue one launch (in order after the previous ones)."""

    def synchronize(self) -> None:
        """Wait until every queued launch and copy has finished."""

    def close(self) -> None:
        """Free the memory and unload the image."""


CUDA_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CUDA_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
LIBCUDA = "libcuda.so.1"


def no_cuda_device(why: str) -> TconvError:
    return TconvError(
        f"error: no CUDA device: {why}; running llvm-backend cuda kernels needs an NVIDIA GPU and its "
        "driver (on a machine without a GPU, use --target cpu)"
    )


def architecture_number(arch: str) -> int:
    """90 for `sm_90` (and `sm_90a`)."""
    return int(arch.removeprefix("sm_").rstrip("abcdefghijklmnopqrstuvwxyz"))


class CudaDevice:
    """GPU `ordinal` through the CUDA driver API, on its primary context (the
    one torch uses). `driver` is the driver library: by default
    `libcuda.so.1` through ctypes (the tests pass a stand-in)."""

    def __init__(self, ordinal: int = 0, driver=None) -> None:
        if driver is None:
            try:
                driver = ctypes.CDLL(LIBCUDA)
            except OSError as error:
                raise no_cuda_device(f"cannot load the CUDA driver library {LIBCUDA} ({error})") from None
        self.cuda = driver
        self.module: ctypes.c_void_p | None = None
        self.functions: dict[str, ctypes.c_void_p] = {}
        self.arguments: dict[LaunchStep, tuple[list[ctypes.c_uint64], ctypes.Array]] = {}
        self.allocations: list[int] = []
        self.events: list[ctypes.c_void_p] = []
        self.context: ctypes.c_void_p | None = None
        status = self.cuda.cuInit(0)
        if status != 0:
            raise no_cuda_device(f"cuInit failed with {self.error_name(status)}")
        count = ctypes.c_int(0)
        self.check(self.cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
        if ordinal >= count.value:
            raise no_cuda_device(f"the driver sees {count.value} device(s), device {ordinal} was asked for")
        self.device = ctypes.c_int(0)
        self.check(self.cuda.cuDeviceGet(ctypes.byref(self.device), ordinal), "cuDeviceGet")
        context = ctypes.c_void_p()
        self.check(self.cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), self.device), "cuDevicePrimaryCtxRetain")
        self.context = context
        self.check(self.cuda.cuCtxSetCurrent(context), "cuCtxSetCurrent")

    def bind(self) -> None:
        """Make the device's context the calling thread's current one (torch
        may have switched it)."""
        self.check(self.cuda.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")

    def error_name(self, status: int) -> str:
        name = ctypes.c_char_p()
        if self.cuda.cuGetErrorName(status, ctypes.byref(name)) == 0 and name.value:
            return f"{name.value.decode()} ({status})"
        return f"CUDA error {status}"

    def check(self, status: int, call: str) -> None:
        if status != 0:
            raise TconvError(f"error: {call} failed with {self.error_name(status)}")

    def compute_capability(self) -> int:
        """The device's `sm` number (90 for an H100)."""
        major, minor = ctypes.c_int(), ctypes.c_int()
        for value, attribute in ((major, CUDA_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                                 (minor, CUDA_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)):
            self.check(self.cuda.cuDeviceGetAttribute(ctypes.byref(value), attribute, self.device),
                       "cuDeviceGetAttribute")
        return major.value * 10 + minor.value

    def name(self) -> str:
        """The device's name (`NVIDIA H100 80GB HBM3`)."""
        buffer = ctypes.create_string_buffer(256)
        self.check(self.cuda.cuDeviceGetName(buffer, ctypes.c_int(len(buffer)), self.device), "cuDeviceGetName")
        return buffer.value.decode(errors="replace").strip()

    def load(self, bundle: KernelBundle, functions: Sequence[str]) -> None:
        self.bind()
        module = ctypes.c_void_p()
        image = bundle.image + (b"\0" if bundle.image_kind == "ptx" else b"")
        status = self.cuda.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(image))
        call = f"cuModuleLoadData ({bundle.image_kind} for {bundle.arch})"
        if status == CUDA_ERROR_NO_BINARY_FOR_GPU and bundle.ptx is not None:
            # A cubin of another major architecture: the driver compiles the PTX for this GPU.
            status = self.cuda.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(bundle.ptx + b"\0"))
            call = f"cuModuleLoadData (the PTX for {bundle.arch}, where its cubin does not run)"
        if status == CUDA_ERROR_NO_BINARY_FOR_GPU:
            raise TconvError(f"error: the kernels are a cubin for {bundle.arch} without their PTX, and this GPU "
                             f"(sm_{self.compute_capability()}) does not run it: compile them for its architecture")
        self.check(status, call)
        self.module = module
        for name in functions:
            function = ctypes.c_void_p()
            self.check(self.cuda.cuModuleGetFunction(ctypes.byref(function), module, name.encode()),
                       f"cuModuleGetFunction `{name}`")
            self.functions[name] = function

    def allocate(self, nbytes: int) -> int:
        self.bind()
        address = ctypes.c_uint64()
        self.check(self.cuda.cuMemAlloc_v2(ctypes.byref(address), ctypes.c_size_t(max(nbytes, 1))), "cuMemAlloc")
        self.allocations.append(address.value)
        return address.value

    def upload(self, address: int, data: np.ndarray) -> None:
        self.bind()
        self.check(self.cuda.cuMemcpyHtoD_v2(ctypes.c_uint64(address), data.ctypes.data_as(ctypes.c_void_p),
                                             ctypes.c_size_t(data.nbytes)), "cuMemcpyHtoD")

    def download(self, address: int, out: np.ndarray) -> None:
        self.bind()
        self.check(self.cuda.cuMemcpyDtoH_v2(out.ctypes.data_as(ctypes.c_void_p), ctypes.c_uint64(address),
                                             ctypes.c_size_t(out.nbytes)), "cuMemcpyDtoH")

    def launch(self, step: LaunchStep) -> None:
        if step not in self.arguments:
            values = [ctypes.c_uint64(address) for address in step.addresses]
            pointers = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
            self.arguments[step] = (values, pointers)  # the values must outlive every launch
        pointers = self.arguments[step][1]
        self.bind()
        self.check(
            self.cuda.cuLaunchKernel(self.functions[step.function], step.grid, 1, 1, step.block, 1, 1, 0, None,
                                     pointers, None),
            f"cuLaunchKernel `{step.function}`",
        )

    def synchronize(self) -> None:
        self.bind()
        self.check(self.cuda.cuCtxSynchronize(), "cuCtxSynchronize")

    # Events: GPU-side timestamps in the launch stream, for timing kernels
    # without the host's launch overhead.

    def create_event(self) -> ctypes.c_void_p:
        """A new event (CU_EVENT_DEFAULT: timed); `destroy_event` it, or `close` does."""
        self.bind()
        event = ctypes.c_void_p()
        self.check(self.cuda.cuEventCreate(ctypes.byref(event), ctypes.c_uint(0)), "cuEventCreate")
        self.events.append(event)
        return event

    def record_event(self, event: ctypes.c_void_p) -> None:
        """Queue `event` on the stream the launches go to (in order after them)."""
        self.bind()
        self.check(self.cuda.cuEventRecord(event, None), "cuEventRecord")

    def elapsed_seconds(self, start: ctypes.c_void_p, end: ctypes.c_void_p) -> float:
        """Seconds between two recorded events, once `end` has happened (this waits for it)."""
        self.bind()
        self.check(self.cuda.cuEventSynchronize(end), "cuEventSynchronize")
        milliseconds = ctypes.c_float()
        self.check(self.cuda.cuEventElapsedTime(ctypes.byref(milliseconds), start, end), "cuEventElapsedTime")
        return milliseconds.value * 1e-3

    def destroy_event(self, event: ctypes.c_void_p) -> None:
        self.bind()
        self.events = [e for e in self.events if e is not event]
        self.check(self.cuda.cuEventDestroy_v2(event), "cuEventDestroy")

    def close(self) -> None:
        if self.context is None:
            return
        self.cuda.cuCtxSetCurrent(self.context)
        self.cuda.cuCtxSynchronize()
        for event in self.events:
            self.cuda.cuEventDestroy_v2(event)
        for address in self.allocations:
            self.cuda.cuMemFree_v2(ctypes.c_uint64(address))
        if self.module is not None:
            self.cuda.cuModuleUnload(self.module)
        self.cuda.cuDevicePrimaryCtxRelease_v2(self.device)
        self.allocations, self.functions, self.arguments, self.module, self.context = [], {}, {}, None, None
        self.events = []


# The runtime --------------------------------------------------------------------------


class DriverRuntime:
    """A loaded llvm cuda artifact on `device` (a `Device`; by default GPU 0
    through the CUDA driver). Use it as a context manager, or call `close()`."""

    def __init__(self, artifact_dir: str | os.PathLike[str], device: Device | None = None) -> None:
        directory = Path(artifact_dir)
        plan = read_plan(directory)
        if not is_bundle_artifact(plan):
            raise TconvError(
                f"error: {directory} is not an llvm cuda artifact (target {plan.target}, library {plan.library}; "
                f"expected target cuda and library {BUNDLE_FILE})"
            )
        require_f32(plan, "cuda runtime")
        bundle = read_bundle(directory / plan.library)
        bundle.check_plan(plan, plan_fingerprint((directory / PLAN_FILE).read_bytes()),
                          str(directory / plan.library))
        params = _read_params(directory, plan)
        if device is None:
            device = CudaDevice()
        if isinstance(device, CudaDevice):
            capability = device.compute_capability()
            if capability < architecture_number(plan.arch):
                device.close()
                raise TconvError(f"error: {directory} is compiled for {plan.arch}; the GPU is sm_{capability}")
        self.device = device
        self.plan = plan
        try:
            called = {call.symbol for call in plan.calls}
            device.load(bundle, [l.function for k in bundle.kernels if k.symbol in called for l in k.launches])
            self.params_address = device.allocate(plan.params_bytes)
            self.arena_address = device.allocate(plan.arena_bytes)
            if params.nbytes:
                device.upload(self.params_address, params)
        except BaseException:
            device.close()
            raise
        self.steps = launch_steps(plan, bundle, self.arena_address, self.params_address)
        self.arena_bytes = plan.arena_bytes
        """The size of the activation arena on the device, in bytes."""
        self.inputs = tuple(TensorInfo(plan.tensors[i].name, plan.tensors[i].shape) for i in plan.inputs)
        self.outputs = tuple(TensorInfo(plan.tensors[i].name, plan.tensors[i].shape) for i in plan.outputs)

    def address(self, tensor_id: int) -> int:
        """The device address of plan tensor `tensor_id`."""
        tensor = self.plan.tensors[tensor_id]
        return (self.arena_address if tensor.location == "arena" else self.params_address) + tensor.offset

    def execute(self) -> None:
        """Queue every launch of the plan on the device memory in place (asynchronous)."""
        for step in self.steps:
            self.device.launch(step)

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """The network's outputs for the inputs `arrays` (float32, the plan's shapes)."""
        for tensor_id, array in zip(self.plan.inputs, check_inputs(self.inputs, arrays)):
            self.device.upload(self.address(tensor_id), np.ascontiguousarray(array))
        self.execute()
        self.device.synchronize()
        outputs = []
        for tensor_id, info in zip(self.plan.outputs, self.outputs):
            out = np.empty(info.shape, np.float32)
            self.device.download(self.address(tensor_id), out)
            outputs.append(out)
        return outputs

    def close(self) -> None:
        self.device.close()
        self.steps = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_params(directory: Path, plan: Plan) -> np.ndarray:
    path = directory / plan.params
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise TconvError(f"error: cannot read {path}: {error.strerror}") from None
    if len(blob) != plan.params_bytes:
        raise TconvError(
            f"error: {path} has {len(blob)} bytes, but {directory / 'plan.txt'} declares {plan.params_bytes}"
        )
    return np.frombuffer(blob, np.uint8).copy()
