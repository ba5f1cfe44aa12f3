"""Is a rewrite legal? Compare a capacity metric before and after it, over
several seeds, and say whether the difference exceeds the seeds' spread.

At each seed s both networks are measured on the same minibatch
(`capacity.minibatch(module, batch, s)`) and, where no parameters are given,
with `init_params(module, s)`, which gives every parameter the two networks
share the same initial value. Then

- ratio = median(after) / median(before);
- noise = half the range of the per-seed ratios after_s / before_s: how far
  the ratio itself moves when only the seed changes (0 with one seed);
- the verdict is "legal" when ratio ≥ min_capacity, "within noise" when
  ratio ≥ min_capacity − noise (the shortfall is smaller than the seeds'
  disagreement, so the measurement cannot call the rewrite harmful), and
  "illegal" otherwise, or when the ratio is undefined (a median ≤ 0, or not
  finite, as NASWOT's -inf for a singular kernel).

A rewrite is accepted unless it is illegal (`Comparison.accepted`).

    result = compare(net, None, grouped, None, metric="naswot", min_capacity=1.0)
    if not result.accepted: ...  # result.describe() says why
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.passes.analyses.capacity import DEFAULT_METRIC, DEFAULT_SEEDS, SeededCapacity, measure_seeds

VERDICTS = ("legal", "within noise", "illegal")


@dataclass(frozen=True)
class Comparison:
    """A metric before and after a rewrite, per seed, and the verdict."""

    before: SeededCapacity
    after: SeededCapacity
    min_capacity: float

    @property
    def ratio(self) -> float:
        """median(after) / median(before); nan where undefined."""
        before, after = self.before.median, self.after.median
        if not (before > 0 and math.isfinite(before) and math.isfinite(after)):
            return float("nan")
        return after / before

    @property
    def seed_ratios(self) -> tuple[float, ...]:
        """after_s / before_s per seed (nan where before_s ≤ 0 or a value is not finite)."""
        return tuple(
            a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else float("nan")
            for b, a in zip(self.before.values, self.after.values)
        )

    @property
    def noise(self) -> float:
        """Half the range of the per-seed ratios."""
        ratios = self.seed_ratios
        if any(math.isnan(r) for r in ratios):
            return float("nan")
        return (max(ratios) - min(ratios)) / 2

    @property
    def verdict(self) -> str:
        ratio, noise = self.ratio, self.noise
        if math.isnan(ratio) or math.isnan(noise):
            return "illegal"
        if ratio >= self.min_capacity:
            return "legal"
        if ratio >= self.min_capacity - noise:
            return "within noise"
        return "illegal"

    @property
    def accepted(self) -> bool:
        return self.verdict != "illegal"

    def describe(self) -> str:
        """One line with both medians and spreads, the ratio, the noise and the verdict."""

        def seeded(values: SeededCapacity) -> str:
            return f"{values.median:.6g} [{values.low:.6g}, {values.high:.6g}]"

        return (
            f"{self.before.metric}: {seeded(self.before)} before, {seeded(self.after)} after "
            f"(median [min, max] over seeds {', '.join(map(str, self.before.seeds))}); "
            f"ratio {self.ratio:.4g} ± {self.noise:.2g}, min-capacity {self.min_capacity:g}: {self.verdict}"
        )


def compare(
    before_module: ModuleOp,
    before_params: Mapping[str, np.ndarray] | None,
    after_module: ModuleOp,
    after_params: Mapping[str, np.ndarray] | None,
    metric: str = DEFAULT_METRIC,
    min_capacity: float = 1.0,
    seeds: tuple[int, ...] = DEFAULT_SEEDS,
    batch: int = 64,
) -> Comparison:
    """`metric` of both networks at every seed, and the verdict for
    `min_capacity` (see the module docstring). Parameters given as None are
    initialised per seed."""
    before = measure_seeds(before_module, metric, seeds=seeds, batch=batch, params=before_params)
    after = measure_seeds(after_module, metric, seeds=seeds, batch=batch, params=after_params)
    return Comparison(before=before, after=after, min_capacity=min_capacity)
