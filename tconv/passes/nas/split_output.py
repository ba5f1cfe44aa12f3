"""`tconv-split-output{splits, groups}`: a convolution's output channels are
computed by `splits` parallel convolutions, each over all input channels with
its own grouping (`groups`, default 1), and concatenated.

Each part has O/splits output channels and weight O/splits x C/groups x KH x
KW. Where the original convolution is ungrouped and `groups` is 1, each part
starts from its slice of the original weight (and bias), written to the
active parameter store, so the rewrite computes exactly what the original
did; otherwise the weights are new, or, inherited, the block-diagonal part of
the slice (exact for a grouped original split with `groups` 1). The output
shape is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.rewriter import InsertPoint, Rewriter

from tconv.ir.ops import ConcatOp, Conv2dOp, ParamOp, shape_of
from tconv.passes.nas.inherit import regroup
from tconv.passes.nas.nas_pass import (
    NasPass,
    RewriteState,
    bias_name,
    conv_geometry,
    new_conv,
    replace_conv,
    weight_name,
    weight_param,
)


@dataclass(frozen=True)
class SplitOutputPass(NasPass):
    """Compute convolutions' output channels by `splits` parallel convolutions, concatenated."""

    name = "tconv-split-output"

    splits: int
    """How many parts; it divides the output channels."""
    groups: int = 1
    """The grouping of each part."""

    def validate(self) -> None:
        if self.splits < 2:
            raise self.fail(f"splits must be at least 2, got {self.splits}")
        if self.groups < 1:
            raise self.fail(f"groups must be positive, got {self.groups}")

    def ineligible(self, conv: Conv2dOp, state: RewriteState) -> str | None:
        in_channels, out_channels, _, _, _ = conv_geometry(conv)
        if weight_param(conv) is None:
            return "its weight is not a tconv.param"
        if out_channels % self.splits:
            return f"its output channels {out_channels} are not divisible by splits {self.splits}"
        part = out_channels // self.splits
        if in_channels % self.groups:
            return f"its input channels {in_channels} are not divisible by groups {self.groups}"
        if part % self.groups:
            return f"the {part} output channels of each split are not divisible by groups {self.groups}"
        return None

    def rewrite(self, conv: Conv2dOp, state: RewriteState) -> None:
        in_channels, out_channels, kernel_h, kernel_w, groups = conv_geometry(conv)
        part = out_channels // self.splits
        maker = state.maker
        exact = groups == 1 and self.groups == 1
        copied = state.inherit or (exact and state.copy_exact)
        weight = maker.store.value_of(weight_param(conv)) if copied else None
        bias_param = conv.bias.owner if conv.bias is not None else None
        bias_value = maker.store.value_of(bias_param) if isinstance(bias_param, ParamOp) else None
        parts = []
        for index in range(self.splits):
            rows = slice(index * part, (index + 1) * part)
            part_weight = maker.new(
                conv, weight_name(conv, f"s{index}"),
                (part, in_channels // self.groups, kernel_h, kernel_w), "kaiming_normal",
                regroup(weight, groups, self.groups, rows) if weight is not None else None,
            )
            part_bias = None
            if isinstance(bias_param, ParamOp):
                part_bias = maker.new(
                    conv, bias_name(conv, f"s{index}"), (part,), bias_param.init.data,
                    bias_value[rows] if state.copy_exact else None,
                )
            part_conv = new_conv(conv, conv.input, part_weight, part_bias, groups=self.groups)
            Rewriter.insert_op(part_conv, InsertPoint.before(conv))
            parts.append(part_conv.output)
        joined = ConcatOp(parts, axis=1)
        Rewriter.insert_op(joined, InsertPoint.before(conv))
        assert shape_of(joined.output) == shape_of(conv.output)
        replace_conv(conv, joined.output, state)
