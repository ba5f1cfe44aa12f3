"""`tconv-bottleneck{factor}`: shrink a convolution's output channels.

The output-channel loop runs to O/factor instead of O: the weight (and bias)
become new parameters with O/factor rows, and every consumer of those
channels follows (see `channels`): batch-norm parameters, the next
convolution's input channels, the classifier after `flatten`. A convolution
whose output reaches a residual `add` or the function's result is not
eligible.
"""

from __future__ import annotations

from dataclasses import dataclass

from tconv.ir.ops import Conv2dOp
from tconv.passes.nas.channels import NotNarrowable, apply_narrowing, plan_narrowing
from tconv.passes.nas.nas_pass import (
    NasPass,
    RewriteState,
    conv_geometry,
    weight_name,
    weight_param,
)


@dataclass(frozen=True)
class BottleneckPass(NasPass):
    name = "tconv-bottleneck"

    factor: int

    @property
    def tag(self) -> str:
        return f"b{self.factor}"

    def validate(self) -> None:
        if self.factor < 2:
            raise self.fail(f"factor must be at least 2, got {self.factor}")

    def ineligible(self, conv: Conv2dOp, state: RewriteState) -> str | None:
        _, out_channels, _, _, groups = conv_geometry(conv)
        if weight_param(conv) is None:
            return "its weight is not a tconv.param"
        if out_channels % self.factor:
            return f"its output channels {out_channels} are not divisible by factor {self.factor}"
        narrowed = out_channels // self.factor
        if narrowed % groups:
            return f"its {groups} groups do not divide {narrowed} output channels"
        try:
            plan_narrowing(conv.output, range(narrowed), carry_values=False)
        except NotNarrowable as reason:
            return str(reason)
        return None

    def rewrite(self, conv: Conv2dOp, state: RewriteState) -> None:
        in_channels, out_channels, kernel_h, kernel_w, groups = conv_geometry(conv)
        narrowed = out_channels // self.factor
        plan = plan_narrowing(conv.output, range(narrowed), carry_values=False)
        apply_narrowing(plan, state.maker, self.tag, carry_values=False)
        old_weight = weight_param(conv)
        conv.operands[1] = state.maker.new(
            conv, weight_name(conv, self.tag), (narrowed, in_channels // groups, kernel_h, kernel_w),
            "kaiming_normal",
        )
        state.maker.erase_if_unused(old_weight)
        if conv.bias is not None:
            state.maker.replace_operand(conv, 2, self.tag, (narrowed,))
        conv.properties.pop("schedule", None)
