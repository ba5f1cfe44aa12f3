"""tconv → ONNX: a module and its parameters become one ONNX model.

    model = export_model(module, params)

Each tconv op becomes the ONNX node (or, for a channel shuffle, the three
nodes) that computes the same thing; parameters become initializers under
their own names. The model uses the default domain at `OPSET` and keeps the
IR's shapes; the batch (the first dimension of the graph's inputs and
outputs) is the IR's, or, given `batch_name`, symbolic, as PyTorch exports
it: every node holds for any batch. A convolution's `schedule` says how to run it,
not what it computes, and is not exported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from onnx import GraphProto, ModelProto, TensorProto, ValueInfoProto, helper, numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue

from tconv import __version__
from tconv.frontends.onnx.names import UniqueNames
from tconv.ir.loader import TconvError
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
    ParamOp,
    QuantizeOp,
    Relu6Op,
    ReluOp,
    SliceChannelsOp,
    SliceOp,
    quant_range,
    shape_of,
)
from tconv.ir.params import bind_params

OPSET = 17
"""The default-domain opset of exported models: Slice, Split and Clip take
their arguments as inputs, and every runtime of the last years reads it."""

PROTOBUF_LIMIT = 2**31 - 1
"""The largest message protobuf serializes: the bound on a model's weights
without ONNX's external data (which export does not write)."""


class GraphExporter:
    """Fills one ONNX graph in place (a copy of the weights would cost seconds
    and gigabytes on a large network)."""

    def __init__(self, graph: GraphProto, params: Mapping[str, np.ndarray]) -> None:
        self.graph = graph
        self.params = params
        # Parameters keep their names; every other value gets a fresh one.
        self.names = UniqueNames(params)
        self.onnx_names: dict[SSAValue, str] = {}
        self._constants: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    def name_of(self, value: SSAValue) -> str:
        return self.onnx_names[value]

    def constant(self, base: str, array: np.ndarray) -> str:
        """An initializer holding `array` (one per distinct value)."""
        key = (str(array.dtype), array.shape, array.tobytes())
        if key not in self._constants:
            name = self.names.take(base)
            self.graph.initializer.append(numpy_helper.from_array(array, name))
            self._constants[key] = name
        return self._constants[key]

    def node(self, op_type: str, inputs: Sequence[str], base: str, **attributes) -> str:
        """Append a node named after `base`; return the name of its (one) output."""
        name = self.names.take(base)
        self.graph.node.append(helper.make_node(op_type, list(inputs), [name], name=name, **attributes))
        return name

    def export(self, op: Operation) -> None:
        if isinstance(op, ParamOp):
            self.onnx_names[op.result] = op.param_name
            _add_weight(self.graph, op.param_name, self.params[op.param_name])
            return
        rule = EXPORTERS.get(type(op))
        if rule is None:
            raise TconvError(f"error: export: no ONNX form for '{op.name}'")
        inputs = [self.name_of(operand) for operand in op.operands]
        self.onnx_names[op.results[0]] = rule(self, op, inputs)


def _add_weight(graph: GraphProto, name: str, array: np.ndarray) -> None:
    """A float32 initializer, written straight into the graph."""
    tensor = graph.initializer.add()
    tensor.name = name
    tensor.data_type = TensorProto.FLOAT
    tensor.dims.extend(array.shape)
    tensor.raw_data = np.ascontiguousarray(array, "<f4").tobytes()


Rule = Callable[[GraphExporter, Operation, list[str]], str]
"""`rule(exporter, op, input_names)` appends the op's nodes and returns its result's name."""


def _conv2d(g: GraphExporter, op: Conv2dOp, inputs: list[str]) -> str:
    return g.node(
        "Conv", inputs, "conv2d",
        kernel_shape=list(shape_of(op.weight)[2:]),
        strides=list(op.strides.get_values()),
        pads=list(op.padding.get_values()),
        dilations=list(op.dilations.get_values()),
        group=op.groups.value.data,
    )


def _relu6(g: GraphExporter, op: Relu6Op, inputs: list[str]) -> str:
    low = g.constant("relu6_min", np.array(0, np.float32))
    high = g.constant("relu6_max", np.array(6, np.float32))
    return g.node("Clip", [*inputs, low, high], "relu6")


def _pool(op_type: str) -> Rule:
    def rule(g: GraphExporter, op: MaxPool2dOp | AvgPool2dOp, inputs: list[str]) -> str:
        attributes = {
            "kernel_shape": list(op.kernel.get_values()),
            "strides": list(op.strides.get_values()),
            "pads": list(op.padding.get_values()),
        }
        if isinstance(op, AvgPool2dOp):
            attributes["count_include_pad"] = int(op.count_include_pad is not None)
        return g.node(op_type, inputs, op.short_name(), **attributes)

    return rule


def _slice(g: GraphExporter, inputs: list[str], axis: int, start: int, size: int, name: str) -> str:
    bounds = [
        g.constant(base, np.array([value], np.int64))
        for base, value in (("slice_start", start), ("slice_end", start + size), ("slice_axis", axis))
    ]
    return g.node("Slice", [*inputs, *bounds], name)


def _slice_channels(g: GraphExporter, op: SliceChannelsOp, inputs: list[str]) -> str:
    return _slice(g, inputs, 1, op.start.value.data, op.size.value.data, "slice_channels")


def _channel_shuffle(g: GraphExporter, op: ChannelShuffleOp, inputs: list[str]) -> str:
    """Reshape to Nx G x C/G x HxW, swap the two channel axes, reshape back.
    The batch is copied (0), so the nodes hold for any batch."""
    groups = op.groups.value.data
    _, channels, height, width = shape_of(op.input)
    grouped = g.constant("shuffle_grouped", np.array([0, groups, channels // groups, height, width], np.int64))
    whole = g.constant("shuffle_whole", np.array([0, channels, height, width], np.int64))
    x = g.node("Reshape", [inputs[0], grouped], "channel_shuffle_group")
    x = g.node("Transpose", [x], "channel_shuffle_transpose", perm=[0, 2, 1, 3, 4])
    return g.node("Reshape", [x, whole], "channel_shuffle")


def _quant(op_type: str, base: str) -> Rule:
    """QuantizeLinear or DequantizeLinear: scale and zero point as
    initializers, scalars per tensor or vectors with `axis` per channel."""

    def rule(g: GraphExporter, op: QuantizeOp | DequantizeOp, inputs: list[str]) -> str:
        dtype = np.int8 if quant_range(op.quantized_type) == (-128, 127) else np.uint8
        scale = np.asarray(op.scales, np.float32)
        zero_point = np.asarray(op.zero_points, dtype)
        axis = op.channel_axis
        attributes = {}
        if axis is None:
            scale, zero_point = scale.reshape(()), zero_point.reshape(())
        else:
            attributes["axis"] = axis
        return g.node(
            op_type,
            [*inputs, g.constant(f"{base}_scale", scale), g.constant(f"{base}_zero_point", zero_point)],
            base, **attributes,
        )

    return rule


EXPORTERS: dict[type[Operation], Rule] = {
    QuantizeOp: _quant("QuantizeLinear", "quantize"),
    DequantizeOp: _quant("DequantizeLinear", "dequantize"),
    Conv2dOp: _conv2d,
    BatchNormOp: lambda g, op, inputs: g.node(
        "BatchNormalization", inputs, "batch_norm", epsilon=op.epsilon.value.data
    ),
    ReluOp: lambda g, op, inputs: g.node("Relu", inputs, "relu"),
    Relu6Op: _relu6,
    AddOp: lambda g, op, inputs: g.node("Add", inputs, "add"),
    MaxPool2dOp: _pool("MaxPool"),
    AvgPool2dOp: _pool("AveragePool"),
    GlobalAvgPoolOp: lambda g, op, inputs: g.node("GlobalAveragePool", inputs, "global_avg_pool"),
    FlattenOp: lambda g, op, inputs: g.node("Flatten", inputs, "flatten", axis=1),
    DenseOp: lambda g, op, inputs: g.node("Gemm", inputs, "dense", transB=1),
    ConcatOp: lambda g, op, inputs: g.node("Concat", inputs, "concat", axis=op.axis.value.data),
    SliceChannelsOp: _slice_channels,
    SliceOp: lambda g, op, inputs: _slice(g, inputs, *op.bounds, "slice"),
    ChannelShuffleOp: _channel_shuffle,
}
"""How each tconv op (but `tconv.param`) is written in ONNX."""


def _function(module: ModuleOp) -> func.FuncOp:
    functions = [op for op in module.ops if isinstance(op, func.FuncOp)]
    if len(functions) != 1:
        raise TconvError(f"error: export: a network module holds exactly one func.func, found {len(functions)}")
    return functions[0]


def _tensor_info(name: str, value: SSAValue, batch_name: str | None) -> ValueInfoProto:
    shape: list[int | str] = list(shape_of(value))
    if batch_name is not None and shape:
        shape[0] = batch_name
    elements = {(-128, 127): TensorProto.INT8, (0, 255): TensorProto.UINT8}
    element = elements.get(quant_range(value.type.element_type), TensorProto.FLOAT)  # type: ignore[attr-defined, arg-type]
    return helper.make_tensor_value_info(name, element, shape)


BATCH_NAME = "N"
"""The symbolic batch dimension `tconv export` writes."""


def export_model(module: ModuleOp, params: Mapping[str, np.ndarray], batch_name: str | None = None) -> ModelProto:
    """The ONNX model of the module's one function, with `params` (which must
    hold every parameter, as `bind_params` checks) as initializers; with a
    `batch_name`, its batch dimension is symbolic, by that name."""
    function = _function(module)
    bound = bind_params(module, params)
    size = sum(array.nbytes for array in bound.values())
    if size > PROTOBUF_LIMIT:
        raise TconvError(
            f"error: export: the parameters take {size / 2**30:.1f} GiB; an ONNX file without "
            "external data holds at most 2 GiB"
        )
    model = ModelProto()
    model.producer_name, model.producer_version = "tconv", __version__
    model.opset_import.append(helper.make_opsetid("", OPSET))
    # The oldest IR version that holds this opset, for the widest range of readers.
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    model.graph.name = function.sym_name.data
    exporter = GraphExporter(model.graph, bound)
    block = function.body.block
    for argument in block.args:
        name = exporter.names.take("input")
        exporter.onnx_names[argument] = name
        model.graph.input.append(_tensor_info(name, argument, batch_name))
    for op in block.ops:
        if isinstance(op, func.ReturnOp):
            model.graph.output.extend(_graph_outputs(exporter, op.operands, batch_name))
            break
        exporter.export(op)
    return model


def _graph_outputs(
    exporter: GraphExporter, values: Sequence[SSAValue], batch_name: str | None
) -> list[ValueInfoProto]:
    """The returned values, named `output` (`output_1`, ...): a value a node
    computes is renamed; an input, a parameter or a value returned twice
    passes through an Identity node."""
    nodes = exporter.graph.node
    produced = {name for node in nodes for name in node.output}
    renamed: dict[str, str] = {}
    infos = []
    for value in values:
        name = exporter.name_of(value)
        output = exporter.names.take("output")
        if name in produced and name not in renamed:
            renamed[name] = output
        else:
            nodes.append(helper.make_node("Identity", [renamed.get(name, name)], [output], name=output))
        infos.append(_tensor_info(output, value, batch_name))
    for node in nodes:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    return infos
