"""The error of MLIR interop: a located message about an op of the MLIR input."""

from __future__ import annotations

from xdsl.ir import Operation

from tconv.ir.loader import TconvError, location_of


class LinalgImportError(TconvError):
    """MLIR that is not one of the forms tconv imports."""


def located(op: Operation, message: str) -> LinalgImportError:
    """`FILE:LINE:COL: error: message` at `op`, or the op's name where it has no position."""
    where = location_of(op)
    return LinalgImportError(f"{where}: error: {message}" if where else f"error: {message} (in {op.name})")
