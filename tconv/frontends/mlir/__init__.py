"""MLIR interop: tconv networks as upstream `linalg`, `tensor` and `arith` IR, and back.

    text = linalg_text(to_linalg(module))          # what mlir-opt reads
    module = from_linalg(parse_linalg(text, path))  # a verified tconv module

Parameters stay in the parameter store: in the MLIR they are function
arguments that name their store keys (see `tconv.frontends.mlir.forms`).
"""

from tconv.frontends.mlir.exporter import to_linalg
from tconv.frontends.mlir.errors import LinalgImportError
from tconv.frontends.mlir.importer import from_linalg
from tconv.frontends.mlir.text import linalg_text, make_linalg_context, parse_linalg

__all__ = [
    "LinalgImportError",
    "from_linalg",
    "linalg_text",
    "make_linalg_context",
    "parse_linalg",
    "to_linalg",
]
