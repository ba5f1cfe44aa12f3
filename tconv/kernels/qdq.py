"""The QDQ patterns of a quantised network, as the lowerings read them.

A quantised network (`tconv-quantize`, or an imported QDQ model) computes
on float32 values that went through `tconv.quantize` → `tconv.dequantize`
(docs/ARCHITECTURE.md, Quantization). Two patterns matter to a kernel:

- a *QDQ weight*: `dequantize(quantize(param))`, symmetric int8 (zero
  points 0), per tensor or per output channel (axis 0), the same numbers on
  both ops: a compile-time constant, computed from the store entry
  (`weight_qdq`);
- a *QDQ activation*: `dequantize(quantize(x))` of a computed value `x`,
  per tensor (`activation_qdq`): its integers are `Uint8` levels.

An int8 activation with zero point z is held as the uint8 one with zero
point z + 128 (the same levels shifted; `semantics.int8`), so the kernels
read and write uint8 only.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.ir import SSAValue

from tconv.ir.ops import QUANT_TYPES, DequantizeOp, ParamOp, QuantizeOp


class QdqError(ValueError):
    """A QDQ pattern no kernel computes, and why (without a location)."""


@dataclass(frozen=True)
class Uint8:
    """Per-tensor uint8 levels: value = (q - zero_point) · scale."""

    scale: float
    zero_point: int

    @staticmethod
    def of(op: QuantizeOp | DequantizeOp) -> Uint8:
        """The levels of a per-tensor quantize or dequantize, an int8 one shifted by 128."""
        if op.channel_axis is not None:
            raise QdqError(
                f"'{op.name}' of an activation is per channel (axis {op.channel_axis}); kernels take "
                "per-tensor activations"
            )
        shift = 128 if op.quantized_type == QUANT_TYPES["i8"][0] else 0
        return Uint8(op.scales[0], op.zero_points[0] + shift)


def _same_numbers(a: QuantizeOp, b: DequantizeOp) -> bool:
    return a.scales == b.scales and a.zero_points == b.zero_points and a.channel_axis == b.channel_axis


def weight_qdq(value: SSAValue) -> tuple[str, tuple[float, ...]] | None:
    """The store entry and int8 scales of a QDQ weight (module docstring);
    None where `value` is not `dequantize(quantize(param))`; a `QdqError`
    where it is, in a form no kernel takes."""
    dequantize = value.owner
    if not isinstance(dequantize, DequantizeOp):
        return None
    quantize = dequantize.input.owner
    if not isinstance(quantize, QuantizeOp) or not isinstance(quantize.input.owner, ParamOp):
        return None
    if not _same_numbers(quantize, dequantize):
        raise QdqError("the weight's quantize and dequantize have different scales or zero points")
    if quantize.quantized_type != QUANT_TYPES["i8"][0] or any(quantize.zero_points):
        raise QdqError("a quantized weight must be symmetric int8 (element type i8, zero points 0)")
    if quantize.channel_axis not in (None, 0):
        raise QdqError(f"a quantized weight is per tensor or per output channel (axis 0), not axis "
                       f"{quantize.channel_axis}")
    return quantize.input.owner.param_name, quantize.scales


def activation_qdq(value: SSAValue) -> tuple[QuantizeOp, DequantizeOp] | None:
    """The quantize and dequantize of a QDQ activation `value` (the
    dequantize's result), or None where `value` is no such pair's."""
    dequantize = value.owner
    if not isinstance(dequantize, DequantizeOp):
        return None
    quantize = dequantize.input.owner
    if not isinstance(quantize, QuantizeOp) or isinstance(quantize.input.owner, ParamOp):
        return None
    return quantize, dequantize


def is_weight_quantization(op: QuantizeOp | DequantizeOp) -> bool:
    """Whether `op` is part of a QDQ weight (computed at compile time, no kernel)."""
    quantize = op.input.owner if isinstance(op, DequantizeOp) else op
    return isinstance(quantize, QuantizeOp) and isinstance(quantize.input.owner, ParamOp)
