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
from dataclasses import dataclass, replace

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
    """Convolutions left NCHW only because their schedule sets loop knobs for NCHW."""
    nchw_tuned: int = 0
    """Convolutions the tuning database has knobs for only as measured in
    NCHW (`tconv tune --layout nchw`): they run their defaults in blocks."""


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

    tuned, layouts = schedule_network(module, database, target=target, arch=arch, threads=threads, layout=layout)
    return CompiledNetwork(compile_artifact(module, params, output, target=target, arch=arch), tuned, layouts)


def schedule_network(
    module: ModuleOp, database, *, target: str = "cpu", arch: str = "sm_90", threads: int | None = None,
    layout: str = "auto",
) -> tuple[int, LayoutPlan | None]:
    """Give `module`'s convolutions the TVM backend's schedules in place, as
    `compile_network` does (and `tconv tune --write`): the knobs
    `database` (None: none) chose for `target`, then, with `layout` "auto"
    on a CPU, channel blocks where the kernels gain (`plan_layouts`). With
    "auto", the database's knobs are those measured in the layouts the
    convolutions get (`tuning.CpuSchedules.layout`: `tconv tune --layout
    auto`'s), so tuned convolutions are packed too. How many
    convolutions got knobs, and what `plan_layouts` did (None: it did not
    run: "nchw", cuda, or a network that keeps its own layouts,
    `keeps_own_layouts`)."""
    block = activation_block(module, layout, target)
    tuned = nchw_tuned = 0
    if database is not None:
        from tconv.search.cuda_tuning import CudaSchedules
        from tconv.search.tuning import CpuSchedules, apply_tuning, default_threads, tunable_convs, workload_of

        if target == "cuda":
            schedules = CudaSchedules(arch)
        else:
            threads = threads or default_threads()
            schedules = CpuSchedules(threads, block)
        if block:
            nchw = CpuSchedules(threads)
            nchw_tuned = sum(
                1 for w in map(workload_of, tunable_convs(module))
                if database.chosen(w, schedules) is None and database.chosen(w, nchw) is not None
            )
        tuned = apply_tuning(module, database, threads, schedules)
    if not block:
        return tuned, None
    from tconv.search.tuning import cpu_unit

    return tuned, replace(plan_layouts(module, cpu_unit()), nchw_tuned=nchw_tuned)


def activation_block(module: ModuleOp, layout: str = "auto", target: str = "cpu") -> int:
    """The channel block `--layout` `layout` stores `module`'s activations
    in where the kernels gain, and so the layout `tconv tune` measures them
    in: one vector of this CPU for "auto" on a CPU; 0 (NCHW) for "nchw",
    for cuda, and for a network that `keeps_own_layouts`."""
    if layout != "auto" or target != "cpu" or keeps_own_layouts(module):
        return 0
    from tconv.search.tuning import cpu_unit

    return cpu_unit().lanes


def keeps_own_layouts(module: ModuleOp) -> bool:
    """Whether `module` keeps the layouts it has: it stores activations in
    channel blocks already (`tconv-pack` run by its author), or has
    quantised ops (their kernels read NCHW)."""
    from tconv.ir.ops import QUANT_OPS, Conv2dOp
    from tconv.ir.schedule import conv_layouts

    return any(
        isinstance(op, QUANT_OPS) or (isinstance(op, Conv2dOp) and conv_layouts(op.schedule).packed)
        for op in module.walk()
    )


def unpacked_algorithm(shape, nonzeros: int | None, unit) -> str | None:
    """The algorithm that keeps a convolution of `shape` (declaring
    `nonzeros`) without a schedule in NCHW under `plan_layouts` (Winograd,
    GSPC for an ungrouped one, sparse: their kernels read NCHW), or None
    where it runs the direct or depthwise template in channel blocks."""
    from tconv.ir.schedule import DIRECT, GSPC, SPARSE
    from tconv.kernels.algorithm import default_algorithm, sparse_pays

    algorithm = SPARSE if sparse_pays(shape, nonzeros) else default_algorithm(shape, unit)
    return None if algorithm == DIRECT or (algorithm == GSPC and shape.depthwise) else algorithm


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
    convolution whose schedule asks for blocks (knobs that `apply_tuning`
    chose among those measured in blocks) is packed with its knobs; one
    whose schedule sets loop knobs for NCHW (the network's own, or a
    database's measured only in NCHW) stays NCHW: ResNet-18's NCHW-tuned
    knobs ran 6% slower packed (`LayoutPlan.kept_tuned` counts what such
    knobs held back). The caller leaves alone a network that
    `keeps_own_layouts`: this plan replaces every layout it finds."""
    from xdsl.utils.exceptions import PassFailedException

    from tconv.ir.ops import Conv2dOp
    from tconv.ir.schedule import ConvSchedule, conv_layouts, parse_schedule
    from tconv.kernels.algorithm import conv_shape
    from tconv.passes.classical.pack import pack_module, packing

    convs = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    reason = "its schedule's loop knobs were chosen for NCHW kernels"
    keep = {
        c: reason for c in convs if c.schedule is not None
        and parse_schedule(c.schedule).transforms_loops and not conv_layouts(c.schedule).packed
    }
    kept_tuned = sum(1 for conv in keep if packing(conv, unit.lanes).reason is None)
    for conv in convs:
        if conv.schedule is not None:
            continue
        algorithm = unpacked_algorithm(conv_shape(conv), conv.weight_nonzeros, unit)
        if algorithm is not None:
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
