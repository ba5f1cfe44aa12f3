"""The quantisation kernels of a quantised network's activations, with
ONNX's QuantizeLinear / DequantizeLinear semantics (`semantics.int8`):

- `quantize_nhwc`: NCHW float32 → the uint8 levels an int8 convolution
  reads, NHWC with the channels padded (the padding holds the zero point);
- `fake_quantize`: float32 → float32, a `quantize → dequantize` pair that
  a float32 layer reads, computed as it is (any layout: it is elementwise);
- `dequantize_nchw`: uint8 NHWC levels a kernel wrote → NCHW float32, for
  a float32 reader of them;
- `int8_add`: two uint8 NHWC operands dequantized, added, an activation,
  quantised again (ONNX's QLinearAdd, as its QDQ form computes it).

Both divide by the scale in float32 and round half to even (`nearbyint`),
then saturate, as the reference executor does, so they agree to the bit.
"""

from __future__ import annotations

from tvm import s_tir, te, tirx

from tconv.kernels.qdq import Uint8
from tconv.lowering.tvm.ops import activate


def _level(value, levels: Uint8):
    """saturate(round_half_even(value / scale) + zero_point), as float32."""
    level = tirx.nearbyint(value / tirx.const(levels.scale, "float32")) + tirx.const(levels.zero_point, "float32")
    return tirx.max(tirx.min(level, tirx.const(255.0, "float32")), tirx.const(0.0, "float32"))


def quantize_nhwc(x: te.Tensor, levels: Uint8, channels: int) -> te.Tensor:
    """The uint8 levels of NCHW `x`, N x H x W x `channels` (≥ C)."""
    n, c, h, w = (int(d) for d in x.shape)

    def level(b, y, col, ch):
        inside = _level(x[b, tirx.min(ch, c - 1), y, col], levels).astype("uint8")
        return tirx.Select(ch < c, inside, tirx.const(levels.zero_point, "uint8"))

    return te.compute((n, h, w, channels), level, name="quantize")


def fake_quantize(x: te.Tensor, quantize: Uint8, dequantize: Uint8) -> te.Tensor:
    """`x` quantised to `quantize`'s levels and read back with `dequantize`'s."""

    def value(*index):
        level = _level(x[index], quantize) - tirx.const(dequantize.zero_point, "float32")
        return level * tirx.const(dequantize.scale, "float32")

    return te.compute(x.shape, value, name="output")  # scheduled by schedule_cpu.schedule_elementwise


def dequantize_nchw(q: te.Tensor, levels: Uint8, channels: int) -> te.Tensor:
    """(q - zero_point) · scale of NHWC `q`, NCHW, its first `channels` channels."""
    n, h, w, _ = (int(d) for d in q.shape)

    def value(b, c, y, x):
        level = q[b, y, x, c].astype("float32") - tirx.const(levels.zero_point, "float32")
        return level * tirx.const(levels.scale, "float32")

    return te.compute((n, channels, h, w), value, name="dequantize")


def int8_add(a: te.Tensor, b: te.Tensor, levels: tuple[Uint8, Uint8], activation: str | None,
             out: Uint8) -> te.Tensor:
    """(a - za)·sa + (b - zb)·sb in float32, `activation`, quantised to `out`'s levels."""

    def value(*index):
        total = sum(
            (x[index].astype("float32") - tirx.const(lv.zero_point, "float32")) * tirx.const(lv.scale, "float32")
            for x, lv in zip((a, b), levels)
        )
        return _level(activate(total, activation), out).astype("uint8")

    return te.compute(a.shape, value, name="output")  # scheduled by schedule_cpu.schedule_elementwise


def schedule_quantize_nhwc(function: tirx.PrimFunc) -> tirx.PrimFunc:
    """Parallel over (image, row); each pixel's channels in a row."""
    sch = s_tir.Schedule(function)
    b, y, _, ch = sch.get_loops(sch.get_sblock("quantize"))
    sch.parallel(sch.fuse(b, y))
    sch.unroll(ch)
    return sch.mod["main"]


def schedule_dequantize_nchw(function: tirx.PrimFunc) -> tirx.PrimFunc:
    """Parallel over (image, channel); each channel's rows in a row."""
    sch = s_tir.Schedule(function)
    b, c, _, x = sch.get_loops(sch.get_sblock("dequantize"))
    sch.parallel(sch.fuse(b, c))
    sch.vectorize(x)
    return sch.mod["main"]

