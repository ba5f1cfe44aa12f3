"""What a converter sees of one ONNX node: its inputs, its attributes, and a
way to emit tconv ops and parameters, or to fail naming the node.

An ONNX value becomes one of three things during import (`Value`):
- an `SSAValue`, a tensor the network computes (an activation);
- a numpy array, a constant known at import time: an initializer, a
  `Constant`, or anything computed from constants and static shapes;
- a `GroupedChannels`, the 5-D middle of a channel shuffle, which tconv has
  no tensor for: only the shuffle's Transpose and closing Reshape may use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
from onnx import AttributeProto, NodeProto, helper, numpy_helper
from xdsl.ir import Operation, SSAValue

from tconv.ir.loader import TconvError
from tconv.ir.ops import shape_of
from tconv.ir.shapes import Shape, ShapeError, format_shape

if TYPE_CHECKING:
    from tconv.frontends.onnx.importer import GraphImporter


class OnnxImportError(TconvError):
    """An ONNX model tconv cannot represent: an unsupported op, attribute or shape."""


@dataclass(frozen=True)
class GroupedChannels:
    """`source` (NxCxHxW) viewed as Nx`groups`x(C/groups)xHxW, or, once
    `transposed`, as Nx(C/groups)x`groups`xHxW."""

    source: SSAValue
    groups: int
    transposed: bool = False

    @property
    def shape(self) -> Shape:
        n, c, h, w = shape_of(self.source)
        middle = (c // self.groups, self.groups) if self.transposed else (self.groups, c // self.groups)
        return (n, *middle, h, w)


Value = SSAValue | np.ndarray | GroupedChannels

_NO_DEFAULT = object()


def shape_of_value(value: Value) -> Shape:
    if isinstance(value, SSAValue):
        return shape_of(value)
    return tuple(value.shape)


def describe_node(node: NodeProto, index: int) -> str:
    """`node 'conv1' (Conv)`; a node without a name is known by its position
    and first output."""
    if node.name:
        return f"node '{node.name}' ({node.op_type})"
    output = f", output '{node.output[0]}'" if node.output else ""
    return f"node #{index} ({node.op_type}{output})"


class NodeContext:
    """One node being converted by the importer `graph`."""

    def __init__(self, graph: GraphImporter, node: NodeProto, index: int) -> None:
        self.graph = graph
        self.node = node
        self.index = index
        self._attributes: dict[str, AttributeProto] = {a.name: a for a in node.attribute}
        self._read: set[str] = set()

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def opset(self) -> int:
        return self.graph.opset

    def fail(self, message: str) -> NoReturn:
        raise OnnxImportError(f"{self.graph.source}: error: {describe_node(self.node, self.index)}: {message}")

    # Inputs -----------------------------------------------------------------

    def has_input(self, index: int) -> bool:
        """ONNX leaves an optional input out by naming it ''."""
        return index < len(self.node.input) and self.node.input[index] != ""

    @property
    def input_count(self) -> int:
        return len(self.node.input)

    def value(self, index: int) -> Value:
        if not self.has_input(index):
            self.fail(f"input {index} is missing")
        return self.graph.values[self.node.input[index]]

    def activation(self, index: int, what: str = "input") -> SSAValue:
        """Input `index`, which must be a tensor the network computes."""
        value = self.value(index)
        if isinstance(value, GroupedChannels):
            self.fail(
                f"{what} '{self.node.input[index]}' is a 5-D channel grouping; only the "
                "Reshape-Transpose-Reshape of a channel shuffle may use it"
            )
        if not isinstance(value, SSAValue):
            self.fail(f"{what} '{self.node.input[index]}' is a constant; tconv expects a computed tensor here")
        return value

    def constant(self, index: int, what: str = "input") -> np.ndarray:
        """Input `index`, which must be known at import time."""
        value = self.value(index)
        if not isinstance(value, np.ndarray):
            self.fail(
                f"{what} '{self.node.input[index]}' is computed by the network; tconv needs a "
                "constant here (an initializer, or computed from initializers)"
            )
        return value

    def optional_constant(self, index: int, what: str = "input") -> np.ndarray | None:
        return self.constant(index, what) if self.has_input(index) else None

    def param(self, index: int, init: str, array: np.ndarray | None = None) -> SSAValue:
        """A `tconv.param` holding constant input `index`, or `array` computed
        from it (transposed, scaled, broadcast)."""
        source = self.constant(index, "weight")
        if not np.issubdtype(source.dtype, np.floating):
            self.fail(f"weight '{self.node.input[index]}' holds {source.dtype} values; expected floats")
        param = self.graph.param(self.node.input[index], source if array is None else array, init)
        quantized = getattr(self.graph, "dequantized", {}).get(self.node.input[index])
        if quantized is None:
            return param
        # A quantized weight (DequantizeLinear of int8 values) keeps its QDQ
        # pair where the layer holds its values as they are or transposed (a
        # Gemm's); scaled values are exact floats without one.
        scales, zero_points, axis, element_type = quantized
        if array is not None and not np.array_equal(array, source):
            transposed = array.ndim == 2 and array.shape == source.T.shape and np.array_equal(array, source.T)
            if not transposed:
                return param
            axis = None if axis is None else 1 - axis
        from tconv.ir.ops import DequantizeOp, QuantizeOp

        q = self.emit(QuantizeOp, param, scale=scales, zero_point=zero_points, axis=axis, element_type=element_type)
        param = self.emit(DequantizeOp, q, scale=scales, zero_point=zero_points, axis=axis)
        return param

    def only_reader(self, index: int) -> bool:
        """Whether this node is the one reader of input `index`, under any of
        the names (Identity, Dropout) it has."""
        return self.graph.readers(self.value(index)) == 1

    def output_live(self, index: int) -> bool:
        return (
            index < len(self.node.output)
            and self.node.output[index] != ""
            and self.node.output[index] in self.graph.live_values
        )

    # Emitting ---------------------------------------------------------------

    def emit(self, op_type: Callable[..., Operation], *operands: Any, **properties: Any) -> SSAValue:
        """Append op_type(*operands, **properties); a broken shape rule fails the node."""
        try:
            op = op_type(*operands, **properties)
        except ShapeError as err:
            self.fail(str(err))
        return self.graph.append(op)

    # Attributes -------------------------------------------------------------

    def attr(self, name: str, default: Any = _NO_DEFAULT) -> Any:
        """The attribute's value: int, float, str, tuple of those, or a numpy
        array for a tensor."""
        self._read.add(name)
        proto = self._attributes.get(name)
        if proto is None:
            if default is _NO_DEFAULT:
                self.fail(f"missing attribute '{name}'")
            return default
        if proto.type == AttributeProto.TENSOR:
            return numpy_helper.to_array(proto.t)
        value = helper.get_attribute_value(proto)
        if proto.type == AttributeProto.FLOAT:
            return _shortest_float(value)
        if proto.type == AttributeProto.FLOATS:
            return tuple(map(_shortest_float, value))
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if isinstance(value, list):
            return tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value)
        return value

    def ignore(self, *names: str) -> None:
        """Attributes that do not change the inference result (a momentum, a seed)."""
        self._read.update(names)

    def check_attributes_read(self) -> None:
        """An attribute the converter did not read would change the result in a way it ignored."""
        unread = sorted(set(self._attributes) - self._read)
        if unread:
            self.fail(f"unsupported attribute{'s' if len(unread) > 1 else ''} {', '.join(map(repr, unread))}")

    def require_only_output(self, what: str) -> None:
        """Fail if any output but the first is used."""
        for index in range(1, len(self.node.output)):
            if self.output_live(index):
                self.fail(
                    f"output {index} ('{self.node.output[index]}', {what}) is used; "
                    "tconv computes only output 0"
                )


def _shortest_float(value: float) -> float:
    """An ONNX float attribute is float32: an epsilon written as 1e-5 arrives as
    9.99999974e-06. The shortest decimal that rounds to the same float32 is
    the value its writer meant."""
    return float(str(np.float32(value)))


def format_dims(shape: Sequence[int]) -> str:
    return format_shape(shape) or "scalar"
