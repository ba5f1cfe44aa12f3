"""The `xdsl.universe` entry point: plain `xdsl-opt` loads the tconv dialect and passes."""

from xdsl.universe import Universe

from tconv.passes.registry import PASSES


def _dialect():
    from tconv.ir.dialect import Tconv

    return Tconv


TCONV_UNIVERSE = Universe(all_dialects={"tconv": _dialect}, all_passes=dict(PASSES))
