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

Who decides. By default the lowering absorbs every op the rules above allow
(`fused_groups` with all `FusionRules` on). A function whose ops carry
*fusion marks* says itself which ops run together: the `tconv.kernel`
attribute (an integer, written by `tconv-fuse`) puts every op with the same
value in one kernel, anchored at the first of them; an op without a mark runs
alone (`marked_groups`). Marks that break the rules (an op that does not read
the chain, a chain value with another user, an op the anchor cannot absorb,
or in the wrong order) are a located `FusionError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr
from xdsl.ir import Operation, SSAValue

from tconv.ir.loader import TconvError, located
from tconv.ir.ops import AddOp, BatchNormOp, Conv2dOp, DenseOp, ParamOp, Relu6Op, ReluOp

ACTIVATION_OPS = {ReluOp: "relu", Relu6Op: "relu6"}

FUSION_MARK = "tconv.kernel"
"""The discardable attribute that names an op's kernel (an integer)."""


class FusionError(TconvError):
    """Fusion marks the lowering cannot honour, and why."""


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


@dataclass(frozen=True)
class FusionRules:
    """Which ops a kernel may absorb after its anchor; the lowering's default
    absorbs all three."""

    batch_norm: bool = True
    """A batch-norm after a convolution or dense layer (folded into it)."""
    residual: bool = True
    """An add after a convolution or dense layer (and its batch-norm)."""
    activation: bool = True
    """A relu or relu6 after a convolution, dense layer, batch-norm or add."""


def _kernel_ops(function: func.FuncOp) -> list[Operation]:
    """The ops of `function` that run in kernels: all but parameters and the return."""
    return [op for op in function.body.block.ops if not isinstance(op, (ParamOp, func.ReturnOp))]


def _in_execution_order(groups: list[KernelGroup], function: func.FuncOp) -> list[KernelGroup]:
    """`groups` ordered as they run: each where its last op stood."""
    position = {op: index for index, op in enumerate(function.body.block.ops)}
    return sorted(groups, key=lambda group: position[group.ops[-1]])


# The lowering's own decision ---------------------------------------------------------


def _sole_user(value: SSAValue) -> Operation | None:
    """The op that uses `value`, if exactly one op uses it exactly once."""
    return value.get_user_of_unique_use() if value.has_one_use() else None


def _absorb(value: SSAValue, kinds: tuple[type[Operation], ...], taken: set[Operation]) -> Operation | None:
    user = _sole_user(value)
    return user if isinstance(user, kinds) and user not in taken else None


def _group_at(anchor: Operation, taken: set[Operation], rules: FusionRules) -> KernelGroup:
    """The kernel anchored at `anchor`; ops in `taken` belong to earlier kernels
    (an add whose operands both end chains joins the first)."""
    value = anchor.results[0]
    batch_norm = add = None
    if isinstance(anchor, (Conv2dOp, DenseOp)):
        candidate = _absorb(value, (BatchNormOp,), taken) if rules.batch_norm else None
        if isinstance(candidate, BatchNormOp) and candidate.input == value:
            batch_norm = candidate
            value = batch_norm.results[0]
        candidate = _absorb(value, (AddOp,), taken) if rules.residual else None
        if isinstance(candidate, AddOp):
            add = candidate
            value = add.results[0]
    activation = None
    if rules.activation and isinstance(anchor, (Conv2dOp, DenseOp, BatchNormOp, AddOp)):
        activation = _absorb(value, (ReluOp, Relu6Op), taken)
    return KernelGroup(anchor, batch_norm, add, activation)  # type: ignore[arg-type]


def fused_groups(function: func.FuncOp, rules: FusionRules = FusionRules()) -> list[KernelGroup]:
    """The kernels of `function` when each absorbs what `rules` allow, in
    execution order; marks are ignored."""
    absorbed: set[Operation] = set()
    groups: list[KernelGroup] = []
    for op in _kernel_ops(function):
        if op in absorbed:
            continue
        group = _group_at(op, absorbed, rules)
        absorbed.update(group.ops)
        groups.append(group)
    return _in_execution_order(groups, function)


# Following marks ---------------------------------------------------------------------

_ROLES = {BatchNormOp: "batch_norm", AddOp: "add", ReluOp: "activation", Relu6Op: "activation"}

_ABSORBS: dict[type[Operation], tuple[str, ...]] = {
    Conv2dOp: ("batch_norm", "add", "activation"),
    DenseOp: ("batch_norm", "add", "activation"),
    BatchNormOp: ("activation",),
    AddOp: ("activation",),
}

_GRAMMAR = {
    ("batch_norm", "add", "activation"): "[batch_norm] [add] [relu | relu6], in that order",
    ("activation",): "[relu | relu6]",
    (): "nothing",
}


def fusion_mark(op: Operation) -> int | None:
    """The kernel `op` is marked for, or None; a mark that is not an integer is
    a FusionError."""
    mark = op.attributes.get(FUSION_MARK)
    if mark is None:
        return None
    if not isinstance(mark, IntegerAttr):
        raise FusionError(located(op, f"fusion mark {FUSION_MARK} must be an integer, got {mark}"))
    return mark.value.data


def is_marked(function: func.FuncOp) -> bool:
    """Whether any op of `function` carries a fusion mark."""
    return any(FUSION_MARK in op.attributes for op in function.body.block.ops)


def _short(op: Operation) -> str:
    return op.name.removeprefix("tconv.")


def _chain(ops: list[Operation], mark: int) -> KernelGroup:
    """The kernel of the ops marked `mark` (in program order), checked against
    the rules of the module docstring."""
    anchor = ops[0]
    absorbs = _ABSORBS.get(type(anchor), ())
    roles: dict[str, Operation] = {}
    previous, next_role = anchor, 0
    where = f"fusion mark {FUSION_MARK} = {mark}"
    for op in ops[1:]:
        role = _ROLES.get(type(op))
        if role not in absorbs[next_role:]:
            raise FusionError(located(op, (
                f"{where}: a kernel anchored at {_short(anchor)} absorbs {_GRAMMAR[absorbs]}; "
                f"{_short(op)} cannot follow {_short(previous)}"
            )))
        value = previous.results[0]
        reads = (op.lhs, op.rhs) if isinstance(op, AddOp) else (op.operands[0],)
        if value not in reads:
            raise FusionError(located(op, (
                f"{where}: {_short(op)} does not read the result of {_short(previous)}, the op before it "
                f"in its kernel (a kernel's ops form a chain)"
            )))
        if not value.has_one_use():
            raise FusionError(located(previous, (
                f"{where}: the result of {_short(previous)} is used {value.uses.get_length()} times, but inside a "
                f"kernel it must have one use, by {_short(op)} (a kernel's intermediate values exist nowhere else)"
            )))
        roles[role] = op
        previous, next_role = op, absorbs.index(role) + 1
    return KernelGroup(anchor, **roles)  # type: ignore[arg-type]


def marked_groups(function: func.FuncOp) -> list[KernelGroup]:
    """The kernels the fusion marks of `function` describe, in execution
    order: one per mark value, and one per op without a mark."""
    by_mark: dict[int, list[Operation]] = {}
    groups: list[KernelGroup] = []
    for op in function.body.block.ops:
        mark = fusion_mark(op)
        if isinstance(op, (ParamOp, func.ReturnOp)):
            if mark is not None:
                raise FusionError(located(op, f"{op.name} runs in no kernel; remove its fusion mark {FUSION_MARK}"))
            continue
        if mark is None:
            groups.append(KernelGroup(op))
        else:
            by_mark.setdefault(mark, []).append(op)
    groups.extend(_chain(ops, mark) for mark, ops in by_mark.items())
    return _in_execution_order(groups, function)


def kernel_groups(function: func.FuncOp) -> Iterator[KernelGroup]:
    """The kernels of `function`, in an order that respects every data
    dependence: each where its last op stood. Its fusion marks decide where it
    has any; otherwise every op the rules allow is absorbed."""
    if is_marked(function):
        yield from marked_groups(function)
    else:
        yield from fused_groups(function)
