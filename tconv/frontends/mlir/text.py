"""Reading and writing upstream MLIR text (`func`, `linalg`, `tensor`,
`arith`, `math`) with xDSL, with located diagnostics.

Upstream gives a linalg convolution or pooling op strides and dilations of 1
when its text leaves them out; xDSL requires both, so `parse_linalg` fills
them in before it verifies.
"""

from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects import arith, builtin, func, tensor
from xdsl.dialects import math as math_dialect
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp
from xdsl.dialects.linalg import Linalg
from xdsl.dialects.linalg.abstract_ops import ConvOperation, PoolingOperation

from tconv.frontends.mlir import forms
from tconv.frontends.mlir.errors import located
from tconv.ir.loader import module_text, parse_module, verify_module

WINDOW_DEFAULTS = ("strides", "dilations")
"""The window properties upstream defaults to 1 on convolutions and pooling."""


def make_linalg_context() -> Context:
    """A context that knows the upstream dialects of an exported network."""
    ctx = Context()
    for dialect in (builtin.Builtin, func.Func, arith.Arith, math_dialect.Math, tensor.Tensor, Linalg):
        ctx.load_dialect(dialect)
    return ctx


def complete_windows(module: ModuleOp) -> None:
    """Give every 2-D linalg convolution and pooling op the strides and
    dilations its text left out ([1, 1], as upstream does), and check that
    each has two (xDSL's verifiers assume it)."""
    for op in module.walk():
        if isinstance(op, ConvOperation | PoolingOperation):
            for name in WINDOW_DEFAULTS:
                attr = op.properties.setdefault(name, forms.window_attr((1, 1)))
                if not (isinstance(attr, DenseIntOrFPElementsAttr) and len(attr) == 2):
                    raise located(
                        op,
                        f"{op.name}: {name} must be 2 integers (dense<[h, w]> : tensor<2xi64>), got {attr}",
                    )


def parse_linalg(text: str, filename: str = "<input>") -> ModuleOp:
    """Parse and verify upstream MLIR text; every failure is a located TconvError."""
    module = parse_module(text, filename, make_linalg_context())
    complete_windows(module)
    verify_module(module)
    return module


def linalg_text(module: ModuleOp, generic: bool = False) -> str:
    """The module as MLIR text, in custom syntax unless `generic`."""
    return module_text(module, generic)
