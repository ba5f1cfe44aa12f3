"""Shape rules of the tconv ops: the one place where result shapes are inferred.

Every function takes operand shapes (tuples of ints) and the op's properties as
plain Python values, and returns the result shape or raises `ShapeError` with a
message that names the op, the broken rule and the numbers involved. The op
verifiers, the builders and the passes all call these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

Shape = tuple[int, ...]


class ShapeError(ValueError):
    """A broken shape rule, phrased for the user (`conv2d: ...`)."""


def format_shape(shape: Sequence[int | str]) -> str:
    """`1x64x32x32`, as shapes appear in tensor types and in every message."""
    return "x".join(str(d) for d in shape)


def window_output(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output extent of a window sliding over `size` positions plus `padding`
    (before and after together), in floor mode (as PyTorch and ONNX)."""
    return (size + padding - dilation * (kernel - 1) - 1) // stride + 1


def _require_rank(op: str, what: str, shape: Shape, rank: int) -> None:
    if len(shape) != rank:
        raise ShapeError(
            f"{op}: {what} must have rank {rank} ({'NCHW' if rank == 4 else 'NC'}), "
            f"got rank {len(shape)} ({format_shape(shape)})"
        )


def _require_positive(op: str, name: str, values: Sequence[int]) -> None:
    if any(v < 1 for v in values):
        raise ShapeError(f"{op}: {name} must be positive, got {list(values)}")


def _require_length(op: str, name: str, values: Sequence[int], length: int) -> None:
    if len(values) != length:
        raise ShapeError(
            f"{op}: {name} needs {length} values, got {len(values)} ({list(values)})"
        )


def _window_output(
    op: str,
    axis: str,
    size: int,
    kernel: int,
    stride: int,
    pad_before: int,
    pad_after: int,
    dilation: int = 1,
) -> int:
    """`window_output`, after checking that the dilated window fits the padded input."""
    span = dilation * (kernel - 1) + 1
    padded = size + pad_before + pad_after
    if padded < span:
        raise ShapeError(
            f"{op}: {axis} window {span} (kernel {kernel}, dilation {dilation}) "
            f"exceeds padded input {axis} {padded} ({size} + padding {pad_before}+{pad_after})"
        )
    return window_output(size, kernel, stride, pad_before + pad_after, dilation)


def conv2d(
    x: Shape,
    w: Shape,
    bias: Shape | None,
    strides: Sequence[int],
    padding: Sequence[int],
    dilations: Sequence[int],
    groups: int,
) -> Shape:
    """x NxCxHxW, w Ox(C/G)xKHxKW, bias O → NxOxPxQ. padding is (top, left, bottom, right)."""
    op = "conv2d"
    _require_rank(op, "input", x, 4)
    _require_rank(op, "weight", w, 4)
    _require_length(op, "strides", strides, 2)
    _require_length(op, "padding", padding, 4)
    _require_length(op, "dilations", dilations, 2)
    _require_positive(op, "strides", strides)
    _require_positive(op, "dilations", dilations)
    if any(p < 0 for p in padding):
        raise ShapeError(f"{op}: padding must be non-negative, got {list(padding)}")
    if groups < 1:
        raise ShapeError(f"{op}: groups must be positive, got {groups}")
    n, c, h, wd = x
    o, c_per_group, kh, kw = w
    if c % groups:
        raise ShapeError(f"{op}: input channels {c} not divisible by groups {groups}")
    if o % groups:
        raise ShapeError(f"{op}: output channels {o} not divisible by groups {groups}")
    if c_per_group != c // groups:
        raise ShapeError(
            f"{op}: weight has {c_per_group} input channels per group, "
            f"expected {c} / groups {groups} = {c // groups}"
        )
    _require_positive(op, "kernel size", (kh, kw))
    if bias is not None and tuple(bias) != (o,):
        raise ShapeError(f"{op}: bias shape {format_shape(bias)} must be {o} (output channels)")
    top, left, bottom, right = padding
    p = _window_output(op, "height", h, kh, strides[0], top, bottom, dilations[0])
    q = _window_output(op, "width", wd, kw, strides[1], left, right, dilations[1])
    return (n, o, p, q)


def pool2d(
    op: str,
    x: Shape,
    kernel: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int],
) -> Shape:
    """Max or average pooling over NCHW; padding is (top, left, bottom, right)."""
    _require_rank(op, "input", x, 4)
    _require_length(op, "kernel", kernel, 2)
    _require_length(op, "strides", strides, 2)
    _require_length(op, "padding", padding, 4)
    _require_positive(op, "kernel", kernel)
    _require_positive(op, "strides", strides)
    if any(p < 0 for p in padding):
        raise ShapeError(f"{op}: padding must be non-negative, got {list(padding)}")
    top, left, bottom, right = padding
    # A window made only of padding has no value to pool.
    for pad, k, axis in ((top, kernel[0], "height"), (bottom, kernel[0], "height"),
                         (left, kernel[1], "width"), (right, kernel[1], "width")):
        if pad >= k:
            raise ShapeError(f"{op}: {axis} padding {pad} must be smaller than kernel {k}")
    n, c, h, w = x
    p = _window_output(op, "height", h, kernel[0], strides[0], top, bottom)
    q = _window_output(op, "width", w, kernel[1], strides[1], left, right)
    return (n, c, p, q)


def batch_norm(x: Shape, scale: Shape, shift: Shape, mean: Shape, var: Shape) -> Shape:
    """Per-channel affine normalisation of NCHW (or NC) input."""
    op = "batch_norm"
    if len(x) not in (2, 4):
        raise ShapeError(f"{op}: input must have rank 4 (NCHW) or 2 (NC), got rank {len(x)} ({format_shape(x)})")
    c = x[1]
    for name, shape in (("scale", scale), ("shift", shift), ("mean", mean), ("var", var)):
        if tuple(shape) != (c,):
            raise ShapeError(f"{op}: {name} shape {format_shape(shape)} must be {c} (input channels)")
    return tuple(x)


def elementwise(op: str, x: Shape) -> Shape:
    """relu, relu6: the result has the input's shape."""
    return tuple(x)


def add(a: Shape, b: Shape) -> Shape:
    if tuple(a) != tuple(b):
        raise ShapeError(f"add: operand shapes differ: {format_shape(a)} and {format_shape(b)}")
    return tuple(a)


def global_avg_pool(x: Shape) -> Shape:
    _require_rank("global_avg_pool", "input", x, 4)
    return (x[0], x[1], 1, 1)


def flatten(x: Shape) -> Shape:
    _require_rank("flatten", "input", x, 4)
    return (x[0], x[1] * x[2] * x[3])


def dense(x: Shape, w: Shape, bias: Shape | None) -> Shape:
    """x NxK, w MxK, bias M → NxM."""
    op = "dense"
    _require_rank(op, "input", x, 2)
    if len(w) != 2:
        raise ShapeError(f"{op}: weight must have rank 2 (MxK), got rank {len(w)} ({format_shape(w)})")
    if w[1] != x[1]:
        raise ShapeError(f"{op}: weight has {w[1]} input features, input has {x[1]}")
    if bias is not None and tuple(bias) != (w[0],):
        raise ShapeError(f"{op}: bias shape {format_shape(bias)} must be {w[0]} (output features)")
    return (x[0], w[0])


def concat(xs: Sequence[Shape], axis: int) -> Shape:
    op = "concat"
    if not xs:
        raise ShapeError(f"{op}: needs at least one input")
    rank = len(xs[0])
    if not 0 <= axis < rank:
        raise ShapeError(f"{op}: axis {axis} out of range for rank {rank}")
    for i, shape in enumerate(xs):
        if len(shape) != rank:
            raise ShapeError(f"{op}: input {i} has rank {len(shape)}, input 0 has rank {rank}")
        for d in range(rank):
            if d != axis and shape[d] != xs[0][d]:
                raise ShapeError(
                    f"{op}: input {i} shape {format_shape(shape)} differs from input 0 "
                    f"shape {format_shape(xs[0])} in dimension {d} (only axis {axis} may differ)"
                )
    result = list(xs[0])
    result[axis] = sum(shape[axis] for shape in xs)
    return tuple(result)


def slice_(x: Shape, axis: int, start: int, size: int) -> Shape:
    """The range [start, start + size) of one axis of an NCHW (or NC) tensor,
    every other axis whole. The batch axis is not sliced: a network's batch is
    nominal (it runs at any batch), so no op may depend on its extent."""
    op = "slice"
    if len(x) not in (2, 4):
        raise ShapeError(f"{op}: input must have rank 4 (NCHW) or 2 (NC), got rank {len(x)} ({format_shape(x)})")
    rank = len(x)
    if not 0 <= axis < rank:
        raise ShapeError(f"{op}: axis {axis} out of range for rank {rank} (axes 1 to {rank - 1} may be sliced)")
    if axis == 0:
        raise ShapeError(f"{op}: axis 0 is the batch, which may not be sliced (a network runs at any batch)")
    if size < 1:
        raise ShapeError(f"{op}: size must be positive, got {size} (a tensor has no empty extent)")
    if start < 0:
        raise ShapeError(f"{op}: start must be non-negative, got {start}")
    if start + size > x[axis]:
        raise ShapeError(
            f"{op}: [{start}, {start + size}) out of range for extent {x[axis]} of axis {axis} "
            f"(input {format_shape(x)})"
        )
    result = list(x)
    result[axis] = size
    return tuple(result)


def slice_channels(x: Shape, start: int, size: int) -> Shape:
    op = "slice_channels"
    _require_rank(op, "input", x, 4)
    if start < 0 or size < 1 or start + size > x[1]:
        raise ShapeError(
            f"{op}: channels [{start}, {start + size}) out of range for {x[1]} input channels"
        )
    return (x[0], size, x[2], x[3])


def channel_shuffle(x: Shape, groups: int) -> Shape:
    op = "channel_shuffle"
    _require_rank(op, "input", x, 4)
    if groups < 1:
        raise ShapeError(f"{op}: groups must be positive, got {groups}")
    if x[1] % groups:
        raise ShapeError(f"{op}: channels {x[1]} not divisible by groups {groups}")
    return tuple(x)
