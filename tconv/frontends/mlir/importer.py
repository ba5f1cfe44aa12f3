"""Upstream MLIR → tconv: `from_linalg` reads the forms that
`tconv.frontends.mlir.exporter` writes back into tconv ops.

The importer walks the function's ops in order. Ops that are only part of a
form (`tensor.empty`, `linalg.fill`, `tensor.pad`, reshapes, broadcasts,
transposes, constants) become *pending values* that describe what they hold;
the op that completes a form (a convolution, a pooling op, a collapse_shape
after a grouped convolution, ...) reads them and appends one tconv op. A
pending value used anywhere else, and any op outside the forms, is an error
located at the MLIR op (`FILE:LINE:COL: error: ...`).

Besides the exporter's own forms it reads what people write by hand or what
upstream tools print: convolutions without padding or without the strides and
dilations attributes, constants hoisted out of a `linalg.generic` body,
commuted operands of commutative arithmetic, a max-pool from the lowest finite
f32 instead of -inf, `linalg.conv_2d_ngchw_fgchw` on a transposed filter,
bias as a broadcast added after the convolution or matmul, and xDSL's
elementwise named ops (`linalg.add`, relu as `linalg.max` with zeros, relu6 as
`linalg.min` of that with sixes).

Function arguments with a `tconv.param` attribute become `tconv.param` ops,
created where the network first uses them; `tconv.init` gives their
initialiser, which otherwise follows their role (a weight `kaiming_normal`, a
batch-norm scale or variance `ones`, anything else `zeros`). The other
arguments are the network's inputs. Ops whose results are never used are left
out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects import arith, func, tensor
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, FloatAttr, ModuleOp, StringAttr, TensorType, f32, i8
from xdsl.dialects.linalg import ops as linalg
from xdsl.dialects.linalg.abstract_ops import ConvOperation, PoolingOperation
from xdsl.ir import Attribute, Block, BlockArgument, Operation, Region, SSAValue
from xdsl.ir.affine import AffineMap

from tconv.frontends.mlir import forms
from tconv.frontends.mlir.errors import located
from tconv.ir.loader import verify_module
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
    quant_range,
    shape_of,
)
from tconv.ir.shapes import Shape, ShapeError, format_shape
from tconv.semantics.reference import avg_pool_divisor

# Pending values -------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """A tensor the tconv network computes (or takes as input)."""

    value: SSAValue


@dataclass(frozen=True)
class Param:
    """A parameter argument, not yet used (so not yet a `tconv.param` op)."""

    name: str
    init: str | None
    argument: BlockArgument


@dataclass(frozen=True)
class Scalar:
    value: float


@dataclass(frozen=True)
class Splat:
    """A tensor that holds one value everywhere (a fill, a splat constant, a reshape of one)."""

    value: float
    shape: Shape


@dataclass(frozen=True)
class Constant:
    array: np.ndarray


@dataclass(frozen=True)
class Empty:
    shape: Shape


@dataclass(frozen=True)
class Padded:
    source: Entry
    low: Shape
    high: Shape
    value: float


@dataclass(frozen=True)
class Expanded:
    source: Entry
    reassociation: forms.Reassociation
    shape: Shape


@dataclass(frozen=True)
class Transposed:
    source: Entry
    permutation: tuple[int, ...]


@dataclass(frozen=True)
class Broadcast:
    source: Entry
    dimensions: tuple[int, ...]
    shape: Shape


@dataclass(frozen=True)
class Grouped:
    """A grouped convolution's NxGx(O/G)xPxQ result; its NxOxPxQ collapse is `value`."""

    value: SSAValue


@dataclass(frozen=True)
class WindowSum:
    """Window sums of a (padded) input, waiting for their divisor."""

    input: SSAValue
    kernel: Shape
    strides: Shape
    padding: Shape


@dataclass(frozen=True)
class SpatialSum:
    """Sums over height and width, waiting for their divisor."""

    input: SSAValue


Entry = (
    Tensor | Param | Scalar | Splat | Constant | Empty | Padded | Expanded | Transposed
    | Broadcast | Grouped | WindowSum | SpatialSum
)

WHAT: dict[type, str] = {
    Scalar: "a scalar constant",
    Splat: "a constant-filled tensor",
    Constant: "a constant tensor",
    Empty: "an uninitialised tensor.empty",
    Padded: "a padded tensor (tconv imports one only as a convolution or pooling input)",
    Expanded: "a reshaped tensor (tconv imports one only inside a grouped convolution or "
    "channel shuffle)",
    Transposed: "a transposed tensor (tconv imports one only as a matmul's weight or inside a "
    "channel shuffle)",
    Broadcast: "a broadcast tensor (tconv imports one only as a bias)",
    Grouped: "a grouped convolution's 5-D result (it must be collapsed to NCHW)",
    WindowSum: "window sums (they must be divided to give an average pool)",
    SpatialSum: "spatial sums (they must be divided to give a global average pool)",
}


def splat_value(entry: Entry) -> float | None:
    """The one value a constant tensor holds everywhere, if it does."""
    if isinstance(entry, Splat):
        return entry.value
    if isinstance(entry, Constant) and entry.array.size and np.all(entry.array == entry.array.flat[0]):
        return float(entry.array.flat[0])
    return None


# The importer ---------------------------------------------------------------


class LinalgImporter:
    """Builds one tconv function from one upstream MLIR function."""

    def __init__(self, function: func.FuncOp) -> None:
        self.function = function
        self.entries: dict[SSAValue, Entry] = {}
        self.params: dict[BlockArgument, SSAValue] = {}
        inputs = []
        for index, argument in enumerate(function.body.block.args):
            attrs = self._arg_attrs(index)
            if forms.PARAM_ATTR in attrs:
                self.entries[argument] = self._param(index, argument, attrs)
            else:
                inputs.append(argument)
        self.block = Block(arg_types=[argument.type for argument in inputs])
        for old, new in zip(inputs, self.block.args):
            new.name_hint = old.name_hint
            self.entries[old] = Tensor(new)
        self.outputs: list[SSAValue] = []

    def _arg_attrs(self, index: int) -> dict[str, Attribute]:
        if self.function.arg_attrs is None:
            return {}
        return dict(self.function.arg_attrs.data[index].data)

    def _param(self, index: int, argument: BlockArgument, attrs: dict[str, Attribute]) -> Param:
        name, init = attrs[forms.PARAM_ATTR], attrs.get(forms.INIT_ATTR)
        if not isinstance(name, StringAttr):
            raise located(self.function, f"argument {index}: {forms.PARAM_ATTR} must be a string, got {name}")
        if init is not None and not isinstance(init, StringAttr):
            raise located(self.function, f"argument {index}: {forms.INIT_ATTR} must be a string, got {init}")
        return Param(name.data, None if init is None else init.data, argument)

    # Values

    def entry(self, value: SSAValue, op: Operation) -> Entry:
        entry = self.entries.get(value)
        if entry is None:
            raise located(op, f"{op.name}: an operand is defined by an op tconv does not import")
        return entry

    def tensor(self, value: SSAValue, op: Operation, role: str, init: str = "zeros") -> SSAValue:
        """The tconv value of the network tensor `value` (`role` of `op`); a
        parameter is created at its first use, with `init` unless its argument
        names one."""
        return self.network_tensor(self.entry(value, op), op, role, init)

    def network_tensor(self, entry: Entry, op: Operation, role: str, init: str = "zeros") -> SSAValue:
        """`tensor` for a pending value's source, already looked up."""
        if isinstance(entry, Tensor):
            return entry.value
        if isinstance(entry, Param):
            return self.materialize(entry, init)
        raise located(op, f"{op.name}: {role} must be a tensor of the network, found {WHAT[type(entry)]}")

    def materialize(self, param: Param, init: str) -> SSAValue:
        value = self.params.get(param.argument)
        if value is None:
            shape = shape_of(param.argument)
            op = ParamOp(param.name, shape, param.init or init)
            op.location = self.function.location
            self.block.add_op(op)
            value = op.result
            value.name_hint = param.argument.name_hint
            self.params[param.argument] = value
        return value

    def add(self, source: Operation, build: Callable[[], Operation], result: SSAValue | None = None) -> SSAValue:
        """Append the tconv op `build()` makes for the MLIR op `source`, check
        that it computes the type `result` (source's result) declares, and
        record it as `result`'s value."""
        try:
            op = build()
        except ShapeError as err:
            raise located(source, str(err)) from None
        op.location = source.location
        self.block.add_op(op)
        value = op.results[0]
        if result is not None:
            expected = shape_of(result)
            if shape_of(value) != expected:
                raise located(
                    source,
                    f"{source.name}: result type has shape {format_shape(expected)}, but the "
                    f"{op.name} it forms computes {format_shape(shape_of(value))}",
                )
            value.name_hint = result.name_hint
            self.entries[result] = Tensor(value)
        return value

    def finish(self) -> func.FuncOp:
        """The tconv function, without the ops whose results nothing uses."""
        for op in reversed(list(self.block.ops)):
            if not isinstance(op, func.ReturnOp) and not any(r.uses for r in op.results):
                op.detach()
                op.erase()
        return func.FuncOp(
            self.function.sym_name.data,
            ([arg.type for arg in self.block.args], [v.type for v in self.outputs]),
            Region(self.block),
        )


Importer = Callable[[LinalgImporter, Operation], None]

IMPORTERS: dict[type[Operation], Importer] = {}
"""What each upstream op contributes to a tconv network."""


def imports(*op_types: type[Operation]) -> Callable[[Importer], Importer]:
    def register(function: Importer) -> Importer:
        for op_type in op_types:
            IMPORTERS[op_type] = function
        return function

    return register


# Constants and placeholders -------------------------------------------------


@imports(arith.ConstantOp)
def import_constant(im: LinalgImporter, op: arith.ConstantOp) -> None:
    value = op.value
    if isinstance(value, FloatAttr) and value.type == f32:
        im.entries[op.result] = Scalar(value.value.data)
    elif isinstance(value, DenseIntOrFPElementsAttr) and value.get_element_type() == f32:
        array = np.asarray(value.get_values(), np.float32).reshape(value.get_shape())
        im.entries[op.result] = Constant(array)
    else:
        raise located(op, f"arith.constant: tconv imports f32 scalars and f32 tensors, got {value}")


@imports(tensor.EmptyOp)
def import_empty(im: LinalgImporter, op: tensor.EmptyOp) -> None:
    if op.dynamic_sizes:
        raise located(op, "tensor.empty: dynamic sizes are not supported")
    im.entries[op.tensor] = Empty(shape_of(op.tensor))


@imports(linalg.FillOp)
def import_fill(im: LinalgImporter, op: linalg.FillOp) -> None:
    value = im.entry(op.inputs[0], op)
    if not isinstance(value, Scalar) or len(op.res) != 1:
        raise located(op, "linalg.fill: expected one f32 constant filling one tensor")
    im.entries[op.res[0]] = Splat(value.value, shape_of(op.res[0]))


def yielded_constant(region: Region) -> float | None:
    """The constant a tensor.pad body yields, wherever the constant is defined."""
    terminator = region.block.last_op
    if isinstance(terminator, tensor.YieldOp) and len(terminator.operands) == 1:
        owner = terminator.operands[0].owner
        if isinstance(owner, arith.ConstantOp) and isinstance(owner.value, FloatAttr):
            return owner.value.value.data
    return None


@imports(tensor.PadOp)
def import_pad(im: LinalgImporter, op: tensor.PadOp) -> None:
    if op.low or op.high:
        raise located(op, "tensor.pad: dynamic padding is not supported")
    low, high = op.static_low.get_values(), op.static_high.get_values()
    if len(low) != 4 or any(low[:2]) or any(high[:2]):
        raise located(
            op,
            "tensor.pad: tconv pads the height and width of NCHW tensors only, "
            f"got low {list(low)} high {list(high)}",
        )
    value = yielded_constant(op.region)
    if value is None:
        raise located(op, "tensor.pad: the body must yield an f32 constant")
    im.entries[op.result] = Padded(im.entry(op.source, op), tuple(low), tuple(high), value)


@imports(tensor.ExpandShapeOp)
def import_expand_shape(im: LinalgImporter, op: tensor.ExpandShapeOp) -> None:
    source = im.entry(op.src, op)
    shape = shape_of(op.result)
    if (value := splat_value(source)) is not None:
        im.entries[op.result] = Splat(value, shape)
    else:
        im.entries[op.result] = Expanded(source, forms.reassociation_of(op.reassociation), shape)


@imports(linalg.TransposeOp)
def import_transpose(im: LinalgImporter, op: linalg.TransposeOp) -> None:
    im.entries[op.res[0]] = Transposed(im.entry(op.inputs[0], op), tuple(op.permutation.get_values()))


@imports(linalg.BroadcastOp)
def import_broadcast(im: LinalgImporter, op: linalg.BroadcastOp) -> None:
    im.entries[op.result[0]] = Broadcast(
        im.entry(op.input, op), tuple(op.dimensions.get_values()), shape_of(op.result[0])
    )


# Convolution, matmul and their accumulators ---------------------------------


def unpadded(im: LinalgImporter, entry: Entry, op: Operation, accepts: Callable[[float], bool],
             pad_name: str) -> tuple[SSAValue, tuple[int, int, int, int]]:
    """The tensor under an optional tensor.pad, and the (top, left, bottom, right) padding."""
    if isinstance(entry, Padded):
        if not accepts(entry.value):
            raise located(op, f"{op.name}: the input must be padded with {pad_name}, got {entry.value}")
        padding = (entry.low[2], entry.low[3], entry.high[2], entry.high[3])
        return im.network_tensor(entry.source, op, "the padded input"), padding
    return im.network_tensor(entry, op, "the input"), (0, 0, 0, 0)


def bias_of(im: LinalgImporter, entry: Entry, op: Operation, rank: int) -> SSAValue | None:
    """The bias an accumulator starts from: None for zeros, the vector of a broadcast."""
    if splat_value(entry) == 0.0:
        return None
    if isinstance(entry, Broadcast) and entry.dimensions == forms.bias_dimensions(rank):
        return im.network_tensor(entry.source, op, "the broadcast bias")
    raise located(
        op,
        f"{op.name}: the accumulator must be zeros or a bias broadcast along dimensions "
        f"{list(forms.bias_dimensions(rank))}, found {WHAT.get(type(entry), 'a network tensor')}",
    )


def window(op: ConvOperation | PoolingOperation, name: str) -> tuple[int, ...]:
    values = tuple(getattr(op, name).get_values())
    if len(values) != 2:
        raise located(op, f"{op.name}: {name} must have 2 values, got {list(values)}")
    return values


@imports(linalg.Conv2DNchwFchwOp)
def import_conv(im: LinalgImporter, op: linalg.Conv2DNchwFchwOp) -> None:
    x, padding = unpadded(im, im.entry(op.inputs[0], op), op, lambda v: v == 0.0, "zeros")
    weight = im.tensor(op.inputs[1], op, "the filter", "kaiming_normal")
    bias = bias_of(im, im.entry(op.outputs[0], op), op, 4)
    strides, dilations = window(op, "strides"), window(op, "dilations")
    im.add(
        op,
        lambda: Conv2dOp(x, weight, bias, strides=strides, padding=padding, dilations=dilations),
        op.res[0],
    )


def grouped_filter(im: LinalgImporter, op: ConvOperation) -> SSAValue:
    """The tconv weight under a gfchw filter's reshape (or fgchw's reshape and transpose)."""
    entry = im.entry(op.inputs[1], op)
    if isinstance(op, linalg.Conv2DNgchwFgchwOp):
        if not (isinstance(entry, Transposed) and entry.permutation == forms.GROUPED_FILTER_PERMUTATION):
            raise located(
                op,
                f"{op.name}: the filter must be a linalg.transpose "
                f"{list(forms.GROUPED_FILTER_PERMUTATION)} of a reshaped OxCxKHxKW weight",
            )
        entry = entry.source
    if not (isinstance(entry, Expanded) and entry.reassociation == forms.GROUPED_WEIGHT):
        raise located(
            op,
            f"{op.name}: the filter must be a tensor.expand_shape "
            f"{_groups_text(forms.GROUPED_WEIGHT)} of an OxCxKHxKW weight",
        )
    return im.network_tensor(entry.source, op, "the filter", "kaiming_normal")


def _groups_text(groups: forms.Reassociation) -> str:
    return "[" + ", ".join("[" + ", ".join(map(str, g)) + "]" for g in groups) + "]"


@imports(linalg.Conv2DNgchwGfchwOp, linalg.Conv2DNgchwFgchwOp)
def import_grouped_conv(im: LinalgImporter, op: ConvOperation) -> None:
    grouped_input = im.entry(op.inputs[0], op)
    if not (isinstance(grouped_input, Expanded) and grouped_input.reassociation == forms.GROUPED_ACTIVATION):
        raise located(
            op,
            f"{op.name}: the input must be a tensor.expand_shape "
            f"{_groups_text(forms.GROUPED_ACTIVATION)} of an NCHW tensor",
        )
    groups = grouped_input.shape[1]
    x, padding = unpadded(im, grouped_input.source, op, lambda v: v == 0.0, "zeros")
    weight = grouped_filter(im, op)
    init = im.entry(op.outputs[0], op)
    if isinstance(init, Expanded) and init.reassociation == forms.GROUPED_ACTIVATION:
        init = init.source
    bias = bias_of(im, init, op, 4)
    strides, dilations = window(op, "strides"), window(op, "dilations")
    value = im.add(
        op,
        lambda: Conv2dOp(x, weight, bias, strides=strides, padding=padding, dilations=dilations, groups=groups),
    )
    n, g, f, p, q = shape_of(op.res[0])
    if g != groups or shape_of(value) != (n, g * f, p, q):
        raise located(
            op,
            f"{op.name}: result type has shape {format_shape(shape_of(op.res[0]))}, but the grouped "
            f"convolution it forms computes {format_shape(shape_of(value))} in {groups} groups",
        )
    im.entries[op.res[0]] = Grouped(value)


@imports(linalg.MatmulOp)
def import_matmul(im: LinalgImporter, op: linalg.MatmulOp) -> None:
    default = linalg.MatmulOp.get_irdl_definition().properties["indexing_maps"].default_value
    if op.indexing_maps != default:
        raise located(op, "linalg.matmul: tconv imports the default indexing maps only")
    x = im.tensor(op.inputs[0], op, "the left-hand side")
    weight = im.entry(op.inputs[1], op)
    if not (isinstance(weight, Transposed) and weight.permutation == forms.MATMUL_WEIGHT_PERMUTATION):
        raise located(op, "linalg.matmul: the right-hand side must be a linalg.transpose [1, 0] of an MxK weight")
    w = im.network_tensor(weight.source, op, "the transposed weight", "kaiming_normal")
    bias = bias_of(im, im.entry(op.outputs[0], op), op, 2)
    im.add(op, lambda: DenseOp(x, w, bias), op.res[0])


# Pooling --------------------------------------------------------------------


@imports(linalg.PoolingNchwMaxOp)
def import_max_pool(im: LinalgImporter, op: linalg.PoolingNchwMaxOp) -> None:
    x, padding = unpadded(im, im.entry(op.inputs[0], op), op, forms.is_minus_infinity, "-inf")
    start = splat_value(im.entry(op.outputs[0], op))
    if start is None or not forms.is_minus_infinity(start):
        raise located(op, "linalg.pooling_nchw_max: the output must start as -inf (a linalg.fill)")
    if window(op, "dilations") != (1, 1):
        raise located(op, "linalg.pooling_nchw_max: tconv pools without dilation")
    kernel = shape_of(op.inputs[1])
    strides = window(op, "strides")
    im.add(op, lambda: MaxPool2dOp(x, kernel=kernel, strides=strides, padding=padding), op.res[0])


# linalg.generic -------------------------------------------------------------

Expression = tuple
"""A body's yielded value as a tree: ("arg", i), ("const", v) or (op name, *operands)."""

COMMUTATIVE = {"arith.addf", "arith.mulf", "arith.maximumf", "arith.minimumf"}


def expression(value: SSAValue, block: Block) -> Expression | None:
    """`value` as a tree over the block's arguments and f32 constants, defined
    anywhere; None if it reads anything else."""
    if isinstance(value, BlockArgument):
        return ("arg", value.index) if value.block is block else None
    owner = value.owner
    if isinstance(owner, arith.ConstantOp):
        return ("const", owner.value.value.data) if isinstance(owner.value, FloatAttr) else None
    if owner.parent_block() is not block or owner.regions or len(owner.results) != 1:
        return None
    operands = [expression(operand, block) for operand in owner.operands]
    if any(o is None for o in operands):
        return None
    if owner.name in COMMUTATIVE:
        operands.sort(key=repr)
    return (owner.name, *operands)


def body_expression(region: Region) -> Expression | None:
    """What a linalg body yields, as an expression tree."""
    block = region.block
    terminator = block.last_op
    if not isinstance(terminator, linalg.YieldOp) or len(terminator.operands) != 1:
        return None
    return expression(terminator.operands[0], block)


def constants_in(tree: Expression) -> list[float]:
    if tree[0] == "const":
        return [tree[1]]
    if tree[0] == "arg":
        return []
    return [value for operand in tree[1:] for value in constants_in(operand)]


def same_maps(op: linalg.GenericOp, expected: Sequence) -> bool:
    actual = [attr.data for attr in op.indexing_maps]
    wanted: list[AffineMap] = [attr.data for attr in expected]
    return len(actual) == len(wanted) and all(
        a.num_dims == w.num_dims and forms.linear_form(a) == forms.linear_form(w)
        for a, w in zip(actual, wanted)
    )


@dataclass(frozen=True)
class GenericForm:
    """One `linalg.generic` form: its body as built by `forms`, its operand
    count and iterator types; `read` checks the rest and records its value."""

    name: str
    inputs: int
    iterators: Callable[[int], tuple[str, ...]]
    body: Callable[[Expression], Region | None]
    read: Callable[[LinalgImporter, linalg.GenericOp], None]


def _read_elementwise(build: Callable[..., Operation]) -> Callable[[LinalgImporter, linalg.GenericOp], None]:
    def read(im: LinalgImporter, op: linalg.GenericOp) -> None:
        rank = len(shape_of(op.res[0]))
        if not same_maps(op, forms.elementwise_maps(rank, len(op.inputs))):
            raise located(op, "linalg.generic: an elementwise op must index every operand by the identity")
        operands = [im.tensor(x, op, f"operand {i}") for i, x in enumerate(op.inputs)]
        im.add(op, lambda: build(*operands), op.res[0])

    return read


def _read_add(im: LinalgImporter, op: linalg.GenericOp) -> None:
    rank = len(shape_of(op.res[0]))
    if not same_maps(op, forms.elementwise_maps(rank, 2)):
        raise located(op, "linalg.generic: an elementwise op must index every operand by the identity")
    import_sum(im, op, op.inputs[0], op.inputs[1])


def _read_batch_norm(im: LinalgImporter, op: linalg.GenericOp) -> None:
    rank = len(shape_of(op.res[0]))
    if not same_maps(op, forms.per_channel_maps(rank, 4)):
        raise located(
            op,
            "linalg.generic: batch norm must index the input by the identity and "
            "the four vectors by dimension 1",
        )
    epsilon = shortest_f32(constants_in(body_expression(op.body))[0])
    roles = ("the input", "the scale", "the shift", "the mean", "the variance")
    inits = ("zeros", "ones", "zeros", "zeros", "ones")
    x, scale, shift, mean, var = (
        im.tensor(v, op, role, init) for v, role, init in zip(op.inputs, roles, inits)
    )
    im.add(op, lambda: BatchNormOp(x, scale, shift, mean, var, epsilon=epsilon), op.res[0])


def shortest_f32(value: float) -> float:
    """The shortest decimal that reads back as the same f32: 1e-5 for the f32
    nearest 1e-5, so an epsilon survives the trip through f32 text."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))


def _read_window_sum(im: LinalgImporter, op: linalg.GenericOp) -> None:
    form = forms.linear_form(op.indexing_maps.data[0].data)
    if form is None or len(form) != 4:
        raise located(op, "linalg.generic: a window sum must read the input at (n, c, oh·sh + kh, ow·sw + kw)")
    strides = (form[2][0][2], form[3][0][3])
    if not same_maps(op, forms.window_sum_maps(strides)):
        raise located(op, "linalg.generic: a window sum must index like linalg.pooling_nchw_sum without dilation")
    x, padding = unpadded(im, im.entry(op.inputs[0], op), op, lambda v: v == 0.0, "zeros")
    if splat_value(im.entry(op.outputs[0], op)) != 0.0:
        raise located(op, "linalg.generic: a window sum must start from zeros")
    im.entries[op.res[0]] = WindowSum(x, shape_of(op.inputs[1]), strides, padding)


def _read_spatial_sum(im: LinalgImporter, op: linalg.GenericOp) -> None:
    if not same_maps(op, forms.spatial_sum_maps()):
        raise located(op, "linalg.generic: a spatial sum must map (n, c, h, w) to the output at (n, c, 0, 0)")
    if splat_value(im.entry(op.outputs[0], op)) != 0.0:
        raise located(op, "linalg.generic: a spatial sum must start from zeros")
    im.entries[op.res[0]] = SpatialSum(im.tensor(op.inputs[0], op, "the input"))


def _read_division(im: LinalgImporter, op: linalg.GenericOp) -> None:
    if not same_maps(op, forms.divide_maps()):
        raise located(op, "linalg.generic: a division must index the sums by the identity and the divisor by (h, w)")
    sums = im.entry(op.inputs[0], op)
    divisor = im.entry(op.inputs[1], op)
    if not isinstance(divisor, Constant | Splat):
        raise located(op, "linalg.generic: the divisor must be an f32 constant")
    output = shape_of(op.res[0])
    divisor_array = (
        np.full(output[2:], divisor.value, np.float32) if isinstance(divisor, Splat) else divisor.array
    )
    if isinstance(sums, SpatialSum):
        _, _, h, w = shape_of(sums.input)
        if not np.all(divisor_array == h * w):
            raise located(op, f"linalg.generic: a global average pool divides by {h * w} (height x width)")
        im.add(op, lambda: GlobalAvgPoolOp(sums.input), op.res[0])
    elif isinstance(sums, WindowSum):
        im.add(op, lambda: average_pool(op, sums, divisor_array), op.res[0])
    else:
        raise located(op, "linalg.generic: tconv imports a division only of window or spatial sums")


def average_pool(op: linalg.GenericOp, sums: WindowSum, divisor: np.ndarray) -> AvgPool2dOp:
    """The avg_pool2d whose divisor (the reference executor's) is `divisor`."""
    placeholder = np.broadcast_to(np.float32(0), shape_of(sums.input))
    for count_include_pad in (False, True):
        pool = AvgPool2dOp(
            sums.input, kernel=sums.kernel, strides=sums.strides, padding=sums.padding,
            count_include_pad=count_include_pad,
        )
        expected = np.broadcast_to(avg_pool_divisor(pool, placeholder), shape_of(pool.output))[0, 0]
        if divisor.shape == expected.shape and np.array_equal(divisor, expected):
            return pool
        pool.erase()
    raise located(
        op,
        "linalg.generic: the divisor of an average pool must be the window size everywhere "
        "(count_include_pad) or the number of input positions in each window",
    )


QUANTIZE_CONVERSIONS = {"arith.fptosi": "i8", "arith.fptoui": "ui8"}
DEQUANTIZE_CONVERSIONS = {"arith.sitofp": "i8", "arith.uitofp": "ui8"}


def _subtree(tree: Expression, name: str) -> Expression | None:
    """The first node of `tree` (depth first) computed by op `name`."""
    if tree[0] == name:
        return tree
    if tree[0] in ("arg", "const"):
        return None
    return next((found for operand in tree[1:] if (found := _subtree(operand, name)) is not None), None)


def _constant_operand(node: Expression | None) -> float | None:
    """The constant operand of a binary node (None: the node reads no constant)."""
    if node is None:
        return None
    return next((operand[1] for operand in node[1:] if operand[0] == "const"), None)


def quantization_parameters(tree: Expression) -> tuple[str, float | None, float | None] | None:
    """(element type, scale, zero point) of a quantize or dequantize body
    (scale and zero point None where they are block arguments: per channel);
    None for any other body."""
    if tree[0] in QUANTIZE_CONVERSIONS:
        element = QUANTIZE_CONVERSIONS[tree[0]]
        scale = _constant_operand(_subtree(tree, "arith.divf"))
        return element, scale, _constant_operand(_subtree(tree, "arith.addf"))
    conversion = next((name for name in DEQUANTIZE_CONVERSIONS if _subtree(tree, name) is not None), None)
    if tree[0] == "arith.mulf" and conversion is not None:
        zero_point = _constant_operand(_subtree(tree, "arith.subf"))
        return DEQUANTIZE_CONVERSIONS[conversion], _constant_operand(tree), zero_point
    return None


def _quantization_body(body: Callable[..., Region], per_channel: bool) -> Callable[[Expression], Region | None]:
    """The body a quantize or dequantize form of `tree`'s element type and constants would have."""
    def build(tree: Expression) -> Region | None:
        parameters = quantization_parameters(tree)
        if parameters is None:
            return None
        element, scale, zero_point = parameters
        if per_channel:
            return body(None, None, element)
        return None if scale is None or zero_point is None else body(scale, zero_point, element)

    return build


def _read_quantization(build: Callable[..., Operation]) -> Callable[[LinalgImporter, linalg.GenericOp], None]:
    """A quantize or dequantize: per tensor (its constants in the body) or per
    channel (two constant vectors indexed by one dimension, the axis)."""
    def read(im: LinalgImporter, op: linalg.GenericOp) -> None:
        element, scale, zero_point = quantization_parameters(body_expression(op.body))
        rank = len(shape_of(op.res[0]))
        if len(op.inputs) == 1:
            if not same_maps(op, forms.elementwise_maps(rank, 1)):
                raise located(op, "linalg.generic: a quantization must index its input by the identity")
            axis, scales, zero_points = None, [scale], [zero_point]
        else:
            vector = forms.linear_form(op.indexing_maps.data[1].data)
            axis = vector[0][0].index(1) if vector and len(vector) == 1 and 1 in vector[0][0] else None
            if axis is None or not same_maps(op, forms.per_channel_vector_maps(rank, axis)):
                raise located(op, "linalg.generic: a per-channel quantization must index its input by the identity "
                              "and its scales and zero points by one dimension, the axis")
            scales, zero_points = (_vector(im, value, op, role, shape_of(op.res[0])[axis])
                                   for value, role in ((op.inputs[1], "scales"), (op.inputs[2], "zero points")))
        if any(z != round(z) for z in zero_points):
            raise located(op, f"linalg.generic: zero points must be whole numbers, got {zero_points}")
        x = im.tensor(op.inputs[0], op, "the input")
        zero_points = [int(z) for z in zero_points]
        scales = [shortest_f32(s) for s in scales]  # the f32 the body computes with, written as briefly as it reads
        im.add(op, lambda: build(x, scales, zero_points, axis, element), op.res[0])

    return read


def _vector(im: LinalgImporter, value: SSAValue, op: Operation, role: str, length: int) -> list[float]:
    entry = im.entry(value, op)
    if isinstance(entry, Splat) and entry.shape == (length,):
        return [entry.value] * length
    if isinstance(entry, Constant) and entry.array.shape == (length,):
        return [float(v) for v in entry.array]
    raise located(op, f"linalg.generic: the {role} of a per-channel quantization must be an f32 constant "
                  f"of {length} values")


def _quantize(x, scales, zero_points, axis, element):
    return QuantizeOp(x, scale=scales, zero_point=zero_points, axis=axis, element_type=element)


def _dequantize(x, scales, zero_points, axis, element):
    if quant_range(x.type.element_type) != quant_range(QUANT_TYPES[element][0]):
        raise ShapeError(f"dequantize reads its integers as {element}, but they were quantized as "
                         f"{x.type.element_type}")
    return DequantizeOp(x, scale=scales, zero_point=zero_points, axis=axis)


GENERIC_FORMS: tuple[GenericForm, ...] = (
    GenericForm("relu", 1, forms.all_parallel, lambda _: forms.relu_body(), _read_elementwise(ReluOp)),
    GenericForm("relu6", 1, forms.all_parallel, lambda _: forms.relu6_body(), _read_elementwise(Relu6Op)),
    GenericForm("add", 2, forms.all_parallel, lambda _: forms.add_body(), _read_add),
    GenericForm(
        "batch norm", 5, forms.all_parallel,
        lambda tree: forms.batch_norm_body(constants_in(tree)[0] if constants_in(tree) else 0.0),
        _read_batch_norm,
    ),
    GenericForm("window sum", 2, lambda rank: forms.WINDOW_SUM_ITERATORS, lambda _: forms.sum_body(3), _read_window_sum),
    GenericForm("spatial sum", 1, lambda rank: forms.SPATIAL_SUM_ITERATORS, lambda _: forms.sum_body(2), _read_spatial_sum),
    GenericForm("division", 2, forms.all_parallel, lambda _: forms.divide_body(), _read_division),
    GenericForm("quantize", 1, forms.all_parallel, _quantization_body(forms.quantize_body, False),
                _read_quantization(_quantize)),
    GenericForm("per-channel quantize", 3, forms.all_parallel, _quantization_body(forms.quantize_body, True),
                _read_quantization(_quantize)),
    GenericForm("dequantize", 1, forms.all_parallel, _quantization_body(forms.dequantize_body, False),
                _read_quantization(_dequantize)),
    GenericForm("per-channel dequantize", 3, forms.all_parallel, _quantization_body(forms.dequantize_body, True),
                _read_quantization(_dequantize)),
)


@imports(linalg.GenericOp)
def import_generic(im: LinalgImporter, op: linalg.GenericOp) -> None:
    tree = body_expression(op.body)
    iterators = forms.iterator_names(op.iterator_types)
    if tree is not None and len(op.outputs) == 1 and len(op.res) == 1:
        for form in GENERIC_FORMS:
            if (
                len(op.inputs) == form.inputs
                and iterators == form.iterators(len(iterators))
                and (body := form.body(tree)) is not None
                and body_expression(body) == tree
            ):
                form.read(im, op)
                return
    names = ", ".join(form.name for form in GENERIC_FORMS)
    raise located(op, f"linalg.generic: not one of the forms tconv imports ({names})")


# Elementwise named ops (xDSL's, and upstream's before linalg.elementwise) ---


def _with_bias(im: LinalgImporter, op: Operation, value: SSAValue, bias: Broadcast) -> bool:
    """Fold `value + broadcast bias` into the convolution or dense op that
    computes `value`, when it has no bias and nothing else uses it."""
    entry = im.entry(value, op)
    if not isinstance(entry, Tensor) or not value.has_one_use():
        return False
    producer = entry.value.owner
    if not isinstance(producer, Conv2dOp | DenseOp) or producer.bias is not None:
        return False
    rank = len(shape_of(value))
    bias_value = bias_of(im, bias, op, rank)
    if isinstance(producer, Conv2dOp):
        build = lambda: Conv2dOp(
            producer.input, producer.weight, bias_value, strides=producer.strides.get_values(),
            padding=producer.padding.get_values(), dilations=producer.dilations.get_values(),
            groups=producer.groups.value.data,
        )
    else:
        build = lambda: DenseOp(producer.input, producer.weight, bias_value)
    im.add(op, build, op.results[0])
    producer.detach()
    producer.erase()
    return True


def import_sum(im: LinalgImporter, op: Operation, lhs: SSAValue, rhs: SSAValue) -> None:
    for value, other in ((lhs, rhs), (rhs, lhs)):
        other_entry = im.entry(other, op)
        if isinstance(other_entry, Broadcast) and _with_bias(im, op, value, other_entry):
            return
    a, b = im.tensor(lhs, op, "operand 0"), im.tensor(rhs, op, "operand 1")
    im.add(op, lambda: AddOp(a, b), op.results[0])


@imports(linalg.AddOp)
def import_named_add(im: LinalgImporter, op: linalg.AddOp) -> None:
    import_sum(im, op, op.inputs[0], op.inputs[1])


def _against_constant(im: LinalgImporter, op: Operation, constant: float) -> SSAValue | None:
    """The other operand of a two-input op one of whose inputs is `constant` everywhere."""
    first, second = (im.entry(v, op) for v in op.operands[:2])
    if splat_value(second) == constant:
        return im.tensor(op.operands[0], op, "operand 0")
    if splat_value(first) == constant:
        return im.tensor(op.operands[1], op, "operand 1")
    return None


@imports(linalg.MaxOp)
def import_named_max(im: LinalgImporter, op: linalg.MaxOp) -> None:
    x = _against_constant(im, op, 0.0)
    if x is None:
        raise located(op, "linalg.max: tconv imports it only as relu, the max with a zero-filled tensor")
    im.add(op, lambda: ReluOp(x), op.res[0])


@imports(linalg.MinOp)
def import_named_min(im: LinalgImporter, op: linalg.MinOp) -> None:
    x = _against_constant(im, op, 6.0)
    if x is None or not isinstance(x.owner, ReluOp):
        raise located(op, "linalg.min: tconv imports it only as relu6, the min of a relu with a tensor filled with 6")
    relu_input = x.owner.input
    im.add(op, lambda: Relu6Op(relu_input), op.res[0])


# Layout ---------------------------------------------------------------------


@imports(tensor.CollapseShapeOp)
def import_collapse_shape(im: LinalgImporter, op: tensor.CollapseShapeOp) -> None:
    source = im.entry(op.src, op)
    groups = forms.reassociation_of(op.reassociation)
    if (value := splat_value(source)) is not None:
        im.entries[op.result] = Splat(value, shape_of(op.result))
    elif isinstance(source, Grouped) and groups == forms.GROUPED_ACTIVATION:
        source.value.name_hint = op.result.name_hint
        im.entries[op.result] = Tensor(source.value)
    elif (
        isinstance(source, Transposed)
        and source.permutation == forms.SHUFFLE_PERMUTATION
        and isinstance(source.source, Expanded)
        and source.source.reassociation == forms.GROUPED_ACTIVATION
        and groups == forms.GROUPED_ACTIVATION
    ):
        x = im.network_tensor(source.source.source, op, "the shuffled input")
        shuffle_groups = source.source.shape[1]
        im.add(op, lambda: ChannelShuffleOp(x, groups=shuffle_groups), op.result)
    elif isinstance(source, Tensor | Param) and groups == forms.FLATTEN:
        x = im.network_tensor(source, op, "the input")
        im.add(op, lambda: FlattenOp(x), op.result)
    else:
        raise located(
            op,
            f"tensor.collapse_shape: tconv imports a flatten {_groups_text(forms.FLATTEN)} of an NCHW "
            f"tensor, or a collapse {_groups_text(forms.GROUPED_ACTIVATION)} ending a grouped "
            "convolution or a channel shuffle",
        )


@imports(tensor.ConcatOp)
def import_concat(im: LinalgImporter, op: tensor.ConcatOp) -> None:
    xs = [im.tensor(x, op, f"operand {i}") for i, x in enumerate(op.inputs)]
    axis = op.dim.value.data
    im.add(op, lambda: ConcatOp(xs, axis=axis), op.result)


@imports(tensor.ExtractSliceOp)
def import_extract_slice(im: LinalgImporter, op: tensor.ExtractSliceOp) -> None:
    if op.offsets or op.sizes or op.strides:
        raise located(op, "tensor.extract_slice: dynamic offsets, sizes or strides are not supported")
    x = im.tensor(op.source, op, "the source")
    shape = shape_of(x)
    offsets = op.static_offsets.get_values()
    sizes = op.static_sizes.get_values()
    strides = op.static_strides.get_values()
    if not len(offsets) == len(sizes) == len(strides) == len(shape) or any(s != 1 for s in strides):
        raise located(op, "tensor.extract_slice: tconv imports unit-stride, rank-preserving slices only")
    cut = [d for d in range(len(shape)) if (offsets[d], sizes[d]) != (0, shape[d])]
    if len(cut) > 1 or 0 in cut:
        raise located(
            op, "tensor.extract_slice: tconv imports a slice of one axis (not the batch), every other axis whole; "
            f"this one cuts axes {cut}"
        )
    axis = cut[0] if cut else 1
    start, size = offsets[axis], sizes[axis]
    if axis == 1 and len(shape) == 4:
        im.add(op, lambda: SliceChannelsOp(x, start=start, size=size), op.result)
    else:
        im.add(op, lambda: SliceOp(x, axis=axis, start=start, size=size), op.result)


@imports(func.ReturnOp)
def import_return(im: LinalgImporter, op: func.ReturnOp) -> None:
    im.outputs = [im.tensor(v, op, f"result {i}") for i, v in enumerate(op.arguments)]
    im.block.add_op(func.ReturnOp(*im.outputs))


# Entry point ----------------------------------------------------------------


def check_static_f32(function: func.FuncOp) -> None:
    """Every tensor is static and f32, as in a tconv network (or i8, the
    storage of quantized integers, inside the network)."""

    def check(typ: Attribute, op: Operation) -> None:
        if isinstance(typ, TensorType):
            if typ.element_type != f32 and not (typ.element_type == i8 and op is not function):
                raise located(op, f"{op.name}: tconv networks compute f32 tensors (i8 where quantized), got {typ}")
            if any(d < 0 for d in typ.get_shape()):
                raise located(op, f"{op.name}: dynamic shapes are not supported, got {typ}")

    for typ in function.function_type.inputs:
        check(typ, function)
    for op in function.body.block.ops:
        for result in op.results:
            check(result.type, op)


def single_linalg_function(module: ModuleOp) -> func.FuncOp:
    functions = [op for op in module.ops if isinstance(op, func.FuncOp)]
    others = [op for op in module.ops if not isinstance(op, func.FuncOp)]
    if others:
        raise located(others[0], f"{others[0].name}: a network module holds one func.func and nothing else")
    if len(functions) != 1 or not functions[0].body.blocks:
        where = functions[1] if len(functions) > 1 else module
        raise located(where, f"expected one func.func with a body, found {len(functions)} functions")
    if len(functions[0].body.blocks) != 1:
        raise located(functions[0], "func.func: the network must be a single block")
    return functions[0]


def from_linalg(module: ModuleOp) -> ModuleOp:
    """The verified tconv module of an upstream MLIR module in the imported forms."""
    function = single_linalg_function(module)
    check_static_f32(function)
    im = LinalgImporter(function)
    for op in function.body.block.ops:
        importer = IMPORTERS.get(type(op))
        if importer is None:
            raise located(op, f"{op.name}: not an op tconv imports")
        importer(im, op)
    result = ModuleOp([im.finish()])
    verify_module(result)
    return result
