"""ONNX → tconv: a model file becomes a verified module and its parameter store.

    model = read_model("resnet18.onnx")
    module, params = import_model(model, batch=None, source="resnet18.onnx")

The graph is converted node by node in its (topological) order. Initializers
become parameters named as in the model (made valid where needed, see
`tconv.frontends.onnx.names`); nodes on constants only are evaluated (see
`folding`); every other node goes through its converter (see `converters`).
Nodes no graph output depends on are skipped. Any node tconv cannot represent
exactly is an `OnnxImportError` that names it; nothing is returned then.

Shapes come from the (static) input shapes through tconv's own shape rules,
not from ONNX's shape inference: that disagrees with onnxruntime and
onnx.reference on ceil-mode pooling whose last window would start in the
padding (they drop it, as PyTorch does; it keeps it).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from onnx import ModelProto, TensorProto, ValueInfoProto, helper, numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region, SSAValue

from tconv.frontends.onnx.converters import CONVERTERS, dequantized_constant, fold_dequantize
from tconv.frontends.onnx.folding import fold, foldable
from tconv.frontends.onnx.names import UniqueNames, function_name, param_name
from tconv.frontends.onnx.node import GroupedChannels, NodeContext, OnnxImportError, Value
from tconv.ir.loader import TconvError, verify_module
from tconv.ir.ops import ParamOp, tensor_type
from tconv.ir.shapes import Shape

MIN_OPSET = 7
"""The oldest default-domain opset imported: AveragePool's count_include_pad
and today's BatchNormalization, Dropout and Reshape date from 7 or earlier."""

DEFAULT_DOMAINS = ("", "ai.onnx")


def read_model(path: str | os.PathLike[str]) -> ModelProto:
    """Load an ONNX file (with its external data) and check that it is a valid model."""
    path = Path(path)
    if not path.is_file():
        raise TconvError(f"{path}: error: {'is a directory' if path.is_dir() else 'file not found'}")
    try:
        model = onnx.load(path)
    except DecodeError as err:
        raise TconvError(f"{path}: error: not an ONNX model (protobuf: {err})") from None
    except OSError as err:
        raise TconvError(f"{path}: error: cannot read: {err.strerror or err}") from None
    except onnx.checker.ValidationError as err:
        # Raised while loading the weights a model keeps in external files.
        raise TconvError(f"{path}: error: {str(err).strip().splitlines()[0]}") from None
    if not model.graph.node and not model.graph.output:
        # Protobuf reads many byte strings (an empty file, some text) as an empty message.
        raise TconvError(f"{path}: error: not an ONNX model (no graph)")
    # Before the checker, whose messages would quote a broken string.
    check_strings(model, str(path))
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as err:
        first_line = str(err).strip().splitlines()[0]
        raise TconvError(f"{path}: error: not a valid ONNX model: {first_line}") from None
    return model


def check_strings(model: ModelProto, source: str) -> None:
    """Every string field of the model (names, attribute strings, ...) is UTF-8
    text. Protobuf hands back a string that is not as bytes, which neither
    the checker nor a message can quote; the error names the field's path."""
    stack: list[tuple[Message, str]] = [(model, "model")]
    while stack:
        message, path = stack.pop()
        for field, value in message.ListFields():
            where = f"{path}.{field.name}"
            repeated = field.is_repeated
            items = list(value) if repeated else [value]
            for position, item in enumerate(items):
                at = f"{where}[{position}]" if repeated else where
                if field.type == FieldDescriptor.TYPE_STRING and isinstance(item, bytes):
                    raise OnnxImportError(
                        f"{source}: error: {_describe_path(model, at)} is not UTF-8 text "
                        f"({item[:40]!r})"
                    )
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    stack.append((item, at))


def _describe_path(model: ModelProto, path: str) -> str:
    """`node 'conv1' (Conv): field input[1]` for a field of a graph node, else the path."""
    match = re.match(r"model\.graph\.(node|initializer)\[(\d+)\]\.(.*)", path)
    if match is None:
        return f"field {path}"
    kind, index, rest = match.group(1), int(match.group(2)), match.group(3)
    if kind == "node":
        node = model.graph.node[index]
        if isinstance(node.name, str) and isinstance(node.op_type, str) and node.name:
            return f"node '{node.name}' ({node.op_type}): field {rest}"
        return f"node #{index}: field {rest}"
    tensor = model.graph.initializer[index]
    name = f"'{tensor.name}'" if isinstance(tensor.name, str) else f"#{index}"
    return f"initializer {name}: field {rest}"


_TENSOR_FIELDS = {
    TensorProto.FLOAT: "float_data",
    TensorProto.COMPLEX64: "float_data",
    TensorProto.DOUBLE: "double_data",
    TensorProto.COMPLEX128: "double_data",
    TensorProto.INT64: "int64_data",
    TensorProto.UINT32: "uint64_data",
    TensorProto.UINT64: "uint64_data",
    TensorProto.STRING: "string_data",
}
"""Where a tensor of each type keeps typed (not raw) data; every other type
uses int32_data."""

_VALUES_PER_ELEMENT = {TensorProto.COMPLEX64: 2, TensorProto.COMPLEX128: 2}


def initializer_array(tensor: TensorProto, source: str) -> np.ndarray:
    """The value of an initializer, after checking that its data type is one
    numpy can hold and that its data has as many elements as its dims say."""

    def fail(message: str) -> OnnxImportError:
        return OnnxImportError(f"{source}: error: initializer '{tensor.name}': {message}")

    if tensor.data_location == TensorProto.EXTERNAL:
        raise fail("its data is in an external file; load the model with onnx.load to read it")
    dtype_number = tensor.data_type
    if dtype_number not in TensorProto.DataType.values() or dtype_number == TensorProto.UNDEFINED:
        raise fail(f"unknown data type {dtype_number}")
    dtype_name = TensorProto.DataType.Name(dtype_number)
    try:
        np_dtype = helper.tensor_dtype_to_np_dtype(dtype_number)
    except (KeyError, ValueError, TypeError):
        raise fail(f"data type {dtype_name} is not supported") from None
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise fail(f"negative dimension in dims {dims}")
    elements = math.prod(dims)
    if tensor.HasField("raw_data"):
        if dtype_number == TensorProto.STRING:
            raise fail("a STRING tensor cannot have raw data")
        itemsize = np.dtype(np_dtype).itemsize
        bits = {TensorProto.INT4: 4, TensorProto.UINT4: 4}.get(dtype_number)
        expected = (elements * bits + 7) // 8 if bits else elements * itemsize
        if len(tensor.raw_data) != expected:
            raise fail(
                f"dims {dims} ({elements} elements of {dtype_name}) need {expected} bytes of raw data, "
                f"it has {len(tensor.raw_data)}"
            )
    else:
        field = _TENSOR_FIELDS.get(dtype_number, "int32_data")
        count = len(getattr(tensor, field))
        per_element = _VALUES_PER_ELEMENT.get(dtype_number, 1)
        if dtype_number in (TensorProto.INT4, TensorProto.UINT4):
            expected = (elements + 1) // 2
        else:
            expected = elements * per_element
        if count != expected:
            raise fail(f"dims {dims} ({elements} elements of {dtype_name}) but {count} values in {field}")
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise fail(f"cannot read its data ({type(err).__name__}: {err})") from None


def default_opset(model: ModelProto, source: str) -> int:
    """The model's version of the default ONNX domain, checked to be one tconv imports."""
    versions = [entry.version for entry in model.opset_import if entry.domain in DEFAULT_DOMAINS]
    if not versions:
        raise OnnxImportError(f"{source}: error: the model imports no default-domain opset")
    opset = max(versions)
    newest = onnx.defs.onnx_opset_version()
    if opset < MIN_OPSET:
        raise OnnxImportError(
            f"{source}: error: opset {opset} is older than tconv imports ({MIN_OPSET} to {newest}); "
            "convert it with onnx.version_converter"
        )
    if opset > newest:
        raise OnnxImportError(
            f"{source}: error: opset {opset} is newer than the installed onnx knows ({newest})"
        )
    return opset


def import_model(
    model: ModelProto, batch: int | None = None, source: str = "<model>"
) -> tuple[ModuleOp, dict[str, np.ndarray]]:
    """The verified tconv module of `model` and its parameters.

    `batch` binds a symbolic batch (first) dimension of the graph inputs
    (default: `DEFAULT_BATCH`, as exported networks are most often run one
    image at a time; `tconv-set-batch` changes it later); a static batch must
    equal it where given, and any other symbolic dimension is an error.
    `source` names the model in messages."""
    return GraphImporter(model, batch, source).run()


DEFAULT_BATCH = 1


def symbolic_batch(model: ModelProto) -> str | None:
    """The name of the first graph input's symbolic batch dimension ('?' where
    it has none), or None where that batch is static."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    for info in model.graph.input:
        if info.name in initializers or not info.type.tensor_type.shape.dim:
            continue
        dim = info.type.tensor_type.shape.dim[0]
        return None if dim.HasField("dim_value") and dim.dim_value > 0 else (dim.dim_param or "?")
    return None


class GraphImporter:
    """The state of one import: what each ONNX value has become, and the
    function body and parameters built so far."""

    def __init__(self, model: ModelProto, batch: int | None, source: str) -> None:
        self.model = model
        self.batch = batch
        self.source = source
        self.opset = default_opset(model, source)
        self.values: dict[str, Value] = {}
        self.origins: dict[str, str] = {}
        """For a constant that is an initializer passed through Identity nodes: the initializer's name."""
        self.params: dict[str, np.ndarray] = {}
        self.block = Block()
        self.live_values: set[str] = set()
        self.consumers: Counter[str] = Counter()
        self._param_names = UniqueNames()
        self._live_nodes: set[int] = set()
        self.dequantized: dict[str, tuple[list[float], list[int], int | None, str]] = {}
        """For a constant a DequantizeLinear computed from int8/uint8 values (a
        quantized weight): its scales, zero points, axis and element type."""

    def fail(self, message: str) -> OnnxImportError:
        return OnnxImportError(f"{self.source}: error: {message}")

    # Building ----------------------------------------------------------------

    def append(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0]

    def param(self, onnx_name: str, array: np.ndarray, init: str) -> SSAValue:
        """A new `tconv.param` holding `array`, named after the initializer it
        comes from (`name_1`, `name_2`, ... for its later uses).

        Each use is a parameter of its own: a tconv rewrite changes one
        layer's weights at a time, and exporters share initializers between
        layers merely because their values are equal (PyTorch gives every
        fresh batch norm the one tensor of ones)."""
        origin = self.origins.get(onnx_name, onnx_name)
        name = self._param_names.take(param_name(origin))
        self.params[name] = np.ascontiguousarray(array, np.float32)
        return self.append(ParamOp(name, array.shape, init))

    def readers(self, value: Value) -> int:
        """How many node inputs and graph outputs read `value`, under any name."""
        return sum(self.consumers[name] for name, known in self.values.items() if known is value)

    # The graph ---------------------------------------------------------------

    def run(self) -> tuple[ModuleOp, dict[str, np.ndarray]]:
        graph = self.model.graph
        check_strings(self.model, self.source)
        if graph.sparse_initializer:
            raise self.fail(f"sparse initializer '{graph.sparse_initializer[0].values.name}' is not supported")
        for initializer in graph.initializer:
            self.values[initializer.name] = initializer_array(initializer, self.source)
        inputs = [i for i in graph.input if i.name not in self.values]
        self.block = Block(arg_types=[tensor_type(self._input_shape(i)) for i in inputs])
        for info, argument in zip(inputs, self.block.args):
            self.values[info.name] = argument
        self._find_live_nodes()
        for index, node in enumerate(graph.node):
            if index in self._live_nodes:
                self._convert(node, index)
        outputs = [self._output(info) for info in graph.output]
        self.block.add_op(func.ReturnOp(*outputs))
        function = func.FuncOp(
            function_name(graph.name, Path(self.source).stem),
            ([a.type for a in self.block.args], [o.type for o in outputs]),
            Region(self.block),
        )
        module = ModuleOp([function])
        verify_module(module)
        return module, self.params

    def _input_shape(self, info: ValueInfoProto) -> Shape:
        """The static shape of a graph input; a symbolic batch takes `self.batch`."""
        if not info.type.HasField("tensor_type"):
            raise self.fail(f"graph input '{info.name}' is not a tensor")
        tensor = info.type.tensor_type
        if tensor.elem_type != TensorProto.FLOAT:
            kind = TensorProto.DataType.Name(tensor.elem_type)
            raise self.fail(f"graph input '{info.name}' holds {kind}; tconv networks take FLOAT tensors")
        if not tensor.HasField("shape"):
            raise self.fail(f"graph input '{info.name}' has no shape (dynamic rank is not supported)")
        dims = []
        for axis, dim in enumerate(tensor.shape.dim):
            static = dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
            symbol = f"'{dim.dim_param}'" if dim.dim_param else "unknown"
            if axis == 0 and static is None:
                static = DEFAULT_BATCH if self.batch is None else self.batch
            elif axis == 0 and self.batch is not None and static != self.batch:
                raise self.fail(
                    f"graph input '{info.name}' has the static batch size {static}; "
                    f"--batch {self.batch} binds only a symbolic one"
                )
            elif static is None:
                raise self.fail(
                    f"graph input '{info.name}' has a dynamic dimension {axis} ({symbol}); "
                    "tconv needs static shapes (only the batch may be symbolic, bound with --batch)"
                )
            dims.append(static)
        return tuple(dims)

    def _find_live_nodes(self) -> None:
        """The nodes some graph output depends on, the values they read and
        produce, and how many readers each value has."""
        nodes = self.model.graph.node
        needed = {info.name for info in self.model.graph.output}
        self.consumers.update(needed)
        for index in reversed(range(len(nodes))):
            node = nodes[index]
            if any(name in needed for name in node.output):
                self._live_nodes.add(index)
                needed.update(name for name in node.input if name)
                self.consumers.update(name for name in node.input if name)
        self.live_values = needed

    def _convert(self, node, index: int) -> None:
        ctx = NodeContext(self, node, index)
        if node.domain not in DEFAULT_DOMAINS:
            ctx.fail(f"op '{node.op_type}' of domain '{node.domain}' is not supported")
        if foldable(ctx) and node.op_type == "DequantizeLinear":
            outputs: Sequence[Value | None] = [fold_dequantize(ctx)]
            quantized = dequantized_constant(ctx)
            if quantized is not None:
                self.dequantized[node.output[0]] = quantized
        elif foldable(ctx):
            outputs = fold(ctx)
            if node.op_type == "Identity":
                self.origins[node.output[0]] = self.origins.get(node.input[0], node.input[0])
        else:
            converter = CONVERTERS.get(node.op_type)
            if converter is None:
                ctx.fail(
                    f"unsupported op '{node.op_type}' (tconv imports {', '.join(sorted(CONVERTERS))}, "
                    "and any op on constants only)"
                )
            outputs = converter(ctx)
            ctx.check_attributes_read()
        for name, value in zip(node.output, outputs):
            if name and value is not None:
                self.values[name] = value

    def _output(self, info: ValueInfoProto) -> SSAValue:
        value = self.values[info.name]
        if isinstance(value, SSAValue):
            return value
        what = "a 5-D channel grouping" if isinstance(value, GroupedChannels) else "a constant"
        raise self.fail(f"graph output '{info.name}' is {what}; a tconv network returns computed tensors")
