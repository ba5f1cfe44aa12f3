"""The `tconv` dialect object, as xDSL's contexts and `xdsl-opt` load it."""

from xdsl.ir import Dialect

from tconv.ir.ops import TCONV_OPS

Tconv = Dialect("tconv", list(TCONV_OPS), [])
