"""New parameters for rewritten layers, under fresh names.

A parameter whose shape or meaning a rewrite changes is replaced by a new
`tconv.param` with a new name (`layer1.0.bn1.weight` becomes
`layer1.0.bn1_b2.weight` for tag `b2`), so completing a parameter store
against the rewritten IR initialises it from its `init` instead of binding an
old entry. Where a pass knows the new value (a slice of the old weights), it
writes it to the active store under the new name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.rewriter import InsertPoint, Rewriter

from tconv.ir.ops import ParamOp
from tconv.ir.params import param_ops
from tconv.passes.nas.store import ParamStore


def tagged(name: str, tag: str) -> str:
    """`layer1.0.bn1.weight` with tag `b2` → `layer1.0.bn1_b2.weight`: the
    layer part carries the tag, the PyTorch suffix stays last."""
    layer, dot, suffix = name.rpartition(".")
    return f"{layer}_{tag}{dot}{suffix}" if dot else f"{name}_{tag}"


class ParamMaker:
    """Creates parameters with names no parameter of the module has."""

    def __init__(self, module: ModuleOp, store: ParamStore, rewriter: Rewriter) -> None:
        self.store = store
        self.rewriter = rewriter
        self.taken = {op.param_name for op in param_ops(module)}

    def fresh_name(self, name: str) -> str:
        """`name`, or `name` with a number added to its layer part, whichever is free."""
        candidate, number = name, 2
        while candidate in self.taken:
            candidate = tagged(name, str(number)) if "." in name else f"{name}_{number}"
            number += 1
        self.taken.add(candidate)
        return candidate

    def new(
        self,
        before: Operation,
        name: str,
        shape: Sequence[int],
        init: str,
        value: np.ndarray | None = None,
    ) -> SSAValue:
        """A new parameter inserted before `before`; `value`, if given, goes to the store."""
        param = ParamOp(self.fresh_name(name), shape, init)
        self.rewriter.insert_op(param, InsertPoint.before(before))
        if value is not None:
            assert tuple(value.shape) == tuple(shape), (value.shape, shape)
            self.store.arrays[param.param_name] = np.ascontiguousarray(value, np.float32)
        return param.result

    def replace_operand(
        self,
        op: Operation,
        index: int,
        tag: str,
        shape: Sequence[int],
        value: np.ndarray | None = None,
    ) -> None:
        """Give `op` a new parameter as operand `index`, named and initialised
        like the old one (tagged with `tag`), with `shape`."""
        old = op.operands[index].owner
        assert isinstance(old, ParamOp)
        op.operands[index] = self.new(op, tagged(old.param_name, tag), shape, old.init.data, value)
        self.erase_if_unused(old)

    def erase_if_unused(self, param: ParamOp) -> None:
        if not param.result.uses:
            self.rewriter.erase_op(param)
