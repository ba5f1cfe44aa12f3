"""Tensor-expression computes of the tconv ops, over fixed shapes.

Each function takes `te.Tensor` operands (placeholders, usually) and the op's
attributes as plain Python values, and returns the result tensor; what it
computes is what `tconv.semantics.reference` computes for the op (see the op
docstrings in `tconv.ir.ops`). Activations are NCHW (NC after `flatten`),
except where a convolution's schedule stores them in channel blocks
(`tconv.ir.schedule`, NCHW[b]c: N x C/b x H x W x b): `conv2d` and
`pointwise_conv2d` read such an input (a 5-d tensor) and write such an
output (`output_block`), the residual of their epilogue in the output's
layout.

The computes of the weighted ops read their weights *packed*, in the layouts
of `tconv.kernels.packing`, and finish with an `Epilogue` (bias, then a
residual add, then an activation) so that a convolution followed by
batch-norm, an add and a ReLU is one loop nest writing one tensor.

Stage names are part of the contract with the schedules: a convolution is the
stages `pad` (the padded input; absent where nothing is padded), `conv` (the
blocked accumulation) and `output` (the epilogue, in NCHW or NCHW[b]c); dense is `dense`
then `output`; pooling is `window_sum` (average pooling only) then `output`;
every other op is one stage named `output`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tvm import te, tirx

from tconv.ir.shapes import ShapeError, window_output
from tconv.kernels.blocking import ConvBlocking

F32 = "float32"

ACTIVATIONS = ("relu", "relu6")


def _zero() -> tirx.PrimExpr:
    return tirx.const(0.0, F32)


def _dims(tensor: te.Tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.shape)


# Epilogues ------------------------------------------------------------------


@dataclass(frozen=True)
class Epilogue:
    """What a weighted op does to its accumulated value before storing it:
    add `bias[channel]`, then `residual[index]` (a tensor of the output's
    shape), then apply `activation` (None, "relu" or "relu6")."""

    bias: te.Tensor | None = None
    residual: te.Tensor | None = None
    activation: str | None = None

    def __post_init__(self) -> None:
        if self.activation not in (None, *ACTIVATIONS):
            raise ValueError(f"epilogue: activation must be one of {ACTIVATIONS} or None, got {self.activation!r}")

    def apply(self, value: tirx.PrimExpr, index: Sequence[tirx.PrimExpr], channel: tirx.PrimExpr) -> tirx.PrimExpr:
        if self.bias is not None:
            value = value + self.bias[channel]
        if self.residual is not None:
            value = value + self.residual[tuple(index)]
        return activate(value, self.activation)


def activate(value: tirx.PrimExpr, activation: str | None) -> tirx.PrimExpr:
    """`value` after `activation` (None: unchanged)."""
    if activation == "relu":
        return tirx.max(value, _zero())
    if activation == "relu6":
        return tirx.min(tirx.max(value, _zero()), tirx.const(6.0, F32))
    return value


# Convolution ----------------------------------------------------------------


def pad_input(
    data: te.Tensor,
    padding: Sequence[int],
    min_width: int = 0,
    value: float = 0.0,
    name: str = "pad",
) -> te.Tensor:
    """data NxCxHxW surrounded by (top, left, bottom, right) rows and columns
    of `value`, and by more columns on the right up to `min_width` in all.
    Returns `data` itself where nothing is added."""
    n, c, h, w = _dims(data)
    top, left, bottom, right = padding
    width = max(w + left + right, min_width)
    if not (top or left or bottom) and width == w:
        return data
    fill = tirx.const(value, F32)
    return te.compute(
        (n, c, h + top + bottom, width),
        lambda b, ch, y, x: tirx.if_then_else(
            tirx.all(y >= top, y < top + h, x >= left, x < left + w),
            data[b, ch, y - top, x - left],
            fill,
        ),
        name=name,
    )


def pad_packed_input(data: te.Tensor, padding: Sequence[int], min_width: int = 0) -> te.Tensor:
    """`pad_input` for data in channel blocks (N x CB x H x W x b): the padded
    N x CB x Hp x Wp x b, or `data` itself where nothing is added."""
    n, cb, h, w, b = _dims(data)
    top, left, bottom, right = padding
    width = max(w + left + right, min_width)
    if not (top or left or bottom) and width == w:
        return data
    return te.compute(
        (n, cb, h + top + bottom, width, b),
        lambda bt, c, y, x, ci: tirx.if_then_else(
            tirx.all(y >= top, y < top + h, x >= left, x < left + w),
            data[bt, c, y - top, x - left, ci],
            _zero(),
        ),
        name="pad",
    )


def activation_dims(data: te.Tensor) -> tuple[int, int, int, int, int | None]:
    """(N, C, H, W, block) of an activation stored NCHW (block None) or in
    channel blocks, N x C/b x H x W x b (block b)."""
    dims = _dims(data)
    if len(dims) == 5:
        n, cb, h, w, b = dims
        return n, cb * b, h, w, b
    n, c, h, w = dims
    return n, c, h, w, None


def _weight_dims(weight: te.Tensor, in_block: int | None) -> tuple[int, int, int, int, int, int]:
    """(G, OB, C/G, KH, KW, block) of a conv2d weight packed by
    `packing.pack_conv2d_weight`, for an input in channel blocks of
    `in_block` (None: NCHW) in the layout with input-channel blocks."""
    dims = _dims(weight)
    if in_block is None:
        if len(dims) != 6:
            raise ShapeError(f"conv2d: an NCHW input needs a G x OB x C/G x KH x KW x block weight, got {dims}")
        return dims  # type: ignore[return-value]
    if len(dims) != 7 or dims[5] != in_block:
        raise ShapeError(
            f"conv2d: an input in blocks of {in_block} needs a 1 x OB x C/{in_block} x KH x KW x {in_block} x block "
            f"weight, got {dims}"
        )
    groups, out_blocks, channel_blocks, kh, kw, _, block = dims
    return groups, out_blocks, channel_blocks * in_block, kh, kw, block


def _check_output_block(output_block: int | None, groups: int, blocking: ConvBlocking, out_channels: int) -> None:
    if output_block is None:
        return
    if (
        groups != 1 or blocking.vector != "oc" or blocking.block % output_block or out_channels % blocking.block
    ):
        raise ShapeError(
            f"conv2d: an output in blocks of {output_block} needs one group and a channel vector of a multiple of "
            f"that block dividing the channels; got groups {groups}, block {blocking.block} ({blocking.vector}), "
            f"{out_channels} channels"
        )


def _packed_store(
    acc_at, out_channels: int, p: int, q: int, n: int, output_block: int, block: int, epilogue: Epilogue
) -> te.Tensor:
    """The `output` stage in channel blocks: N x O/b x P x Q x b (b
    `output_block`, dividing the accumulator's channel `block`), element
    (b, ob, y, x, oi) the epilogue of `acc_at(b, channel block, y, x, channel
    in block)`, indexed without divisions of the channel (so that a vector
    of a layout block reads one accumulator vector)."""
    parts = block // output_block
    return te.compute(
        (n, out_channels // output_block, p, q, output_block),
        lambda b, ob, y, x, oi: epilogue.apply(
            acc_at(b, ob // parts, y, x, ob % parts * output_block + oi), (b, ob, y, x, oi), ob * output_block + oi
        ),
        name="output",
    )


def pad_phases(data: te.Tensor, padding: Sequence[int], stride: int, min_height: int, min_width: int) -> te.Tensor:
    """data NxCxHxW zero-padded by (top, left, bottom, right), and further on
    the bottom and right up to `min_height` rows and `min_width` columns,
    its columns dealt into `stride` phases: N x C x Hp x stride x Wp/stride,
    element (b, c, y, s, x) the padded input at row y, column x·stride + s.

    A window of a strided convolution then reads each tap's columns
    contiguously (phase (kx·dilation) mod stride, from column kx·dilation div
    stride on), so a vector of output columns is one vector load whatever
    the stride. With stride 1 it is the padded input with a unit axis."""
    n, c, h, w = _dims(data)
    top, left, bottom, right = padding
    height = max(h + top + bottom, min_height)
    phase_width = -(-max(w + left + right, min_width) // stride)

    def value(b, ch, y, s, x):
        column = x * stride + s
        inside = tirx.all(y >= top, y < top + h, column >= left, column < left + w)
        return tirx.if_then_else(inside, data[b, ch, y - top, column - left], _zero())

    return te.compute((n, c, height, stride, phase_width), value, name="pad")


def _window_extent(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Input rows or columns the windows of `size` outputs cover."""
    return (size - 1) * stride + dilation * (kernel - 1) + 1


def conv2d(
    data: te.Tensor,
    weight: te.Tensor,
    out_channels: int,
    strides: Sequence[int],
    padding: Sequence[int],
    dilations: Sequence[int],
    blocking: ConvBlocking,
    epilogue: Epilogue = Epilogue(),
    output_block: int | None = None,
) -> te.Tensor:
    """Convolution of data NxCxHxW (or N x C/b x H x W x b) with a weight packed by
    `packing.pack_conv2d_weight` for `blocking` (shape G x OB x C/G x KH x KW x
    block), then the epilogue: N x out_channels x P x Q.

    Stages: `pad` (none where the convolution has no padding: the extra
    columns of the last tile then read the input's last column), then `conv`
    (N x G x OB x P x Qp x block, Qp the output width rounded up to whole
    width tiles: the extra columns and the zero channels of the last block
    are computed and dropped), then `output`.
    Vectorised over columns (`blocking.vector` "ow"), `pad` is the input in
    column phases (`pad_phases`) and `conv` is N x G x OB x block x Pp x Qp,
    Pp the output height rounded up to whole row tiles.

    With data in channel blocks of b, `pad` keeps them (N x C/b x Hp x Wp x b)
    and the reduction over input channels is two loops, blocks and channels
    in a block. With `output_block` (one group, the channel vector, and a
    `blocking.block` that is a multiple of `output_block` and divides the
    channels), `output` is N x O/b x P x Q x b (b `output_block`), the
    accumulator's tile as it is, and the residual is read in that layout."""
    n, channels, height, width, in_block = activation_dims(data)
    groups, out_blocks, group_channels, kh, kw, block = _weight_dims(weight, in_block)
    if in_block is not None and (groups != 1 or blocking.vector != "oc"):
        raise ShapeError("conv2d: an input in channel blocks needs one group and a channel vector (not GSPC)")
    _check_output_block(output_block, groups, blocking, out_channels)
    if block != blocking.block:
        raise ShapeError(f"conv2d: weight packed with block {block}, blocking asks for {blocking.block}")
    if channels != groups * group_channels:
        raise ShapeError(f"conv2d: input channels {channels} != groups {groups} x {group_channels}")
    out_group = out_channels // groups
    if groups > 1 and out_group % block:
        raise ShapeError(f"conv2d: block {block} must divide the {out_group} output channels of a group")
    (sh, sw), (dh, dw) = strides, dilations
    top, left, bottom, right = padding
    p = window_output(height, kh, sh, top + bottom, dh)
    q = window_output(width, kw, sw, left + right, dw)
    qp = blocking.padded_width(q)
    rc = te.reduce_axis((0, group_channels), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    if blocking.vector == "ow":
        # GSPC: channels outside, columns innermost (the vector), input in column phases.
        pp = blocking.padded_height(p)
        phases = pad_phases(data, padding, sw, _window_extent(pp, kh, sh, dh), _window_extent(qp, kw, sw, dw))
        columns = te.compute(
            (n, groups, out_blocks, block, pp, qp),
            lambda b, g, ob, oi, y, x: te.sum(
                phases[b, g * group_channels + rc, y * sh + ry * dh, (rx * dw) % sw, x + (rx * dw) // sw]
                * weight[g, ob, rc, ry, rx, oi],
                axis=[rc, ry, rx],
            ),
            name="conv",
        )

        def store_columns(b, o, y, x):
            g, og = (0, o) if groups == 1 else (o // out_group, o % out_group)
            return epilogue.apply(columns[b, g, og // block, og % block, y, x], (b, o, y, x), o)

        return te.compute((n, out_channels, p, q), store_columns, name="output")

    min_width = _window_extent(qp, kw, sw, dw)
    # With no padding to add, a column tile's extra columns read the last
    # column (and are dropped) rather than the whole input being copied a
    # tile wider: the copy had cost 1×1 layers up to half their time.
    clamped = not any(padding) and not blocking.skew_planes and min_width > width

    def column(x):
        return tirx.min(x, width - 1) if clamped else x

    if in_block is not None:
        padded = data if clamped else pad_packed_input(data, padding, min_width=min_width)
        rco = te.reduce_axis((0, channels // in_block), name="rco")
        rci = te.reduce_axis((0, in_block), name="rci")
        acc = te.compute(
            (n, groups, out_blocks, p, qp, block),
            lambda b, g, ob, y, x, oi: te.sum(
                padded[b, rco, y * sh + ry * dh, column(x * sw + rx * dw), rci]
                * weight[g, ob, rco, ry, rx, rci, oi],
                axis=[rco, rci, ry, rx],
            ),
            name="conv",
        )
    else:
        if blocking.skew_planes:
            min_width = max(min_width, width + left + right + 1)
        padded = data if clamped else pad_input(data, padding, min_width=min_width)
        acc = te.compute(
            (n, groups, out_blocks, p, qp, block),
            lambda b, g, ob, y, x, oi: te.sum(
                padded[b, g * group_channels + rc, y * sh + ry * dh, column(x * sw + rx * dw)]
                * weight[g, ob, rc, ry, rx, oi],
                axis=[rc, ry, rx],
            ),
            name="conv",
        )
    if output_block is not None:
        return _packed_store(
            lambda b, ob, y, x, oi: acc[b, 0, ob, y, x, oi], out_channels, p, q, n, output_block, block, epilogue
        )

    def store(b, o, y, x):
        # With one group the channel needs no division by the group size, so the
        # accumulator region of a channel block stays exact past a padded tail.
        g, og = (0, o) if groups == 1 else (o // out_group, o % out_group)
        return epilogue.apply(acc[b, g, og // block, y, x, og % block], (b, o, y, x), o)

    return te.compute((n, out_channels, p, q), store, name="output")


def pointwise_conv2d(
    data: te.Tensor,
    weight: te.Tensor,
    out_channels: int,
    blocking: ConvBlocking,
    epilogue: Epilogue = Epilogue(),
    output_block: int | None = None,
) -> te.Tensor:
    """A pointwise convolution (see `is_pointwise`) of data NxCxHxW with a
    weight packed as for `conv2d` (G x OB x C/G x 1 x 1 x block), then the
    epilogue: N x out_channels x H x W.

    The H·W positions are one axis, so tiles of `width_tile` positions run
    across rows and small images tile as well as large ones. Stages: `conv`
    (N x G x OB x F x block, F the positions rounded up to whole tiles; the
    extra ones read the last position and are dropped), `output`. Inputs
    and outputs in channel blocks as for `conv2d`."""
    n, channels, height, width, in_block = activation_dims(data)
    groups, out_blocks, group_channels, _, _, block = _weight_dims(weight, in_block)
    out_group = out_channels // groups
    if blocking.vector != "oc":
        raise ShapeError("pointwise conv2d: vectorises channels; a blocking over columns is conv2d's (GSPC)")
    if in_block is not None and groups != 1:
        raise ShapeError("pointwise conv2d: an input in channel blocks needs one group")
    _check_output_block(output_block, groups, blocking, out_channels)
    if groups > 1 and out_group % block:
        raise ShapeError(f"conv2d: block {block} must divide the {out_group} output channels of a group")
    positions = height * width
    if in_block is not None:
        rco = te.reduce_axis((0, channels // in_block), name="rco")
        rci = te.reduce_axis((0, in_block), name="rci")

        def product(b, g, ob, f, oi):
            position = tirx.min(f, positions - 1)
            value = data[b, rco, position // width, position % width, rci]
            return te.sum(value * weight[g, ob, rco, 0, 0, rci, oi], axis=[rco, rci])
    else:
        rc = te.reduce_axis((0, group_channels), name="rc")

        def product(b, g, ob, f, oi):
            position = tirx.min(f, positions - 1)
            value = data[b, g * group_channels + rc, position // width, position % width]
            return te.sum(value * weight[g, ob, rc, 0, 0, oi], axis=[rc])

    acc = te.compute(
        (n, groups, out_blocks, blocking.padded_width(positions), block), product, name="conv"
    )
    if output_block is not None:
        return _packed_store(
            lambda b, ob, y, x, oi: acc[b, 0, ob, y * width + x, oi],
            out_channels, height, width, n, output_block, block, epilogue,
        )

    def store(b, o, y, x):
        g, og = (0, o) if groups == 1 else (o // out_group, o % out_group)
        return epilogue.apply(acc[b, g, og // block, y * width + x, og % block], (b, o, y, x), o)

    return te.compute((n, out_channels, height, width), store, name="output")


def depthwise_conv2d(
    data: te.Tensor,
    weight: te.Tensor,
    strides: Sequence[int],
    padding: Sequence[int],
    dilations: Sequence[int],
    blocking: ConvBlocking,
    epilogue: Epilogue = Epilogue(),
    output_block: int | None = None,
) -> te.Tensor:
    """Depthwise convolution (groups = input channels = output channels) of
    data NxCxHxW with a weight packed by `packing.pack_depthwise_weight` for
    `blocking.block` (CB x KH x KW x block), then the epilogue: N x C x P x Q.

    Channels are the vector here (each has a single input channel, so there
    is nothing else to block): the `pad` stage copies the input into
    N x CB x Hp x Wp x block, zero-padded in space and past the C channels,
    so that a tap of `block` channels is one vector load whatever the stride;
    `conv` accumulates N x CB x P x Qp x block; `output` stores NCHW.
    Vectorised over columns (`blocking.vector` "ow", `block` 1), `pad` is
    the input in column phases (`pad_phases`) and `conv` is N x C x Pp x Qp.

    Activations in channel blocks (NCHW[b]c, b the vector `block`): an input
    so stored is padded in space only (no transpose; the `pad` stage is
    absent where there is no padding), and `output_block` stores the
    accumulator's blocks as they are, N x C/b x P x Q x b, the residual read
    in that layout."""
    n, channels, height, width, in_block = activation_dims(data)
    channel_blocks, kh, kw, block = _dims(weight)
    if channel_blocks * block < channels or block != blocking.block:
        raise ShapeError(
            f"depthwise conv2d: weight {'x'.join(map(str, _dims(weight)))} is not packed "
            f"for {channels} channels in blocks of {blocking.block}"
        )
    for role, layout_block in (("an input", in_block), ("an output", output_block)):
        if layout_block is not None and (layout_block != block or blocking.vector != "oc" or channels % block):
            raise ShapeError(
                f"depthwise conv2d: {role} in blocks of {layout_block} needs a vector of as many channels, "
                f"dividing the {channels} channels; got block {block} ({blocking.vector})"
            )
    (sh, sw), (dh, dw) = strides, dilations
    top, left, bottom, right = padding
    p = window_output(height, kh, sh, top + bottom, dh)
    q = window_output(width, kw, sw, left + right, dw)
    qp = blocking.padded_width(q)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    if blocking.vector == "ow":
        # GSPC: one channel at a time, columns the vector, input in column phases.
        if block != 1:
            raise ShapeError(f"depthwise conv2d: vectorised over columns, the weight block must be 1, got {block}")
        pp = blocking.padded_height(p)
        phases = pad_phases(data, padding, sw, _window_extent(pp, kh, sh, dh), _window_extent(qp, kw, sw, dw))
        columns = te.compute(
            (n, channels, pp, qp),
            lambda b, c, y, x: te.sum(
                phases[b, c, y * sh + ry * dh, (rx * dw) % sw, x + (rx * dw) // sw] * weight[c, ry, rx, 0],
                axis=[ry, rx],
            ),
            name="conv",
        )
        return te.compute(
            (n, channels, p, q),
            lambda b, c, y, x: epilogue.apply(columns[b, c, y, x], (b, c, y, x), c),
            name="output",
        )
    padded_width = max(width + left + right, (qp - 1) * sw + dw * (kw - 1) + 1)

    def pad(b, cb, y, x, ci):
        c = cb * block + ci
        inside = tirx.all(c < channels, y >= top, y < top + height, x >= left, x < left + width)
        return tirx.if_then_else(inside, data[b, tirx.min(c, channels - 1), y - top, x - left], _zero())

    if in_block is not None:
        padded = pad_packed_input(data, padding, padded_width)
    else:
        padded = te.compute((n, channel_blocks, height + top + bottom, padded_width, block), pad, name="pad")
    acc = te.compute(
        (n, channel_blocks, p, qp, block),
        lambda b, cb, y, x, ci: te.sum(
            padded[b, cb, y * sh + ry * dh, x * sw + rx * dw, ci] * weight[cb, ry, rx, ci], axis=[ry, rx]
        ),
        name="conv",
    )
    if output_block is not None:
        return _packed_store(lambda b, cb, y, x, ci: acc[b, cb, y, x, ci], channels, p, q, n, block, block, epilogue)
    return te.compute(
        (n, channels, p, q),
        lambda b, c, y, x: epilogue.apply(acc[b, c // block, y, x, c % block], (b, c, y, x), c),
        name="output",
    )


# Dense ----------------------------------------------------------------------


def dense(data: te.Tensor, weight: te.Tensor, out_features: int, epilogue: Epilogue = Epilogue()) -> te.Tensor:
    """x NxK times a weight packed by `packing.pack_dense_weight`
    (MB x K x block, rows past `out_features` zero), then the epilogue: N x M.

    Stages: `dense` (N x MB x block), `output`."""
    n, k = _dims(data)
    out_blocks, k_weight, block = _dims(weight)
    if k != k_weight:
        raise ShapeError(f"dense: input features {k} != weight features {k_weight}")
    rk = te.reduce_axis((0, k), name="rk")
    acc = te.compute(
        (n, out_blocks, block),
        lambda b, mb, mi: te.sum(data[b, rk] * weight[mb, rk, mi], axis=[rk]),
        name="dense",
    )
    return te.compute(
        (n, out_features),
        lambda b, m: epilogue.apply(acc[b, m // block, m % block], (b, m), m),
        name="output",
    )


# Elementwise ----------------------------------------------------------------


def batch_norm(
    data: te.Tensor, factor: te.Tensor, offset: te.Tensor, activation: str | None = None
) -> te.Tensor:
    """data·factor[c] + offset[c] (the inference batch-norm with its statistics
    folded by `folding.batch_norm_affine`), then `activation`."""
    return te.compute(
        _dims(data),
        lambda *i: activate(data[i] * factor[i[1]] + offset[i[1]], activation),
        name="output",
    )


def unary(data: te.Tensor, activation: str) -> te.Tensor:
    """`activation` ("relu" or "relu6") of every element."""
    return te.compute(_dims(data), lambda *i: activate(data[i], activation), name="output")


def add(lhs: te.Tensor, rhs: te.Tensor, activation: str | None = None) -> te.Tensor:
    """lhs + rhs (one shape), then `activation`."""
    if _dims(lhs) != _dims(rhs):
        raise ShapeError(f"add: shapes {_dims(lhs)} and {_dims(rhs)} differ")
    return te.compute(_dims(lhs), lambda *i: activate(lhs[i] + rhs[i], activation), name="output")


# Pooling --------------------------------------------------------------------


def _pool_extent(data: te.Tensor, kernel, strides, padding) -> tuple[int, int]:
    _, _, height, width = _dims(data)
    top, left, bottom, right = padding
    return (
        window_output(height, kernel[0], strides[0], top + bottom),
        window_output(width, kernel[1], strides[1], left + right),
    )


def max_pool2d(data: te.Tensor, kernel: Sequence[int], strides: Sequence[int], padding: Sequence[int]) -> te.Tensor:
    """Window maxima; padded positions are -inf, so they never win."""
    n, c, height, width = _dims(data)
    top, left = padding[0], padding[1]
    p, q = _pool_extent(data, kernel, strides, padding)
    ry = te.reduce_axis((0, kernel[0]), name="ry")
    rx = te.reduce_axis((0, kernel[1]), name="rx")

    def window_max(b, ch, y, x):
        iy = y * strides[0] + ry - top
        ix = x * strides[1] + rx - left
        inside = tirx.all(iy >= 0, iy < height, ix >= 0, ix < width)
        value = tirx.if_then_else(inside, data[b, ch, iy, ix], tirx.min_value(F32))
        return te.max(value, axis=[ry, rx])

    return te.compute((n, c, p, q), window_max, name="output")


def avg_pool2d(
    data: te.Tensor,
    kernel: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int],
    count_include_pad: bool,
) -> te.Tensor:
    """Window sums over zero padding, divided by the window size if
    `count_include_pad`, else by the number of input positions in the window."""
    n, c, height, width = _dims(data)
    top, left = padding[0], padding[1]
    (kh, kw), (sh, sw) = kernel, strides
    p, q = _pool_extent(data, kernel, strides, padding)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def window_sum(b, ch, y, x):
        iy = y * sh + ry - top
        ix = x * sw + rx - left
        inside = tirx.all(iy >= 0, iy < height, ix >= 0, ix < width)
        return te.sum(tirx.if_then_else(inside, data[b, ch, iy, ix], _zero()), axis=[ry, rx])

    total = te.compute((n, c, p, q), window_sum, name="window_sum")

    def divisor(y, x):
        if count_include_pad:
            return tirx.const(float(kh * kw), F32)
        # Rows and columns of the window that fall inside the input.
        rows = tirx.min(y * sh - top + kh, height) - tirx.max(y * sh - top, 0)
        cols = tirx.min(x * sw - left + kw, width) - tirx.max(x * sw - left, 0)
        return (rows * cols).astype(F32)

    return te.compute((n, c, p, q), lambda b, ch, y, x: total[b, ch, y, x] / divisor(y, x), name="output")


def global_avg_pool(data: te.Tensor) -> te.Tensor:
    """Mean over height and width: NxCxHxW → NxCx1x1."""
    n, c, height, width = _dims(data)
    ry = te.reduce_axis((0, height), name="ry")
    rx = te.reduce_axis((0, width), name="rx")
    total = te.compute((n, c, 1, 1), lambda b, ch, y, x: te.sum(data[b, ch, ry, rx], axis=[ry, rx]), name="window_sum")
    scale = tirx.const(1.0 / (height * width), F32)
    return te.compute((n, c, 1, 1), lambda *i: total[i] * scale, name="output")


# Layout ---------------------------------------------------------------------


def flatten(data: te.Tensor) -> te.Tensor:
    """NxCxHxW → Nx(C·H·W), C-major."""
    n, c, height, width = _dims(data)
    plane = height * width
    return te.compute(
        (n, c * plane),
        lambda b, i: data[b, i // plane, i % plane // width, i % width],
        name="output",
    )


def concat(inputs: Sequence[te.Tensor], axis: int) -> te.Tensor:
    """The inputs joined along `axis`."""
    shapes = [_dims(t) for t in inputs]
    extents = [s[axis] for s in shapes]
    out_shape = list(shapes[0])
    out_shape[axis] = sum(extents)
    starts = [sum(extents[:i]) for i in range(len(inputs))]

    def select(*index):
        # Input i covers [starts[i], starts[i] + extents[i]): nested selects,
        # the last input the innermost default.
        position = index[axis]
        value: tirx.PrimExpr | None = None
        for tensor, start, extent in reversed(list(zip(inputs, starts, extents))):
            shifted = list(index)
            shifted[axis] = position - start
            load = tensor[tuple(shifted)]
            value = load if value is None else tirx.if_then_else(position < start + extent, load, value)
        assert value is not None
        return value

    return te.compute(tuple(out_shape), select, name="output")


def slice_axis(data: te.Tensor, axis: int, start: int, size: int) -> te.Tensor:
    """[start, start + size) along `axis`, every other axis whole (a copy)."""
    out_shape = list(_dims(data))
    out_shape[axis] = size

    def load(*index):
        return data[tuple(i + start if d == axis else i for d, i in enumerate(index))]

    return te.compute(tuple(out_shape), load, name="output")


def slice_channels(data: te.Tensor, start: int, size: int) -> te.Tensor:
    """Channels [start, start + size)."""
    return slice_axis(data, 1, start, size)


def channel_shuffle(data: te.Tensor, groups: int) -> te.Tensor:
    """Channel g·(C/G) + i moves to i·G + g: output channel c reads input
    channel (c mod G)·(C/G) + c div G."""
    n, channels, height, width = _dims(data)
    per_group = channels // groups
    return te.compute(
        (n, channels, height, width),
        lambda b, c, y, x: data[b, (c % groups) * per_group + c // groups, y, x],
        name="output",
    )

