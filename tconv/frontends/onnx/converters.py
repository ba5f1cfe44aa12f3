"""One converter per ONNX op type: from an ONNX node to tconv ops.

A converter reads its node through a `NodeContext` and returns the node's
output values in order (None for an output nobody reads). It fails, naming
the node, on any input, attribute or shape tconv cannot represent exactly.
Nodes whose inputs are all constants never reach a converter: the importer
evaluates them (see `tconv.frontends.onnx.folding`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from xdsl.ir import SSAValue

from tconv.frontends.onnx.node import GroupedChannels, NodeContext, OnnxImportError, Value, format_dims, shape_of_value
from tconv.frontends.onnx.windows import ceil_mode_extra, check_pair, window_padding
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

Converter = Callable[[NodeContext], Sequence[Value | None]]

CONVERTERS: dict[str, Converter] = {}
"""The converter of every ONNX op type (default domain) tconv imports."""

SHUFFLE_PERM = (0, 2, 1, 3, 4)
"""The Transpose in the middle of a channel shuffle: swap groups and channels per group."""


def converts(op_type: str) -> Callable[[Converter], Converter]:
    """Register the decorated function as the converter of `op_type`."""

    def register(converter: Converter) -> Converter:
        CONVERTERS[op_type] = converter
        return converter

    return register


def _axis(ctx: NodeContext, axis: int, rank: int) -> int:
    """A possibly negative axis as an index into a rank-`rank` shape."""
    if not -rank <= axis < rank:
        ctx.fail(f"axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _require_rank4(ctx: NodeContext, x: SSAValue, what: str) -> tuple[int, int, int, int]:
    shape = shape_of(x)
    if len(shape) != 4:
        ctx.fail(f"{what} needs a 4-D NCHW input, got {format_dims(shape)}")
    return shape  # type: ignore[return-value]


def _scalar(ctx: NodeContext, array: np.ndarray | None, what: str) -> float | None:
    if array is None:
        return None
    if array.size != 1:
        ctx.fail(f"{what} must be a scalar, got shape {format_dims(array.shape)}")
    return float(array.reshape(()))


# Pass-through ----------------------------------------------------------------


@converts("Identity")
def identity(ctx: NodeContext):
    return [ctx.value(0)]


@converts("Dropout")
def dropout(ctx: NodeContext):
    """At inference, Dropout passes its input through."""
    ctx.ignore("ratio", "seed")
    if ctx.opset >= 12 and ctx.has_input(2) and bool(np.any(ctx.constant(2, "training_mode"))):
        ctx.fail("training_mode is true; only inference Dropout (an identity) is supported")
    ctx.require_only_output("the dropout mask")
    return [ctx.value(0)]


# Convolution, normalisation, activations -------------------------------------


@converts("Conv")
def conv(ctx: NodeContext):
    x = ctx.activation(0)
    weight = ctx.constant(1, "weight")
    if len(shape_of(x)) != 4 or weight.ndim != 4:
        ctx.fail(
            f"only 2-D convolutions are supported (4-D input and weight), got input "
            f"{format_dims(shape_of(x))} and weight {format_dims(weight.shape)}"
        )
    kernel = tuple(weight.shape[2:])
    declared = ctx.attr("kernel_shape", None)
    if declared is not None and tuple(declared) != kernel:
        ctx.fail(f"kernel_shape {list(declared)} differs from the weight's {list(kernel)}")
    strides = check_pair(ctx, "strides", ctx.attr("strides", (1, 1)))
    dilations = check_pair(ctx, "dilations", ctx.attr("dilations", (1, 1)))
    padding = window_padding(ctx, shape_of(x)[2:], kernel, strides, dilations)
    w = ctx.param(1, "kaiming_normal")
    bias = ctx.param(2, "zeros") if ctx.has_input(2) else None
    return [
        ctx.emit(
            Conv2dOp, x, w, bias,
            strides=strides, padding=padding, dilations=dilations, groups=ctx.attr("group", 1),
        )
    ]


@converts("BatchNormalization")
def batch_norm(ctx: NodeContext):
    x = ctx.activation(0)
    ctx.ignore("momentum")
    epsilon = float(ctx.attr("epsilon", 1e-5))
    if not epsilon > 0:
        ctx.fail(f"epsilon must be positive, got {epsilon}")
    if ctx.opset < 9 and ctx.attr("spatial", 1) != 1:
        ctx.fail("spatial=0 (statistics per channel and position) is not supported")
    if ctx.opset >= 14 and ctx.attr("training_mode", 0) != 0:
        ctx.fail("training_mode=1 is not supported; only the inference form")
    ctx.require_only_output("a training statistic")
    operands = [
        ctx.param(1, "ones"),  # scale
        ctx.param(2, "zeros"),  # shift
        ctx.param(3, "zeros"),  # mean
        ctx.param(4, "ones"),  # var
    ]
    return [ctx.emit(BatchNormOp, x, *operands, epsilon=epsilon)]


@converts("Relu")
def relu(ctx: NodeContext):
    return [ctx.emit(ReluOp, ctx.activation(0))]


@converts("Clip")
def clip(ctx: NodeContext):
    """ReLU6 (min 0, max 6) or ReLU (min 0, no max). Before opset 11 the bounds
    are attributes, since then optional inputs."""
    x = ctx.activation(0)
    if ctx.opset < 11:
        low, high = ctx.attr("min", None), ctx.attr("max", None)
    else:
        low = _scalar(ctx, ctx.optional_constant(1, "min"), "min")
        high = _scalar(ctx, ctx.optional_constant(2, "max"), "max")
    # Old exporters spell "no bound" as the float32 extremes.
    largest = float(np.finfo(np.float32).max)
    if low is not None and low <= -largest:
        low = None
    if high is not None and high >= largest:
        high = None
    if low == 0 and high == 6:
        return [ctx.emit(Relu6Op, x)]
    if low == 0 and high is None:
        return [ctx.emit(ReluOp, x)]
    ctx.fail(
        f"Clip with min {low} and max {high} is not supported "
        "(only min 0 with max 6, ReLU6, or with no max, ReLU)"
    )


# Add ---------------------------------------------------------------------------


@converts("Add")
def add(ctx: NodeContext):
    """The sum of two computed tensors of one shape, or a constant added to the
    result of a bias-free Conv, Gemm or MatMul (which becomes its bias)."""
    lhs, rhs = ctx.value(0), ctx.value(1)
    if isinstance(lhs, np.ndarray):
        return [_fold_bias(ctx, tensor_index=1, constant_index=0)]
    if isinstance(rhs, np.ndarray):
        return [_fold_bias(ctx, tensor_index=0, constant_index=1)]
    a, b = ctx.activation(0), ctx.activation(1)
    if shape_of(a) != shape_of(b):
        ctx.fail(
            f"adds {format_dims(shape_of(a))} and {format_dims(shape_of(b))}; "
            "only tensors of one shape are supported (no broadcasting)"
        )
    return [ctx.emit(AddOp, a, b)]


def _fold_bias(ctx: NodeContext, tensor_index: int, constant_index: int) -> SSAValue:
    """Rebuild the Conv or dense op that produced input `tensor_index` with the
    constant as its bias (ONNX MatMul+Add is a dense layer)."""
    x = ctx.activation(tensor_index)
    producer = x.owner
    if (
        not isinstance(producer, (Conv2dOp, DenseOp))
        or producer.bias is not None
        or not ctx.only_reader(tensor_index)
    ):
        ctx.fail(
            "adds a constant to a computed tensor; tconv supports that only as the bias of a "
            "Conv, Gemm or MatMul that has none and whose result nothing else reads"
        )
    constant = ctx.constant(constant_index)
    channels, rank = shape_of(x)[1], len(shape_of(x))
    # The shapes that broadcast as one value per channel (axis 1) of the result;
    # a length-C vector would broadcast over the width of an NCHW tensor.
    per_channel = {(channels, 1, 1), (1, channels, 1, 1)} if rank == 4 else {(channels,), (1, channels)}
    if constant.size == 1 and constant.ndim <= rank:
        values = np.full((channels,), constant.reshape(()), np.float32)
    elif tuple(constant.shape) in per_channel:
        values = constant.reshape(-1)
    else:
        ctx.fail(
            f"adds a constant of shape {format_dims(constant.shape)} to {format_dims(shape_of(x))}, "
            f"which is not one value per channel, so it cannot become a bias"
        )
    bias = ctx.param(constant_index, "zeros", array=np.ascontiguousarray(values, np.float32))
    rebuilt = type(producer).create(
        operands=[*producer.operands, bias],
        properties=dict(producer.properties),
        result_types=[x.type],
    )
    result = ctx.graph.append(rebuilt)
    x.replace_all_uses_with(result)
    producer.detach()
    producer.erase()
    return result


# Pooling ---------------------------------------------------------------------


def _pool(ctx: NodeContext, average: bool) -> SSAValue:
    x = ctx.activation(0)
    _, _, height, width = _require_rank4(ctx, x, ctx.op_type)
    kernel = check_pair(ctx, "kernel_shape", ctx.attr("kernel_shape"))
    strides = check_pair(ctx, "strides", ctx.attr("strides", (1, 1)))
    dilations = check_pair(ctx, "dilations", ctx.attr("dilations", (1, 1)))
    if dilations != (1, 1):
        ctx.fail(f"dilations {list(dilations)} are not supported for pooling (only 1)")
    top, left, bottom, right = window_padding(ctx, (height, width), kernel, strides, (1, 1))
    count_include_pad = bool(ctx.attr("count_include_pad", 0)) if average else False
    if ctx.attr("ceil_mode", 0):
        extra_bottom = ceil_mode_extra(height, kernel[0], strides[0], top, bottom)
        extra_right = ceil_mode_extra(width, kernel[1], strides[1], left, right)
        if (extra_bottom or extra_right) and count_include_pad:
            # The divisor would count the explicit padding but not the rounded-up part.
            ctx.fail("ceil_mode=1 with count_include_pad=1 changes the output size here; not supported")
        bottom, right = bottom + extra_bottom, right + extra_right
    if not average:
        ctx.ignore("storage_order")  # only the layout of the indices output
        ctx.require_only_output("the argmax indices")
        return ctx.emit(MaxPool2dOp, x, kernel=kernel, strides=strides, padding=(top, left, bottom, right))
    return ctx.emit(
        AvgPool2dOp, x,
        kernel=kernel, strides=strides, padding=(top, left, bottom, right),
        count_include_pad=count_include_pad,
    )


@converts("MaxPool")
def max_pool(ctx: NodeContext):
    return [_pool(ctx, average=False)]


@converts("AveragePool")
def average_pool(ctx: NodeContext):
    return [_pool(ctx, average=True)]


@converts("GlobalAveragePool")
def global_average_pool(ctx: NodeContext):
    x = ctx.activation(0)
    _require_rank4(ctx, x, "GlobalAveragePool")
    return [ctx.emit(GlobalAvgPoolOp, x)]


@converts("ReduceMean")
def reduce_mean(ctx: NodeContext):
    """The mean over height and width (`x.mean([2, 3])` in PyTorch): a global
    average pool, followed by a flatten unless the reduced axes are kept."""
    x = ctx.activation(0)
    shape = _require_rank4(ctx, x, "ReduceMean")
    keepdims = ctx.attr("keepdims", 1)
    if ctx.opset < 18:
        axes = ctx.attr("axes", None)
    else:
        array = ctx.optional_constant(1, "axes")
        axes = None if array is None else tuple(int(a) for a in array.reshape(-1))
        if ctx.attr("noop_with_empty_axes", 0) and not axes:
            return [x]
    axes = tuple(range(4)) if axes is None else tuple(sorted(_axis(ctx, a, 4) for a in axes))
    if axes != (2, 3):
        ctx.fail(f"reduces axes {list(axes)} of {format_dims(shape)}; only height and width (2, 3) are supported")
    pooled = ctx.emit(GlobalAvgPoolOp, x)
    return [pooled if keepdims else ctx.emit(FlattenOp, pooled)]


# Dense -------------------------------------------------------------------------


def _rank2_input(ctx: NodeContext) -> SSAValue:
    x = ctx.activation(0)
    if len(shape_of(x)) != 2:
        ctx.fail(f"needs a 2-D (NxK) input, got {format_dims(shape_of(x))}")
    return x


@converts("Gemm")
def gemm(ctx: NodeContext):
    """alpha·A·op(B) + beta·C with A computed and B, C constant: a dense layer
    whose weight is alpha·op(B)ᵀ and whose bias is beta·C."""
    x = _rank2_input(ctx)
    if ctx.attr("transA", 0):
        ctx.fail("transA=1 (a transposed computed input) is not supported")
    b = ctx.constant(1, "B")
    if b.ndim != 2:
        ctx.fail(f"B must be 2-D, got {format_dims(b.shape)}")
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    transposed = bool(ctx.attr("transB", 0))
    weight = b if transposed else b.T  # dense keeps the weight as M x K
    if alpha != 1:
        weight = weight * np.float32(alpha)
    w = ctx.param(1, "kaiming_normal", array=np.ascontiguousarray(weight, np.float32))
    bias = None
    if ctx.has_input(2) and beta != 0:
        bias = _gemm_bias(ctx, ctx.constant(2, "C"), weight.shape[0], beta)
    return [ctx.emit(DenseOp, x, w, bias)]


def _gemm_bias(ctx: NodeContext, c: np.ndarray, features: int, beta: float) -> SSAValue:
    """C as a bias: one value per output feature, the same for every row."""
    if not (c.ndim <= 1 or (c.ndim == 2 and c.shape[0] == 1)) or c.size not in (1, features):
        ctx.fail(
            f"C of shape {format_dims(c.shape)} is not one value per output feature ({features}); "
            "a per-row C is not supported"
        )
    values = np.broadcast_to(c.reshape(-1), (features,)) * np.float32(beta)
    return ctx.param(2, "zeros", array=np.ascontiguousarray(values, np.float32))


@converts("MatMul")
def matmul(ctx: NodeContext):
    """A computed NxK times a constant KxM: a dense layer without bias (an Add
    of a constant right after it becomes the bias)."""
    x = _rank2_input(ctx)
    b = ctx.constant(1, "weight")
    if b.ndim != 2:
        ctx.fail(f"the weight must be 2-D, got {format_dims(b.shape)}")
    w = ctx.param(1, "kaiming_normal", array=np.ascontiguousarray(b.T))
    return [ctx.emit(DenseOp, x, w)]


# Layout ------------------------------------------------------------------------


@converts("Flatten")
def flatten(ctx: NodeContext):
    x = ctx.activation(0)
    shape = shape_of(x)
    axis = ctx.attr("axis", 1)
    # Flatten's axis counts the boundaries between dimensions: 0 to rank.
    if not -len(shape) <= axis <= len(shape):
        ctx.fail(f"axis {axis} out of range for rank {len(shape)}")
    axis = axis + len(shape) if axis < 0 else axis
    if len(shape) == 2 and axis == 1:
        return [x]
    if len(shape) == 4 and axis == 1:
        return [ctx.emit(FlattenOp, x)]
    ctx.fail(f"Flatten of {format_dims(shape)} at axis {axis} is not supported (only NCHW at axis 1)")


@converts("Squeeze")
def squeeze(ctx: NodeContext):
    """Squeezing height and width of NxCx1x1 is a flatten."""
    x = ctx.activation(0)
    shape = shape_of(x)
    if ctx.opset < 13:
        axes = ctx.attr("axes", None)
    else:
        axes = ctx.optional_constant(1, "axes")
        axes = None if axes is None else tuple(int(a) for a in axes.reshape(-1))
    if axes is None:
        axes = tuple(i for i, d in enumerate(shape) if d == 1)
    axes = tuple(sorted(_axis(ctx, a, len(shape)) for a in axes))
    if len(shape) == 4 and shape[2:] == (1, 1) and axes == (2, 3):
        return [ctx.emit(FlattenOp, x)]
    ctx.fail(f"Squeeze of {format_dims(shape)} on axes {list(axes)} is not supported (only NxCx1x1 on 2, 3)")


@converts("Concat")
def concat(ctx: NodeContext):
    inputs = [ctx.activation(i) for i in range(ctx.input_count) if ctx.has_input(i)]
    rank = len(shape_of(inputs[0]))
    axis = _axis(ctx, ctx.attr("axis"), rank)
    if axis == 0:
        ctx.fail("concatenation along the batch axis is not supported")
    if len(inputs) == 1:
        return inputs
    return [ctx.emit(ConcatOp, inputs, axis=axis)]


def _channel_slice(ctx: NodeContext, x: SSAValue, start: int, end: int) -> SSAValue:
    if start == 0 and end == shape_of(x)[1]:
        return x
    return ctx.emit(SliceChannelsOp, x, start=start, size=end - start)


@converts("Split")
def split(ctx: NodeContext):
    """A split of the channels into consecutive slices."""
    x = ctx.activation(0)
    shape = shape_of(x)
    axis = _axis(ctx, ctx.attr("axis", 0), len(shape))
    if axis != 1:
        ctx.fail(f"splits axis {axis}; only channel splits (axis 1) are supported")
    channels, count = shape[1], len(ctx.node.output)
    if ctx.opset < 13:
        sizes = ctx.attr("split", None)
    else:
        sizes = ctx.optional_constant(1, "split")
        sizes = None if sizes is None else [int(s) for s in sizes.reshape(-1)]
    num_outputs = ctx.attr("num_outputs", None) if ctx.opset >= 18 else None
    if sizes is None:
        if num_outputs is not None:
            # Opset 18: equal parts of ceil(C / n) channels, the last one smaller.
            part = -(-channels // num_outputs)
            sizes = [part] * (count - 1) + [channels - part * (count - 1)]
        elif channels % count:
            ctx.fail(f"{channels} channels do not split evenly into {count} outputs")
        else:
            sizes = [channels // count] * count
    if len(sizes) != count or sum(sizes) != channels or any(s < 0 for s in sizes):
        ctx.fail(f"split sizes {list(sizes)} do not divide {channels} channels into {count} outputs")
    outputs: list[Value | None] = []
    start = 0
    for index, size in enumerate(sizes):
        if not ctx.output_live(index):
            outputs.append(None)
        elif size == 0:
            ctx.fail(f"output {index} is an empty channel range")
        else:
            outputs.append(_channel_slice(ctx, x, start, start + size))
        start += size
    return outputs


@converts("Slice")
def slice_(ctx: NodeContext):
    """Constant ranges [start, end) with step 1 on any axes but the batch: one
    `tconv.slice` per cut axis (`tconv.slice_channels` for the channels), in
    axis order; an axis left whole needs none."""
    x = ctx.activation(0)
    shape = shape_of(x)
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes, steps = ctx.attr("axes", tuple(range(len(starts)))), (1,) * len(starts)
    else:
        starts = [int(v) for v in ctx.constant(1, "starts").reshape(-1)]
        ends = [int(v) for v in ctx.constant(2, "ends").reshape(-1)]
        axes_array, steps_array = ctx.optional_constant(3, "axes"), ctx.optional_constant(4, "steps")
        axes = range(len(starts)) if axes_array is None else [int(v) for v in axes_array.reshape(-1)]
        steps = [1] * len(starts) if steps_array is None else [int(v) for v in steps_array.reshape(-1)]
    if not len(starts) == len(ends) == len(axes) == len(steps):
        ctx.fail(
            f"starts, ends, axes and steps differ in length: "
            f"{list(starts)}, {list(ends)}, {list(axes)}, {list(steps)}"
        )
    ranges = {axis: (0, size) for axis, size in enumerate(shape)}
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(ctx, axis, len(shape))
        if step != 1:
            ctx.fail(f"step {step} on axis {axis} is not supported (only 1)")
        size = shape[axis]
        ranges[axis] = tuple(min(max(v + size if v < 0 else v, 0), size) for v in (start, end))
    for axis, (start, end) in sorted(ranges.items()):
        if (start, end) == (0, shape[axis]):
            continue
        if axis == 0:
            ctx.fail(f"slices the batch axis to [{start}, {end}) of {shape[0]}; the batch axis cannot be sliced")
        if end <= start:
            ctx.fail(f"the range [{start}, {end}) of axis {axis} is empty")
        if axis == 1:
            x = _channel_slice(ctx, x, start, end)
        else:
            x = ctx.emit(SliceOp, x, axis=axis, start=start, size=end - start)
    return [x]


@converts("Shape")
def shape(ctx: NodeContext):
    """Shapes are static, so a Shape is a constant."""
    dims = np.array(shape_of_value(ctx.value(0)), np.int64)
    if ctx.opset >= 15:
        rank = len(dims)
        start, end = ctx.attr("start", 0), ctx.attr("end", rank)
        dims = dims[slice(start, end)]
    return [dims]


def _reshape_target(
    ctx: NodeContext, source: Sequence[int], target: np.ndarray, allowzero: bool
) -> tuple[int, ...]:
    """The result shape of a Reshape: 0 copies the input's dimension (unless
    `allowzero`), one -1 takes what is left."""
    dims = [int(d) for d in target.reshape(-1)]
    for index, dim in enumerate(dims):
        if dim == 0 and not allowzero:
            if index >= len(source):
                ctx.fail(f"shape {dims} copies dimension {index} of a rank-{len(source)} input")
            dims[index] = source[index]
    total = math.prod(source)
    if dims.count(-1) == 1:
        known = math.prod(d for d in dims if d != -1)
        if known > 0 and total % known == 0:
            dims[dims.index(-1)] = total // known
    if any(d < 0 for d in dims) or math.prod(dims) != total:
        ctx.fail(f"cannot reshape {format_dims(source)} to {dims}")
    return tuple(dims)


@converts("Reshape")
def reshape(ctx: NodeContext):
    """A flatten (NxCxHxW to Nx(C·H·W)), a no-op, or one end of a channel shuffle."""
    value = ctx.value(0)
    source = shape_of_value(value)
    allowzero = bool(ctx.attr("allowzero", 0)) if ctx.opset >= 14 else False
    target = _reshape_target(ctx, source, ctx.constant(1, "shape"), allowzero)
    if isinstance(value, GroupedChannels):
        if target == shape_of(value.source):
            if not value.transposed:
                return [value.source]
            return [ctx.emit(ChannelShuffleOp, value.source, groups=value.groups)]
    else:
        x = ctx.activation(0)
        if target == source:
            return [x]
        if len(source) == 4:
            n, c, h, w = source
            if target == (n, c * h * w):
                return [ctx.emit(FlattenOp, x)]
            if len(target) == 5 and target[0] == n and target[3:] == (h, w) and target[1] * target[2] == c:
                return [GroupedChannels(x, groups=target[1])]
    ctx.fail(
        f"reshapes {format_dims(source)} to {format_dims(target)}; tconv supports Reshape only as a "
        "flatten (NxCxHxW to Nx(CHW)) or in a channel shuffle (to NxGx(C/G)xHxW, Transpose "
        "0,2,1,3,4, back to NxCxHxW)"
    )


@converts("Transpose")
def transpose(ctx: NodeContext):
    """The middle of a channel shuffle, or a no-op."""
    value = ctx.value(0)
    rank = len(shape_of_value(value))
    perm = tuple(ctx.attr("perm", tuple(reversed(range(rank)))))
    if isinstance(value, GroupedChannels):
        if perm == SHUFFLE_PERM:
            return [replace(value, transposed=not value.transposed)]
    else:
        x = ctx.activation(0)
        if perm == tuple(range(rank)):
            return [x]
    ctx.fail(
        f"transposes axes {list(perm)} of {format_dims(shape_of_value(value))}; tconv supports "
        "Transpose only in a channel shuffle (Reshape to NxGx(C/G)xHxW, Transpose 0,2,1,3,4, Reshape back)"
    )


# Quantization (QDQ) ---------------------------------------------------------

QUANT_ELEMENT_TYPES = {np.dtype(np.int8): "i8", np.dtype(np.uint8): "ui8"}
"""The ONNX zero-point types tconv's quantized tensors hold."""


def quant_params(ctx: NodeContext, rank: int) -> tuple[list[float], list[int], int | None, str]:
    """(scales, zero points, axis or None for per tensor, element type) of a
    QuantizeLinear or DequantizeLinear node whose data has rank `rank`."""
    scale = ctx.constant(1, "scale")
    zero_point = ctx.optional_constant(2, "zero_point")
    axis = ctx.attr("axis", 1)
    if ctx.attr("block_size", 0) != 0:
        ctx.fail("blocked quantization (block_size) is not supported")
    ctx.ignore("saturate")  # float8 only
    output_dtype = ctx.attr("output_dtype", 0)
    if not np.issubdtype(scale.dtype, np.floating):
        ctx.fail(f"scale holds {scale.dtype} values; expected floats")
    if zero_point is None:
        dtype = {0: np.dtype(np.uint8), 2: np.dtype(np.uint8), 3: np.dtype(np.int8)}.get(output_dtype)
        if dtype is None:
            ctx.fail(f"output_dtype {output_dtype} is not supported (int8 or uint8)")
        zero_point = np.zeros(scale.shape, dtype)
    element_type = QUANT_ELEMENT_TYPES.get(zero_point.dtype)
    if element_type is None:
        ctx.fail(f"zero_point holds {zero_point.dtype} values; tconv quantizes to int8 or uint8")
    if scale.ndim > 1 or zero_point.shape != scale.shape:
        ctx.fail(
            f"scale {format_dims(scale.shape)} and zero_point {format_dims(zero_point.shape)} must be "
            "one scalar each (per tensor) or two vectors of one length (per axis)"
        )
    scales = [float(s) for s in scale.astype(np.float32).ravel()]
    zero_points = [int(z) for z in zero_point.ravel()]
    if scale.ndim == 0 or scale.size == 1:
        return scales, zero_points, None, element_type
    return scales, zero_points, _axis(ctx, axis, rank), element_type


@converts("QuantizeLinear")
def quantize_linear(ctx: NodeContext):
    x = ctx.activation(0)
    scales, zero_points, axis, element_type = quant_params(ctx, len(shape_of(x)))
    return [ctx.emit(QuantizeOp, x, scale=scales, zero_point=zero_points, axis=axis, element_type=element_type)]


@converts("DequantizeLinear")
def dequantize_linear(ctx: NodeContext):
    """Of a computed tensor (a QuantizeLinear's). On a constant (the int8
    weights `quantize_static` writes) the node is folded like any other, and
    the layer reading it gets a QDQ pair on its weight (`NodeContext.param`)."""
    q = ctx.activation(0)
    scales, zero_points, axis, element_type = quant_params(ctx, len(shape_of(q)))
    have = str(q.type.element_type)  # type: ignore[attr-defined]
    if have != element_type:
        ctx.fail(f"its input holds {have} values but its zero_point is {element_type}")
    return [ctx.emit(DequantizeOp, q, scale=scales, zero_point=zero_points, axis=axis)]


def fold_dequantize(ctx: NodeContext) -> np.ndarray:
    """DequantizeLinear of constants, (data - zero_point) · scale in float32
    as ONNX Runtime computes it (ONNX's reference evaluator lacks the op
    before opset 19): a quantized weight, or `quantize_static`'s int32 bias."""
    data = ctx.constant(0)
    scale = ctx.constant(1, "scale").astype(np.float32)
    zero_point = ctx.optional_constant(2, "zero_point")
    if not np.issubdtype(data.dtype, np.integer) or data.dtype.itemsize > 4:
        ctx.fail(f"dequantizes {data.dtype} values; expected int8, uint8 or int32")
    if zero_point is None:
        zero_point = np.zeros(scale.shape, data.dtype)
    if scale.ndim > 1 or zero_point.shape != scale.shape:
        ctx.fail(f"scale {format_dims(scale.shape)} and zero_point {format_dims(zero_point.shape)} do not match")
    if scale.size > 1:
        axis = _axis(ctx, ctx.attr("axis", 1), data.ndim)
        if data.shape[axis] != scale.size:
            ctx.fail(f"{scale.size} scales for axis {axis} of size {data.shape[axis]}")
        shape = tuple(-1 if d == axis else 1 for d in range(data.ndim))
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    else:
        scale, zero_point = scale.reshape(()), zero_point.reshape(())
    return (data.astype(np.int64) - zero_point.astype(np.int64)).astype(np.float32) * scale


def dequantized_constant(ctx: NodeContext) -> tuple[list[float], list[int], int | None, str] | None:
    """The quantization parameters of a DequantizeLinear node on constants
    (a quantized weight), or None where they are not ones tconv holds."""
    data = ctx.constant(0)
    if data.dtype not in QUANT_ELEMENT_TYPES:
        return None  # an int32 bias: folded to floats, no QDQ pair
    try:
        return quant_params(ctx, data.ndim)
    except OnnxImportError:  # anything unusual: the folded floats alone
        return None
