"""Which tconv ops run together as one kernel.

A kernel is built around an *anchor* op and absorbs the ops after it whose
only operand from the chain is the previous op's result, and which are that
result's only user:

    conv2d | dense  [batch_norm] [add] [relu | relu6]
    batch_norm      [relu | relu6]
    add             [relu | relu6]
    any other op    alone

A batch-norm after a convolution or dense layer is folded into its weights
and bias (`folding.fold_batch_norm`); an absorbed add contributes its other
operand as the epilogue's residual; the activation closes the epilogue. So
ResNet's `conv → bn → add → relu` and MobileNet's `conv → bn → relu6` are one
kernel each. The chain's intermediate values then exist nowhere.

A kernel runs where its *last* op stood: an absorbed add's other operand may
be computed after the anchor (a projection shortcut is), never after the add.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from tconv.ir.ops import AddOp, BatchNormOp, Conv2dOp, DenseOp, ParamOp, Relu6Op, ReluOp

ACTIVATION_OPS = {ReluOp: "relu", Relu6Op: "relu6"}


@dataclass(frozen=True)
class KernelGroup:
    """The ops of one kernel: `anchor`, then whichever of `batch_norm`, `add`
    and `activation` it absorbed, in that order."""

    anchor: Operation
    batch_norm: BatchNormOp | None = None
    add: AddOp | None = None
    activation: ReluOp | Relu6Op | None = None

    @property
    def ops(self) -> list[Operation]:
        return [op for op in (self.anchor, self.batch_norm, self.add, self.activation) if op is not None]

    @property
    def result(self) -> SSAValue:
        """The value the kernel writes: the last op's result."""
        return self.ops[-1].results[0]

    @property
    def residual(self) -> SSAValue | None:
        """The absorbed add's operand that does not come from the chain."""
        if self.add is None:
            return None
        chain = (self.batch_norm or self.anchor).results[0]
        return self.add.rhs if self.add.lhs == chain else self.add.lhs

    @property
    def activation_name(self) -> str | None:
        return None if self.activation is None else ACTIVATION_OPS[type(self.activation)]


def _sole_user(value: SSAValue) -> Operation | None:
    """The op that uses `value`, if exactly one op uses it exactly once."""
    return value.get_user_of_unique_use() if value.has_one_use() else None


def _absorb(value: SSAValue, kinds: tuple[type[Operation], ...], taken: set[Operation]) -> Operation | None:
    user = _sole_user(value)
    return user if isinstance(user, kinds) and user not in taken else None


def _group_at(anchor: Operation, taken: set[Operation]) -> KernelGroup:
    """The kernel anchored at `anchor`; ops in `taken` belong to earlier kernels
    (an add whose operands both end chains joins the first)."""
    value = anchor.results[0]
    batch_norm = add = None
    if isinstance(anchor, (Conv2dOp, DenseOp)):
        candidate = _absorb(value, (BatchNormOp,), taken)
        if isinstance(candidate, BatchNormOp) and candidate.input == value:
            batch_norm = candidate
            value = batch_norm.results[0]
        candidate = _absorb(value, (AddOp,), taken)
        if isinstance(candidate, AddOp):
            add = candidate
            value = add.results[0]
    activation = None
    if isinstance(anchor, (Conv2dOp, DenseOp, BatchNormOp, AddOp)):
        activation = _absorb(value, (ReluOp, Relu6Op), taken)
    return KernelGroup(anchor, batch_norm, add, activation)  # type: ignore[arg-type]


def kernel_groups(function: func.FuncOp) -> Iterator[KernelGroup]:
    """The kernels of `function`, in an order that respects every data
    dependence: each where its last op stood."""
    ops = list(function.body.block.ops)
    position = {op: index for index, op in enumerate(ops)}
    absorbed: set[Operation] = set()
    groups: list[KernelGroup] = []
    for op in ops:
        if op in absorbed or isinstance(op, (ParamOp, func.ReturnOp)):
            continue
        group = _group_at(op, absorbed)
        absorbed.update(group.ops)
        groups.append(group)
    groups.sort(key=lambda group: position[group.ops[-1]])
    yield from groups
