"""The legality helper: both networks measured per seed, the ratio of the
medians, the seed-to-seed noise of the ratio and the verdict."""

import math

import pytest

from tconv.ir.builder import NetworkBuilder
from tconv.ir.params import init_params
from tconv.passes.analyses import capacity
from tconv.passes.analyses.capacity import SeededCapacity
from tconv.passes.analyses.legality import Comparison, compare


def seeded(*values: float) -> SeededCapacity:
    return SeededCapacity(metric="naswot", seeds=tuple(range(len(values))), values=values, reports=())


@pytest.mark.parametrize(
    "before, after, min_capacity, verdict",
    [
        ((10, 10, 10), (10, 10, 10), 1.0, "legal"),
        ((10, 10, 10), (12, 11, 13), 1.0, "legal"),
        # ratio 9.9/10 = 0.99; per-seed ratios 0.97..1.01, noise 0.02: within noise
        ((10, 10, 10), (9.7, 9.9, 10.1), 1.0, "within noise"),
        # ratio 0.99 again, but every seed agrees (noise 0): illegal
        ((10, 10, 10), (9.9, 9.9, 9.9), 1.0, "illegal"),
        ((10, 10, 10), (9.9, 9.9, 9.9), 0.95, "legal"),
        ((10, 10, 10), (5, 6, 7), 1.0, "illegal"),
        ((0, 0, 0), (1, 1, 1), 1.0, "illegal"),  # undefined ratio
        ((10, 10, 10), (-math.inf, 9, 9), 0.5, "illegal"),  # a singular NASWOT kernel
    ],
)
def test_verdict(before, after, min_capacity, verdict):
    result = Comparison(seeded(*before), seeded(*after), min_capacity)
    assert result.verdict == verdict
    assert result.accepted == (verdict != "illegal")
    assert verdict in result.describe()


def test_ratio_is_of_medians_and_noise_half_the_range_of_seed_ratios():
    result = Comparison(seeded(10, 20, 40), seeded(12, 20, 30), 1.0)
    assert result.ratio == 1.0
    assert result.seed_ratios == (1.2, 1.0, 0.75)
    assert result.noise == pytest.approx(0.225)


def tiny(width: int, groups: int = 1):
    b = NetworkBuilder("tiny", (1, 3, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 8, 3, name="conv1"), name="bn1"))
    x = b.relu(b.batch_norm(b.conv2d(x, width, 3, groups=groups, name="conv2"), name="bn2"))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 4, name="fc"))


def test_compare_measures_both_networks_at_every_seed():
    before, after = tiny(8), tiny(8, groups=2)
    result = compare(before, None, after, None, "naswot", 1.0, seeds=(0, 1, 2), batch=6)
    assert result.before.values == capacity.measure_seeds(before, "naswot", seeds=(0, 1, 2), batch=6).values
    assert result.after.values == capacity.measure_seeds(after, "naswot", seeds=(0, 1, 2), batch=6).values
    assert result.ratio == result.after.median / result.before.median


def test_a_network_compared_with_itself_is_legal_without_noise():
    module = tiny(8)
    result = compare(module, init_params(module, 0), module, init_params(module, 0), "fisher", 1.0, (0, 1), 6)
    assert result.ratio == 1.0 and result.noise == 0.0 and result.verdict == "legal"
