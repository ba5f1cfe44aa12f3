"""The TVM targets tconv compiles for, and the vector unit of a CPU target
(`tconv.kernels.target`).

TVM 0.27 takes targets as dicts (`{"kind": "llvm", ...}`); the string forms
raise. `cpu` is the host: LLVM's name for this CPU and its core count, so that
the code uses every instruction the machine has. `cuda` needs the GPU
architecture (`sm_90`); its host code is CUDA C++ (`cuda_host`), which nvcc
compiles with the kernels into one library (`cuda_library`).
"""

from __future__ import annotations

import os

from tvm.target import Target, codegen

from tconv.kernels.target import VectorUnit, vector_unit_from_features

TARGET_NAMES = ("cpu", "cuda")


def host_cpu() -> str:
    """LLVM's name for the CPU this process runs on (`znver3`, `emeraldrapids`)."""
    return codegen.llvm_get_system_cpu()


def cpu_target(mcpu: str | None = None, num_cores: int | None = None) -> Target:
    """An llvm target for `mcpu` (default: this machine's) with `num_cores`
    (default: TVM_NUM_THREADS if set, else the cores this process may use)."""
    if num_cores is None:
        threads = os.environ.get("TVM_NUM_THREADS", "")
        num_cores = int(threads) if threads.isdigit() and int(threads) > 0 else len(os.sched_getaffinity(0))
    return Target({"kind": "llvm", "mcpu": mcpu or host_cpu(), "num-cores": num_cores})


def cuda_target(arch: str = "sm_90", host: str = "cuda_host") -> Target:
    """A cuda target for GPU architecture `arch`, with host code for `host`
    (`cuda_host`: the nvcc route of `cuda_library`; or `llvm`)."""
    if not arch.startswith("sm_"):
        raise ValueError(f"cuda target: arch must look like 'sm_90', got '{arch}'")
    return Target({"kind": "cuda", "arch": arch}, host={"kind": host})


def make_target(target: str | Target, arch: str = "sm_90") -> Target:
    """`target` as a Target: "cpu", "cuda" (for `arch`) or a Target as is."""
    if isinstance(target, Target):
        return target
    if target == "cpu":
        return cpu_target()
    if target == "cuda":
        return cuda_target(arch)
    raise ValueError(f"unknown target '{target}' (expected one of {', '.join(TARGET_NAMES)})")


def is_gpu(target: Target) -> bool:
    return target.kind.name in ("cuda", "rocm", "vulkan", "metal", "opencl")


def vector_unit(target: Target) -> VectorUnit:
    """The vector unit of an llvm `target`. (`llvm_get_vector_width` answers
    512 for AVX2-only CPUs, so the features are asked instead.)"""
    if target.kind.name != "llvm":
        raise ValueError(f"vector_unit: expected an llvm target, got '{target.kind.name}'")
    return vector_unit_from_features(lambda name: bool(codegen.llvm_cpu_has_features(name, target)))
