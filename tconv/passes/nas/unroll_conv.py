"""`tconv-unroll-conv{dense, groups}`: a partially dense convolution.

The first `dense` output channels are computed densely, over all input
channels; the remaining O - dense by a convolution with `groups` groups; the
two are concatenated. Where the original convolution is ungrouped, the dense
part starts from its slice of the original weight (written to the active
parameter store), so those channels are unchanged; the grouped part's weight
is new, or, inherited, the block-diagonal part of its slice (and a grouped
original's dense part its exact dense slice). The bias, per output channel,
is split between the two. The output shape is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.rewriter import InsertPoint, Rewriter

from tconv.ir.ops import ConcatOp, Conv2dOp, ParamOp
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
class UnrollConvPass(NasPass):
    """Compute the first `dense` output channels densely and the rest grouped, concatenated."""

    name = "tconv-unroll-conv"

    dense: int
    """Output channels computed over all input channels."""
    groups: int
    """The grouping of the other output channels."""

    def validate(self) -> None:
        if self.dense < 1:
            raise self.fail(f"dense must be positive, got {self.dense}")
        if self.groups < 2:
            raise self.fail(f"groups must be at least 2, got {self.groups}")

    def ineligible(self, conv: Conv2dOp, state: RewriteState) -> str | None:
        in_channels, out_channels, _, _, _ = conv_geometry(conv)
        if weight_param(conv) is None:
            return "its weight is not a tconv.param"
        if self.dense >= out_channels:
            return f"dense {self.dense} leaves none of its {out_channels} output channels to group"
        rest = out_channels - self.dense
        if in_channels % self.groups:
            return f"its input channels {in_channels} are not divisible by groups {self.groups}"
        if rest % self.groups:
            return f"its {rest} grouped output channels are not divisible by groups {self.groups}"
        return None

    def rewrite(self, conv: Conv2dOp, state: RewriteState) -> None:
        in_channels, out_channels, kernel_h, kernel_w, groups = conv_geometry(conv)
        maker = state.maker
        dense_exact = groups == 1 and state.copy_exact
        weight = maker.store.value_of(weight_param(conv)) if state.inherit or dense_exact else None
        bias_param = conv.bias.owner if conv.bias is not None else None
        bias_value = maker.store.value_of(bias_param) if isinstance(bias_param, ParamOp) else None
        parts = []
        for tag, rows, part_groups in (
            ("dense", slice(0, self.dense), 1),
            ("grouped", slice(self.dense, out_channels), self.groups),
        ):
            count = rows.stop - rows.start
            copies = state.inherit or (part_groups == 1 and dense_exact)
            part_weight = maker.new(
                conv, weight_name(conv, tag), (count, in_channels // part_groups, kernel_h, kernel_w),
                "kaiming_normal", regroup(weight, groups, part_groups, rows) if copies else None,
            )
            part_bias = None
            if isinstance(bias_param, ParamOp):
                part_bias = maker.new(
                    conv, bias_name(conv, tag), (count,), bias_param.init.data,
                    bias_value[rows] if state.copy_exact else None,
                )
            part_conv = new_conv(conv, conv.input, part_weight, part_bias, groups=part_groups)
            Rewriter.insert_op(part_conv, InsertPoint.before(conv))
            parts.append(part_conv.output)
        joined = ConcatOp(parts, axis=1)
        Rewriter.insert_op(joined, InsertPoint.before(conv))
        replace_conv(conv, joined.output, state)
