"""`tconv-depthwise-separable`: a KxK convolution becomes a depthwise KxK
convolution followed by a pointwise 1x1 one (MobileNet's factorisation).

The depthwise convolution keeps the original strides, padding and dilations,
with one group per input channel (weight C x 1 x KH x KW); the pointwise one
maps C to O channels (weight O x C x 1 x 1) and takes over the bias.
Inherited, each input channel's pair is the best rank-1 fit of its slice of
the old kernel (see `inherit`). The output shape is unchanged. Grouped and 1x1
convolutions are not eligible.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.rewriter import InsertPoint, Rewriter

from tconv.ir.ops import Conv2dOp
from tconv.passes.nas.inherit import depthwise_separable
from tconv.passes.nas.nas_pass import (
    NasPass,
    RewriteState,
    conv_geometry,
    moved_bias,
    new_conv,
    replace_conv,
    weight_name,
    weight_param,
)


@dataclass(frozen=True)
class DepthwiseSeparablePass(NasPass):
    """Replace KxK convolutions by a depthwise KxK and a pointwise 1x1 convolution."""

    name = "tconv-depthwise-separable"

    def ineligible(self, conv: Conv2dOp, state: RewriteState) -> str | None:
        _, _, kernel_h, kernel_w, groups = conv_geometry(conv)
        if weight_param(conv) is None:
            return "its weight is not a tconv.param"
        if groups != 1:
            return f"it is already grouped ({groups} groups)"
        if (kernel_h, kernel_w) == (1, 1):
            return "it is a 1x1 convolution"
        return None

    def rewrite(self, conv: Conv2dOp, state: RewriteState) -> None:
        in_channels, out_channels, kernel_h, kernel_w, _ = conv_geometry(conv)
        maker = state.maker
        dw_value = pw_value = None
        if state.inherit:
            dw_value, pw_value = depthwise_separable(state.store.value_of(weight_param(conv)))
        depthwise_weight = maker.new(
            conv, weight_name(conv, "dw"), (in_channels, 1, kernel_h, kernel_w), "kaiming_normal", dw_value
        )
        depthwise = new_conv(conv, conv.input, depthwise_weight, groups=in_channels)
        Rewriter.insert_op(depthwise, InsertPoint.before(conv))
        pointwise_weight = maker.new(
            conv, weight_name(conv, "pw"), (out_channels, in_channels, 1, 1), "kaiming_normal", pw_value
        )
        bias = moved_bias(conv, "pw", state)
        pointwise = new_conv(conv, depthwise.output, pointwise_weight, bias, pointwise=True)
        Rewriter.insert_op(pointwise, InsertPoint.before(conv))
        replace_conv(conv, pointwise.output, state)
