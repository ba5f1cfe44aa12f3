"""A tconv network → an artifact directory, through the LLVM backend.

    report = compile_artifact(module, params, "out/resnet18")
    with Runtime("out/resnet18") as runtime:
        logits, = runtime.run(image)

The artifact is the TVM backend's format (`tconv.lowering.tvm.artifact`,
written by its `write_program_artifact`): plan.txt, params.bin and
kernels.so, run by the same C runtime. Only the kernel library differs: built
by `build.compile_library` from LLVM IR, for this CPU.

For `target="cuda"` the plan is the same over device memory (`target cuda
<arch>`), and the kernel library is a kernel bundle
(`tconv.runtime.cuda_driver`, `kernels.cuda.json`): the kernels' PTX
(`nvptx`, a thread per output point), assembled by ptxas into a cubin where
it is installed, else kept as PTX for the driver to compile, with each
kernel's launches. `tconv.runtime.cuda_driver.DriverRuntime` runs it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.ir.loader import TconvError
from tconv.ir.params import bind_params
from tconv.kernels.artifact import ArtifactReport, fingerprint_object, plan_program, write_program_artifact
from tconv.kernels.target import VectorUnit
from tconv.lowering.llvm.build import compile_library, lower_program
from tconv.runtime import plan as plan_format
from tconv.runtime.cuda_driver import BUNDLE_FILE

TARGETS = ("cpu", "cuda")
CUDA_PACKING = VectorUnit(8, 16)
"""The vector unit whose blocks a cuda artifact's weights are packed in (a
fixed one: the artifact must not depend on the CPU that compiled it)."""


def compile_artifact(
    module: ModuleOp, params: Mapping[str, np.ndarray], out_dir: str | os.PathLike[str], target: str = "cpu",
    arch: str = "sm_90",
) -> ArtifactReport:
    """Compile `module` with the parameter store `params` into the artifact
    directory `out_dir` (replacing an artifact there): for this CPU, or for
    `target` "cuda", for the NVIDIA GPU architecture `arch` (sm_80, sm_90)."""
    if target not in TARGETS:
        raise TconvError(
            f"error: the llvm backend compiles for target {', '.join(TARGETS)}, not '{target}'"
        )
    bound = bind_params(module, params)
    if target == "cuda":
        return _compile_cuda_artifact(module, bound, Path(out_dir), arch)
    kernels, program = lower_program(module)

    def write_library(path: Path, plan: plan_format.Plan) -> None:
        compile_library(kernels, path, extra_objects=[fingerprint_object(plan, path.parent)])

    return write_program_artifact(program, bound, out_dir, write_library, target)


def _compile_cuda_artifact(module: ModuleOp, bound: Mapping[str, np.ndarray], out_dir: Path,
                           arch: str) -> ArtifactReport:
    """The cuda artifact: the plan for `arch`, the parameter blob and the kernel bundle."""
    from tconv.lowering.llvm.nvptx import ARCHES, PtxError, kernel_bundle

    if arch not in ARCHES:
        raise TconvError(f"error: the llvm backend compiles cuda for {', '.join(ARCHES)}, not '{arch}'")
    kernels, program = lower_program(module, CUDA_PACKING)
    plan, blob = plan_program(program, bound, "cuda", arch)
    plan = replace(plan, library=BUNDLE_FILE)
    try:
        bundle = kernel_bundle(kernels, arch)
    except PtxError as error:
        raise TconvError(f"error: {error}") from None
    bundle = replace(bundle, plan_fingerprint=plan_format.plan_fingerprint(plan_format.format_plan(plan)))
    with tempfile.TemporaryDirectory(prefix="tconv-llvm-cuda-") as scratch:
        library = Path(scratch) / BUNDLE_FILE
        library.write_bytes(bundle.to_bytes())
        plan_format.write_artifact(out_dir, plan, blob, library)
    return ArtifactReport(
        directory=out_dir,
        arena_bytes=plan.arena_bytes,
        activation_bytes=sum(t.nbytes for t in plan.tensors if t.location == "arena"),
        params_bytes=plan.params_bytes,
        calls=len(plan.calls),
        kernels=len(program.symbols),
    )


def run_llvm(module: ModuleOp, params: Mapping[str, np.ndarray], *inputs: np.ndarray,
             threads: int | None = None) -> list[np.ndarray]:
    """The module's results on `inputs`, computed by its LLVM kernels through
    a temporary artifact and the C runtime (on `threads` threads)."""
    from tconv.runtime.driver import Runtime

    with tempfile.TemporaryDirectory(prefix="tconv-llvm-run-") as scratch:
        directory = Path(scratch) / "artifact"
        compile_artifact(module, params, directory)
        with Runtime(directory, threads) as runtime:
            return runtime.run(*inputs)
