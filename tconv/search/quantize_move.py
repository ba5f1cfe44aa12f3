"""int8 as a move of `tconv optimize --quantize`.

After the NAS rewrites and fine-tuning have chosen the float32 answer, the
search tries it in int8: `tconv-quantize` (per-channel int8 weights, uint8
activations, min-max ranges) calibrated on training inputs of `--data`. No
capacity check applies (quantising changes no layer's shape); the verdict
is the compiled int8 network's validation accuracy, measured by running the
artifact the search timed, beside the float32 answer's. The int8 network
replaces the answer where it is faster and its accuracy stays within the
allowed drop of the original's (`Search.quantize`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.utils.exceptions import PassFailedException

from tconv.errors import TconvError
from tconv.passes.quant.quantize import QuantizePass
from tconv.search.space import Realised

DEFAULT_CALIBRATION_SAMPLES = 128


@dataclass(frozen=True)
class QuantizeMove:
    samples: int = DEFAULT_CALIBRATION_SAMPLES
    """Training inputs the activation ranges are calibrated on."""
    calibration: str = "minmax"
    """`minmax` or `percentile` (`tconv-quantize`'s option)."""

    def __post_init__(self) -> None:
        try:  # the pass's own checks of its options
            self.quantize_pass()
        except PassFailedException as err:
            raise TconvError(f"error: {err}") from None

    def quantize_pass(self) -> QuantizePass:
        return QuantizePass(calibration=self.calibration, samples=self.samples)

    def describe(self) -> str:
        return f"int8 (per-channel weights, uint8 activations, {self.calibration} ranges of {self.samples} inputs)"


def quantized(realised: Realised, move: QuantizeMove, x_train: np.ndarray) -> Realised:
    """`realised` with every convolution and dense layer in QDQ form; the
    weights are its own (the scales and zero points are IR attributes)."""
    module = realised.module.clone()
    try:
        move.quantize_pass().quantize(module, realised.params, x_train[: move.samples])
    except PassFailedException as err:
        raise TconvError(str(err)) from None
    return Realised(module, realised.params, dict(realised.applied))
