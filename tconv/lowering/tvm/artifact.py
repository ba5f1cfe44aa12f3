"""A tconv network → an artifact directory, with TVM's kernels.

    report = compile_artifact(module, params, "out/resnet18")
    with Runtime("out/resnet18") as runtime:
        logits, = runtime.run(image)

`compile_artifact` builds the network's kernels for this CPU
(`build.build_kernels`), exports them as one shared library, and writes it
with the plan and parameters (`tconv.kernels.artifact`). A cuda artifact is
the same plan over device memory, its library compiled by nvcc
(`cuda_library`) and run by `tconv.runtime.cuda`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.ir.loader import TconvError
from tconv.kernels.artifact import ArtifactReport, fingerprint_definition, fingerprint_object, write_program_artifact
from tconv.runtime import plan as plan_format


def compile_artifact(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    out_dir: str | os.PathLike[str],
    target: str = "cpu",
    arch: str = "sm_90",
) -> ArtifactReport:
    """Compile `module` with the parameter store `params` into the artifact
    directory `out_dir` (replacing an artifact there) for `target`: "cpu"
    (this machine), or "cuda" (GPU architecture `arch`, built with nvcc)."""
    if target not in plan_format.TARGETS:
        raise TconvError(
            f"error: unknown target '{target}' (expected one of: {', '.join(plan_format.TARGETS)})"
        )
    # Imported on use: TVM is heavy, and only compiling needs it.
    from tconv.ir.params import bind_params
    from tconv.lowering.tvm.build import build_kernels
    from tconv.lowering.tvm.cuda_library import compile_cuda_source, cuda_source

    bound = bind_params(module, params)
    executable, program = build_kernels(module, target, arch)

    def write_library(library: Path, plan: plan_format.Plan) -> None:
        if target == "cuda":
            compile_cuda_source(cuda_source(executable) + fingerprint_definition(plan), library, arch)
        else:
            executable.export_library(str(library), addons=[str(fingerprint_object(plan, library.parent))])

    return write_program_artifact(program, bound, out_dir, write_library, target, arch if target == "cuda" else "")
