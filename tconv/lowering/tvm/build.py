"""A tconv network → TVM kernels and the call list that runs them.

    executable, program = build_kernels(module, "cpu")
    logits, = run_tvm(module, params, image)

`lower_kernels` turns every kernel group of `fusion` into a scheduled
PrimFunc (the compute of `ops`, the schedule of `schedule_cpu`, or of
`schedule_gpu` for `cuda`) with a unique `global_symbol` `k<i>_<kind>`, and
records each call in a `program.KernelProgram`. Kernels that are the same
computation on the same shapes (every 3×3 64→64 convolution of a stage) are
one PrimFunc, called several times. `build_kernels` compiles them.
`TvmNetwork` executes a program through the TVM runtime from Python: the
path the tests use until the C runtime runs artifacts.

A convolution whose schedule stores its input or output in channel blocks
(`layout`, written by `tconv-pack`) reads and writes them so, the residual
of its epilogue in its output's layout; every other kernel reads and writes
NCHW, and each read is checked against the layout its tensor is stored in
(`ProgramBuilder.value`): a disagreement is a located `LoweringError`.

Kernels are compiled for the shapes in the IR, batch included: unlike the
reference executor, a compiled network runs on exactly the batch it was
built for (`tconv-set-batch` changes it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import tvm
from tvm import te
from tvm.target import Target
from xdsl.dialects.builtin import ModuleOp

from tconv.ir.loader import TconvError, located
from tconv.ir.ops import (
    AddOp,
    AvgPool2dOp,
    BatchNormOp,
    ChannelShuffleOp,
    ConcatOp,
    Conv2dOp,
    DenseOp,
    DequantizeOp,
    FlattenOp,
    GlobalAvgPoolOp,
    MaxPool2dOp,
    QuantizeOp,
    Relu6Op,
    ReluOp,
    SliceChannelsOp,
    SliceOp,
    shape_of,
)
from tconv.ir.params import bind_params
from tconv.ir.schedule import NCHW, ActivationLayouts, ConvSchedule, ScheduleError, parse_schedule
from tconv.kernels import blocking as kernel_blocking
from tconv.kernels import winograd
from tconv.kernels.algorithm import (
    GSPC,
    SPARSE,
    WINOGRAD,
    conv_shape,
    default_algorithm,
    default_blocking,
    sparse_pays,
    winograd_tile,
)
from tconv.kernels.blocking import ConvBlocking
from tconv.kernels.fusion import KernelGroup, kernel_groups
from tconv.kernels.packing import blocks
from tconv.kernels.program import DTYPES, KernelCall, KernelProgram, Recipe
from tconv.kernels.program_builder import NHWC, ProgramBuilder
from tconv.kernels.qdq import QdqError, Uint8, activation_qdq, is_weight_quantization
from tconv.kernels.templates import UnsupportedSchedule, gpu_tile, template_blocking
from tconv.kernels.winograd import MatmulTile, RegisterTile
from tconv.lowering.quantized import refuse_quantized
from tconv.lowering.tvm import (
    int8_conv,
    ops,
    quantize_ops,
    schedule_cpu,
    schedule_gpu,
    schedule_winograd,
    schedule_winograd_cpu,
    sparse_conv,
    winograd_ops,
)
from tconv.lowering.tvm.int8_network import Int8Add, Int8Layer, Int8Plan, plan_int8
from tconv.lowering.tvm.ops import Epilogue
from tconv.lowering.tvm.target import VectorUnit, is_gpu, make_target, vector_unit
from tconv.semantics.reference import single_function


class LoweringError(TconvError):
    """A network the TVM lowering cannot compile, and why."""

@dataclass
class KernelSpec:
    """What one kernel group lowers to, before it becomes a PrimFunc.

    `args`: tensor ids of the kernel's inputs, in parameter order (the output
    comes last and is added by the lowering). `compute` builds the result
    from one placeholder per input; `schedule` schedules the PrimFunc on a
    CPU. `key` identifies the computation: two specs with equal keys compile
    to the same kernel. `layout`: how the kernel stores its result (NCHW, or
    NCHW[b]c for a convolution whose schedule says so)."""

    kind: str
    args: list[int]
    compute: Callable[[list[te.Tensor]], te.Tensor]
    schedule: Callable[[tvm.tirx.PrimFunc], tvm.tirx.PrimFunc]
    key: tuple
    layout: str = NCHW
    gpu_tile: tuple[int, int] = (1, 1)
    """The register tile of a direct convolution on a GPU (`schedule_gpu.conv_tile`)."""
    gpu_schedule: Callable[[tvm.tirx.PrimFunc], tvm.tirx.PrimFunc] | None = None
    """Schedules the PrimFunc on a GPU, where `schedule_gpu`'s default does not (Winograd's kernels)."""
    dtype: str = "f32"
    """The element type of its result (`program.DTYPES`)."""


def _ints(attr) -> tuple[int, ...]:
    return tuple(int(v) for v in attr.get_values())


def _epilogue(tensors: Sequence[te.Tensor], has_bias: bool, has_residual: bool, activation: str | None) -> Epilogue:
    """The epilogue over a kernel's trailing placeholders: the bias, then the
    residual, each where present."""
    rest = iter(tensors)
    return Epilogue(next(rest) if has_bias else None, next(rest) if has_residual else None, activation)


class _Lowering(ProgramBuilder):
    """Builds the program and the PrimFuncs of one network for one target."""

    backend = "tvm lowering"
    error = LoweringError
    honours_layouts = True

    def __init__(self, target: Target, winograd: bool | None = None, int8: Int8Plan | None = None) -> None:
        super().__init__()
        self.int8 = int8 or Int8Plan()
        self.target = target
        self.gpu = is_gpu(target)
        self.winograd = winograd
        self.unit: VectorUnit | None = None if self.gpu else vector_unit(target)
        self.functions: dict[tuple, tuple[str, tvm.tirx.PrimFunc]] = {}

    # Kernels ------------------------------------------------------------------

    def lower(self, group: KernelGroup) -> None:
        """Append the calls of `group`'s kernels (one, or Winograd's three),
        building each kernel unless an identical one exists, and the
        activations they write."""
        self.reader = group.anchor
        names = tuple(op.name.removeprefix("tconv.") for op in group.ops)
        if isinstance(group.anchor, (QuantizeOp, DequantizeOp)):
            self.lower_quantization(group.anchor)
            return
        if group.anchor in self.int8.layers:
            self.lower_int8(self.int8.layers[group.anchor], names)
            return
        if group.anchor in self.int8.adds:
            self.lower_int8_add(self.int8.adds[group.anchor], names)
            return
        tile = self.winograd_tile(group.anchor) if isinstance(group.anchor, Conv2dOp) else None
        if tile is not None:
            output = self.lower_winograd(group, tile, names)
        else:
            spec = self.spec(group)
            output = self.append_call(spec, shape_of(group.result), names)
        self.value_ids[group.result] = output

    def append_call(self, spec: KernelSpec, shape: Sequence[int], names: tuple[str, ...]) -> int:
        """Append the call of `spec`'s kernel on a new activation of `shape`
        (NCHW, or as stored for an NHWC layout); its id."""
        output = self.new_activation(shape, spec.layout, f"%{len(self.program.calls)}", self.reader, spec.dtype)
        inputs = tuple((self.program.tensors[i].shape, self.program.tensors[i].dtype) for i in spec.args)
        key = (spec.kind, inputs, spec.key, spec.layout, spec.dtype)
        if key not in self.functions:
            symbol = f"k{len(self.functions)}_{spec.kind}"
            self.functions[key] = (symbol, self.primfunc(spec, inputs, symbol))
        symbol = self.functions[key][0]
        self.program.calls.append(KernelCall(symbol, (*spec.args, output), names))
        return output

    def primfunc(self, spec: KernelSpec, inputs, symbol: str) -> tvm.tirx.PrimFunc:
        placeholders = [
            te.placeholder(shape, str(DTYPES[dtype]), name=f"arg{i}") for i, (shape, dtype) in enumerate(inputs)
        ]
        result = spec.compute(placeholders)
        function = te.create_prim_func([*placeholders, result])
        if not self.gpu:
            function = spec.schedule(function)
        elif spec.gpu_schedule is not None:
            function = spec.gpu_schedule(function)
        else:
            function = schedule_gpu.schedule_gpu(function, spec.gpu_tile)
        return function.with_attr("global_symbol", symbol)

    # Quantised networks ----------------------------------------------------------

    def lower_quantization(self, op: QuantizeOp | DequantizeOp) -> None:
        """A QDQ op's kernel, where one is needed (`int8_network`): a quantize
        whose integers an int8 layer reads writes them NHWC uint8 (unless that
        layer's producer wrote them); a dequantize a float32 op reads computes
        its pair from the float32 value, or where a kernel wrote only the
        integers, reads them back. A weight's pair is computed at compile
        time (`program.Recipe`'s `weight_scales`)."""
        if is_weight_quantization(op):
            return
        if isinstance(op, QuantizeOp):
            if op in self.int8.stored and op.output not in self.value_ids:
                levels = self.levels(op)
                channels = self.int8.stored[op]
                n, _, h, w = shape_of(op.input)
                spec = KernelSpec(
                    "quantize", [self.value(op.input, NCHW, "its input")],
                    lambda t: quantize_ops.quantize_nhwc(t[0], levels, channels),
                    quantize_ops.schedule_quantize_nhwc, (levels, channels), NHWC, dtype="u8",
                )
                self.value_ids[op.output] = self.append_call(spec, (n, h, w, channels), ("quantize",))
            return
        if self.int8.reads_integers(op.output):
            return
        pair = activation_qdq(op.output)
        if pair is None:
            raise LoweringError(located(op, (
                "tvm backend: this dequantize reads integers no kernel writes (a network input must be float32, "
                "quantised inside the network)"
            )))
        if pair[0].input not in self.value_ids:
            # A kernel wrote the integers and no float32 value: read them back.
            levels, channels = self.levels(op), shape_of(op.output)[1]
            spec = KernelSpec(
                "dequantize", [self.value(pair[0].output, NHWC, "its input")],
                lambda t: quantize_ops.dequantize_nchw(t[0], levels, channels),
                quantize_ops.schedule_dequantize_nchw, (levels, channels),
            )
            self.value_ids[op.output] = self.append_call(spec, shape_of(op.output), ("dequantize",))
            return
        quantize, dequantize = (self.levels(o) for o in pair)
        unit = self.unit
        spec = KernelSpec(
            "fake_quantize", [self.value(pair[0].input)],
            lambda t: quantize_ops.fake_quantize(t[0], quantize, dequantize),
            lambda function: schedule_cpu.schedule_elementwise(function, unit), (quantize, dequantize),
        )
        self.value_ids[op.output] = self.append_call(spec, shape_of(op.output), ("quantize", "dequantize"))

    @staticmethod
    def levels(op: QuantizeOp | DequantizeOp) -> Uint8:
        try:
            return Uint8.of(op)
        except QdqError as err:
            raise LoweringError(located(op, f"tvm backend: {err}")) from None

    def lower_int8(self, layer: Int8Layer, names: tuple[str, ...]) -> None:
        """Append the call of `layer`'s int8 convolution (`int8_conv`), its
        weight and requantisation derived from the store at compile time."""
        group, op = layer.group, layer.conv
        conv = replace(layer.kernel(self.int8.stored[layer.quantize]), dot=self.unit.int8_dot)
        weight_attributes = (("weight_scales", layer.weight_scales),)
        packed = int8_conv.placeholders(conv)[1].shape
        weight = self.derived(
            Recipe("int8_weight", (("weight", layer.weight),), weight_attributes + (
                ("groups", conv.groups), ("in_channels", conv.channels), ("depthwise", int(conv.depthwise)),
                ("pairs", int(conv.partials > 1)))),
            tuple(int(d) for d in packed), f"{layer.weight}:int8_{'x'.join(str(int(d)) for d in packed)}", "i8",
        )
        sources = (("weight", layer.weight),)
        if op.bias is not None:
            sources += (("bias", self.param_name(op.bias, op, "bias")),)
        attributes = weight_attributes + (("x_scale", layer.levels.scale), ("x_zero_point", layer.levels.zero_point))
        if group.batch_norm is not None:
            sources += self.batch_norm_sources(group.batch_norm)
            attributes += (("epsilon", group.batch_norm.epsilon.value.data),)
        if layer.output is not None:
            out = self.levels(layer.output)
            attributes += (("out_scale", out.scale), ("out_zero_point", out.zero_point))
        o16 = (conv.out_channels_stored,)
        offset = self.derived(Recipe("int8_offset", sources, attributes), o16, f"{layer.weight}:int8_offset", "i32")
        scale = self.derived(Recipe("int8_scale", sources, attributes), o16, f"{layer.weight}:int8_scale")
        args = [self.value(layer.quantize.output, NHWC, "its input"), weight, offset, scale]
        if layer.residual is not None:
            args.append(self.value(layer.residual.output, NHWC, "the residual of its fused add"))
        elif conv.residual:
            args.append(self.value(group.residual, NCHW, "the residual of its fused add"))
        spec = KernelSpec(
            "int8_conv2d", args, lambda t: int8_conv.int8_conv2d(conv, *t),
            lambda function: int8_conv.schedule_int8_conv2d(function, conv), (conv,),
            NCHW if layer.output is None else NHWC, dtype="f32" if layer.output is None else "u8",
        )
        if layer.output is None:
            self.value_ids[group.result] = self.append_call(spec, shape_of(group.result), names)
        else:
            p, q = conv.output_size
            shape = (conv.batch, p, q, conv.out_channels_stored)
            self.value_ids[layer.output.output] = self.append_call(spec, shape, (*names, "quantize"))

    def lower_int8_add(self, add: Int8Add, names: tuple[str, ...]) -> None:
        """Append the call of `add`'s uint8 kernel (`quantize_ops.int8_add`)."""
        levels, activation, out = add.levels, add.group.activation_name, self.levels(add.output)
        unit = self.unit
        spec = KernelSpec(
            "int8_add", [self.value(q.output, NHWC, f"operand {i}") for i, q in enumerate(add.inputs)],
            lambda t: quantize_ops.int8_add(t[0], t[1], levels, activation, out),
            lambda function: schedule_cpu.schedule_elementwise(function, unit), (levels, activation, out),
            NHWC, dtype="u8",
        )
        shape = self.program.tensors[spec.args[0]].shape
        self.value_ids[add.output.output] = self.append_call(spec, shape, (*names, "quantize"))

    def spec(self, group: KernelGroup) -> KernelSpec:
        """What `group` computes, on which tensors, scheduled how."""
        anchor = group.anchor
        if isinstance(anchor, Conv2dOp):
            return self.conv2d(group)
        if isinstance(anchor, DenseOp):
            return self.dense(group)
        if isinstance(anchor, BatchNormOp):
            return self.batch_norm(group)
        if isinstance(anchor, AddOp):
            activation = group.activation_name
            return self.memory_bound(
                "add", [anchor.lhs, anchor.rhs], lambda t: ops.add(t[0], t[1], activation), (activation,)
            )
        if isinstance(anchor, (ReluOp, Relu6Op)):
            activation = "relu" if isinstance(anchor, ReluOp) else "relu6"
            return self.memory_bound(activation, [anchor.input], lambda t: ops.unary(t[0], activation), ())
        if isinstance(anchor, MaxPool2dOp):
            kernel, strides, padding = _ints(anchor.kernel), _ints(anchor.strides), _ints(anchor.padding)
            return self.window(
                "max_pool2d", anchor.input, lambda t: ops.max_pool2d(t[0], kernel, strides, padding),
                (kernel, strides, padding),
            )
        if isinstance(anchor, AvgPool2dOp):
            kernel, strides, padding = _ints(anchor.kernel), _ints(anchor.strides), _ints(anchor.padding)
            include = anchor.count_include_pad is not None
            return self.window(
                "avg_pool2d", anchor.input,
                lambda t: ops.avg_pool2d(t[0], kernel, strides, padding, include),
                (kernel, strides, padding, include),
            )
        if isinstance(anchor, GlobalAvgPoolOp):
            return self.window("global_avg_pool", anchor.input, lambda t: ops.global_avg_pool(t[0]), ())
        if isinstance(anchor, FlattenOp):
            return self.memory_bound("flatten", [anchor.input], lambda t: ops.flatten(t[0]), ())
        if isinstance(anchor, ConcatOp):
            axis = anchor.axis.value.data
            return self.memory_bound("concat", list(anchor.inputs), lambda t: ops.concat(t, axis), (axis,))
        if isinstance(anchor, SliceChannelsOp):
            start, size = anchor.start.value.data, anchor.size.value.data
            return self.memory_bound(
                "slice_channels", [anchor.input], lambda t: ops.slice_channels(t[0], start, size), (start, size)
            )
        if isinstance(anchor, SliceOp):
            axis, start, size = anchor.bounds
            return self.memory_bound(
                "slice", [anchor.input], lambda t: ops.slice_axis(t[0], axis, start, size), (axis, start, size)
            )
        if isinstance(anchor, ChannelShuffleOp):
            groups = anchor.groups.value.data
            return self.memory_bound(
                "channel_shuffle", [anchor.input], lambda t: ops.channel_shuffle(t[0], groups), (groups,)
            )
        raise LoweringError(f"tvm lowering: no kernel for '{anchor.name}'")

    def memory_bound(self, kind, operands, compute, key) -> KernelSpec:
        unit = self.unit
        return KernelSpec(
            kind, [self.value(v) for v in operands], compute,
            lambda function: schedule_cpu.schedule_elementwise(function, unit), key,
        )

    def window(self, kind, operand, compute, key) -> KernelSpec:
        return KernelSpec(kind, [self.value(operand)], compute, schedule_cpu.schedule_window, key)

    def _epilogue_args(
        self, group: KernelGroup, bias_id: int | None, layout: str = NCHW
    ) -> tuple[list[int], bool, bool]:
        """The epilogue's tensor ids (bias, residual, each where present); the
        residual is read in `layout`, the output's."""
        args = []
        if bias_id is not None:
            args.append(bias_id)
        if group.residual is not None:
            args.append(self.value(group.residual, layout, "the residual of its fused add"))
        return args, bias_id is not None, group.residual is not None

    def conv2d_variant(
        self, op: Conv2dOp, groups: int, out_group: int, group_channels: int, kernel, strides, padding,
        in_size, out_size,
    ) -> tuple[str, ConvBlocking]:
        """Which convolution kernel computes this shape, and its blocking:
        `depthwise_conv2d` (one input channel per output channel),
        `pointwise_conv2d` (1×1, unit strides, no padding, on images whose
        positions tile better than their rows) or the general `conv2d`. A
        schedule in the IR picks the general kernel's knobs (`tconv.kernels.templates`);
        an output stored in channel blocks fixes the channel block."""
        out_height, out_width = out_size
        schedule = parse_schedule(op.schedule) if op.schedule is not None else None
        algorithm = self.conv_algorithm(op, schedule)
        depthwise = group_channels == 1 and out_group == 1
        if self.gpu:
            return self.gpu_variant(op, schedule, depthwise, out_group, out_size)
        layouts = schedule.layouts if schedule is not None else ActivationLayouts()
        loops = schedule if schedule is not None and schedule.transforms_loops else None
        shape = dict(out_height=out_height, kernel=tuple(kernel))
        if layouts.packed:
            return self.packed_variant(op, loops, layouts, out_group, kernel, strides, padding, out_size)
        schedule = loops
        columns = None if algorithm is None else algorithm == GSPC
        if depthwise:
            blocking = kernel_blocking.depthwise_blocking(
                out_group * groups, out_width, self.unit, **shape, columns=columns
            )
            blocking = self.honour(op, schedule, groups, out_group, blocking, depthwise=True)
            return "depthwise_conv2d", self.agrees(op, algorithm, blocking)
        if schedule is None and algorithm != GSPC and kernel_blocking.runs_pointwise(
            kernel, strides, padding, groups, out_group, out_height, out_width, self.unit
        ):
            positions = out_height * out_width
            return "pointwise_conv2d", kernel_blocking.pointwise_blocking(
                groups, out_group, positions, self.unit, in_group=group_channels
            )
        blocking = kernel_blocking.conv2d_blocking(
            groups, out_group, out_width, self.unit, **shape, in_shape=(groups * group_channels, *in_size),
            columns=columns,
        )
        blocking = self.agrees(op, algorithm, self.honour(op, schedule, groups, out_group, blocking))
        return "conv2d", replace(blocking, skew_planes=kernel_blocking.skews_planes(*in_size, padding))

    @staticmethod
    def gpu_variant(op: Conv2dOp, schedule, depthwise: bool, out_group: int, out_size) -> tuple[str, ConvBlocking]:
        """`conv2d_variant` on cuda: a depthwise convolution a thread per
        output, any other the direct kernel with the thread tile the schedule
        asks for (`templates.gpu_tile`), else `schedule_gpu.conv_tile`'s.
        Activations in channel blocks, and GSPC, are refused."""
        if schedule is not None and schedule.algorithm == GSPC:
            raise LoweringError(located(op, (
                "tvm backend: cuda has no GSPC kernel (algorithm gspc); ask for direct or winograd, "
                "or compile for cpu"
            )))
        if schedule is not None and schedule.layouts.packed:
            raise LoweringError(located(op, (
                f"tvm backend: cuda kernels read and write NCHW activations, this schedule asks for "
                f"{schedule.layouts.input} / {schedule.layouts.output}"
            )))
        loops = schedule if schedule is not None and schedule.transforms_loops else None
        if depthwise:
            if loops is not None:
                raise LoweringError(located(op, (
                    "tvm backend: cannot honour this schedule: a depthwise convolution runs a thread per "
                    "output on cuda and takes no schedule"
                )))
            return "depthwise_conv2d", ConvBlocking(1, 1)
        outputs = shape_of(op.output)[0] * out_group * op.groups.value.data * out_size[0] * out_size[1]
        tile = schedule_gpu.conv_tile(outputs, out_group)
        if loops is not None:
            try:
                tile = gpu_tile(loops, out_group, tile)
            except UnsupportedSchedule as reason:
                raise LoweringError(located(op, f"tvm backend: cannot honour this schedule: {reason}")) from None
        return "conv2d", ConvBlocking(*tile)

    def packed_variant(
        self, op: Conv2dOp, schedule, layouts: ActivationLayouts, out_channels: int, kernel, strides, padding,
        out_size,
    ) -> tuple[str, ConvBlocking]:
        """`conv2d_variant` for a convolution with an activation in channel
        blocks: the direct template or the pointwise kernel, the channel block
        the output's block (where the output is packed); a depthwise
        convolution's vector of channels is the layout's block. Located errors
        for what these kernels cannot do."""
        groups = op.groups.value.data
        in_channels = shape_of(op.input)[1]
        depthwise = conv_shape(op).depthwise
        if groups != 1 and not depthwise:
            raise LoweringError(located(op, (
                "tvm backend: packed layouts are honoured for ungrouped and depthwise convolutions only, "
                f"this one has groups {groups}"
            )))
        try:
            layouts.check_channels(in_channels, shape_of(op.output)[1])
        except ScheduleError as err:
            raise LoweringError(located(op, f"tvm backend: {err}")) from None
        out_height, out_width = out_size
        if depthwise:
            return "depthwise_conv2d", self.packed_depthwise(op, schedule, layouts, in_channels)
        block = layouts.output_block
        tile = schedule.factor("oc") if schedule is not None else None
        if block is not None and tile is not None and (tile % block or out_channels % tile):
            raise LoweringError(located(op, (
                f"tvm backend: cannot honour this schedule: the output layout {layouts.output} needs a channel "
                f"block that is a multiple of {block} and divides the {out_channels} channels, the schedule tiles "
                f"oc by {tile}"
            )))
        if schedule is None and kernel_blocking.runs_pointwise(
            kernel, strides, padding, 1, out_channels, out_height, out_width, self.unit, block
        ):
            positions = out_height * out_width
            return "pointwise_conv2d", kernel_blocking.pointwise_blocking(
                1, out_channels, positions, self.unit, block, in_group=in_channels
            )
        default = default_blocking(conv_shape(op), self.unit, layouts=layouts)
        blocking = self.honour(op, schedule, 1, out_channels, default)
        if blocking.vector != "oc":
            raise LoweringError(located(op, (
                "tvm backend: cannot honour this schedule: an activation in channel blocks needs the direct "
                "template (a vector of output channels), not GSPC"
            )))
        return "conv2d", blocking

    def packed_depthwise(self, op: Conv2dOp, schedule, layouts: ActivationLayouts, channels: int) -> ConvBlocking:
        """The blocking of a depthwise convolution with an activation in
        channel blocks: a vector of the layout's block of channels (both
        activations packed alike), the schedule's other knobs honoured."""
        sizes = {block for block in (layouts.input_block, layouts.output_block) if block is not None}
        if len(sizes) != 1:
            raise LoweringError(located(op, (
                f"tvm backend: a depthwise convolution reads and writes channel blocks of one size, this "
                f"schedule asks for {layouts.input} / {layouts.output}"
            )))
        (block,) = sizes
        blocking = default_blocking(conv_shape(op), self.unit, layouts=layouts)
        blocking = self.honour(op, schedule, channels, 1, blocking, depthwise=True)
        if blocking.vector != "oc" or blocking.block != block:
            raise LoweringError(located(op, (
                f"tvm backend: cannot honour this schedule: an activation in blocks of {block} needs a depthwise "
                f"vector of {block} channels (tile g = [{block}]), not "
                + ("GSPC" if blocking.vector != "oc" else f"a block of {blocking.block}")
            )))
        return blocking

    @staticmethod
    def honour(op: Conv2dOp, schedule, groups: int, out_group: int, blocking: ConvBlocking,
               depthwise: bool = False) -> ConvBlocking:
        """`blocking` with the knobs `schedule` (if any) sets (`templates.template_blocking`)."""
        if schedule is None:
            return blocking
        try:
            return template_blocking(schedule, groups, out_group, blocking, depthwise)
        except UnsupportedSchedule as reason:
            raise LoweringError(located(op, f"tvm backend: cannot honour this schedule: {reason}")) from None

    @staticmethod
    def agrees(op: Conv2dOp, algorithm: str | None, blocking: ConvBlocking) -> ConvBlocking:
        """`blocking`, unless the schedule's loop entries ask for the other
        template than its `algorithm` (a located error)."""
        if algorithm is None or (blocking.vector == "ow") == (algorithm == GSPC):
            return blocking
        asked = "GSPC (a vector of output columns)" if blocking.vector == "ow" else "the direct template"
        raise LoweringError(located(op, (
            f"tvm backend: cannot honour this schedule: its loop entries ask for {asked}, its algorithm is "
            f"{algorithm}"
        )))

    def conv_algorithm(self, op: Conv2dOp, schedule: ConvSchedule | None) -> str | None:
        """The algorithm `op` runs by: its schedule's `algorithm`; else, with
        the lowering's `winograd` True, Winograd wherever this target has
        kernels for it; else, for a convolution without a schedule (and
        `winograd` not False), the default (`algorithm.default_algorithm`).
        None: direct or GSPC, as the loop schedule's entries say."""
        if schedule is not None and schedule.algorithm is not None:
            return schedule.algorithm
        shape = conv_shape(op)
        if schedule is None and not self.gpu and sparse_pays(shape, op.weight_nonzeros):
            return SPARSE
        if self.winograd is True and winograd_tile(shape, self.unit, default=False) is not None:
            return WINOGRAD
        if schedule is not None or self.winograd is not None:
            return None
        return default_algorithm(shape, self.unit)

    def winograd_tile(self, op: Conv2dOp) -> MatmulTile | RegisterTile | None:
        """The product tile of `op` computed as a Winograd convolution (a
        thread block's on a GPU, the register tile on a CPU), or None:
        computed direct (`conv_algorithm`; the tile of `algorithm.winograd_tile`).
        A schedule's `algorithm = "winograd"` this target has no kernel for
        is a located error."""
        schedule = parse_schedule(op.schedule) if op.schedule is not None else None
        if self.conv_algorithm(op, schedule) != WINOGRAD:
            return None
        shape = conv_shape(op)
        explicit = self.winograd is True or (schedule is not None and schedule.algorithm == WINOGRAD)
        tile = winograd_tile(shape, self.unit, default=not explicit)
        if tile is None:
            where = (
                f"on cuda its kernels take one group, this convolution has {shape.groups}" if self.gpu else
                f"on a CPU with groups its kernels need a group's output channels ({shape.out_group}) a multiple "
                f"of {self.unit.lanes}"
            )
            raise LoweringError(located(op, f"tvm backend: cannot run this convolution as Winograd's: {where}"))
        return tile

    def lower_winograd(self, group: KernelGroup, tile: MatmulTile | RegisterTile, names: tuple[str, ...]) -> int:
        """Append the three calls of `group`'s convolution as a Winograd
        convolution (`winograd`) whose product runs in `tile`s; the output's id.
        The first two calls write V and M (activations of the plan): on a
        CPU (a `RegisterTile`) with the channels innermost, the kernels of
        `schedule_winograd_cpu`; else with the tiles innermost, the GPU's
        (`schedule_winograd`), run unscheduled by a CPU (tests)."""
        op = group.anchor
        out_channels, channels, _, _ = shape_of(op.weight)
        batch, in_channels, height, width = shape_of(op.input)
        groups = op.groups.value.data
        weight_id, bias_id = self.weight_and_bias(
            group, op.weight, op.bias, "winograd_weight", {}, (winograd.POSITIONS, channels, out_channels),
            "winograd"
        )
        epilogue_args, has_bias, has_residual = self._epilogue_args(group, bias_id)
        activation = group.activation_name
        output_key = (batch, height, width, has_bias, has_residual, activation)

        def epilogue(t: list[te.Tensor]) -> Epilogue:
            return _epilogue(t, has_bias, has_residual, activation)

        input_id = self.value(op.input, NCHW, "its input")
        if isinstance(tile, RegisterTile):
            lanes = tile.lanes
            rows, columns = winograd.tile_grid(height, width)
            tiles = batch * rows * columns
            transform = KernelSpec(
                "winograd_input", [input_id], lambda t: winograd_ops.input_transform_channels(t[0], lanes),
                lambda function: schedule_winograd_cpu.schedule_input_transform(function, lanes, columns),
                ("channels", lanes),
            )
            v = self.append_call(transform, (winograd.POSITIONS, tiles, blocks(in_channels, lanes) * lanes), names[:1])
            product = KernelSpec(
                "winograd_matmul", [v, weight_id], lambda t: winograd_ops.grouped_matmul(t[0], t[1], groups),
                lambda function: schedule_winograd_cpu.schedule_matmul(function, tile), (groups, tile),
            )
            m = self.append_call(product, (winograd.POSITIONS, tiles, out_channels), names[:1])
            inverse = KernelSpec(
                "winograd_output", [m, *epilogue_args],
                lambda t: winograd_ops.output_transform_channels(t[0], batch, height, width, lanes, epilogue(t[1:])),
                lambda function: schedule_winograd_cpu.schedule_output_transform(function, lanes),
                ("channels", lanes, *output_key),
            )
            return self.append_call(inverse, shape_of(op.output), names)

        tiles = winograd.padded_tiles(batch, height, width, tile.columns)
        unscheduled = lambda function: function  # noqa: E731
        transform = KernelSpec(
            "winograd_input", [input_id],
            lambda t: winograd_ops.input_transform(t[0], tile.columns), unscheduled, (tile.columns,),
            gpu_schedule=schedule_winograd.schedule_input_transform,
        )
        v = self.append_call(transform, (winograd.POSITIONS, channels, tiles), names[:1])
        product = KernelSpec(
            "winograd_matmul", [weight_id, v], lambda t: winograd_ops.batched_matmul(t[0], t[1]), unscheduled, (tile,),
            gpu_schedule=lambda function: schedule_winograd.schedule_batched_matmul(function, tile),
        )
        m = self.append_call(product, (winograd.POSITIONS, out_channels, tiles), names[:1])
        inverse = KernelSpec(
            "winograd_output", [m, *epilogue_args],
            lambda t: winograd_ops.output_transform(t[0], batch, height, width, epilogue(t[1:])),
            unscheduled, output_key, gpu_schedule=schedule_winograd.schedule_output_transform,
        )
        return self.append_call(inverse, shape_of(op.output), names)

    def conv2d(self, group: KernelGroup) -> KernelSpec:
        op = group.anchor
        assert isinstance(op, Conv2dOp)
        if self.conv_algorithm(op, parse_schedule(op.schedule) if op.schedule is not None else None) == SPARSE:
            return self.sparse_conv2d(group)
        out_channels, group_channels, kh, kw = shape_of(op.weight)
        _, _, out_height, out_width = shape_of(op.output)
        strides, padding, dilations = _ints(op.strides), _ints(op.padding), _ints(op.dilations)
        groups = op.groups.value.data
        out_group = out_channels // groups
        kind, blocking = self.conv2d_variant(
            op, groups, out_group, group_channels, (kh, kw), strides, padding, shape_of(op.input)[2:],
            (out_height, out_width),
        )
        layouts = parse_schedule(op.schedule).layouts if op.schedule is not None else ActivationLayouts()
        output_block = layouts.output_block
        if kind == "depthwise_conv2d":
            transform, attributes = "depthwise_weight", {"block": blocking.block}
            packed_shape = (blocks(out_channels, blocking.block), kh, kw, blocking.block)
            label = f"CBxKHxKWx{blocking.block}"
        elif layouts.input_block is not None:
            in_block, block = layouts.input_block, blocking.block
            transform = "conv2d_weight"
            attributes = {"groups": groups, "block": block, "in_block": in_block}
            packed_shape = (1, blocks(out_group, block), group_channels // in_block, kh, kw, in_block, block)
            label = f"1xOBxCBxKHxKWx{in_block}x{block}"
        else:
            transform, attributes = "conv2d_weight", {"groups": groups, "block": blocking.block}
            packed_shape = (groups, blocks(out_group, blocking.block), group_channels, kh, kw, blocking.block)
            label = f"GxOBxCxKHxKWx{blocking.block}"
        weight_id, bias_id = self.weight_and_bias(
            group, op.weight, op.bias, transform, attributes, packed_shape, label
        )
        input_id = self.value(op.input, layouts.input, "its input")
        epilogue_args, has_bias, has_residual = self._epilogue_args(group, bias_id, layouts.output)
        activation = group.activation_name
        packed_output = output_block is not None

        def compute(t: list[te.Tensor]) -> te.Tensor:
            epilogue = _epilogue(t[2:], has_bias, has_residual, activation)
            if kind == "depthwise_conv2d":
                return ops.depthwise_conv2d(t[0], t[1], strides, padding, dilations, blocking, epilogue, output_block)
            if kind == "pointwise_conv2d":
                return ops.pointwise_conv2d(t[0], t[1], out_channels, blocking, epilogue, output_block)
            return ops.conv2d(
                t[0], t[1], out_channels, strides, padding, dilations, blocking, epilogue, output_block
            )

        def schedule(function: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
            if kind == "depthwise_conv2d":
                return schedule_cpu.schedule_depthwise_conv2d(function, blocking, packed_output=packed_output)
            if kind == "pointwise_conv2d":
                return schedule_cpu.schedule_pointwise_conv2d(
                    function, groups, blocking, packed_output=packed_output
                )
            return schedule_cpu.schedule_conv2d(function, groups, blocking, packed_output=packed_output)

        key = (strides, padding, dilations, groups, out_channels, blocking, has_bias, has_residual, activation)
        gpu_tile = (blocking.block, blocking.width_tile) if self.gpu and kind == "conv2d" else (1, 1)
        return KernelSpec(kind, [input_id, weight_id, *epilogue_args], compute, schedule, key, layouts.output, gpu_tile)

    def sparse_conv2d(self, group: KernelGroup) -> KernelSpec:
        """The sparse kernel of a convolution declaring `nonzeros`
        (`sparse_conv`): its nonzero weights and their input offsets packed at
        compile time, batch-norm folded into the values."""
        op = group.anchor
        if self.gpu:
            raise LoweringError(located(op, (
                "tvm backend: cuda has no sparse convolution kernel (algorithm sparse); ask for algorithm \"direct\""
            )))
        out_channels, _, kh, kw = shape_of(op.weight)
        n, channels, height, width = shape_of(op.input)
        columns = kernel_blocking.sparse_column_tile(shape_of(op.output)[3], self.unit)
        conv = sparse_conv.SparseConv(
            n, channels, (height, width), out_channels, (kh, kw), _ints(op.strides), _ints(op.padding),
            _ints(op.dilations), op.weight_nonzeros, columns,
        )
        attributes = {"groups": op.groups.value.data, "nonzeros": conv.nonzeros, "padded": conv.padded_size,
                      "dilations": conv.dilations}
        shape = (out_channels, conv.nonzeros)
        values_id, bias_id = self.weight_and_bias(
            group, op.weight, op.bias, "sparse_values", attributes, shape, f"{out_channels}x{conv.nonzeros}"
        )
        weight_name, quantized = self.weight_source(op.weight, op)
        offsets = Recipe("sparse_offsets", (("weight", weight_name),), tuple(sorted({**attributes, **quantized}.items())))
        offsets_id = self.derived(offsets, shape, f"{weight_name}:sparse_offsets", "i32")
        epilogue_args, has_bias, has_residual = self._epilogue_args(group, bias_id)
        activation = group.activation_name
        return KernelSpec(
            "sparse_conv2d", [self.value(op.input, NCHW, "its input"), values_id, offsets_id, *epilogue_args],
            lambda t: sparse_conv.sparse_conv2d(conv, *t[:3], _epilogue(t[3:], has_bias, has_residual, activation)),
            lambda function: sparse_conv.schedule_sparse_conv2d(function, conv),
            (conv, has_bias, has_residual, activation),
        )

    def dense(self, group: KernelGroup) -> KernelSpec:
        op = group.anchor
        assert isinstance(op, DenseOp)
        out_features, features = shape_of(op.weight)
        block = 1 if self.gpu else kernel_blocking.dense_block(out_features, self.unit)
        packed_shape = (blocks(out_features, block), features, block)
        weight_id, bias_id = self.weight_and_bias(
            group, op.weight, op.bias, "dense_weight", {"block": block}, packed_shape, f"MBxKx{block}"
        )
        epilogue_args, has_bias, has_residual = self._epilogue_args(group, bias_id)
        activation = group.activation_name

        def compute(t: list[te.Tensor]) -> te.Tensor:
            return ops.dense(t[0], t[1], out_features, _epilogue(t[2:], has_bias, has_residual, activation))

        key = (out_features, block, has_bias, has_residual, activation)
        return KernelSpec(
            "dense", [self.value(op.input), weight_id, *epilogue_args], compute, schedule_cpu.schedule_dense, key
        )

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
        unit = self.unit
        return KernelSpec(
            "batch_norm", [self.value(op.input), factor, offset],
            lambda t: ops.batch_norm(t[0], t[1], t[2], activation),
            lambda function: schedule_cpu.schedule_elementwise(function, unit), (activation,),
        )


def lower_kernels(
    module: ModuleOp, target: str | Target = "cpu", arch: str = "sm_90", winograd: bool | None = None
) -> tuple[tvm.IRModule, KernelProgram]:
    """The scheduled kernels of the module's function (one PrimFunc per
    distinct kernel, keyed by symbol) and the program that calls them.
    `winograd`: which convolutions without an `algorithm` in their schedule
    run as Winograd convolutions (None: the default's,
    `tconv.kernels.algorithm.default_algorithm`; True: wherever it applies
    and the target has kernels for it; False: none; see
    `_Lowering.conv_algorithm`)."""
    target = make_target(target, arch)
    function = single_function(module)
    groups = list(kernel_groups(function))
    if is_gpu(target):
        refuse_quantized(function, "tvm cuda", LoweringError)
    lowering = _Lowering(target, winograd, plan_int8(function, groups))
    lowering.bind_inputs(function)
    for group in groups:
        lowering.lower(group)
    lowering.bind_outputs(function)
    kernels = tvm.IRModule({symbol: f for symbol, f in lowering.functions.values()})
    return kernels, lowering.program


def build_kernels(
    module: ModuleOp, target: str | Target = "cpu", arch: str = "sm_90", winograd: bool | None = None
) -> tuple[tvm.runtime.Executable, KernelProgram]:
    """The module's kernels compiled for `target` ("cpu": this machine;
    "cuda": GPU `arch`; or a Target), and the program that calls them
    (`winograd`: see `lower_kernels`)."""
    target = make_target(target, arch)
    kernels, program = lower_kernels(module, target, winograd=winograd)
    return tvm.compile(kernels, target), program


# Running from Python ------------------------------------------------------------


class TvmNetwork:
    """A network compiled for this CPU, run kernel by kernel through the TVM runtime.

        network = TvmNetwork(module)
        network.load_params(params)
        logits, = network.run(image)
    """

    def __init__(self, module: ModuleOp, target: str | Target = "cpu", winograd: bool | None = None) -> None:
        target = make_target(target)
        if is_gpu(target):
            raise LoweringError("TvmNetwork runs kernels on the CPU; compile cuda kernels with build_kernels")
        self.module = module
        executable, self.program = build_kernels(module, target, winograd=winograd)
        self.runtime = executable.jit()
        self.device = tvm.cpu()
        self.kernels = {symbol: self.runtime[symbol] for symbol in self.program.symbols}
        self.tensors: dict[int, tvm.runtime.Tensor] = {
            t.id: tvm.runtime.empty(t.shape, str(DTYPES[t.dtype]), self.device)
            for t in self.program.of_kind("activation")
        }

    def load_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Check `params` against the module, pack them and copy them to the device."""
        bound = bind_params(self.module, params)
        for index, array in self.program.materialize(bound).items():
            self.tensors[index] = tvm.runtime.tensor(array, self.device)

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """The network's results on `inputs`, which must have the shapes the
        module was built for."""
        program = self.program
        if len(inputs) != len(program.inputs):
            raise TconvError(f"tvm: the network takes {len(program.inputs)} inputs, got {len(inputs)}")
        for tensor, value in zip(program.inputs, inputs):
            value = np.asarray(value)
            if value.shape != tensor.shape or not np.issubdtype(value.dtype, np.floating):
                raise TconvError(
                    f"input {tensor.index}: expected float32 {'x'.join(map(str, tensor.shape))}, "
                    f"got {value.dtype} {'x'.join(map(str, value.shape))}"
                )
            self.tensors[tensor.id] = tvm.runtime.tensor(np.ascontiguousarray(value, np.float32), self.device)
        if any(t.id not in self.tensors for t in program.tensors):
            raise TconvError("tvm: load_params must run before run")
        self.execute()
        return [self.tensors[index].numpy() for index in program.outputs]

    def execute(self) -> None:
        """Every call of the program, in order, on the tensors already in place."""
        for call in self.program.calls:
            self.kernels[call.symbol](*(self.tensors[index] for index in call.args))


def run_tvm(module: ModuleOp, params: Mapping[str, np.ndarray], *inputs: np.ndarray) -> list[np.ndarray]:
    """The module's results on `inputs`, computed by its TVM kernels for this CPU."""
    network = TvmNetwork(module)
    network.load_params(params)
    return network.run(*inputs)
