"""`tconv-set-batch`: a network at another batch size."""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter
from xdsl.utils.exceptions import PassFailedException

from tconv.ir.infer import refresh_result_types
from tconv.ir.shapes import ShapeError


def set_batch(func_op: func.FuncOp, batch: int) -> None:
    """Give every tensor argument of `func_op` batch size `batch` (its first
    dimension), then re-infer the types of everything computed from them."""
    rewriter = Rewriter()
    for arg in func_op.args:
        arg_type = arg.type
        if not isinstance(arg_type, TensorType) or not arg_type.get_shape():
            continue
        shape = list(arg_type.get_shape())
        if shape[0] == batch:
            continue
        shape[0] = batch
        func_op.replace_argument_type(
            arg, TensorType(arg_type.element_type, shape), rewriter
        )
    refresh_result_types(func_op, rewriter)


def check_batch(batch: int) -> None:
    """A batch size is a positive integer: the one rule `tconv-set-batch` and
    `tconv compile --batch` share."""
    if batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch}")


def set_module_batch(module: ModuleOp, batch: int) -> None:
    """Set the batch size of every function of `module` defined there; a
    ShapeError names the function whose shapes cannot take it."""
    check_batch(batch)
    for func_op in module.walk():
        if isinstance(func_op, func.FuncOp) and not func_op.is_declaration:
            try:
                set_batch(func_op, batch)
            except ShapeError as err:
                raise ShapeError(f"cannot set batch {batch} in @{func_op.sym_name.data}: {err}") from err


@dataclass(frozen=True)
class SetBatchPass(ModulePass):
    """
    Sets the batch size (the first dimension) of every function argument to
    `batch` and propagates the new shape through every tconv op to the
    function's results:

        func.func @net(%x: tensor<1x3x32x32xf32>) -> tensor<1x10xf32>
        // tconv-set-batch{batch=8}
        func.func @net(%x: tensor<8x3x32x32xf32>) -> tensor<8x10xf32>
    """

    name = "tconv-set-batch"

    batch: int
    """The new batch size (the first dimension of every argument), at least 1."""

    def __post_init__(self) -> None:
        # Checked when the pipeline is read, before any input: a bad value is a usage error.
        try:
            check_batch(self.batch)
        except ValueError as err:
            raise PassFailedException(f"{self.name}: {err}") from None

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        try:
            set_module_batch(op, self.batch)
        except ShapeError as err:
            raise PassFailedException(f"{self.name}: {err}") from err
