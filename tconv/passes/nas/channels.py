"""Narrowing a value's channels, and every consumer with it.

When a rewrite leaves a convolution with fewer output channels (bottleneck,
pruning), its consumers must follow: batch-norm parameters shrink, ReLUs,
pools and slices of rows or columns pass the change on, the next
convolution's weight loses input channels, the classifier's weight loses
input features after `flatten`, and a channel `concat` passes the change on
at its offset. `plan_narrowing` finds them all
(or says why it cannot), `apply_narrowing` rewrites their parameters; result
types are re-inferred afterwards with `refresh_result_types`.

A change is described by `kept`: for each channel of the narrowed value, the
old channel it was (the survivors for pruning, the channels of largest norm or
`range(new)` for a bottleneck). With `carry_values`, each new parameter gets
the kept slices of the old one (of a grouped weight: the block-diagonal part of
the sliced kernel, see `inherit.take_channels`); otherwise it is initialised
from its `init`. `narrow_output` narrows a convolution's own output channels
along with their consumers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue, Use

from tconv.ir.ops import (
    AddOp,
    AvgPool2dOp,
    BatchNormOp,
    ConcatOp,
    Conv2dOp,
    DenseOp,
    FlattenOp,
    GlobalAvgPoolOp,
    MaxPool2dOp,
    ParamOp,
    Relu6Op,
    ReluOp,
    SliceOp,
    shape_of,
)
from tconv.passes.nas.inherit import take_channels
from tconv.passes.nas.params import ParamMaker

PASS_THROUGH = (ReluOp, Relu6Op, MaxPool2dOp, AvgPool2dOp, GlobalAvgPoolOp)
"""Ops that keep their input's channels one for one."""


class NotNarrowable(Exception):
    """Why a value's channels cannot be narrowed (a remark or a diagnostic)."""


@dataclass(frozen=True)
class Resize:
    """Operand `operand` of `op` (a parameter) keeps `kept` along `axis`; a
    kernel of `groups` groups (a grouped weight holds C/groups input channels
    along axis 1)."""

    op: Operation
    operand: int
    axis: int
    kept: tuple[int, ...]
    groups: int = 1


@dataclass
class NarrowingPlan:
    resizes: list[Resize] = field(default_factory=list)


def _param_operand(op: Operation, index: int, what: str) -> None:
    if not isinstance(op.operands[index].owner, ParamOp):
        raise NotNarrowable(f"its {what} is not a tconv.param")


def plan_narrowing(value: SSAValue, kept: Sequence[int], exact: bool) -> NarrowingPlan:
    """The parameter resizes that narrowing `value` to channels `kept` needs.

    Raises NotNarrowable when a consumer cannot follow: a residual `add` (its
    other operand keeps its channels), a function result, a depthwise or
    (when the kept slices must be exact) grouped convolution, or any other op."""
    plan = NarrowingPlan()
    seen: set[SSAValue] = set()
    # Depth first, in the order of each value's uses, with an explicit stack:
    # a chain of a thousand pass-through ops would exhaust Python's recursion.
    stack: list[tuple[SSAValue, tuple[int, ...], Iterator]] = []

    def visit(value: SSAValue, kept: tuple[int, ...]) -> None:
        if value in seen:
            raise NotNarrowable("its channels reach one op along two paths")
        seen.add(value)
        stack.append((value, kept, iter(list(value.uses))))

    visit(value, tuple(kept))
    while stack:
        current, current_kept, uses = stack[-1]
        use = next(uses, None)
        if use is None:
            stack.pop()
            continue
        following = _plan_use(current, use, current_kept, exact, plan)
        if following is not None:
            visit(*following)
    return plan


def _plan_use(
    value: SSAValue, use: Use, kept: tuple[int, ...], exact: bool, plan: NarrowingPlan
) -> tuple[SSAValue, tuple[int, ...]] | None:
    """Plan the resizes of one use of `value`; the value that passes the
    narrowing on (with its kept channels), if any."""
    channels = len(kept)
    op = use.operation
    if isinstance(op, BatchNormOp) and use.index == 0:
        for index, what in ((1, "scale"), (2, "shift"), (3, "mean"), (4, "var")):
            _param_operand(op, index, f"batch_norm {what}")
            plan.resizes.append(Resize(op, index, 0, kept))
        return op.output, kept
    if isinstance(op, PASS_THROUGH) or (isinstance(op, SliceOp) and op.axis.value.data >= 2):
        # A slice of rows or columns keeps every channel.
        return op.results[0], kept
    if isinstance(op, Conv2dOp) and use.index == 0:
        groups = op.groups.value.data
        old_channels = shape_of(op.input)[1]
        if groups > 1 and groups == old_channels:
            raise NotNarrowable(f"it feeds a depthwise convolution ({groups} groups)")
        if groups > 1 and exact:
            raise NotNarrowable(f"it feeds a grouped convolution ({groups} groups)")
        if channels % groups:
            raise NotNarrowable(
                f"it feeds a convolution with {groups} groups, which do not divide {channels} channels"
            )
        _param_operand(op, 1, "consumer's weight")
        plan.resizes.append(Resize(op, 1, 1, kept, groups))
        return None
    if isinstance(op, FlattenOp):
        _, _, height, width = shape_of(op.input)
        area = height * width
        features = tuple(c * area + i for c in kept for i in range(area))
        for flat_use in op.output.uses:
            dense = flat_use.operation
            if not isinstance(dense, DenseOp) or flat_use.index != 0:
                raise NotNarrowable(f"its flattened channels feed {dense.name}, which cannot be resized")
            _param_operand(dense, 1, "dense weight")
            plan.resizes.append(Resize(dense, 1, 1, features))
        return None
    if isinstance(op, ConcatOp) and op.axis.value.data == 1:
        offset = sum(shape_of(v)[1] for v in op.inputs[: use.index])
        total = shape_of(op.output)[1]
        own = shape_of(value)[1]
        joined = tuple(range(offset)) + tuple(offset + c for c in kept) + tuple(range(offset + own, total))
        return op.output, joined
    if isinstance(op, AddOp):
        raise NotNarrowable("it feeds a residual add whose other operand keeps its channels")
    if isinstance(op, func.ReturnOp):
        raise NotNarrowable("it is a result of the function")
    raise NotNarrowable(f"it feeds {op.name}, which cannot be resized")


def apply_narrowing(plan: NarrowingPlan, maker: ParamMaker, tag: str, carry_values: bool) -> None:
    """Give every planned operand a new parameter (named with `tag`) of the narrowed shape."""
    for resize in plan.resizes:
        old = resize.op.operands[resize.operand].owner
        assert isinstance(old, ParamOp)
        shape = list(shape_of(old.result))
        shape[resize.axis] = len(resize.kept) // (resize.groups if resize.axis == 1 else 1)
        value = None
        if carry_values:
            value = take_channels(maker.store.value_of(old), resize.kept, resize.axis, resize.groups)
        maker.replace_operand(resize.op, resize.operand, tag, shape, value)


def narrow_output(
    conv: Conv2dOp, kept: Sequence[int], maker: ParamMaker, tag: str, *, exact: bool, carry_values: bool
) -> None:
    """Narrow `conv`'s output to channels `kept`: its weight's rows and bias,
    and every consumer (see `plan_narrowing` for `exact`)."""
    kept = tuple(kept)
    plan = plan_narrowing(conv.output, kept, exact)
    plan.resizes.append(Resize(conv, 1, 0, kept, conv.groups.value.data))
    if conv.bias is not None:
        plan.resizes.append(Resize(conv, 2, 0, kept))
    apply_narrowing(plan, maker, tag, carry_values)
    conv.properties.pop("schedule", None)
