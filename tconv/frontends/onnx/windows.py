"""The padding of ONNX's sliding-window ops (Conv, MaxPool, AveragePool) as
tconv's explicit (top, left, bottom, right).

ONNX gives padding either as `pads` (begin of each axis, then end of each
axis: for 2-D that is top, left, bottom, right, tconv's own order) or as
`auto_pad`, which derives it from the input size; and pools may round their
output size up (`ceil_mode`), which is floor-mode pooling over extra padding
at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

from tconv.frontends.onnx.node import NodeContext

Padding = tuple[int, int, int, int]


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Total padding that makes the output size ceil(size / stride)."""
    output = -(-size // stride)
    return max(0, (output - 1) * stride + dilation * (kernel - 1) + 1 - size)


def window_padding(
    ctx: NodeContext,
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> Padding:
    """The node's padding, from its `auto_pad` and `pads` attributes."""
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    pads = ctx.attr("pads", None)
    if auto_pad in ("NOTSET", ""):
        if pads is None:
            return (0, 0, 0, 0)
        if len(pads) != 4:
            ctx.fail(f"pads needs 4 values (top, left, bottom, right), got {list(pads)}")
        if any(p < 0 for p in pads):
            ctx.fail(f"negative pads {list(pads)} (cropping) are not supported")
        return tuple(pads)  # type: ignore[return-value]
    if pads is not None and any(pads):
        ctx.fail(f"both auto_pad {auto_pad} and pads {list(pads)} are given")
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        ctx.fail(f"unknown auto_pad '{auto_pad}'")
    before, after = [], []
    for size, k, stride, dilation in zip(spatial, kernel, strides, dilations):
        total = _same_padding(size, k, stride, dilation)
        small, large = total // 2, total - total // 2
        # SAME_UPPER puts the odd extra row (column) at the end, SAME_LOWER at the beginning.
        before.append(small if auto_pad == "SAME_UPPER" else large)
        after.append(large if auto_pad == "SAME_UPPER" else small)
    return (before[0], before[1], after[0], after[1])


def ceil_mode_extra(size: int, kernel: int, stride: int, before: int, after: int) -> int:
    """Padding to add after an axis so that floor-mode pooling gives the
    ceil-mode output size. As in ONNX Runtime and PyTorch, a last window that
    would start past the input and its leading padding is dropped."""
    span = size + before + after - kernel
    ceil_output = -(-span // stride) + 1
    if (ceil_output - 1) * stride >= size + before:
        ceil_output -= 1
    return max(0, (ceil_output - 1) * stride + kernel - (size + before + after))


def check_pair(ctx: NodeContext, name: str, values: Sequence[int]) -> tuple[int, int]:
    """A per-axis attribute of a 2-D window op: exactly two values."""
    if len(values) != 2:
        ctx.fail(f"{name} {list(values)} needs 2 values: only 2-D windows (4-D NCHW input) are supported")
    return (values[0], values[1])
