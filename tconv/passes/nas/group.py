"""`tconv-group{groups}`: make a convolution grouped.

The input-channel loop is split into `groups` groups and each output channel
reads only its group's inputs: the weight shrinks from O x C x KH x KW to
O x C/groups x KH x KW (a new parameter; inherited, the old kernel's
block-diagonal part). The output shape is unchanged.

    %y = tconv.conv2d %x, %w ... groups 1 : (tensor<1x8x..>, tensor<16x8x3x3xf32>) -> ...
    // tconv-group{groups=4}
    %y = tconv.conv2d %x, %w_g4 ... groups 4 : (tensor<1x8x..>, tensor<16x2x3x3xf32>) -> ...
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import IntegerAttr, i64

from tconv.ir.ops import Conv2dOp
from tconv.passes.nas.inherit import regroup
from tconv.passes.nas.nas_pass import NasPass, RewriteState, conv_geometry, weight_name, weight_param


@dataclass(frozen=True)
class GroupPass(NasPass):
    """Make convolutions grouped: each output channel reads only its group's input channels."""

    name = "tconv-group"

    groups: int
    """The number of groups; it divides the input and output channels."""

    def validate(self) -> None:
        if self.groups < 2:
            raise self.fail(f"groups must be at least 2, got {self.groups}")

    def ineligible(self, conv: Conv2dOp, state: RewriteState) -> str | None:
        in_channels, out_channels, _, _, groups = conv_geometry(conv)
        if weight_param(conv) is None:
            return "its weight is not a tconv.param"
        if groups == self.groups:
            return f"it already has {groups} groups"
        if in_channels % self.groups:
            return f"its input channels {in_channels} are not divisible by groups {self.groups}"
        if out_channels % self.groups:
            return f"its output channels {out_channels} are not divisible by groups {self.groups}"
        return None

    def rewrite(self, conv: Conv2dOp, state: RewriteState) -> None:
        in_channels, out_channels, kernel_h, kernel_w, groups = conv_geometry(conv)
        old = weight_param(conv)
        value = regroup(state.store.value_of(old), groups, self.groups) if state.inherit else None
        conv.operands[1] = state.maker.new(
            conv,
            weight_name(conv, f"g{self.groups}"),
            (out_channels, in_channels // self.groups, kernel_h, kernel_w),
            "kaiming_normal",
            value,
        )
        conv.properties["groups"] = IntegerAttr(self.groups, i64)
        conv.properties.pop("schedule", None)
        state.maker.erase_if_unused(old)
