"""Runs a cuda artifact on an NVIDIA GPU: kernels through tvm_ffi, memory from torch.

    with CudaRuntime("out/resnet34-cuda") as runtime:
        logits, = runtime.run(image)

A cuda artifact (`tconv compile --target cuda`) is the plan of a cpu one over
device memory, and a kernel library compiled by nvcc that `tvm_ffi` loads on
its own (`tconv.lowering.tvm.cuda_library`). The arena and the parameters
are two torch CUDA tensors; each plan tensor is a view into one of them,
passed to the kernels as a DLPack tensor. The machine needs torch with CUDA
and `apache-tvm-ffi`; not TVM, not xDSL (`bench/gpu` carries the artifact
and a tvm-ffi wheel to such a machine).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from tconv.errors import TconvError
from tconv.runtime.driver import TensorInfo, check_inputs
from tconv.runtime.plan import ALIGNMENT, Plan, read_plan, require_f32


def _needs(what: str) -> TconvError:
    return TconvError(
        f"error: running a cuda artifact needs {what} (an NVIDIA GPU, torch with CUDA and "
        "apache-tvm-ffi); on a machine without a GPU, compile for --target cpu"
    )


class TorchRuntime:
    """An artifact's kernels called through tvm_ffi on torch tensors of `device`.

    `CudaRuntime` is this on a GPU. On the CPU it runs a cpu artifact's
    kernels (TVM's runtime must be loaded for their thread pool): the tests
    check the plan-to-tensor mapping that way, without a GPU."""

    def __init__(self, artifact_dir: str | os.PathLike[str], device) -> None:
        import torch
        import tvm_ffi

        directory = Path(artifact_dir)
        plan = read_plan(directory)
        require_f32(plan, "cuda runtime")  # the regions below are float32 views
        self.plan = plan
        self.torch = torch
        self.device = torch.device(device)
        library = tvm_ffi.load_module(str(directory / plan.library))
        self.kernels = {}
        for call in plan.calls:
            if call.symbol not in self.kernels:
                try:
                    self.kernels[call.symbol] = library[call.symbol]
                except (AttributeError, KeyError, RuntimeError):
                    raise TconvError(
                        f"error: {directory / plan.library} has no kernel `{call.symbol}`"
                    ) from None
        params = _read_params(directory, plan)
        self.arena_bytes = plan.arena_bytes
        """The size of the activation arena on the device, in bytes."""
        # Kernels assume 64-byte aligned tensors: plan offsets are multiples of
        # 64, and torch's own allocations are aligned to at least that (numpy's
        # are not, so the parameters are copied into a torch allocation).
        regions = {
            "param": torch.empty(params.size, dtype=torch.float32, device=self.device),
            "arena": torch.empty(max(plan.arena_bytes, 4) // 4, dtype=torch.float32, device=self.device),
        }
        regions["param"].copy_(torch.from_numpy(params))
        for name, region in regions.items():
            if region.data_ptr() % ALIGNMENT:
                raise TconvError(f"error: the {name} memory torch gave is not {ALIGNMENT}-byte aligned")
        self.tensors = [
            regions[t.location][t.offset // 4 : t.offset // 4 + math.prod(t.shape)].view(t.shape)
            for t in plan.tensors
        ]
        self.args = [tuple(self.tensors[i] for i in call.args) for call in plan.calls]
        self.inputs = tuple(TensorInfo(plan.tensors[i].name, plan.tensors[i].shape) for i in plan.inputs)
        self.outputs = tuple(TensorInfo(plan.tensors[i].name, plan.tensors[i].shape) for i in plan.outputs)

    def execute(self) -> None:
        """Launch every call of the plan on the tensors in place (asynchronously on a GPU)."""
        for call, args in zip(self.plan.calls, self.args):
            self.kernels[call.symbol](*args)

    def input_tensors(self) -> list:
        """The device tensors the inputs are read from (to fill them without a host copy)."""
        return [self.tensors[i] for i in self.plan.inputs]

    def output_tensors(self) -> list:
        return [self.tensors[i] for i in self.plan.outputs]

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """The network's outputs for the inputs `arrays` (float32, the plan's shapes)."""
        for tensor, array in zip(self.input_tensors(), check_inputs(self.inputs, arrays)):
            tensor.copy_(self.torch.from_numpy(np.ascontiguousarray(array)))
        self.execute()
        return [tensor.cpu().numpy().copy() for tensor in self.output_tensors()]

    def close(self) -> None:
        self.tensors = self.args = []
        self.kernels = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class CudaRuntime(TorchRuntime):
    """A loaded cuda artifact on GPU `device`."""

    def __init__(self, artifact_dir: str | os.PathLike[str], device: int = 0) -> None:
        directory = Path(artifact_dir)
        plan = read_plan(directory)
        if plan.target != "cuda":
            raise TconvError(f"error: {directory} is a {plan.target} artifact, not a cuda one")
        require_f32(plan, "cuda runtime")
        try:
            import torch
            import tvm_ffi  # noqa: F401
        except ImportError as error:
            raise _needs(f"the Python package '{error.name}'") from None
        if not torch.cuda.is_available():
            raise _needs("a CUDA device visible to torch")
        major, minor = torch.cuda.get_device_capability(device)
        compiled = int(plan.arch.removeprefix("sm_").rstrip("abcdefghijklmnopqrstuvwxyz"))
        if major * 10 + minor < compiled:
            raise TconvError(
                f"error: {directory} is compiled for {plan.arch}; GPU {device} is sm_{major}{minor}"
            )
        super().__init__(directory, torch.device("cuda", device))


def _read_params(directory: Path, plan: Plan) -> np.ndarray:
    path = directory / plan.params
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise TconvError(f"error: cannot read {path}: {error.strerror}") from None
    if len(blob) != plan.params_bytes:
        raise TconvError(
            f"error: {path} has {len(blob)} bytes, but {directory / 'plan.txt'} declares "
            f"{plan.params_bytes}"
        )
    return np.frombuffer(blob, np.float32).copy() if blob else np.zeros(1, np.float32)
