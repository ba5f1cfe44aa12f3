"""The loop nest of every kernel the LLVM backend builds.

Each function returns the `Nest`s of one kernel over its arguments, numbered
in the kernel's parameter order (the tensors read, then the one written,
last), with the meaning of `tconv.semantics.reference`. Weighted kernels read
the packed layouts of `tconv.kernels.packing`, so they share the
parameter recipes (and the artifact's plan shape) with the TVM backend:

- conv2d: `G x OB x C/G x KH x KW x block`, the block being the innermost
  tile factor of the `oc` loop (1 if `oc` is not tiled). Its index is written
  over the tiled loops (`oc.0`, ..., `oc.k`), so it stays affine: the block
  number is every `oc` loop but the last, the lane the last;
- dense: `MB x K x block`, likewise over the tiles of `m`.

Fused epilogues: the bias, then the residual (an argument of the output's
shape), then the activation.
"""

from __future__ import annotations

from collections.abc import Sequence

from tconv.lowering.llvm.loops import Acc, Affine, Binary, Const, Expr, Load, Loop, Nest, WindowCount, activate

NCHW = ("n", "c", "h", "w")


def dimension_loops(shape: Sequence[int]) -> list[Loop]:
    """One data-parallel loop per dimension: n, c, h, w (or d0, d1, ... beyond rank 4)."""
    names = NCHW if len(shape) <= 4 else tuple(f"d{i}" for i in range(len(shape)))
    return [Loop(name, extent) for name, extent in zip(names, shape)]


def _vars(loops: Sequence[Loop]) -> tuple[Affine, ...]:
    return tuple(Affine.of(loop.name) for loop in loops)


def tiled_parts(loop: str, factors: Sequence[int]) -> tuple[Affine, Affine]:
    """(the block number, the lane within a block) of loop `loop` tiled by
    `factors`, the block being the innermost factor: over `loop.0..loop.k`."""
    if not factors:
        return Affine.of(loop), Affine()
    names = [f"{loop}.{i}" for i in range(len(factors) + 1)]
    block, stride = Affine(), 1
    for name, extent in reversed(list(zip(names[:-1], [0, *factors[:-1]]))):
        block = block + Affine.of(name) * stride
        stride *= extent if extent else 1
    return block, Affine.of(names[-1])


def _epilogue(value: Expr, channel: Affine, index: tuple[Affine, ...], bias: int | None,
              residual: int | None, activation: str | None) -> Expr:
    if bias is not None:
        value = Binary("add", value, Load(bias, (channel,)))
    if residual is not None:
        value = Binary("add", value, Load(residual, index))
    return activate(value, activation)


def conv2d(
    input_shape: Sequence[int], out_shape: Sequence[int], groups: int, kernel: Sequence[int],
    strides: Sequence[int], padding: Sequence[int], dilations: Sequence[int], oc_tiles: Sequence[int],
    has_bias: bool, has_residual: bool, activation: str | None,
) -> Nest:
    """Arguments: input NCHW, packed weight, [bias], [residual], output.
    Loops n, g, oc, oh, ow (data-parallel; oc within a group), ic, kh, kw
    (the reduction; ic within a group)."""
    batch, channels, _, _ = input_shape
    _, out_channels, out_height, out_width = out_shape
    in_group, out_group = channels // groups, out_channels // groups
    loops = (
        Loop("n", batch), Loop("g", groups), Loop("oc", out_group), Loop("oh", out_height), Loop("ow", out_width),
        Loop("ic", in_group, True), Loop("kh", kernel[0], True), Loop("kw", kernel[1], True),
    )
    n, g, oc, oh, ow, ic, kh, kw = _vars(loops)
    top, left = padding[0], padding[1]
    ih = oh * strides[0] + kh * dilations[0] - top
    iw = ow * strides[1] + kw * dilations[1] - left
    block, lane = tiled_parts("oc", oc_tiles)
    x = Load(0, (n, g * in_group + ic, ih, iw))
    w = Load(1, (g, block, ic, kh, kw, lane))
    args = iter(range(2, 5))
    bias = next(args) if has_bias else None
    residual = next(args) if has_residual else None
    output_arg = next(args)
    channel = g * out_group + oc
    index = (n, channel, oh, ow)
    return Nest(
        loops, Binary("mul", x, w), Load(output_arg, index), "sum",
        _epilogue(Acc(), channel, index, bias, residual, activation),
    )


def dense(
    input_shape: Sequence[int], out_features: int, m_tiles: Sequence[int],
    has_bias: bool, has_residual: bool, activation: str | None,
) -> Nest:
    """Arguments: input N x K, packed weight, [bias], [residual], output N x M.
    Loops n, m, k (the reduction)."""
    batch, features = input_shape
    loops = (Loop("n", batch), Loop("m", out_features), Loop("k", features, True))
    n, m, k = _vars(loops)
    block, lane = tiled_parts("m", m_tiles)
    args = iter(range(2, 5))
    bias = next(args) if has_bias else None
    residual = next(args) if has_residual else None
    output_arg = next(args)
    return Nest(
        loops, Binary("mul", Load(0, (n, k)), Load(1, (block, k, lane))), Load(output_arg, (n, m)), "sum",
        _epilogue(Acc(), m, (n, m), bias, residual, activation),
    )


def pool2d(
    kind: str, input_shape: Sequence[int], out_shape: Sequence[int], kernel: Sequence[int],
    strides: Sequence[int], padding: Sequence[int], count_include_pad: bool = False,
) -> Nest:
    """max or avg pooling. Arguments: input, output. Loops n, c, oh, ow, kh, kw."""
    batch, channels, height, width = input_shape
    _, _, out_height, out_width = out_shape
    loops = (
        Loop("n", batch), Loop("c", channels), Loop("oh", out_height), Loop("ow", out_width),
        Loop("kh", kernel[0], True), Loop("kw", kernel[1], True),
    )
    n, c, oh, ow, kh, kw = _vars(loops)
    top, left = oh * strides[0] - padding[0], ow * strides[1] - padding[1]
    fill = float("-inf") if kind == "max" else 0.0
    x = Load(0, (n, c, top + kh, left + kw), fill)
    output = Load(1, (n, c, oh, ow))
    if kind == "max":
        return Nest(loops, x, output, "max")
    if count_include_pad:
        divisor: Expr = Const(float(kernel[0] * kernel[1]))
    else:
        divisor = Binary("mul", WindowCount(top, kernel[0], height), WindowCount(left, kernel[1], width))
    return Nest(loops, x, output, "sum", Binary("div", Acc(), divisor))


def global_avg_pool(input_shape: Sequence[int]) -> Nest:
    """Arguments: input NCHW, output N x C x 1 x 1."""
    batch, channels, height, width = input_shape
    loops = (Loop("n", batch), Loop("c", channels), Loop("h", height, True), Loop("w", width, True))
    n, c, h, w = _vars(loops)
    return Nest(
        loops, Load(0, (n, c, h, w)), Load(1, (n, c, Affine(), Affine())), "sum",
        Binary("mul", Acc(), Const(1.0 / (height * width))),
    )


def elementwise(kind: str, shape: Sequence[int], activation: str | None) -> Nest:
    """add (arguments a, b, output), batch_norm (x, factor, offset, output; per
    channel, axis 1) or an activation alone (x, output), then `activation`."""
    loops = tuple(dimension_loops(shape))
    index = _vars(loops)
    if kind == "add":
        value: Expr = Binary("add", Load(0, index), Load(1, index))
        output = 2
    elif kind == "batch_norm":
        channel = (index[1],)
        value = Binary("add", Binary("mul", Load(0, index), Load(1, channel)), Load(2, channel))
        output = 3
    elif kind in ("relu", "relu6"):
        value, output, activation = Load(0, index), 1, kind
    else:
        raise ValueError(f"elementwise: unknown kind '{kind}'")
    return Nest(loops, activate(value, activation), Load(output, index))


def flatten(shape: Sequence[int]) -> Nest:
    """N x C x H x W → N x (C·H·W). Arguments: input, output."""
    loops = tuple(dimension_loops(shape))
    index = _vars(loops)
    flat = Affine()
    stride = 1
    for position, extent in reversed(list(zip(index[1:], shape[1:]))):
        flat = flat + position * stride
        stride *= extent
    return Nest(loops, Load(0, index), Load(1, (index[0], flat)))


def concat_part(shape: Sequence[int], axis: int, offset: int, arg: int, output_arg: int) -> Nest:
    """Copy argument `arg` (of `shape`) into the output at `offset` along `axis`."""
    loops = tuple(dimension_loops(shape))
    index = _vars(loops)
    placed = tuple(i + offset if d == axis else i for d, i in enumerate(index))
    return Nest(loops, Load(arg, index), Load(output_arg, placed))


def slice_axis(out_shape: Sequence[int], axis: int, start: int) -> Nest:
    """Positions start, start + 1, ... of the input along `axis`, every other
    axis whole. Arguments: input, output."""
    loops = tuple(dimension_loops(out_shape))
    index = _vars(loops)
    source = tuple(i + start if d == axis else i for d, i in enumerate(index))
    return Nest(loops, Load(0, source), Load(1, index))


def slice_channels(out_shape: Sequence[int], start: int) -> Nest:
    """Channels start, start + 1, ... of the input. Arguments: input, output."""
    return slice_axis(out_shape, 1, start)


def channel_shuffle(shape: Sequence[int], groups: int) -> Nest:
    """Channel i·(C/G) + j moves to j·G + i. Loops n, j, i, h, w."""
    batch, channels, height, width = shape
    per_group = channels // groups
    loops = (Loop("n", batch), Loop("j", per_group), Loop("i", groups), Loop("h", height), Loop("w", width))
    n, j, i, h, w = _vars(loops)
    return Nest(loops, Load(0, (n, i * per_group + j, h, w)), Load(1, (n, j * groups + i, h, w)))
