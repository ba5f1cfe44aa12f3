"""A network and its parameters → an artifact directory: the one compile
pipeline behind `tconv compile`, `tconv optimize`'s answer and the search's
whole-network timings.

    compiled = compile_network(module, params, "net.tconv", database=TuningDatabase(path))
    print(compiled.report.format())

It re-batches the network where asked (kernels have fixed shapes), gives the
convolutions the tuning database's best schedules (TVM backend only: the
database holds TVM measurements) and builds the artifact with the chosen
code generator. The caller's module is left as it was.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.errors import TconvError
from tconv.runtime.plan import TARGETS

BACKENDS = ("tvm", "llvm")


@dataclass(frozen=True)
class CompiledNetwork:
    report: object
    """The backend's `ArtifactReport` (`report.format()` describes the artifact)."""
    tuned: int
    """Convolutions that got a schedule from the tuning database."""


def compile_network(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    output: str | os.PathLike[str],
    *,
    backend: str = "tvm",
    target: str = "cpu",
    arch: str = "sm_90",
    database=None,
    threads: int | None = None,
    batch: int | None = None,
) -> CompiledNetwork:
    """Compile `module` with `params` into the artifact directory `output`.

    `database` (a `TuningDatabase`, or None for the backend's own schedules)
    is read for `target`: this CPU on `threads` threads (default: the CPUs
    available), or the cuda `arch`. `batch` re-batches the network first, as
    `tconv-set-batch` does."""
    if backend not in BACKENDS:
        raise TconvError(f"error: unknown compile backend '{backend}' (expected one of: {', '.join(BACKENDS)})")
    if target not in TARGETS:
        raise TconvError(f"error: unknown target '{target}' (expected one of: {', '.join(TARGETS)})")
    module = module.clone() if batch is None else rebatched(module, batch)
    if backend == "llvm":
        from tconv.lowering.llvm.artifact import compile_artifact as compile_llvm_artifact

        return CompiledNetwork(compile_llvm_artifact(module, params, output, target, arch), 0)
    # Imported on use: TVM loads only when something is compiled.
    from tconv.lowering.tvm.artifact import compile_artifact

    tuned = 0
    if database is not None:
        from tconv.search.cuda_tuning import CudaSchedules
        from tconv.search.tuning import CpuSchedules, apply_tuning, default_threads

        schedules = CudaSchedules(arch) if target == "cuda" else CpuSchedules(threads or default_threads())
        tuned = apply_tuning(module, database, threads, schedules)
    return CompiledNetwork(compile_artifact(module, params, output, target=target, arch=arch), tuned)


def rebatched(module: ModuleOp, batch: int) -> ModuleOp:
    """A copy of `module` at batch size `batch`, as `tconv-set-batch` makes it."""
    from tconv.passes.set_batch import set_module_batch

    module = module.clone()
    try:
        set_module_batch(module, batch)
    except ValueError as err:  # a ShapeError, or a batch below 1
        raise TconvError(f"error: {err}") from None
    return module
