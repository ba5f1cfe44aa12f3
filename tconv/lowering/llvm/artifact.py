"""A tconv network → an artifact directory, through the LLVM backend.

    report = compile_artifact(module, params, "out/resnet18")
    with Runtime("out/resnet18") as runtime:
        logits, = runtime.run(image)

The artifact is the TVM backend's format (`tconv.lowering.tvm.artifact`,
written by its `write_program_artifact`): plan.txt, params.bin and
kernels.so, run by the same C runtime. Only the kernel library differs: built
by `build.compile_library` from LLVM IR, for this CPU.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.ir.loader import TconvError
from tconv.ir.params import bind_params
from tconv.lowering.llvm.build import compile_library, lower_program
from tconv.lowering.tvm.artifact import ArtifactReport, write_program_artifact

TARGETS = ("cpu",)


def compile_artifact(
    module: ModuleOp, params: Mapping[str, np.ndarray], out_dir: str | os.PathLike[str], target: str = "cpu"
) -> ArtifactReport:
    """Compile `module` with the parameter store `params` into the artifact
    directory `out_dir` (replacing an artifact there), for this CPU."""
    if target not in TARGETS:
        raise TconvError(
            f"error: the llvm backend compiles for target {', '.join(TARGETS)} only, not '{target}' "
            "(use --backend tvm for cuda)"
        )
    bound = bind_params(module, params)
    kernels, program = lower_program(module)

    def write_library(path: Path) -> None:
        compile_library(kernels, path)

    return write_program_artifact(program, bound, out_dir, write_library, target)


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
