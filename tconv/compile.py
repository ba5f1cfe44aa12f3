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
LAYOUTS = ("auto", "nchw")


@dataclass(frozen=True)
class CompiledNetwork:
    report: object
    """The backend's `ArtifactReport` (`report.format()` describes the artifact)."""
    tuned: int
    """Convolutions that got a schedule from the tuning database."""
    layouts: LayoutPlan | None = None
    """What `plan_layouts` decided (None: it did not run)."""


@dataclass(frozen=True)
class LayoutPlan:
    """What `plan_layouts` did to a network."""

    packed: int = 0
    """Convolutions that read or write activations in channel blocks."""
    kept_tuned: int = 0
    """Convolutions left NCHW only because their schedule sets loop knobs."""


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
    layout: str = "auto",
) -> CompiledNetwork:
    """Compile `module` with `params` into the artifact directory `output`.

    `database` (a `TuningDatabase`, or None for the backend's own schedules)
    is read for `target`: this CPU on `threads` threads (default: the CPUs
    available), or the cuda `arch`. `batch` re-batches the network first, as
    `tconv-set-batch` does. `layout` "auto" stores activations in channel
    blocks where the kernels gain (`plan_layouts`; TVM on a CPU, a network
    without layouts of its own), "nchw" leaves them NCHW."""
    if backend not in BACKENDS:
        raise TconvError(f"error: unknown compile backend '{backend}' (expected one of: {', '.join(BACKENDS)})")
    if target not in TARGETS:
        raise TconvError(f"error: unknown target '{target}' (expected one of: {', '.join(TARGETS)})")
    if layout not in LAYOUTS:
        raise TconvError(f"error: unknown layout '{layout}' (expected one of: {', '.join(LAYOUTS)})")
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
    layouts = None
    if layout == "auto" and target == "cpu":
        from tconv.search.tuning import cpu_unit

        layouts = plan_layouts(module, cpu_unit())
    return CompiledNetwork(compile_artifact(module, params, output, target=target, arch=arch), tuned, layouts)


def plan_layouts(module: ModuleOp, unit) -> LayoutPlan:
    """Store `module`'s activations in channel blocks of one vector of the
    CPU's `unit` (NCHW[lanes]c, `tconv-pack`) between the convolutions that
    run the direct or depthwise templates: the convolutions that by default
    (or by their schedule) run another algorithm, whose kernels read NCHW,
    get that algorithm written into their schedule first, so that packing
    leaves them alone; a depthwise convolution is packed whatever its
    default, as in blocks it runs on its vector of channels without the
    transposes that make GSPC its default in NCHW (MobileNetV2 on this
    machine: docs/benchmarks.md, "Activations in channel blocks"). A
    convolution whose schedule sets loop knobs (the tuning database's, or
    the network's own) stays NCHW: `tconv tune` measures NCHW kernels, and
    ResNet-18's tuned knobs ran 6% slower packed (MobileNetV2's, tuned,
    4.8 ms in NCHW against 3.5 untuned in blocks: `LayoutPlan.kept_tuned`
    counts what tuning held back). A network that already has layouts, or
    quantised ops, keeps its own."""
    from xdsl.utils.exceptions import PassFailedException

    from tconv.ir.ops import QUANT_OPS, Conv2dOp
    from tconv.ir.schedule import DIRECT, GSPC, SPARSE, ConvSchedule, conv_layouts, parse_schedule
    from tconv.kernels.algorithm import conv_shape, default_algorithm, sparse_pays
    from tconv.passes.classical.pack import pack_module, packing

    ops = list(module.walk())
    convs = [op for op in ops if isinstance(op, Conv2dOp)]
    if any(isinstance(op, QUANT_OPS) for op in ops) or any(conv_layouts(c.schedule).packed for c in convs):
        return LayoutPlan()
    reason = "its schedule's loop knobs were chosen for NCHW kernels"
    keep = {c: reason for c in convs if c.schedule is not None and parse_schedule(c.schedule).transforms_loops}
    kept_tuned = sum(1 for conv in keep if packing(conv, unit.lanes).reason is None)
    for conv in convs:
        if conv.schedule is not None:
            continue
        shape = conv_shape(conv)
        algorithm = SPARSE if sparse_pays(shape, conv.weight_nonzeros) else default_algorithm(shape, unit)
        if algorithm == DIRECT or (algorithm == GSPC and shape.depthwise):
            continue
        conv.properties["schedule"] = ConvSchedule(algorithm=algorithm).to_attr()
    try:
        pack_module(module, unit.lanes, keep=keep)
    except PassFailedException:  # no convolution can be packed
        return LayoutPlan(kept_tuned=kept_tuned)
    return LayoutPlan(sum(1 for conv in convs if conv_layouts(conv.schedule).packed), kept_tuned)


def rebatched(module: ModuleOp, batch: int) -> ModuleOp:
    """A copy of `module` at batch size `batch`, as `tconv-set-batch` makes it."""
    from tconv.passes.set_batch import set_module_batch

    module = module.clone()
    try:
        set_module_batch(module, batch)
    except ValueError as err:  # a ShapeError, or a batch below 1
        raise TconvError(f"error: {err}") from None
    return module
