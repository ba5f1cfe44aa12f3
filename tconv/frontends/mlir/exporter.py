"""tconv → upstream MLIR: `to_linalg` rewrites a network into `func`,
`linalg`, `tensor`, `arith` and `math` ops that `mlir-opt` accepts.

Each tconv op becomes the short sequence of upstream ops that `EXPORTERS`
names for it (the forms are described in `tconv.frontends.mlir.forms`).
Parameters become function arguments after the inputs, in the order of
their `tconv.param` ops, with their store keys as argument attributes; their
values stay in the parameter store. SSA names (`%x`, `%conv1`) carry over to
the value that holds each op's result. A convolution's schedule says how to
run it, not what it computes, and is not exported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from xdsl.dialects import arith, func, tensor
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DictionaryAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    f32,
    i8,
    i64,
)
from xdsl.dialects.linalg import ops as linalg
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

from tconv.frontends.mlir import forms
from tconv.ir.ops import (
    QUANT_TYPES,
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
    ParamOp,
    QuantizeOp,
    Relu6Op,
    ReluOp,
    SliceChannelsOp,
    SliceOp,
    shape_of,
    tensor_type,
)
from tconv.ir.shapes import Shape
from tconv.semantics.reference import avg_pool_divisor, single_function


class LinalgEmitter:
    """Appends upstream ops to one function body and remembers which value
    holds each tconv value."""

    def __init__(self, block: Block, values: dict[SSAValue, SSAValue]) -> None:
        self.block = block
        self.values = values
        self._constants: dict[float, SSAValue] = {}

    def __getitem__(self, value: SSAValue) -> SSAValue:
        return self.values[value]

    def add(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0]

    def constant(self, value: float) -> SSAValue:
        """One `arith.constant` per f32 value, made where it is first needed."""
        if value not in self._constants:
            self._constants[value] = self.add(arith.ConstantOp(forms.f32_attr(value)))
        return self._constants[value]

    def empty(self, shape: Sequence[int]) -> SSAValue:
        return self.add(tensor.EmptyOp([], tensor_type(shape)))

    def filled(self, value: float, shape: Sequence[int]) -> SSAValue:
        return self.add(linalg.FillOp([self.constant(value)], [self.empty(shape)]))

    def padded(self, x: SSAValue, padding: Sequence[int], value: float) -> SSAValue:
        """x NCHW with (top, left, bottom, right) rows and columns of `value`
        around it; x itself when there is no padding."""
        if not any(padding):
            return x
        top, left, bottom, right = padding
        n, c, h, w = shape_of(x)
        return self.add(
            tensor.PadOp(
                x, [], [],
                forms.pad_region(4, self.constant(value)),
                static_low=[0, 0, top, left],
                static_high=[0, 0, bottom, right],
                result_type=tensor_type((n, c, h + top + bottom, w + left + right)),
            )
        )

    def expanded(self, x: SSAValue, groups: forms.Reassociation, shape: Sequence[int]) -> SSAValue:
        return self.add(
            tensor.ExpandShapeOp(x, [], forms.reassociation_attr(groups), list(shape), tensor_type(shape))
        )

    def collapsed(self, x: SSAValue, groups: forms.Reassociation, shape: Sequence[int]) -> SSAValue:
        return self.add(
            tensor.CollapseShapeOp.build(
                operands=[x],
                result_types=[tensor_type(shape)],
                properties={"reassociation": forms.reassociation_attr(groups)},
            )
        )

    def transposed(self, x: SSAValue, permutation: Sequence[int]) -> SSAValue:
        shape = shape_of(x)
        init = self.empty([shape[p] for p in permutation])
        return self.add(linalg.TransposeOp(x, init, DenseArrayBase.from_list(i64, list(permutation))))

    def accumulator(self, bias: SSAValue | None, shape: Shape) -> SSAValue:
        """The start value of a convolution or matmul: zeros, or the bias
        broadcast along every dimension but the channels (upstream's
        conv + bias idiom, as in its TOSA lowering)."""
        if bias is None:
            return self.filled(0.0, shape)
        dimensions = DenseArrayBase.from_list(i64, list(forms.bias_dimensions(len(shape))))
        return self.add(linalg.BroadcastOp(self[bias], self.empty(shape), dimensions))


Exporter = Callable[[LinalgEmitter, Operation], SSAValue]

EXPORTERS: dict[type[Operation], Exporter] = {}
"""The upstream form of every tensor-computing tconv op."""


def exports(op_type: type[Operation]) -> Callable[[Exporter], Exporter]:
    def register(function: Exporter) -> Exporter:
        EXPORTERS[op_type] = function
        return function

    return register


@exports(Conv2dOp)
def export_conv2d(e: LinalgEmitter, op: Conv2dOp) -> SSAValue:
    """tensor.pad (zeros) + linalg.conv_2d_nchw_fchw into the accumulator; with
    groups, the same through linalg.conv_2d_ngchw_gfchw on reshaped operands."""
    strides = forms.window_attr(op.strides.get_values())
    dilations = forms.window_attr(op.dilations.get_values())
    x = e.padded(e[op.input], op.padding.get_values(), 0.0)
    weight = e[op.weight]
    output = shape_of(op.output)
    init = e.accumulator(op.bias, output)
    groups = op.groups.value.data
    if groups == 1:
        return e.add(
            linalg.Conv2DNchwFchwOp([x, weight], [init], [init.type], strides=strides, dilations=dilations)
        )
    n, c, h, w = shape_of(x)
    o, cg, kh, kw = shape_of(weight)
    _, _, p, q = output
    grouped_output = (n, groups, o // groups, p, q)
    y = e.add(
        linalg.Conv2DNgchwGfchwOp(
            [
                e.expanded(x, forms.GROUPED_ACTIVATION, (n, groups, c // groups, h, w)),
                e.expanded(weight, forms.GROUPED_WEIGHT, (groups, o // groups, cg, kh, kw)),
            ],
            [e.expanded(init, forms.GROUPED_ACTIVATION, grouped_output)],
            [tensor_type(grouped_output)],
            strides=strides,
            dilations=dilations,
        )
    )
    return e.collapsed(y, forms.GROUPED_ACTIVATION, output)


@exports(BatchNormOp)
def export_batch_norm(e: LinalgEmitter, op: BatchNormOp) -> SSAValue:
    """One linalg.generic over the input and the four per-channel vectors."""
    shape = shape_of(op.output)
    return e.add(
        linalg.GenericOp(
            [e[op.input], e[op.scale], e[op.shift], e[op.mean], e[op.var]],
            [e.empty(shape)],
            forms.batch_norm_body(op.epsilon.value.data),
            forms.per_channel_maps(len(shape), 4),
            forms.iterator_types(forms.all_parallel(len(shape))),
            [tensor_type(shape)],
        )
    )


def elementwise(e: LinalgEmitter, inputs: Sequence[SSAValue], body: Region) -> SSAValue:
    """A linalg.generic that computes `body` at every position of its inputs' shape."""
    shape = shape_of(inputs[0])
    rank = len(shape)
    return e.add(
        linalg.GenericOp(
            list(inputs),
            [e.empty(shape)],
            body,
            forms.elementwise_maps(rank, len(inputs)),
            forms.iterator_types(forms.all_parallel(rank)),
            [tensor_type(shape)],
        )
    )


@exports(ReluOp)
def export_relu(e: LinalgEmitter, op: ReluOp) -> SSAValue:
    return elementwise(e, [e[op.input]], forms.relu_body())


@exports(Relu6Op)
def export_relu6(e: LinalgEmitter, op: Relu6Op) -> SSAValue:
    return elementwise(e, [e[op.input]], forms.relu6_body())


@exports(AddOp)
def export_add(e: LinalgEmitter, op: AddOp) -> SSAValue:
    return elementwise(e, [e[op.lhs], e[op.rhs]], forms.add_body())


def window_operand(e: LinalgEmitter, kernel: Sequence[int]) -> SSAValue:
    """A pooling op's second operand: only its KHxKW shape matters."""
    return e.empty(kernel)


@exports(MaxPool2dOp)
def export_max_pool2d(e: LinalgEmitter, op: MaxPool2dOp) -> SSAValue:
    """tensor.pad (-inf) + linalg.pooling_nchw_max from -inf."""
    output = shape_of(op.output)
    return e.add(
        linalg.PoolingNchwMaxOp(
            [e.padded(e[op.input], op.padding.get_values(), -math.inf), window_operand(e, op.kernel.get_values())],
            [e.filled(-math.inf, output)],
            [tensor_type(output)],
            strides=forms.window_attr(op.strides.get_values()),
            dilations=forms.window_attr((1, 1)),
        )
    )


def divided(e: LinalgEmitter, sums: SSAValue, divisor: np.ndarray) -> SSAValue:
    """sums NCHW / a HxW divisor constant, in one linalg.generic."""
    shape = shape_of(sums)
    divisor_value = e.add(arith.ConstantOp(forms.dense_f32(divisor.ravel().tolist(), divisor.shape)))
    return e.add(
        linalg.GenericOp(
            [sums, divisor_value],
            [e.empty(shape)],
            forms.divide_body(),
            forms.divide_maps(),
            forms.iterator_types(forms.all_parallel(4)),
            [tensor_type(shape)],
        )
    )


@exports(AvgPool2dOp)
def export_avg_pool2d(e: LinalgEmitter, op: AvgPool2dOp) -> SSAValue:
    """tensor.pad (zeros) + the generic form of linalg.pooling_nchw_sum, divided
    by the window size, or, without count_include_pad, by the number of input
    positions each window covers (the reference executor's divisor)."""
    output = shape_of(op.output)
    sums = e.add(
        linalg.GenericOp(
            [e.padded(e[op.input], op.padding.get_values(), 0.0), window_operand(e, op.kernel.get_values())],
            [e.filled(0.0, output)],
            forms.sum_body(3),
            forms.window_sum_maps(op.strides.get_values()),
            forms.iterator_types(forms.WINDOW_SUM_ITERATORS),
            [tensor_type(output)],
        )
    )
    input_placeholder = np.broadcast_to(np.float32(0), shape_of(op.input))
    divisor = np.broadcast_to(avg_pool_divisor(op, input_placeholder), output)[0, 0]
    return divided(e, sums, np.asarray(divisor, np.float32))


@exports(GlobalAvgPoolOp)
def export_global_avg_pool(e: LinalgEmitter, op: GlobalAvgPoolOp) -> SSAValue:
    """A linalg.generic sum over height and width into NxCx1x1, divided by H·W."""
    _, _, h, w = shape_of(op.input)
    output = shape_of(op.output)
    sums = e.add(
        linalg.GenericOp(
            [e[op.input]],
            [e.filled(0.0, output)],
            forms.sum_body(2),
            forms.spatial_sum_maps(),
            forms.iterator_types(forms.SPATIAL_SUM_ITERATORS),
            [tensor_type(output)],
        )
    )
    return divided(e, sums, np.full((1, 1), h * w, np.float32))


@exports(FlattenOp)
def export_flatten(e: LinalgEmitter, op: FlattenOp) -> SSAValue:
    return e.collapsed(e[op.input], forms.FLATTEN, shape_of(op.output))


@exports(DenseOp)
def export_dense(e: LinalgEmitter, op: DenseOp) -> SSAValue:
    """linalg.matmul of the input and the transposed weight, into the accumulator."""
    weight = e.transposed(e[op.weight], forms.MATMUL_WEIGHT_PERMUTATION)
    init = e.accumulator(op.bias, shape_of(op.output))
    return e.add(linalg.MatmulOp([e[op.input], weight], [init]))


@exports(ConcatOp)
def export_concat(e: LinalgEmitter, op: ConcatOp) -> SSAValue:
    return e.add(
        tensor.ConcatOp([e[x] for x in op.inputs], op.axis.value.data, tensor_type(shape_of(op.output)))
    )


@exports(SliceChannelsOp)
def export_slice_channels(e: LinalgEmitter, op: SliceChannelsOp) -> SSAValue:
    shape = shape_of(op.output)
    offsets = [0] * len(shape)
    offsets[1] = op.start.value.data
    return e.add(tensor.ExtractSliceOp.from_static_parameters(e[op.input], offsets, list(shape)))


@exports(SliceOp)
def export_slice(e: LinalgEmitter, op: SliceOp) -> SSAValue:
    axis, start, _ = op.bounds
    shape = shape_of(op.output)
    offsets = [0] * len(shape)
    offsets[axis] = start
    return e.add(tensor.ExtractSliceOp.from_static_parameters(e[op.input], offsets, list(shape)))


@exports(ChannelShuffleOp)
def export_channel_shuffle(e: LinalgEmitter, op: ChannelShuffleOp) -> SSAValue:
    """expand_shape to NxGx(C/G)xHxW, linalg.transpose of the two channel
    dimensions, collapse_shape back."""
    groups = op.groups.value.data
    n, c, h, w = shape = shape_of(op.input)
    grouped = e.expanded(e[op.input], forms.GROUPED_ACTIVATION, (n, groups, c // groups, h, w))
    shuffled = e.transposed(grouped, forms.SHUFFLE_PERMUTATION)
    return e.collapsed(shuffled, forms.GROUPED_ACTIVATION, shape)


def _element_type(op: QuantizeOp | DequantizeOp) -> str:
    quantized = op.quantized_type if isinstance(op, QuantizeOp) else op.input.type.element_type
    return next(name for name, (typ, _, _) in QUANT_TYPES.items() if typ == quantized)


def quantization(e: LinalgEmitter, op: QuantizeOp | DequantizeOp, body, element: Attribute) -> SSAValue:
    """One linalg.generic over the input, with the scale and zero point
    constants of its body (per tensor) or two constant vectors indexed by
    the axis (per channel), into a tensor of `element`."""
    shape = shape_of(op.output)
    rank, axis = len(shape), op.channel_axis
    if axis is None:
        region = body(op.scales[0], float(op.zero_points[0]), _element_type(op))
        inputs, maps = [e[op.input]], forms.elementwise_maps(rank, 1)
    else:
        region = body(None, None, _element_type(op))
        vectors = [
            e.add(arith.ConstantOp(forms.dense_f32(values, (shape[axis],))))
            for values in (op.scales, [float(z) for z in op.zero_points])
        ]
        inputs, maps = [e[op.input], *vectors], forms.per_channel_vector_maps(rank, axis)
    result_type = TensorType(element, shape)
    out = e.add(tensor.EmptyOp([], result_type))
    return e.add(linalg.GenericOp(
        inputs, [out], region, maps, forms.iterator_types(forms.all_parallel(rank)), [result_type]
    ))


@exports(QuantizeOp)
def export_quantize(e: LinalgEmitter, op: QuantizeOp) -> SSAValue:
    """f32 → integers in i8 storage (`forms.quantize_body`)."""
    return quantization(e, op, forms.quantize_body, i8)


@exports(DequantizeOp)
def export_dequantize(e: LinalgEmitter, op: DequantizeOp) -> SSAValue:
    """Integers in i8 storage → f32 (`forms.dequantize_body`)."""
    return quantization(e, op, forms.dequantize_body, f32)


def _param_attrs(op: ParamOp) -> DictionaryAttr:
    return DictionaryAttr({forms.PARAM_ATTR: StringAttr(op.param_name), forms.INIT_ATTR: op.init})


def to_linalg(module: ModuleOp) -> ModuleOp:
    """The network of a verified tconv module in upstream dialects: one
    `func.func` of the same name over the inputs and then the parameters."""
    function = single_function(module)
    body = function.body.block
    params = [op for op in body.ops if isinstance(op, ParamOp)]
    block = Block(arg_types=[*function.function_type.inputs, *(op.result.type for op in params)])
    values: dict[SSAValue, SSAValue] = {}
    for old, new in zip([*body.args, *(op.result for op in params)], block.args):
        new.name_hint = old.name_hint
        values[old] = new

    emitter = LinalgEmitter(block, values)
    for op in body.ops:
        if isinstance(op, ParamOp):
            continue
        if isinstance(op, func.ReturnOp):
            block.add_op(func.ReturnOp(*(values[v] for v in op.arguments)))
            break
        export = EXPORTERS.get(type(op))
        if export is None:
            raise NotImplementedError(f"no upstream MLIR form for {op.name}")
        result = export(emitter, op)
        result.name_hint = op.results[0].name_hint
        values[op.results[0]] = result

    arg_attrs: list[Attribute] = [DictionaryAttr({}) for _ in body.args]
    arg_attrs += [_param_attrs(op) for op in params]
    exported = func.FuncOp(
        function.sym_name.data,
        (list(block.arg_types), list(function.function_type.outputs)),
        Region(block),
        arg_attrs=ArrayAttr(arg_attrs) if params else None,
    )
    return ModuleOp([exported])


def schedules_dropped(module: ModuleOp) -> int:
    """How many convolutions carry a schedule that the export leaves out."""
    return sum(1 for op in module.walk() if isinstance(op, Conv2dOp) and op.schedule is not None)

