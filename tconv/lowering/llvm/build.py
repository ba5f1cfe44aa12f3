"""A tconv network → LLVM kernels and the call list that runs them.

    kernels, program = lower_program(module)
    compile_library(kernels, "kernels.so")

`lower_program` groups the network's ops into kernels exactly as the TVM
backend does (`tconv.kernels.fusion.kernel_groups`: conv + batch-norm +
add + ReLU as one kernel), records their calls in a backend-neutral
`KernelProgram` (the same parameter recipes: packed, batch-norm-folded
weights and biases), and gives each distinct kernel its scheduled loop nests
(`ops`, `schedules`, `loops`). `compile_library` turns them into LLVM IR
(`codegen`), optimises it at O3 for the host CPU, emits an object file and
links it into a shared library with the system C compiler: the kernel
library of an artifact, which the C runtime runs like the TVM backend's.

A convolution's schedule that this backend cannot honour is refused with a
`LoweringError` located at the op, naming the schedule entry; so is an
`algorithm` it has no kernel for (Winograd, GSPC, sparse: it runs direct loop nests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from tconv.ir.loader import TconvError, located
from tconv.ir.ops import (
    AddOp,
    AvgPool2dOp,
    BatchNormOp,
    ChannelShuffleOp,
    ConcatOp,
    Conv2dOp,
    DenseOp,
    FlattenOp,
    GlobalAvgPoolOp,
    MaxPool2dOp,
    Relu6Op,
    ReluOp,
    SliceChannelsOp,
    SliceOp,
    shape_of,
)
from tconv.ir.schedule import GSPC, SPARSE, WINOGRAD, parse_schedule
from tconv.kernels.fusion import KernelGroup, kernel_groups
from tconv.kernels.packing import blocks
from tconv.kernels.program import KernelCall, KernelProgram, Recipe
from tconv.kernels.program_builder import ProgramBuilder
from tconv.kernels.target import VectorUnit, host_vector_unit
from tconv.lowering.llvm import ops, schedules
from tconv.lowering.llvm.codegen import KernelSource, ModuleBuilder
from tconv.lowering.llvm.loops import Nest, NestSchedule, UnsupportedSchedule, schedule_nest
from tconv.lowering.quantized import refuse_quantized
from tconv.semantics.reference import single_function


class LoweringError(TconvError):
    """A network the LLVM backend cannot compile, and why."""


@dataclass
class KernelSpec:
    """What one kernel group lowers to: the tensors it reads (the output is
    added by the lowering), its nests with their schedules, and a key: equal
    keys (with equal input shapes) are one kernel."""

    kind: str
    args: list[int]
    nests: list[tuple[Nest, NestSchedule]]
    key: tuple


def _ints(attr) -> tuple[int, ...]:
    return tuple(int(v) for v in attr.get_values())


class _Lowering(ProgramBuilder):
    backend = "llvm lowering"
    error = LoweringError

    def __init__(self, unit: VectorUnit) -> None:
        super().__init__()
        self.unit = unit
        self.kernels: dict[tuple, KernelSource] = {}

    def epilogue_args(self, group: KernelGroup, bias_id: int | None) -> list[int]:
        args = [] if bias_id is None else [bias_id]
        if group.residual is not None:
            args.append(self.value(group.residual))
        return args

    # Kernels ------------------------------------------------------------------------

    def lower(self, group: KernelGroup) -> None:
        """Append the call of `group`'s kernel (built unless an identical one
        exists) and the activation it writes."""
        spec = self.spec(group)
        output = self.new_tensor("activation", shape_of(group.result), f"%{len(self.program.calls)}")
        self.value_ids[group.result] = output
        shapes = tuple(self.program.tensors[i].shape for i in (*spec.args, output))
        key = (spec.kind, shapes, spec.key)
        if key not in self.kernels:
            symbol = f"k{len(self.kernels)}_{spec.kind}"
            try:
                nests = tuple(schedule_nest(nest, schedule) for nest, schedule in spec.nests)
            except UnsupportedSchedule as reason:
                raise LoweringError(located(group.anchor, f"llvm backend: cannot honour this schedule: {reason}")) from None
            self.kernels[key] = KernelSource(symbol, shapes, nests)
        names = tuple(op.name.removeprefix("tconv.") for op in group.ops)
        self.program.calls.append(KernelCall(self.kernels[key].symbol, (*spec.args, output), names))

    def spec(self, group: KernelGroup) -> KernelSpec:
        anchor = group.anchor
        if isinstance(anchor, Conv2dOp):
            return self.conv2d(group)
        if isinstance(anchor, DenseOp):
            return self.dense(group)
        activation = group.activation_name
        if isinstance(anchor, BatchNormOp):
            return self.batch_norm(group)
        if isinstance(anchor, AddOp):
            shape = shape_of(anchor.output)
            return self.pointwise("add", [anchor.lhs, anchor.rhs], ops.elementwise("add", shape, activation), (activation,))
        if isinstance(anchor, (ReluOp, Relu6Op)):
            kind = "relu" if isinstance(anchor, ReluOp) else "relu6"
            return self.pointwise(kind, [anchor.input], ops.elementwise(kind, shape_of(anchor.input), None), ())
        if isinstance(anchor, (MaxPool2dOp, AvgPool2dOp)):
            kernel, strides, padding = _ints(anchor.kernel), _ints(anchor.strides), _ints(anchor.padding)
            include = isinstance(anchor, AvgPool2dOp) and anchor.count_include_pad is not None
            kind = "max_pool2d" if isinstance(anchor, MaxPool2dOp) else "avg_pool2d"
            nest = ops.pool2d(kind[:3], shape_of(anchor.input), shape_of(anchor.output), kernel, strides, padding, include)
            return KernelSpec(kind, [self.value(anchor.input)], [(nest, schedules.pool_schedule(nest, self.unit))],
                              (kernel, strides, padding, include))
        if isinstance(anchor, GlobalAvgPoolOp):
            nest = ops.global_avg_pool(shape_of(anchor.input))
            return KernelSpec("global_avg_pool", [self.value(anchor.input)], [(nest, schedules.reduction_schedule(nest))], ())
        if isinstance(anchor, FlattenOp):
            return self.pointwise("flatten", [anchor.input], ops.flatten(shape_of(anchor.input)), ())
        if isinstance(anchor, ConcatOp):
            axis = anchor.axis.value.data
            inputs = list(anchor.inputs)
            offset, nests = 0, []
            for arg, operand in enumerate(inputs):
                shape = shape_of(operand)
                nest = ops.concat_part(shape, axis, offset, arg, len(inputs))
                nests.append((nest, schedules.elementwise_schedule(nest, self.unit)))
                offset += shape[axis]
            return KernelSpec("concat", [self.value(v) for v in inputs], nests, (axis,))
        if isinstance(anchor, SliceChannelsOp):
            start = anchor.start.value.data
            return self.pointwise("slice_channels", [anchor.input], ops.slice_channels(shape_of(anchor.output), start), (start,))
        if isinstance(anchor, SliceOp):
            axis, start, _ = anchor.bounds
            nest = ops.slice_axis(shape_of(anchor.output), axis, start)
            return self.pointwise("slice", [anchor.input], nest, (axis, start))
        if isinstance(anchor, ChannelShuffleOp):
            groups = anchor.groups.value.data
            return self.pointwise("channel_shuffle", [anchor.input], ops.channel_shuffle(shape_of(anchor.input), groups), (groups,))
        raise LoweringError(f"llvm lowering: no kernel for '{anchor.name}'")

    def pointwise(self, kind: str, operands: list[SSAValue], nest: Nest, key: tuple) -> KernelSpec:
        return KernelSpec(kind, [self.value(v) for v in operands], [(nest, schedules.elementwise_schedule(nest, self.unit))], key)

    def conv2d(self, group: KernelGroup) -> KernelSpec:
        op = group.anchor
        assert isinstance(op, Conv2dOp)
        out_channels, in_group, kh, kw = shape_of(op.weight)
        out_shape = shape_of(op.output)
        strides, padding, dilations = _ints(op.strides), _ints(op.padding), _ints(op.dilations)
        groups = op.groups.value.data
        out_group = out_channels // groups
        conv_schedule = parse_schedule(op.schedule) if op.schedule is not None else None
        if conv_schedule is not None and conv_schedule.algorithm in (WINOGRAD, GSPC, SPARSE):
            kernel = {WINOGRAD: "Winograd", GSPC: "GSPC", SPARSE: "sparse"}[conv_schedule.algorithm]
            raise LoweringError(located(op, (
                f"llvm backend: has no {kernel} kernel (algorithm {conv_schedule.algorithm}); compile with "
                '--backend tvm, or ask for algorithm "direct"'
            )))
        schedule = schedules.conv2d_schedule(conv_schedule, in_group, out_group, out_shape[3], self.unit)
        tiles = schedules.oc_tiles(schedule)
        block = tiles[-1] if tiles else 1
        packed_shape = (groups, blocks(out_group, block), in_group, kh, kw, block)
        weight_id, bias_id = self.weight_and_bias(
            group, op.weight, op.bias, "conv2d_weight", {"groups": groups, "block": block}, packed_shape,
            f"GxOBxCxKHxKWx{block}",
        )
        epilogue = self.epilogue_args(group, bias_id)
        activation = group.activation_name
        nest = ops.conv2d(
            shape_of(op.input), out_shape, groups, (kh, kw), strides, padding, dilations, tiles,
            bias_id is not None, group.residual is not None, activation,
        )
        key = (strides, padding, dilations, groups, repr(schedule), bias_id is not None, group.residual is not None, activation)
        return KernelSpec("conv2d", [self.value(op.input), weight_id, *epilogue], [(nest, schedule)], key)

    def dense(self, group: KernelGroup) -> KernelSpec:
        op = group.anchor
        assert isinstance(op, DenseOp)
        out_features, features = shape_of(op.weight)
        input_shape = shape_of(op.input)
        schedule = schedules.dense_schedule(out_features, self.unit, input_shape[0], features)
        block = schedule.tiles["m"][-1]
        weight_id, bias_id = self.weight_and_bias(
            group, op.weight, op.bias, "dense_weight", {"block": block},
            (blocks(out_features, block), features, block), f"MBxKx{block}",
        )
        epilogue = self.epilogue_args(group, bias_id)
        activation = group.activation_name
        nest = ops.dense(input_shape, out_features, (block,), bias_id is not None, group.residual is not None, activation)
        key = (out_features, block, bias_id is not None, group.residual is not None, activation)
        return KernelSpec("dense", [self.value(op.input), weight_id, *epilogue], [(nest, schedule)], key)

    def batch_norm(self, group: KernelGroup) -> KernelSpec:
        op = group.anchor
        assert isinstance(op, BatchNormOp)
        epsilon = op.epsilon.value.data
        sources = self.batch_norm_sources(op)
        channels = (shape_of(op.input)[1],)
        label = dict(sources)["scale"].removesuffix(".weight")
        factor = self.derived(Recipe("batch_norm_factor", sources, (("epsilon", epsilon),)), channels, f"{label}:factor")
        offset = self.derived(Recipe("batch_norm_offset", sources, (("epsilon", epsilon),)), channels, f"{label}:offset")
        activation = group.activation_name
        nest = ops.elementwise("batch_norm", shape_of(op.input), activation)
        return KernelSpec("batch_norm", [self.value(op.input), factor, offset],
                          [(nest, schedules.elementwise_schedule(nest, self.unit))], (activation,))


def lower_program(module: ModuleOp, unit: VectorUnit | None = None) -> tuple[list[KernelSource], KernelProgram]:
    """The distinct kernels of the module's function and the program that calls them."""
    function = single_function(module)
    refuse_quantized(function, "llvm", LoweringError)
    lowering = _Lowering(unit or host_vector_unit())
    lowering.bind_inputs(function)
    for group in kernel_groups(function):
        lowering.lower(group)
    lowering.bind_outputs(function)
    return list(lowering.kernels.values()), lowering.program


# Compiling ------------------------------------------------------------------------------


def llvm_ir(kernels: Sequence[KernelSource]) -> str:
    """The kernels as (unoptimised) LLVM IR text."""
    builder = ModuleBuilder()
    for kernel in kernels:
        builder.add_kernel(kernel)
    return builder.text()


def _host_machine():
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    return llvm, target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3, reloc="pic",
        codemodel="default",
    )


def compile_object(kernels: Sequence[KernelSource]) -> bytes:
    """The kernels compiled at O3 for this CPU into an ELF object."""
    return compile_ir_object(llvm_ir(kernels))


def compile_ir_object(text: str) -> bytes:
    """The LLVM IR `text` compiled at O3 for this CPU into an ELF object."""
    llvm, machine = _host_machine()
    module = llvm.parse_assembly(text)
    module.triple = llvm.get_process_triple()
    module.data_layout = str(machine.target_data)
    module.verify()
    options = llvm.create_pipeline_tuning_options(speed_level=3)
    options.loop_vectorization = True
    options.slp_vectorization = True
    passes = llvm.create_pass_builder(machine, options)
    passes.getModulePassManager().run(module, passes)
    return machine.emit_object(module)


def compile_library(
    kernels: Sequence[KernelSource], path: str | os.PathLike[str],
    extra_objects: Sequence[str | os.PathLike[str]] = (),
) -> None:
    """The kernels as a shared library at `path`, linked by the system C
    compiler (`$CC`, default cc) with the objects `extra_objects`."""
    link_library(compile_object(kernels), path, extra_objects)


def link_library(
    obj: bytes, path: str | os.PathLike[str], extra_objects: Sequence[str | os.PathLike[str]] = ()
) -> None:
    """The ELF object `obj` linked into a shared library at `path` by the
    system C compiler (`$CC`, default cc), with the objects `extra_objects`."""
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        raise LoweringError(f"error: no C compiler `{compiler}` to link the kernel library (set CC)")
    with tempfile.TemporaryDirectory(prefix="tconv-llvm-") as scratch:
        object_path = Path(scratch) / "kernels.o"
        object_path.write_bytes(obj)
        result = subprocess.run(
            [compiler, "-shared", "-o", str(path), str(object_path), *map(str, extra_objects)],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise LoweringError(f"error: linking the kernel library failed:\n{result.stderr.strip()}")
