"""`tconv-bottleneck{factor}`: shrink a convolution's output channels.

The output-channel loop runs to O/factor instead of O: the weight (and bias)
become new parameters with O/factor rows, and every consumer of those
channels follows (see `channels`): batch-norm parameters, the next
convolution's input channels, the classifier after `flatten`. A convolution
whose output reaches a residual `add` or the function's result is not
eligible.

When inheriting, the O/factor channels of largest weight norm stay, with their
slices of every parameter (see `inherit` for why channels, not SVD factors).
"""

from __future__ import annotations

from dataclasses import dataclass

from tconv.ir.ops import Conv2dOp
from tconv.passes.nas.channels import NotNarrowable, narrow_output, plan_narrowing
from tconv.passes.nas.inherit import largest_channels
from tconv.passes.nas.nas_pass import NasPass, RewriteState, conv_geometry, weight_param


@dataclass(frozen=True)
class BottleneckPass(NasPass):
    """Shrink convolutions' output channels by `factor`; their consumers follow."""

    name = "tconv-bottleneck"

    factor: int
    """Output channels are divided by it."""

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
            plan_narrowing(conv.output, range(narrowed), exact=False)
        except NotNarrowable as reason:
            return str(reason)
        return None

    def kept_channels(self, conv: Conv2dOp, state: RewriteState) -> list[int]:
        """The output channels that stay: the largest by weight norm when
        inheriting (see `inherit`), the first O/factor otherwise (their new
        values are random, so which does not matter)."""
        _, out_channels, _, _, groups = conv_geometry(conv)
        narrowed = out_channels // self.factor
        if not state.inherit:
            return list(range(narrowed))
        return largest_channels(state.store.value_of(weight_param(conv)), narrowed, groups)

    def rewrite(self, conv: Conv2dOp, state: RewriteState) -> None:
        kept = self.kept_channels(conv, state)
        narrow_output(conv, kept, state.maker, self.tag, exact=False, carry_values=state.inherit)
