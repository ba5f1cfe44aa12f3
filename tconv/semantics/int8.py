"""What an int8 convolution kernel computes, exactly, in numpy: ONNX's
`QLinearConv`, with a fused activation.

A quantised convolution in QDQ form (`tconv.dequantize` of a uint8 input and
of a per-channel int8 weight, `tconv.conv2d` with a float32 bias, an
activation and, where the result is quantised again, `tconv.quantize`) runs
as one integer kernel:

    acc    = Σ x_q · w_q  +  offset[o]                       int32, exact
    offset = round(bias / (x_scale · w_scale[o])) - x_zero_point · Σ w_q[o]
    float32 output:  activation(float32(acc) · x_scale · w_scale[o])
    uint8 output:    clamp(round_half_even(float32(acc) · x_scale · w_scale[o] / y_scale) + y_zero_point)

The sum is exact (int32 holds it: `Requantization.of` and the kernel refuse
a layer where `int8_accumulator_bound` and the offset could reach 2³¹) and the float
part is one float32 multiply by a per-channel factor, so kernel and
reference agree bit for bit (there is no add that a compiler could fuse
into it). With a uint8 output the activation is the clamp's bounds: relu
clamps below at the zero point, relu6 also above at the level of 6 — the
same levels as clipping first and quantising after, as rounding is monotonic.

Against the f32 QDQ form the reference executor runs (a float32 convolution
of the dequantised values plus the float32 bias), the kernel differs by
float rounding and by the bias rounded to the accumulator's step (half a
step at most, as in ONNX Runtime); where a value falls on a rounding
boundary of the output's quantisation, by one level.

An int8 input (symmetric, zero point 0) is the uint8 input `x_q + 128` with
zero point 128: the same products, so the kernels read uint8 only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ACTIVATIONS = (None, "relu", "relu6")
INT32_LIMIT = 2**31
QUANT_DTYPES = {(-128, 127): np.int8, (0, 255): np.uint8}
"""The numpy type of each quantized element type, by its range."""


def quantize_array(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, low: int, high: int) -> np.ndarray:
    """ONNX's QuantizeLinear: saturate(round_half_even(x / scale) + zero_point),
    the division in float32 (as ONNX Runtime), as an int8 or uint8 array."""
    x = np.asarray(x, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = np.rint(np.divide(x, scale, dtype=np.float32))
        # Clipped before the zero point is added, so no value leaves the
        # range where float32 holds integers exactly.
        rounded = np.clip(rounded, np.float32(low - 256), np.float32(high + 256))
    values = rounded.astype(np.int32) + zero_point
    return np.clip(values, low, high).astype(QUANT_DTYPES[(low, high)])


def dequantize_array(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """ONNX's DequantizeLinear: (q - zero_point) · scale, in float32."""
    return (q.astype(np.int32) - zero_point).astype(np.float32) * scale


@dataclass(frozen=True)
class Requantization:
    """acc (int32) → output, per output channel `o` (module docstring):
    `scale[o]` is x_scale · w_scale[o] for a float32 output, that over
    y_scale for a uint8 one; `low` and `high` are the uint8 output's clamp
    (the activation folded in)."""

    offset: np.ndarray
    scale: np.ndarray
    activation: str | None = None
    out_zero_point: int | None = None
    """None: a float32 output."""
    low: int = 0
    high: int = 255

    @staticmethod
    def of(x_scale: float, x_zero_point: int, w_q: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None,
           activation: str | None = None, out_scale: float | None = None, out_zero_point: int = 0) -> Requantization:
        """The requantisation of a convolution whose OIHW int8 weight is `w_q`."""
        if activation not in ACTIVATIONS:
            raise ValueError(f"requantization: unknown activation {activation!r}")
        if out_scale is not None and not (out_scale > 0 and 0 <= out_zero_point <= 255):
            raise ValueError("requantization: the output scale must be positive and its zero point in [0, 255]")
        step = np.float32(x_scale) * np.asarray(w_scale, np.float32)
        offset = -np.int64(x_zero_point) * w_q.astype(np.int64).reshape(len(w_q), -1).sum(axis=1)
        if bias is not None:
            steps = np.rint(np.asarray(bias, np.float32) / step)
            if not np.all(np.abs(steps) < INT32_LIMIT):  # NaN and inf fail too
                raise ValueError("requantization: a bias is not an int32 number of accumulator steps")
            offset = offset + steps.astype(np.int64)
        bound = int8_accumulator_bound(w_q.shape[1], w_q.shape[2:])
        if np.abs(offset).max(initial=0) + bound >= INT32_LIMIT:
            raise ValueError(
                f"requantization: the int32 accumulator could overflow (products up to {bound}, "
                f"offsets up to {int(np.abs(offset).max())})"
            )
        if out_scale is None:
            return Requantization(offset.astype(np.int32), step, activation)
        low, high = uint8_clamp(activation, out_scale, out_zero_point)
        return Requantization(offset.astype(np.int32), (step / np.float32(out_scale)).astype(np.float32),
                              activation, out_zero_point, low, high)

    def apply(self, acc: np.ndarray, channel_axis: int = -1) -> np.ndarray:
        """The output of `acc` (Σ x_q · w_q, before the offset), channels along `channel_axis`."""
        shape = [1] * acc.ndim
        shape[channel_axis] = -1
        total = (acc.astype(np.int64) + self.offset.reshape(shape)).astype(np.int32)
        value = total.astype(np.float32) * self.scale.reshape(shape)
        if self.out_zero_point is None:
            if self.activation is not None:
                value = np.maximum(value, np.float32(0))
            if self.activation == "relu6":
                value = np.minimum(value, np.float32(6))
            return value
        return np.clip(np.rint(value) + self.out_zero_point, self.low, self.high).astype(np.uint8)


def uint8_clamp(activation: str | None, out_scale: float, out_zero_point: int) -> tuple[int, int]:
    """The levels a uint8 output is clamped to: the whole range, relu's from
    the zero point up, relu6's also at most the level of 6.0."""
    low, high = (out_zero_point if activation else 0), 255
    if activation == "relu6":
        high = int(min(255, out_zero_point + np.rint(np.float32(6) / np.float32(out_scale))))
    return low, high


def int8_accumulator_bound(in_channels: int, kernel: Sequence[int]) -> int:
    """The largest |acc| a convolution over `in_channels` × `kernel` taps can
    reach: 255 · 128 per product."""
    return 255 * 128 * in_channels * int(np.prod(kernel))


def int8_conv2d_accumulate(
    x_q: np.ndarray, zero_point: int, w_q: np.ndarray, strides: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0, 0, 0), dilations: Sequence[int] = (1, 1), groups: int = 1,
) -> np.ndarray:
    """Σ x_q · w_q (N x O x P x Q, int64 here; int32 in the kernels) of an
    NCHW uint8 input `x_q` and an OIHW int8 weight `w_q` of `groups`; padding
    (top, left, bottom, right) reads `zero_point`, as the kernels' does, so
    that the offset's zero-point term cancels it."""
    x = x_q.astype(np.int64)
    top, left, bottom, right = padding
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=zero_point)
    (sh, sw), (dh, dw) = strides, dilations
    out_channels, group_channels, kh, kw = w_q.shape
    out_group = out_channels // groups
    p = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    q = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    acc = np.zeros((x.shape[0], out_channels, p, q), np.int64)
    w = w_q.astype(np.int64)
    for ry in range(kh):
        for rx in range(kw):
            window = x[:, :, ry * dh: ry * dh + (p - 1) * sh + 1: sh, rx * dw: rx * dw + (q - 1) * sw + 1: sw]
            for g in range(groups):
                acc[:, g * out_group:(g + 1) * out_group] += np.einsum(
                    "ncpq,oc->nopq", window[:, g * group_channels:(g + 1) * group_channels],
                    w[g * out_group:(g + 1) * out_group, :, ry, rx],
                )
    return acc
