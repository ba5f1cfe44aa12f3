"""The LLVM backend's kernels as PTX for NVIDIA GPUs (sm_80, sm_90), through
llvmlite's NVPTX target, assembled by `ptxas` into a cubin where it is
installed.

    kernels, program = lower_program(module)
    ptx = emit_ptx(kernels, "sm_90")
    cubin = assemble(ptx, "sm_90")
    bundle = kernel_bundle(kernels, "sm_90")      # what a cuda artifact holds

Each kernel is one `ptx_kernel` function per nest, `<symbol>_<i>(float *arg0,
..., float *out)`, taking the tensors' device pointers in the kernel's
argument order. Its schedule (`gpu_nest`) is a thread per data-parallel
point: the data-parallel loops (untiled, but for the tiles that name a
packed weight's blocks, so the weights are the CPU kernel's) fused into the
global thread index
`ctaid.x · ntid.x + tid.x`, threads past the end doing nothing, the
reduction loops serial in each thread, the accumulator in a register. The
loop body is the CPU backend's (`codegen.NestEmitter`): the same loads with
their fills, the same fused epilogue.

Launching: `grid_size(nest, BLOCK)` blocks of `BLOCK` threads per nest, in
order (`launches`); `kernel_bundle` packs the image with that list for
`tconv.runtime.cuda_driver`, which runs an artifact's calls through the CUDA
driver API. `host_emulation_ir` gives the same functions for this CPU, each
running a whole launch's threads in turn: the tests run the launch list
through it without a GPU. What is not here: shared-memory or tensor-core
schedules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import llvmlite.ir as ir

from tconv.lowering.llvm.codegen import I64, PTR, FunctionState, KernelEmitter, KernelSource, ModuleBuilder, NestEmitter
from tconv.lowering.llvm.loops import NestSchedule, ScheduledLoop, ScheduledNest, loads, schedule_nest
from tconv.runtime.cuda_driver import KernelBundle, KernelLaunches, Launch

ARCHES = ("sm_80", "sm_90")
TRIPLE = "nvptx64-nvidia-cuda"
PTX_FEATURES = {"sm_80": "+ptx70", "sm_90": "+ptx80"}
BLOCK = 256
"""Threads per block of every launch."""


class PtxError(ValueError):
    """PTX that cannot be built or assembled, and why."""


def _layout_tiles(nest: ScheduledNest) -> dict[str, tuple[int, ...]]:
    """The tiles that the nest's indices name directly (a packed weight's
    block and lane, `ops.tiled_parts`), with their factors in `nest`."""
    originals = {loop.name for loop in nest.nest.loops}
    accesses = [*loads(nest.nest.value), *loads(nest.nest.finalize), nest.nest.output]
    named = {name for access in accesses for index in access.index for name, _ in index.terms}
    tiles = {}
    for base in sorted({name.split(".", 1)[0] for name in named - originals}):
        parts = sorted((int(loop.name.split(".", 1)[1]), loop.extent) for loop in nest.loops
                       if loop.name.startswith(base + "."))
        tiles[base] = tuple(extent for position, extent in parts if position > 0)
    return tiles


def gpu_nest(nest: ScheduledNest) -> ScheduledNest:
    """`nest` rescheduled for a GPU: a thread per data-parallel point (those
    loops fused, `parallel`), the reduction loops after them, serial;
    nothing unrolled or vectorized. Only the tiles the packed layouts name
    stay (so the weights are the CPU kernel's); the others are undone."""
    tiles = _layout_tiles(nest)
    plain = schedule_nest(nest.nest, NestSchedule(tiles))
    data_parallel = tuple(loop.name for loop in plain.loops if not loop.reduction)
    reduction = tuple(loop.name for loop in plain.loops if loop.reduction)
    return schedule_nest(nest.nest, NestSchedule(tiles, data_parallel + reduction, parallel=data_parallel))


def threads(nest: ScheduledNest) -> int:
    """The data-parallel points of a GPU nest: one thread each."""
    total = 1
    for loop in nest.loops:
        if loop.kind == "parallel":
            total *= loop.extent
    return total


def grid_size(nest: ScheduledNest, block: int) -> int:
    """Blocks of `block` threads that cover the nest's points."""
    return -(-threads(nest) // block)


def function_name(kernel: KernelSource, position: int) -> str:
    """The GPU function of the kernel's nest number `position`."""
    return f"{kernel.symbol}_{position}"


def _special_register(module_builder: ModuleBuilder, name: str) -> ir.Function:
    return module_builder.declare(f"llvm.nvvm.read.ptx.sreg.{name}", ir.FunctionType(ir.IntType(32), []))


def _emit_gpu_kernel(module_builder: ModuleBuilder, kernel: KernelSource, position: int, nest: ScheduledNest,
                     host: bool = False) -> str:
    """One function computing `nest` (already a GPU nest); its name,
    `<symbol>_<position>`. On the GPU (`host` false) a `ptx_kernel` over the
    kernel's argument pointers, its thread's point from the special
    registers. With `host`, the same body for this CPU, the function taking
    two more (i64) arguments, `grid` and `block`, and running every thread
    of that launch in turn (`host_emulation_ir`)."""
    name = function_name(kernel, position)
    extra = [I64, I64] if host else []
    function = ir.Function(module_builder.module, ir.FunctionType(ir.VoidType(), [PTR] * len(kernel.shapes) + extra), name)
    state = FunctionState(function)
    state.data = list(function.args)[: len(kernel.shapes)]
    b = state.builder
    emitter = NestEmitter(KernelEmitter(module_builder, kernel), state, nest)
    if host:
        grid, block = function.args[len(kernel.shapes):]
        with emitter.counted(0, b.mul(grid, block)) as flat:
            _emit_thread(emitter, nest, flat)
    else:
        function.calling_convention = "ptx_kernel"
        block_index, thread, width = (
            b.zext(b.call(_special_register(module_builder, register), []), I64)
            for register in ("ctaid.x", "tid.x", "ntid.x")
        )
        _emit_thread(emitter, nest, b.add(b.mul(block_index, width), thread))
    b.ret_void()
    return name


def _emit_thread(emitter: NestEmitter, nest: ScheduledNest, flat: ir.Value) -> None:
    """The work of the thread numbered `flat` (i64): the nest's point that
    the number names (the parallel loops, row-major), or nothing past the
    last point."""
    b = emitter.b
    parallel: Sequence[ScheduledLoop] = [loop for loop in nest.loops if loop.kind == "parallel"]
    inside = b.icmp_unsigned("<", flat, ir.Constant(I64, threads(nest)))
    with b.if_then(inside):
        env = {}
        stride = threads(nest)
        for loop in parallel:
            stride //= loop.extent
            env[loop.name] = b.urem(b.udiv(flat, ir.Constant(I64, stride)), ir.Constant(I64, loop.extent))
        emitter.emit(len(parallel), env)


def _gpu_module(kernels: Sequence[KernelSource], host: bool) -> tuple[ModuleBuilder, list[tuple[str, ScheduledNest]]]:
    module_builder = ModuleBuilder("tconv_gpu_kernels")
    if not host:
        module_builder.module.triple = TRIPLE
    functions = []
    for kernel in kernels:
        for position, nest in enumerate(kernel.nests):
            gpu = gpu_nest(nest)
            functions.append((_emit_gpu_kernel(module_builder, kernel, position, gpu, host), gpu))
    return module_builder, functions


def nvptx_ir(kernels: Sequence[KernelSource]) -> tuple[str, list[tuple[str, ScheduledNest]]]:
    """The kernels as NVPTX LLVM IR, and each GPU function's name and nest, in launch order."""
    module_builder, functions = _gpu_module(kernels, host=False)
    return module_builder.text(), functions


def host_emulation_ir(kernels: Sequence[KernelSource]) -> str:
    """The GPU functions of `nvptx_ir`, same names and bodies, as LLVM IR for
    this CPU: `void <name>(float *arg0, ..., float *out, i64 grid, i64
    block)` runs the `grid · block` threads of a launch one after another.
    It checks the launch bookkeeping (names, grid sizes, arguments) and the
    thread-to-point mapping without a GPU."""
    module_builder, _ = _gpu_module(kernels, host=True)
    return module_builder.text()


def compile_host_emulation(kernels: Sequence[KernelSource], path: str | os.PathLike[str]) -> None:
    """`host_emulation_ir(kernels)` as a shared library at `path`, for this CPU."""
    from tconv.lowering.llvm.build import compile_ir_object, link_library

    link_library(compile_ir_object(host_emulation_ir(kernels)), path)


def launches(kernels: Sequence[KernelSource], block: int = BLOCK) -> list[KernelLaunches]:
    """Each kernel's GPU launches, in order: its nests' functions, each with
    the blocks of `block` threads that cover its points."""
    return [
        KernelLaunches(
            kernel.symbol, len(kernel.shapes),
            tuple(Launch(function_name(kernel, position), grid_size(gpu_nest(nest), block), block)
                  for position, nest in enumerate(kernel.nests)),
        )
        for kernel in kernels
    ]


def kernel_bundle(kernels: Sequence[KernelSource], arch: str = "sm_90") -> KernelBundle:
    """The kernels as a bundle the CUDA driver launches: PTX for `arch`,
    assembled into a cubin by ptxas where it is installed (with the PTX
    beside it, for newer GPUs the cubin does not run on), else kept as PTX
    (the driver compiles it when the bundle is loaded)."""
    ptx = emit_ptx(kernels, arch)
    if ptxas() is None:
        return KernelBundle(arch, "ptx", ptx.encode(), tuple(launches(kernels)))
    return KernelBundle(arch, "cubin", assemble(ptx, arch), tuple(launches(kernels)), ptx.encode())


def emit_ptx(kernels: Sequence[KernelSource], arch: str = "sm_90") -> str:
    """PTX text of the kernels for GPU architecture `arch`, optimised at O3."""
    if arch not in ARCHES:
        raise PtxError(f"nvptx: unsupported architecture '{arch}' (expected one of {', '.join(ARCHES)})")
    import llvmlite.binding as llvm

    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    text, _ = nvptx_ir(kernels)
    machine = llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=arch, features=PTX_FEATURES[arch], opt=3)
    module = llvm.parse_assembly(text)
    module.data_layout = str(machine.target_data)
    module.verify()
    passes = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(speed_level=3))
    passes.getModulePassManager().run(module, passes)
    return machine.emit_assembly(module)


def ptxas() -> str | None:
    """The `ptxas` on PATH, if any."""
    return shutil.which("ptxas")


def assemble(ptx: str, arch: str = "sm_90") -> bytes:
    """`ptx` assembled by ptxas into a cubin for `arch`."""
    tool = ptxas()
    if tool is None:
        raise PtxError("nvptx: ptxas is not installed (it comes with the CUDA toolkit)")
    with tempfile.TemporaryDirectory(prefix="tconv-ptx-") as scratch:
        source, cubin = Path(scratch) / "kernels.ptx", Path(scratch) / "kernels.cubin"
        source.write_text(ptx)
        result = subprocess.run([tool, f"-arch={arch}", "-O3", str(source), "-o", str(cubin)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise PtxError(f"nvptx: ptxas rejected the PTX for {arch}:\n{result.stderr.strip()}")
        return cubin.read_bytes()
