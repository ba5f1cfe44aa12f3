"""`tconv-spatial-strip{strips}`: a convolution's output rows are computed in
`strips` horizontal strips, each by its own convolution with its own weights,
and joined by a `tconv.concat` along the height (axis 2).

Strip-mining the image turns one convolution into several over smaller
images: each strip reads only the input rows its output rows need (a
`tconv.slice` of axis 2), its halo included. Output rows are shared out as
evenly as they go, the first strips taking one more where they do not divide.
Output row `o` reads padded input rows `o·s … o·s + d·(KH−1)` (stride `s`,
dilation `d`), so the strip of output rows `[o0, o1)` reads input rows
`[o0·s − top, (o1−1)·s − top + d·(KH−1) + 1)`. What of that range lies above
the image is the strip's top padding, what lies below its bottom padding: the
top strip keeps the top padding, the bottom strip the bottom padding (what of
it its rows reach), and an interior strip pads 0 rows and reads real rows of
its neighbours as its halo. Columns, strides, dilations and groups are the
original's. The output shape is unchanged.

Every strip's weight (and bias) starts as a copy of the original's unless
`init=random`, where each starts at its own initial value (drawn from the
store's seed and the strip's parameter name); with copies the rewrite
computes exactly what the original did. A convolution with fewer output rows
than `strips` is not eligible.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.ir import SSAValue
from xdsl.rewriter import InsertPoint, Rewriter

from tconv.ir.ops import ConcatOp, Conv2dOp, ParamOp, SliceOp, shape_of
from tconv.passes.nas.nas_pass import (
    NasPass,
    RewriteState,
    bias_name,
    replace_conv,
    weight_name,
    weight_param,
)


@dataclass(frozen=True)
class Strip:
    """One strip: output rows `[out_start, out_start + out_rows)`, computed from
    input rows `[in_start, in_start + in_rows)` padded by `top` and `bottom`."""

    out_start: int
    out_rows: int
    in_start: int
    in_rows: int
    top: int
    bottom: int


def plan_strips(
    height: int, out_height: int, kernel: int, stride: int, dilation: int, top: int, strips: int
) -> list[Strip]:
    """The strips of a convolution over `height` input rows with `out_height`
    output rows (kernel height, stride, dilation and top padding as given)."""
    base, extra = divmod(out_height, strips)
    span = dilation * (kernel - 1) + 1
    plan, start = [], 0
    for index in range(strips):
        rows = base + (index < extra)
        first = start * stride - top  # in unpadded input rows; may be negative
        end = (start + rows - 1) * stride - top + span
        in_start, in_end = max(first, 0), min(end, height)
        plan.append(Strip(start, rows, in_start, in_end - in_start, in_start - first, max(end - height, 0)))
        start += rows
    return plan


@dataclass(frozen=True)
class SpatialStripPass(NasPass):
    """Compute convolutions' output rows in horizontal strips, each with its own weights, concatenated."""

    name = "tconv-spatial-strip"

    strips: int
    """How many strips of output rows; at most the convolution's output height."""

    def validate(self) -> None:
        if self.strips < 2:
            raise self.fail(f"strips must be at least 2, got {self.strips}")

    def ineligible(self, conv: Conv2dOp, state: RewriteState) -> str | None:
        if weight_param(conv) is None:
            return "its weight is not a tconv.param"
        out_height = shape_of(conv.output)[2]
        if self.strips > out_height:
            return f"strips {self.strips} exceed its {out_height} output rows"
        for index, strip in enumerate(self.plan(conv)):
            if strip.in_rows < 1:
                return f"strip {index} (output rows {strip.out_start} to {strip.out_start + strip.out_rows - 1}) reads only padding"
        return None

    def plan(self, conv: Conv2dOp) -> list[Strip]:
        _, _, height, _ = shape_of(conv.input)
        return plan_strips(
            height, shape_of(conv.output)[2], shape_of(conv.weight)[2], conv.strides.get_values()[0],
            conv.dilations.get_values()[0], conv.padding.get_values()[0], self.strips,
        )

    def rewrite(self, conv: Conv2dOp, state: RewriteState) -> None:
        maker = state.maker
        height = shape_of(conv.input)[2]
        stride_h, stride_w = conv.strides.get_values()
        dilation_h, dilation_w = conv.dilations.get_values()
        _, left, _, right = conv.padding.get_values()
        groups = conv.groups.value.data
        weight_old = weight_param(conv)
        weight = maker.store.value_of(weight_old) if state.copy_exact else None
        bias_param = conv.bias.owner if conv.bias is not None else None
        bias = maker.store.value_of(bias_param) if isinstance(bias_param, ParamOp) and state.copy_exact else None
        parts = []
        for index, strip in enumerate(self.plan(conv)):
            tag = f"strip{index}"
            rows: SSAValue = conv.input
            if strip.in_rows != height:
                cut = SliceOp(conv.input, axis=2, start=strip.in_start, size=strip.in_rows)
                Rewriter.insert_op(cut, InsertPoint.before(conv))
                rows = cut.output
            part_weight = maker.new(
                conv, weight_name(conv, tag), shape_of(conv.weight), weight_old.init.data, weight
            )
            part_bias = None
            if conv.bias is not None:
                init = bias_param.init.data if isinstance(bias_param, ParamOp) else "zeros"
                part_bias = maker.new(conv, bias_name(conv, tag), shape_of(conv.bias), init, bias)
            part = Conv2dOp(
                rows, part_weight, part_bias,
                strides=(stride_h, stride_w),
                padding=(strip.top, left, strip.bottom, right),
                dilations=(dilation_h, dilation_w),
                groups=groups,
            )
            Rewriter.insert_op(part, InsertPoint.before(conv))
            assert shape_of(part.output)[2] == strip.out_rows, (strip, shape_of(part.output))
            parts.append(part.output)
        joined = ConcatOp(parts, axis=2)
        Rewriter.insert_op(joined, InsertPoint.before(conv))
        assert shape_of(joined.output) == shape_of(conv.output)
        replace_conv(conv, joined.output, state)
