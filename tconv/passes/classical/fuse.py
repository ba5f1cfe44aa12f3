"""`tconv-fuse`: write the operator-fusion decision into the IR, so it can be
read, tested and changed before a network is compiled.

    tconv-opt net.mlir -p 'tconv-fuse{residual=false}'

Every op that runs in a kernel gets the fusion mark `tconv.kernel = N`: the
index, in execution order, of the kernel it runs in. Ops with the same index
run as one kernel, built around the first of them by the rules of
`tconv.kernels.fusion` (`conv2d → batch_norm → add → relu` in ResNet).
The TVM lowering follows the marks of a function that has any, runs an op
without a mark (one a later pass inserted) alone, and reports marks that
break the rules at the op; a function without marks it fuses by itself,
which is exactly what plain `tconv-fuse` writes down.

Options switch off what a kernel absorbs after its anchor: `batch_norm`
(a batch-norm after a convolution or dense layer, folded into it),
`residual` (an add after a convolution or dense layer, or after its
batch-norm) and `activation` (a relu or
relu6 after a convolution, dense layer, batch-norm or add). Each `false`
gives more, smaller kernels computing the same values. The pass replaces the
marks an earlier run wrote. Run it after the NAS rewrites: an op they
replace loses its mark. (`tconv-fold-bn` keeps the layer's mark, and the
kernel stays one.)
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass

from tconv.kernels.fusion import FUSION_MARK, FusionRules, fused_groups


@dataclass(frozen=True)
class FusePass(ModulePass):
    """Marks every op with the kernel it runs in (see the module docstring)."""

    name = "tconv-fuse"

    batch_norm: bool = True
    """A kernel absorbs a batch-norm after its convolution or dense layer (folded into it)."""
    residual: bool = True
    """A kernel absorbs a residual add after its convolution, dense layer or batch-norm."""
    activation: bool = True
    """A kernel absorbs a relu or relu6 after its convolution, dense layer, batch-norm or add."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        rules = FusionRules(self.batch_norm, self.residual, self.activation)
        for function in op.walk():
            if not isinstance(function, func.FuncOp) or function.is_declaration:
                continue
            for inner in function.body.block.ops:
                inner.attributes.pop(FUSION_MARK, None)
            for index, group in enumerate(fused_groups(function, rules)):
                for member in group.ops:
                    member.attributes[FUSION_MARK] = IntegerAttr(index, i64)
