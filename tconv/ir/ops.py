"""The tconv ops (see the contract table in ARCHITECTURE.md).

Every op computes one f32 tensor in NCHW layout (NC after `flatten`) but
`tconv.quantize`, whose result is i8 or ui8 (see QUANT_OPS). Its
result shape is inferred by `infer_shape`, which reads the operand shapes and
the op's properties and calls the matching rule in `tconv.ir.shapes`; the
verifier and the builders (`__init__`) both go through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    I64,
    DenseArrayBase,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    Signedness,
    StringAttr,
    TensorType,
    UnitAttr,
    f32,
    f64,
)
from xdsl.ir import Attribute, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from tconv.ir import shapes
from tconv.ir.schedule import ScheduleError, parse_schedule
from tconv.ir.shapes import Shape, ShapeError
from tconv.ir.syntax import (
    Keyword,
    exact_float,
    float_attr,
    floats_attr,
    int_attr,
    ints_attr,
    parse_keywords,
    print_keywords,
)

PARAM_INITS = ("kaiming_normal", "ones", "zeros")
"""Initialisers a `tconv.param` may name (see `tconv.ir.params`)."""


def tensor_type(shape: Sequence[int]) -> TensorType:
    return TensorType(f32, list(shape))


def shape_of(value: SSAValue | Attribute) -> Shape:
    typ = value.type if isinstance(value, SSAValue) else value
    assert isinstance(typ, TensorType)
    return tuple(typ.get_shape())


def _ints(properties: Mapping[str, Attribute], name: str) -> tuple[int, ...]:
    attr = properties[name]
    assert isinstance(attr, DenseArrayBase)
    return tuple(attr.get_values())


def _int(properties: Mapping[str, Attribute], name: str) -> int:
    attr = properties[name]
    assert isinstance(attr, IntegerAttr)
    return attr.value.data


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _padding4(value: int | Sequence[int]) -> tuple[int, int, int, int]:
    """An int, a (vertical, horizontal) pair or (top, left, bottom, right)."""
    if isinstance(value, int):
        return (value,) * 4
    if len(value) == 2:
        return (value[0], value[1], value[0], value[1])
    return tuple(value)  # type: ignore[return-value]


class TconvOp(IRDLOperation):
    """Shared verifier, builder and syntax of the tensor-computing tconv ops."""

    KEYWORDS: ClassVar[tuple[Keyword, ...]] = ()
    """The op's properties, in the order the custom syntax prints them."""

    SAME_TYPE: ClassVar[bool] = False
    """Operands and result share one type, so the syntax prints it once."""

    @classmethod
    def short_name(cls) -> str:
        """The op name without the dialect prefix, used in diagnostics."""
        return cls.name.removeprefix("tconv.")

    @classmethod
    def infer_shape(
        cls, operand_shapes: Sequence[Shape], properties: Mapping[str, Attribute]
    ) -> Shape:
        raise NotImplementedError

    def _init_op(
        self,
        operands: Sequence[SSAValue | None | Sequence[SSAValue]],
        properties: dict[str, Attribute],
    ) -> None:
        """Build the op with its result type inferred from operands and properties.

        `operands` has one entry per operand definition: a value, None for an
        absent optional operand, or a list for a variadic one."""
        flat: list[SSAValue] = []
        for entry in operands:
            if isinstance(entry, SSAValue):
                flat.append(entry)
            elif entry is not None:
                flat.extend(entry)
        result = self.infer_shape([shape_of(v) for v in flat], properties)
        super().__init__(
            operands=[[] if entry is None else entry for entry in operands],
            properties=properties,
            result_types=[tensor_type(result)],
        )

    def verify_(self) -> None:
        shapes_in = []
        for index, operand in enumerate(self.operands):
            shapes_in.append(_checked_shape(self.short_name(), f"operand {index}", operand.type))
        result_shape = _checked_shape(self.short_name(), "result", self.results[0].type)
        try:
            inferred = self.infer_shape(shapes_in, self.properties)
        except ShapeError as err:
            raise VerifyException(str(err)) from err
        if inferred != result_shape:
            raise VerifyException(
                f"{self.short_name()}: result shape {'x'.join(map(str, result_shape))} "
                f"does not match the inferred shape {'x'.join(map(str, inferred))}"
            )

    def _prints_single_type(self) -> bool:
        result_type = self.results[0].type
        return self.SAME_TYPE and all(o.type == result_type for o in self.operands)

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_list(self.operands, printer.print_operand)
        print_keywords(printer, self.KEYWORDS, self.properties)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        if self._prints_single_type():
            printer.print_attribute(self.results[0].type)
        else:
            printer.print_function_type(
                [o.type for o in self.operands], [r.type for r in self.results]
            )

    @classmethod
    def parse(cls, parser: Parser) -> TconvOp:
        pos = parser.pos
        unresolved = parser.parse_optional_undelimited_comma_separated_list(
            parser.parse_optional_unresolved_operand, parser.parse_unresolved_operand
        ) or []
        properties = parse_keywords(parser, cls.KEYWORDS)
        attributes = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        if parser.parse_optional_punctuation("(") is not None:
            input_types = parser.parse_optional_undelimited_comma_separated_list(
                parser.parse_optional_type, parser.parse_type
            ) or []
            parser.parse_punctuation(")")
            parser.parse_punctuation("->")
            result_type = parser.parse_type()
        else:
            result_type = parser.parse_type()
            input_types = [result_type] * len(unresolved)
        operands = parser.resolve_operands(unresolved, input_types, pos)
        return cls.create(
            operands=list(operands),
            properties=properties,
            attributes=attributes,
            result_types=[result_type],
        )


def _checked_shape(op: str, what: str, typ: Attribute) -> Shape:
    if not isinstance(typ, TensorType):
        raise VerifyException(f"{op}: {what} must be a tensor, got {typ}")
    if typ.element_type != f32:
        if isinstance(typ.element_type, IntegerType) and what.startswith("operand"):
            raise VerifyException(
                f"{op}: {what} has element type {typ.element_type}, but {op} computes on f32 only: "
                "a quantized tensor must pass through tconv.dequantize first"
            )
        raise VerifyException(f"{op}: {what} must have element type f32, got {typ.element_type}")
    shape = tuple(typ.get_shape())
    if any(d < 1 for d in shape):
        raise VerifyException(f"{op}: {what} must have a static positive shape, got {typ}")
    return shape


@irdl_op_definition
class ParamOp(IRDLOperation):
    """A weight tensor, read from the parameter store entry `sym_name`.

    `init` says how the store initialises the entry when it is created (or
    re-created after a rewrite changed its shape).

        %w = tconv.param "layer1.0.conv1.weight" init kaiming_normal : tensor<64x64x3x3xf32>
    """

    name = "tconv.param"

    sym_name = prop_def(StringAttr)
    init = prop_def(StringAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, sym_name: str, shape: Sequence[int], init: str) -> None:
        super().__init__(
            properties={"sym_name": StringAttr(sym_name), "init": StringAttr(init)},
            result_types=[tensor_type(shape)],
        )

    @property
    def param_name(self) -> str:
        return self.sym_name.data

    def verify_(self) -> None:
        shape = _checked_shape("param", "result", self.result.type)
        if not self.sym_name.data:
            raise VerifyException("param: name must not be empty")
        if not self.sym_name.data.isascii():
            # xDSL prints other characters as escaped bytes, which read back as bytes.
            raise VerifyException(f"param: name {self.sym_name.data!r} must be ASCII")
        init = self.init.data
        if init not in PARAM_INITS:
            raise VerifyException(
                f"param '{self.sym_name.data}': unknown init '{init}' "
                f"(expected one of {', '.join(PARAM_INITS)})"
            )
        if init == "kaiming_normal" and len(shape) < 2:
            raise VerifyException(
                f"param '{self.sym_name.data}': kaiming_normal needs rank >= 2, got shape "
                f"{'x'.join(map(str, shape))}"
            )

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.sym_name.data)
        printer.print_string(f" init {self.init.data}")
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.result.type)

    @classmethod
    def parse(cls, parser: Parser) -> ParamOp:
        sym_name = parser.parse_str_literal(" (the parameter's name)")
        parser.parse_keyword("init")
        init = parser.parse_identifier(" (an initialiser name)")
        attributes = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        return cls.create(
            properties={"sym_name": StringAttr(sym_name), "init": StringAttr(init)},
            attributes=attributes,
            result_types=[parser.parse_type()],
        )


@irdl_op_definition
class Conv2dOp(TconvOp):
    """2-D convolution over NCHW with groups, strides, dilations and
    (top, left, bottom, right) zero padding; optional per-output-channel bias.
    `nonzeros` (optional) declares that no output channel has more nonzero
    weights than that (`tconv-sparsify` sets it; the TVM backend can then run
    a sparse kernel); it changes nothing the op computes.
    `schedule` is the (optional) schedule the backends honour (`tconv.ir.schedule`)."""

    name = "tconv.conv2d"
    KEYWORDS: ClassVar[tuple[Keyword, ...]] = (
        Keyword("strides", "ints"),
        Keyword("padding", "ints"),
        Keyword("dilations", "ints"),
        Keyword("groups", "int"),
        Keyword("nonzeros", "opt_int"),
        Keyword("schedule", "attr"),
    )

    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    strides = prop_def(DenseArrayBase[I64])
    padding = prop_def(DenseArrayBase[I64])
    dilations = prop_def(DenseArrayBase[I64])
    groups = prop_def(IntegerAttr[I64])
    nonzeros = opt_prop_def(IntegerAttr[I64])
    schedule = opt_prop_def(DictionaryAttr)
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(
        self,
        input: SSAValue,
        weight: SSAValue,
        bias: SSAValue | None = None,
        *,
        strides: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilations: int | Sequence[int] = 1,
        groups: int = 1,
        nonzeros: int | None = None,
        schedule: DictionaryAttr | None = None,
    ) -> None:
        properties: dict[str, Attribute] = {
            "strides": ints_attr(_pair(strides)),
            "padding": ints_attr(_padding4(padding)),
            "dilations": ints_attr(_pair(dilations)),
            "groups": int_attr(groups),
        }
        if nonzeros is not None:
            properties["nonzeros"] = int_attr(nonzeros)
        if schedule is not None:
            properties["schedule"] = schedule
        self._init_op([input, weight, bias], properties)

    @property
    def weight_nonzeros(self) -> int | None:
        """The most nonzero weights any output channel has, where declared."""
        return None if self.nonzeros is None else self.nonzeros.value.data

    def verify_(self) -> None:
        super().verify_()
        if self.nonzeros is not None:
            taps = int(np.prod(shape_of(self.weight)[1:]))
            if not 1 <= self.weight_nonzeros <= taps:
                raise VerifyException(
                    f"conv2d: nonzeros must lie in [1, {taps}] (the weights of one output channel), "
                    f"got {self.weight_nonzeros}"
                )
        if self.schedule is not None:
            # The algorithms' rules are the kernels' (imported here: the kernels build on the IR).
            from tconv.kernels.algorithm import check_algorithm, conv_shape

            try:
                schedule = parse_schedule(self.schedule)
                schedule.layouts.check_channels(shape_of(self.input)[1], shape_of(self.output)[1])
                check_algorithm(schedule, conv_shape(self), self.weight_nonzeros)
            except ScheduleError as err:
                raise VerifyException(f"conv2d: {err}") from None

    @classmethod
    def infer_shape(cls, operand_shapes, properties):
        if len(operand_shapes) not in (2, 3):
            raise ShapeError(f"conv2d: expects input, weight and optional bias, got {len(operand_shapes)} operands")
        return shapes.conv2d(
            operand_shapes[0],
            operand_shapes[1],
            operand_shapes[2] if len(operand_shapes) == 3 else None,
            _ints(properties, "strides"),
            _ints(properties, "padding"),
            _ints(properties, "dilations"),
            _int(properties, "groups"),
        )


@irdl_op_definition
class BatchNormOp(TconvOp):
    """Inference batch-norm: (x - mean) / sqrt(var + epsilon) * scale + shift, per channel."""

    name = "tconv.batch_norm"
    KEYWORDS: ClassVar[tuple[Keyword, ...]] = (Keyword("epsilon", "float"),)

    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    shift = operand_def(TensorType)
    mean = operand_def(TensorType)
    var = operand_def(TensorType)
    epsilon = prop_def(FloatAttr)
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, input, scale, shift, mean, var, *, epsilon: float = 1e-5) -> None:
        self._init_op([input, scale, shift, mean, var], {"epsilon": float_attr(epsilon)})

    def verify_(self) -> None:
        if not self.epsilon.value.data > 0:
            raise VerifyException(f"batch_norm: epsilon must be positive, got {self.epsilon.value.data}")
        super().verify_()

    @classmethod
    def infer_shape(cls, operand_shapes, properties):
        return shapes.batch_norm(*operand_shapes)


class _UnaryOp(TconvOp):
    SAME_TYPE: ClassVar[bool] = True
    input = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, input: SSAValue) -> None:
        self._init_op([input], {})

    @classmethod
    def infer_shape(cls, operand_shapes, properties):
        return shapes.elementwise(cls.short_name(), operand_shapes[0])


@irdl_op_definition
class ReluOp(_UnaryOp):
    """max(x, 0)."""

    name = "tconv.relu"


@irdl_op_definition
class Relu6Op(_UnaryOp):
    """min(max(x, 0), 6)."""

    name = "tconv.relu6"


@irdl_op_definition
class AddOp(TconvOp):
    """Elementwise sum of two tensors of one shape (the residual add)."""

    name = "tconv.add"
    SAME_TYPE: ClassVar[bool] = True

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, lhs: SSAValue, rhs: SSAValue) -> None:
        self._init_op([lhs, rhs], {})

    @classmethod
    def infer_shape(cls, operand_shapes, properties):
        return shapes.add(*operand_shapes)


class _Pool2dOp(TconvOp):
    KEYWORDS: ClassVar[tuple[Keyword, ...]] = (
        Keyword("kernel", "ints"),
        Keyword("strides", "ints"),
        Keyword("padding", "ints"),
    )

    input = operand_def(TensorType)
    kernel = prop_def(DenseArrayBase[I64])
    strides = prop_def(DenseArrayBase[I64])
    padding = prop_def(DenseArrayBase[I64])
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def _pool_properties(self, kernel, strides, padding) -> dict[str, Attribute]:
        return {
            "kernel": ints_attr(_pair(kernel)),
            "strides": ints_attr(_pair(kernel if strides is None else strides)),
            "padding": ints_attr(_padding4(padding)),
        }

    @classmethod
    def infer_shape(cls, operand_shapes, properties):
        return shapes.pool2d(
            cls.short_name(),
            operand_shapes[0],
            _ints(properties, "kernel"),
            _ints(properties, "strides"),
            _ints(properties, "padding"),
        )


@irdl_op_definition
class MaxPool2dOp(_Pool2dOp):
    """Max pooling; padded positions never win."""

    name = "tconv.max_pool2d"

    def __init__(self, input, *, kernel, strides=None, padding=0) -> None:
        self._init_op([input], self._pool_properties(kernel, strides, padding))


@irdl_op_definition
class AvgPool2dOp(_Pool2dOp):
    """Average pooling. Padded positions are left out of the divisor unless
    `count_include_pad` is set (ONNX's default, and PyTorch's `count_include_pad=False`)."""

    name = "tconv.avg_pool2d"
    KEYWORDS: ClassVar[tuple[Keyword, ...]] = _Pool2dOp.KEYWORDS + (
        Keyword("count_include_pad", "flag"),
    )

    count_include_pad = opt_prop_def(UnitAttr)

    def __init__(self, input, *, kernel, strides=None, padding=0, count_include_pad=False) -> None:
        properties = self._pool_properties(kernel, strides, padding)
        if count_include_pad:
            properties["count_include_pad"] = UnitAttr()
        self._init_op([input], properties)


@irdl_op_definition
class GlobalAvgPoolOp(TconvOp):
    """Mean over height and width: NxCxHxW → NxCx1x1."""

    name = "tconv.global_avg_pool"

    input = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, input: SSAValue) -> None:
        self._init_op([input], {})

    @classmethod
    def infer_shape(cls, operand_shapes, properties):
        return shapes.global_avg_pool(operand_shapes[0])


@irdl_op_definition
class FlattenOp(TconvOp):
    """NxCxHxW → Nx(C·H·W), in C-major order."""

    name = "tconv.flatten"

    input = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, input: SSAValue) -> None:
        self._init_op([input], {})

    @classmethod
    def infer_shape(cls, operand_shapes, properties):
        return shapes.flatten(operand_shapes[0])


@irdl_op_definition
class DenseOp(TconvOp):
    """Fully connected layer: x NxK, w MxK, optional bias M → x·wᵀ + bias."""

    name = "tconv.dense"

    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, input, weight, bias=None) -> None:
        self._init_op([input, weight, bias], {})

    @classmethod
    def infer_shape(cls, operand_shapes, properties):
        if len(operand_shapes) not in (2, 3):
            raise ShapeError(f"dense: expects input, weight and optional bias, got {len(operand_shapes)} operands")
        return shapes.dense(
            operand_shapes[0],
            operand_shapes[1],
            operand_shapes[2] if len(operand_shapes) == 3 else None,
        )


@irdl_op_definition
class ConcatOp(TconvOp):
    """Joins its inputs along `axis` (1: channels, 2: height)."""

    name = "tconv.concat"
    KEYWORDS: ClassVar[tuple[Keyword, ...]] = (Keyword("axis", "int"),)

    inputs = var_operand_def(TensorType)
    axis = prop_def(IntegerAttr[I64])
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, inputs: Sequence[SSAValue], *, axis: int = 1) -> None:
        self._init_op([list(inputs)], {"axis": int_attr(axis)})

    @classmethod
    def infer_shape(cls, operand_shapes, properties):
        return shapes.concat(operand_shapes, _int(properties, "axis"))


@irdl_op_definition
class SliceChannelsOp(TconvOp):
    """Channels [start, start + size) of an NCHW tensor."""

    name = "tconv.slice_channels"
    KEYWORDS: ClassVar[tuple[Keyword, ...]] = (Keyword("start", "int"), Keyword("size", "int"))

    input = operand_def(TensorType)
    start = prop_def(IntegerAttr[I64])
    size = prop_def(IntegerAttr[I64])
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, input: SSAValue, *, start: int, size: int) -> None:
        self._init_op([input], {"start": int_attr(start), "size": int_attr(size)})

    @classmethod
    def infer_shape(cls, operand_shapes, properties):
        return shapes.slice_channels(
            operand_shapes[0], _int(properties, "start"), _int(properties, "size")
        )


@irdl_op_definition
class SliceOp(TconvOp):
    """The range [start, start + size) of axis `axis` of an NCHW (or NC)
    tensor, every other axis whole: a row strip is `axis 2`. Axis 0 (the
    batch) is not sliced. `tconv.slice_channels` is the axis-1 case, kept as
    its own op for the channel rewrites that build it."""

    name = "tconv.slice"
    KEYWORDS: ClassVar[tuple[Keyword, ...]] = (
        Keyword("axis", "int"),
        Keyword("start", "int"),
        Keyword("size", "int"),
    )

    input = operand_def(TensorType)
    axis = prop_def(IntegerAttr[I64])
    start = prop_def(IntegerAttr[I64])
    size = prop_def(IntegerAttr[I64])
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, input: SSAValue, *, axis: int, start: int, size: int) -> None:
        self._init_op([input], {"axis": int_attr(axis), "start": int_attr(start), "size": int_attr(size)})

    @property
    def bounds(self) -> tuple[int, int, int]:
        """(axis, start, size)."""
        return self.axis.value.data, self.start.value.data, self.size.value.data

    @classmethod
    def infer_shape(cls, operand_shapes, properties):
        return shapes.slice_(
            operand_shapes[0], _int(properties, "axis"), _int(properties, "start"), _int(properties, "size")
        )


@irdl_op_definition
class ChannelShuffleOp(TconvOp):
    """ShuffleNet's shuffle: view C as (groups, C/groups), transpose, flatten."""

    name = "tconv.channel_shuffle"
    SAME_TYPE: ClassVar[bool] = True
    KEYWORDS: ClassVar[tuple[Keyword, ...]] = (Keyword("groups", "int"),)

    input = operand_def(TensorType)
    groups = prop_def(IntegerAttr[I64])
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, input: SSAValue, *, groups: int) -> None:
        self._init_op([input], {"groups": int_attr(groups)})

    @classmethod
    def infer_shape(cls, operand_shapes, properties):
        return shapes.channel_shuffle(operand_shapes[0], _int(properties, "groups"))


# Quantization ----------------------------------------------------------------

QUANT_TYPES: dict[str, tuple[IntegerType, int, int]] = {
    "i8": (IntegerType(8), -128, 127),
    "ui8": (IntegerType(8, Signedness.UNSIGNED), 0, 255),
}
"""The element types a quantized tensor may have (ONNX's int8 and uint8; the
signless `i8` holds signed values) and the range each saturates to."""


def quant_range(element_type: Attribute) -> tuple[int, int] | None:
    """(lowest, highest) of a quantized element type; None for any other type."""
    for typ, low, high in QUANT_TYPES.values():
        if element_type == typ:
            return low, high
    return None


class _QuantOp(TconvOp):
    """`tconv.quantize` and `tconv.dequantize`: ONNX's QuantizeLinear and
    DequantizeLinear. `scale` and `zero_point` hold one value (per tensor,
    no `axis`) or one per index of axis `axis` (per channel); the quantized
    side's element type (i8 or ui8) is the zero point's type."""

    KEYWORDS: ClassVar[tuple[Keyword, ...]] = (
        Keyword("scale", "floats"),
        Keyword("zero_point", "ints"),
        Keyword("axis", "opt_int"),
    )

    input = operand_def(TensorType)
    scale = prop_def(DenseArrayBase[f64])
    zero_point = prop_def(DenseArrayBase[I64])
    axis = opt_prop_def(IntegerAttr[I64])
    output = result_def(TensorType)
    traits = traits_def(Pure())

    @staticmethod
    def _properties(scale, zero_point, axis: int | None) -> dict[str, Attribute]:
        properties: dict[str, Attribute] = {
            "scale": floats_attr(scale),
            "zero_point": ints_attr(zero_point),
        }
        if axis is not None:
            properties["axis"] = int_attr(axis)
        return properties

    @property
    def scales(self) -> tuple[float, ...]:
        return tuple(self.scale.get_values())

    @property
    def zero_points(self) -> tuple[int, ...]:
        return tuple(self.zero_point.get_values())

    @property
    def channel_axis(self) -> int | None:
        """The per-channel axis; None for per-tensor parameters."""
        return None if self.axis is None else self.axis.value.data

    @property
    def quantized_type(self) -> Attribute:
        """The element type of the quantized side (i8 or ui8)."""
        raise NotImplementedError

    @classmethod
    def infer_shape(cls, operand_shapes, properties):
        if len(operand_shapes) != 1:
            raise ShapeError(f"{cls.short_name()}: expects one operand, got {len(operand_shapes)}")
        return tuple(operand_shapes[0])

    def _init_quant(self, input: SSAValue, properties: dict[str, Attribute], element_type: Attribute) -> None:
        shape = self.infer_shape([tuple(input.type.get_shape())], properties)  # type: ignore[attr-defined]
        IRDLOperation.__init__(
            self, operands=[input], properties=properties, result_types=[TensorType(element_type, list(shape))]
        )

    def _verify_side(self, what: str, typ: Attribute, quantized: bool) -> Shape:
        op = self.short_name()
        if not isinstance(typ, TensorType):
            raise VerifyException(f"{op}: {what} must be a tensor, got {typ}")
        if quantized:
            if quant_range(typ.element_type) is None:
                raise VerifyException(
                    f"{op}: {what} must have element type i8 or ui8, got {typ.element_type}"
                )
        elif typ.element_type != f32:
            raise VerifyException(f"{op}: {what} must have element type f32, got {typ.element_type}")
        shape = tuple(typ.get_shape())
        if any(d < 1 for d in shape):
            raise VerifyException(f"{op}: {what} must have a static positive shape, got {typ}")
        return shape

    def _verify_quant(self, input_quantized: bool) -> None:
        op = self.short_name()
        shape = self._verify_side("operand 0", self.input.type, input_quantized)
        result_shape = self._verify_side("result", self.output.type, not input_quantized)
        if shape != result_shape:
            raise VerifyException(
                f"{op}: result shape {shapes.format_shape(result_shape)} does not match "
                f"the operand's shape {shapes.format_shape(shape)}"
            )
        scales, zero_points, axis = self.scales, self.zero_points, self.channel_axis
        if not scales:
            raise VerifyException(f"{op}: scale needs at least one value")
        if len(scales) != len(zero_points):
            raise VerifyException(
                f"{op}: scale has {len(scales)} values but zero_point has {len(zero_points)}"
            )
        if axis is None:
            if len(scales) != 1:
                raise VerifyException(
                    f"{op}: {len(scales)} scales need an axis (per-channel); per-tensor takes one"
                )
        else:
            if not 0 <= axis < len(shape):
                raise VerifyException(
                    f"{op}: axis {axis} out of range for a rank-{len(shape)} tensor "
                    f"({shapes.format_shape(shape)}); expected 0 to {len(shape) - 1}"
                )
            if len(scales) != shape[axis]:
                raise VerifyException(
                    f"{op}: {len(scales)} scales for axis {axis} of size {shape[axis]} "
                    f"({shapes.format_shape(shape)}); per-channel needs one per index"
                )
        for index, scale in enumerate(scales):
            if not (np.isfinite(scale) and np.float32(scale) > 0 and np.isfinite(np.float32(scale))):
                raise VerifyException(
                    f"{op}: scale {exact_float(scale)} (index {index}) must be a positive, finite float32"
                )
        quantized = self.quantized_type
        low, high = quant_range(quantized)  # type: ignore[misc]
        for index, zero_point in enumerate(zero_points):
            if not low <= zero_point <= high:
                raise VerifyException(
                    f"{op}: zero_point {zero_point} (index {index}) out of range "
                    f"[{low}, {high}] of {quantized}"
                )


@irdl_op_definition
class QuantizeOp(_QuantOp):
    """f32 → i8/ui8: saturate(round_half_even(x / scale) + zero_point), as
    ONNX's QuantizeLinear; per channel along `axis` when it is given.

        %q = tconv.quantize %x scale [0.05] zero_point [128]
               : (tensor<1x8x6x6xf32>) -> tensor<1x8x6x6xui8>
    """

    name = "tconv.quantize"

    def __init__(
        self,
        input: SSAValue,
        *,
        scale: Sequence[float],
        zero_point: Sequence[int],
        axis: int | None = None,
        element_type: str = "ui8",
    ) -> None:
        self._init_quant(input, self._properties(scale, zero_point, axis), QUANT_TYPES[element_type][0])

    @property
    def quantized_type(self) -> Attribute:
        return self.output.type.element_type  # type: ignore[attr-defined]

    def verify_(self) -> None:
        self._verify_quant(input_quantized=False)


@irdl_op_definition
class DequantizeOp(_QuantOp):
    """i8/ui8 → f32: (q - zero_point) · scale, as ONNX's DequantizeLinear.

        %y = tconv.dequantize %q scale [0.05] zero_point [128]
               : (tensor<1x8x6x6xui8>) -> tensor<1x8x6x6xf32>
    """

    name = "tconv.dequantize"

    def __init__(
        self, input: SSAValue, *, scale: Sequence[float], zero_point: Sequence[int], axis: int | None = None
    ) -> None:
        self._init_quant(input, self._properties(scale, zero_point, axis), f32)

    @property
    def quantized_type(self) -> Attribute:
        return self.input.type.element_type  # type: ignore[attr-defined]

    def verify_(self) -> None:
        self._verify_quant(input_quantized=True)


QUANT_OPS: tuple[type[IRDLOperation], ...] = (QuantizeOp, DequantizeOp)
"""The ops with integer tensors on one side; every other tconv op is f32-only."""


TCONV_OPS: tuple[type[IRDLOperation], ...] = (
    ParamOp,
    Conv2dOp,
    BatchNormOp,
    ReluOp,
    Relu6Op,
    AddOp,
    MaxPool2dOp,
    AvgPool2dOp,
    GlobalAvgPoolOp,
    FlattenOp,
    DenseOp,
    ConcatOp,
    SliceChannelsOp,
    SliceOp,
    ChannelShuffleOp,
    QuantizeOp,
    DequantizeOp,
)
