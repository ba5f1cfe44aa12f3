"""The capacity check: a NAS rewrite is legal if the network keeps enough
representational capacity.

With `check-capacity=true`, a pass measures `metric` (`naswot` by default, `fisher`, `synflow`;
see `tconv.passes.analyses.capacity`) on the module before and after its
rewrite, both on the same minibatch (`batch` inputs and labels drawn with
`seed`) and with the parameters of the active store (initial values where it
has none). The rewrite is refused when after / before < `min-capacity`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import PassFailedException

from tconv.errors import TconvError
from tconv.passes.analyses.capacity import METRICS, measure, minibatch
from tconv.passes.nas.store import ParamStore


@dataclass(frozen=True)
class CapacityCheck:
    metric: str
    min_capacity: float
    batch: int
    seed: int

    def validate(self, pass_name: str) -> None:
        if self.metric not in METRICS:
            raise PassFailedException(
                f"{pass_name}: unknown metric '{self.metric}' (expected one of {', '.join(METRICS)})"
            )
        if not self.min_capacity >= 0:
            raise PassFailedException(f"{pass_name}: min-capacity must be >= 0, got {self.min_capacity}")
        if self.batch < 2:
            raise PassFailedException(f"{pass_name}: batch must be at least 2, got {self.batch}")
        if self.seed < 0:
            raise PassFailedException(f"{pass_name}: seed must be at least 0, got {self.seed}")

    def data(self, module: ModuleOp, pass_name: str) -> tuple[np.ndarray, np.ndarray]:
        """The seeded minibatch both measurements run on."""
        try:
            return minibatch(module, self.batch, self.seed)
        except TconvError as err:
            raise PassFailedException(f"{pass_name}: cannot check capacity: {err}") from None

    def value(self, module: ModuleOp, store: ParamStore, data: tuple[np.ndarray, np.ndarray]) -> float:
        x, labels = data
        return measure(module, store.values_for(module), self.metric, x, labels).value

    def require(self, before: float, after: float, pass_name: str, layers: list[str]) -> None:
        """Raise PassFailedException, with both values, unless after / before >= min_capacity."""
        ratio = after / before if before > 0 and math.isfinite(before) else float("nan")
        if math.isfinite(ratio) and ratio >= self.min_capacity:
            return
        shown = ", ".join(layers[:6]) + (f" and {len(layers) - 6} more" if len(layers) > 6 else "")
        raise PassFailedException(
            f"{pass_name}: rewrite of {shown} refused: {self.metric} capacity {before:.6g} before, "
            f"{after:.6g} after (ratio {ratio:.4g}, min-capacity {self.min_capacity:g}; "
            f"batch {self.batch}, seed {self.seed}); the module is unchanged"
        )
