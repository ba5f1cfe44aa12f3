"""Re-inferring result types after a rewrite changed a shape.

A NAS rewrite changes the shape of one value (a weight, a function argument);
every op downstream must then get the result type its shape rule gives. This
module walks a function in program order and re-infers each tconv op's result
from its (already updated) operands, so the change propagates to the end of
the function and into its signature.
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.dialects.builtin import TensorType
from xdsl.rewriter import Rewriter

from tconv.ir.ops import TconvOp, shape_of


def refresh_result_types(func_op: func.FuncOp, rewriter: Rewriter | None = None) -> bool:
    """Give every tconv op in `func_op` the result type inferred from its operands,
    in program order, and update the function type to what `func.return` returns.

    `tconv.param` results keep their type: a parameter's shape is the rewrite's
    decision, not a consequence of its operands. Raises `ShapeError` when an op's
    shape rule rejects its new operands. Returns whether any type changed.
    """
    rewriter = rewriter or Rewriter()
    changed = False
    for op in func_op.walk():
        if not isinstance(op, TconvOp):  # tconv.param is not one: it keeps its type
            continue
        result = op.results[0]
        inferred = op.infer_shape([shape_of(operand) for operand in op.operands], op.properties)
        # The element type stays: f32, or i8/ui8 for a `tconv.quantize`.
        new_type = TensorType(result.type.element_type, list(inferred))
        if new_type != result.type:
            rewriter.replace_value_with_new_type(result, new_type)
            changed = True
    if not func_op.is_declaration:
        old_type = func_op.function_type
        func_op.update_function_type()
        changed = changed or func_op.function_type != old_type
    return changed
