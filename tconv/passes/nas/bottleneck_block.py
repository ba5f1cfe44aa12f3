"""`tconv-bottleneck-block{factor}`: a KxK convolution C → O becomes a
bottleneck: a 1x1 convolution down to W = O/factor channels, the KxK
convolution at width W (with the original strides, padding and dilations),
and a 1x1 convolution back up to O (which takes over the bias). All weights
are new (inherited: the Tucker-2 factors of the old kernel, see `inherit`);
the output shape is unchanged. Grouped and 1x1 convolutions are not
eligible.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.rewriter import InsertPoint, Rewriter

from tconv.ir.ops import Conv2dOp
from tconv.passes.nas.inherit import tucker2
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
class BottleneckBlockPass(NasPass):
    """Replace KxK convolutions by a 1x1 down, a narrower KxK and a 1x1 back up."""

    name = "tconv-bottleneck-block"

    factor: int
    """The inner width is the output channels divided by it."""

    def validate(self) -> None:
        if self.factor < 2:
            raise self.fail(f"factor must be at least 2, got {self.factor}")

    def ineligible(self, conv: Conv2dOp, state: RewriteState) -> str | None:
        _, out_channels, kernel_h, kernel_w, groups = conv_geometry(conv)
        if weight_param(conv) is None:
            return "its weight is not a tconv.param"
        if groups != 1:
            return f"it is grouped ({groups} groups)"
        if (kernel_h, kernel_w) == (1, 1):
            return "it is a 1x1 convolution"
        if out_channels % self.factor:
            return f"its output channels {out_channels} are not divisible by factor {self.factor}"
        return None

    def rewrite(self, conv: Conv2dOp, state: RewriteState) -> None:
        in_channels, out_channels, kernel_h, kernel_w, _ = conv_geometry(conv)
        width = out_channels // self.factor
        maker = state.maker
        down_value = mid_value = up_value = None
        if state.inherit:
            down_value, mid_value, up_value = tucker2(state.store.value_of(weight_param(conv)), width)

        def insert(op: Conv2dOp) -> Conv2dOp:
            Rewriter.insert_op(op, InsertPoint.before(conv))
            return op

        down_weight = maker.new(
            conv, weight_name(conv, "down"), (width, in_channels, 1, 1), "kaiming_normal", down_value
        )
        down = insert(new_conv(conv, conv.input, down_weight, pointwise=True))
        mid_weight = maker.new(
            conv, weight_name(conv, "mid"), (width, width, kernel_h, kernel_w), "kaiming_normal", mid_value
        )
        mid = insert(new_conv(conv, down.output, mid_weight))
        up_weight = maker.new(
            conv, weight_name(conv, "up"), (out_channels, width, 1, 1), "kaiming_normal", up_value
        )
        bias = moved_bias(conv, "up", state)
        up = insert(new_conv(conv, mid.output, up_weight, bias, pointwise=True))
        replace_conv(conv, up.output, state)
