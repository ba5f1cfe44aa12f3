"""The upstream MLIR forms of tconv's ops: the one place that says how a tconv
op is spelled in `func`, `linalg`, `tensor`, `arith` and `math`.

The exporter builds these forms and the importer recognises them, so both
sides take every reassociation, indexing map and `linalg.generic` body from
here. Where xDSL 0.74 has no upstream named op for a computation
(`linalg.pooling_nchw_sum`, a batch-norm, a division), the form is the
`linalg.generic` that upstream's `linalg-generalize-named-ops` would write for
it, which `mlir-opt` accepts as it is. Elementwise ops are `linalg.generic`
too: recent upstream MLIR (LLVM 24) no longer has the elementwise named ops
(`linalg.add`, `linalg.max`, ...) that xDSL still knows, and a generic reads
the same in every MLIR version. The text needs LLVM 19 or newer
(`tensor.expand_shape ... output_shape`).

Parameters are function arguments after the network's inputs; each carries
its parameter-store key and initialiser as argument attributes:

    func.func @net(%x: tensor<1x3x32x32xf32>,
                   %w: tensor<16x3x3x3xf32> {tconv.param = "conv1.weight", tconv.init = "kaiming_normal"})
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects import arith, tensor
from xdsl.dialects import math as math_dialect
from xdsl.dialects.builtin import (
    AffineMapAttr,
    ArrayAttr,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IndexType,
    IntegerAttr,
    TensorType,
    f32,
    i8,
    i64,
)
from xdsl.dialects.linalg import ops as linalg
from xdsl.dialects.linalg.attrs import IteratorType, IteratorTypeAttr
from xdsl.ir import Block, Region, SSAValue
from xdsl.ir.affine import AffineExpr, AffineMap

PARAM_ATTR = "tconv.param"
"""Function-argument attribute: the parameter-store key of a parameter argument."""

INIT_ATTR = "tconv.init"
"""Function-argument attribute: the parameter's initialiser (`tconv.param`'s `init`)."""

Reassociation = tuple[tuple[int, ...], ...]

GROUPED_ACTIVATION: Reassociation = ((0,), (1, 2), (3,), (4,))
"""NxCxHxW <-> NxGx(C/G)xHxW: the channels split into groups (grouped
convolution inputs and outputs, channel shuffle)."""

GROUPED_WEIGHT: Reassociation = ((0, 1), (2,), (3,), (4,))
"""Ox(C/G)xKHxKW <-> Gx(O/G)x(C/G)xKHxKW: tconv's grouped weight is group-major,
so it is `linalg.conv_2d_ngchw_gfchw`'s filter after a reshape alone."""

FLATTEN: Reassociation = ((0,), (1, 2, 3))
"""NxCxHxW -> Nx(C·H·W)."""

SHUFFLE_PERMUTATION = (0, 2, 1, 3, 4)
"""NxGx(C/G)xHxW -> Nx(C/G)xGxHxW: channel shuffle's transpose."""

GROUPED_FILTER_PERMUTATION = (1, 0, 2, 3, 4)
"""Gx(O/G)x... <-> (O/G)xGx...: from the gfchw filter layout to fgchw's."""

MATMUL_WEIGHT_PERMUTATION = (1, 0)
"""MxK -> KxM: a dense weight as `linalg.matmul`'s right-hand side."""


def bias_dimensions(rank: int) -> tuple[int, ...]:
    """The dimensions `linalg.broadcast` adds to a per-channel vector to fill a
    rank-`rank` result (every one but the channel dimension 1)."""
    return tuple(d for d in range(rank) if d != 1)


def reassociation_attr(groups: Reassociation) -> ArrayAttr[ArrayAttr[IntegerAttr]]:
    return ArrayAttr(ArrayAttr(IntegerAttr(d, i64) for d in group) for group in groups)


def reassociation_of(attr: ArrayAttr[ArrayAttr[IntegerAttr]]) -> Reassociation:
    return tuple(tuple(d.value.data for d in group) for group in attr)


def window_attr(values: Sequence[int]) -> DenseIntOrFPElementsAttr:
    """Strides or dilations of a linalg convolution or pooling: `dense<[a, b]> : tensor<2xi64>`."""
    return DenseIntOrFPElementsAttr.from_list(TensorType(i64, [len(values)]), list(values))


def f32_attr(value: float) -> FloatAttr:
    return FloatAttr(value, f32)


def dense_f32(values: Sequence[float], shape: Sequence[int]) -> DenseIntOrFPElementsAttr:
    return DenseIntOrFPElementsAttr.from_list(TensorType(f32, list(shape)), list(values))


LOWEST_F32 = -3.4028234663852886e38
"""The most negative finite f32: a max-pool padding or start value as good as -inf."""


def is_minus_infinity(value: float) -> bool:
    """Whether `value` never wins a max: -inf or the lowest finite f32."""
    return value == -math.inf or value == LOWEST_F32


# Iterator types -------------------------------------------------------------


def iterator_types(names: Sequence[str]) -> list[IteratorTypeAttr]:
    return [IteratorTypeAttr(IteratorType(name)) for name in names]


def iterator_names(iterators: ArrayAttr[IteratorTypeAttr]) -> tuple[str, ...]:
    return tuple(str(iterator.data) for iterator in iterators)


def all_parallel(rank: int) -> tuple[str, ...]:
    return ("parallel",) * rank


WINDOW_SUM_ITERATORS = all_parallel(4) + ("reduction",) * 2
"""(n, c, oh, ow) parallel, (kh, kw) summed."""

SPATIAL_SUM_ITERATORS = all_parallel(2) + ("reduction",) * 2
"""(n, c) parallel, (h, w) summed."""


# Indexing maps --------------------------------------------------------------


def identity(rank: int) -> AffineMapAttr:
    return AffineMapAttr(AffineMap.identity(rank))


def window_sum_maps(strides: Sequence[int]) -> list[AffineMapAttr]:
    """`linalg.pooling_nchw_sum`'s maps over (n, c, oh, ow, kh, kw): the input at
    (n, c, oh·sh + kh, ow·sw + kw), the window operand (kh, kw), the output."""
    sh, sw = strides
    return [
        AffineMapAttr(AffineMap.from_callable(lambda n, c, oh, ow, kh, kw: (n, c, oh * sh + kh, ow * sw + kw))),
        AffineMapAttr(AffineMap.from_callable(lambda n, c, oh, ow, kh, kw: (kh, kw))),
        AffineMapAttr(AffineMap.from_callable(lambda n, c, oh, ow, kh, kw: (n, c, oh, ow))),
    ]



def spatial_sum_maps() -> list[AffineMapAttr]:
    """Over (n, c, h, w): the input, and the NxCx1x1 output at (n, c, 0, 0)."""
    return [
        identity(4),
        AffineMapAttr(AffineMap.from_callable(lambda n, c, h, w: (n, c, 0, 0))),
    ]



def divide_maps() -> list[AffineMapAttr]:
    """Over (n, c, h, w): the sums, a HxW divisor shared by every image and
    channel, and the output."""
    return [
        identity(4),
        AffineMapAttr(AffineMap.from_callable(lambda n, c, h, w: (h, w))),
        identity(4),
    ]


def elementwise_maps(rank: int, operands: int) -> list[AffineMapAttr]:
    """`operands` inputs and the output, all indexed alike."""
    return [identity(rank)] * (operands + 1)


def per_channel_maps(rank: int, operands: int) -> list[AffineMapAttr]:
    """The input, `operands` per-channel vectors indexed by dimension 1, the output."""
    channel = AffineMapAttr(AffineMap(rank, 0, (AffineExpr.dimension(1),)))
    return [identity(rank), *([channel] * operands), identity(rank)]


def linear_form(map: AffineMap) -> tuple[tuple[tuple[int, ...], int], ...] | None:
    """Each result of a symbol-free map as (coefficient per dimension, constant),
    or None if some result is not linear (`mod`, `floordiv`, `ceildiv`).

    Comparing these instead of the expressions accepts every spelling of one map
    (`d2 * 2 + d4`, `d4 + d2 * 2`, `d2 * 2 + d4 * 1`)."""
    if map.num_symbols:
        return None
    dims = map.num_dims
    origin = map.eval([0] * dims, [])
    columns = [
        map.eval([1 if d == i else 0 for d in range(dims)], []) for i in range(dims)
    ]
    form = tuple(
        (tuple(column[r] - origin[r] for column in columns), origin[r])
        for r in range(len(map.results))
    )
    # A non-linear result disagrees with its linear form somewhere: try two
    # points that no small modulus or divisor maps linearly.
    for point in ([7, 11, 13, 17, 19, 23, 29, 31][:dims], [3, 1, 4, 1, 5, 9, 2, 6][:dims]):
        point = point + [5] * (dims - len(point))
        expected = tuple(
            sum(c * p for c, p in zip(coefficients, point)) + constant
            for coefficients, constant in form
        )
        if map.eval(point, []) != expected:
            return None
    return form


# linalg.generic bodies ------------------------------------------------------


def _body(arg_count: int) -> Block:
    return Block(arg_types=[f32] * arg_count)


def sum_body(arg_count: int) -> Region:
    """acc + in, with the input first and the accumulator last (window operands between)."""
    block = _body(arg_count)
    total = arith.AddfOp(block.args[0], block.args[-1])
    block.add_ops([total, linalg.YieldOp(total.result)])
    return Region(block)


def add_body() -> Region:
    """lhs + rhs, over (lhs, rhs, out)."""
    block = _body(3)
    total = arith.AddfOp(block.args[0], block.args[1])
    block.add_ops([total, linalg.YieldOp(total.result)])
    return Region(block)


def relu_body() -> Region:
    """max(x, 0), over (x, out)."""
    block = _body(2)
    zero = arith.ConstantOp(f32_attr(0.0))
    result = arith.MaximumfOp(block.args[0], zero.result)
    block.add_ops([zero, result, linalg.YieldOp(result.result)])
    return Region(block)


def relu6_body() -> Region:
    """min(max(x, 0), 6), over (x, out)."""
    block = _body(2)
    zero = arith.ConstantOp(f32_attr(0.0))
    six = arith.ConstantOp(f32_attr(6.0))
    lower = arith.MaximumfOp(block.args[0], zero.result)
    result = arith.MinimumfOp(lower.result, six.result)
    block.add_ops([zero, six, lower, result, linalg.YieldOp(result.result)])
    return Region(block)


def divide_body() -> Region:
    """sum / divisor, over (sum, divisor, out)."""
    block = _body(3)
    quotient = arith.DivfOp(block.args[0], block.args[1])
    block.add_ops([quotient, linalg.YieldOp(quotient.result)])
    return Region(block)


def batch_norm_body(epsilon: float) -> Region:
    """(x - mean) / sqrt(var + epsilon) · scale + shift, over (x, scale, shift, mean, var, out)."""
    block = _body(6)
    x, scale, shift, mean, var, _ = block.args
    eps = arith.ConstantOp(f32_attr(epsilon))
    shifted_var = arith.AddfOp(var, eps.result)
    deviation = math_dialect.SqrtOp(shifted_var.result)
    centred = arith.SubfOp(x, mean)
    normalised = arith.DivfOp(centred.result, deviation.result)
    scaled = arith.MulfOp(normalised.result, scale)
    result = arith.AddfOp(scaled.result, shift)
    block.add_ops([eps, shifted_var, deviation, centred, normalised, scaled, result, linalg.YieldOp(result.result)])
    return Region(block)


QUANTIZED_RANGES = {"i8": (-128.0, 127.0), "ui8": (0.0, 255.0)}
"""The saturation range of each quantized element type. Upstream `arith`
computes on signless integers, so both are stored as `i8`: a uint8 tensor's
bytes are its values, and the conversions say how to read them (`fptoui`,
`uitofp` for uint8; `fptosi`, `sitofp` for int8)."""


def per_channel_vector_maps(rank: int, axis: int) -> list[AffineMapAttr]:
    """x by the identity, a scale and a zero-point vector by dimension `axis`, out by the identity."""
    vector = AffineMapAttr(AffineMap(rank, 0, (AffineExpr.dimension(axis),)))
    return [identity(rank), vector, vector, identity(rank)]


def _quantization_block(source, result, scale: float | None, zero_point: float | None):
    """A quantize or dequantize body's block over (x: `source`, out: `result`),
    with the scale and zero point as constants, or per channel (None) as
    block arguments between: (block, the constants' ops, scale, zero point)."""
    if scale is None or zero_point is None:
        block = Block(arg_types=[source, f32, f32, result])
        return block, [], block.args[1], block.args[2]
    block = Block(arg_types=[source, result])
    constants = [arith.ConstantOp(f32_attr(scale)), arith.ConstantOp(f32_attr(zero_point))]
    return block, constants, constants[0].result, constants[1].result


def quantize_body(scale: float | None, zero_point: float | None, element_type: str) -> Region:
    """ONNX's QuantizeLinear: clamp(roundeven(x / scale) + zero_point) converted
    to `element_type`'s integers (stored i8), over (x, out), or per channel
    (scale and zero point None) over (x, scale, zero_point, out)."""
    block, ops, scale_value, zero_value = _quantization_block(f32, i8, scale, zero_point)
    low, high = (arith.ConstantOp(f32_attr(v)) for v in QUANTIZED_RANGES[element_type])
    scaled = arith.DivfOp(block.args[0], scale_value)
    rounded = math_dialect.RoundEvenOp(scaled.result)
    shifted = arith.AddfOp(rounded.result, zero_value)
    lower = arith.MaximumfOp(shifted.result, low.result)
    clamped = arith.MinimumfOp(lower.result, high.result)
    convert = arith.FPToSIOp if element_type == "i8" else arith.FPToUIOp
    converted = convert(clamped.result, i8)
    ops += [low, high, scaled, rounded, shifted, lower, clamped, converted, linalg.YieldOp(converted.result)]
    block.add_ops(ops)
    return Region(block)


def dequantize_body(scale: float | None, zero_point: float | None, element_type: str) -> Region:
    """ONNX's DequantizeLinear: (q - zero_point) · scale, q read as
    `element_type`'s integers from its i8 storage, over (q, out), or per
    channel (scale and zero point None) over (q, scale, zero_point, out)."""
    block, ops, scale_value, zero_value = _quantization_block(i8, f32, scale, zero_point)
    convert = arith.SIToFPOp if element_type == "i8" else arith.UIToFPOp
    value = convert(block.args[0], f32)
    centred = arith.SubfOp(value.result, zero_value)
    result = arith.MulfOp(centred.result, scale_value)
    ops += [value, centred, result, linalg.YieldOp(result.result)]
    block.add_ops(ops)
    return Region(block)


def pad_region(rank: int, value: SSAValue) -> Region:
    """tensor.pad's body: every padded position holds `value`."""
    block = Block(arg_types=[IndexType()] * rank)
    block.add_op(tensor.YieldOp(value))
    return Region(block)
