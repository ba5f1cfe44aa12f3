"""The latency model that ranks schedule candidates: its features, learning a
machine's departure from the issue-rate model, determinism, and the cases
with almost no measurement."""

import math

import numpy as np
import pytest

from tconv.errors import TconvError
from tconv.search.cost_model import (
    FEATURE_NAMES,
    MAX_KNOBS,
    MISSING_KNOB,
    LatencyModel,
    RegisterTile,
    baseline_log_seconds,
    database_samples,
    parse_workload_key,
    rank_correlation,
    register_tile,
    split_samples,
    workload_features,
)
from tconv.search.tuning import UNSCHEDULED, WINOGRAD_KNOBS, Knobs, TuningDatabase, Workload, direct

LANES = 16


def conv(channels, size, out_channels, kernel=3, stride=1, groups=1, batch=1):
    pad = kernel // 2
    return Workload((batch, channels, size, size), out_channels, (kernel, kernel), (stride, stride),
                    (pad, pad, pad, pad), (1, 1), groups)


WORKLOADS = [
    conv(64, 56, 64), conv(128, 28, 128), conv(256, 14, 256), conv(64, 56, 128, stride=2),
    conv(128, 28, 128, groups=8), conv(256, 14, 256, groups=32), conv(64, 56, 64, kernel=1),
]


def knob_grid(workload):
    blocks = [b for b in (4, 8, 16, 32, 48, 64) if b <= workload.out_group and workload.out_group % b == 0]
    return [direct(b, t) for b in blocks for t in (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16)]


def synthetic_seconds(workload, knobs, noise, rng):
    """FLOPs / efficiency at 50 GFLOP/s, but column tiles past 6 spill
    registers (12 % slower per column), which the issue-rate model does not
    know; plus log-normal timing noise."""
    spill = 1 + 0.12 * max(0, knobs.columns - 6)
    return (workload.flops / 50e9 / register_tile(workload, knobs, LANES).efficiency * spill
            * math.exp(rng.normal(0, noise)))


def synthetic_samples(noise=0.03, seed=0):
    rng = np.random.default_rng(seed)
    return [(w, k, synthetic_seconds(w, k, noise, rng)) for w in WORKLOADS for k in knob_grid(w)]


def test_features_are_finite_and_fixed_length_whatever_the_knobs():
    grouped = conv(128, 28, 128, groups=8)
    for workload in [*WORKLOADS, conv(32, 112, 32, groups=32), conv(3, 224, 64, kernel=7, stride=2)]:
        for knobs in [UNSCHEDULED, WINOGRAD_KNOBS, direct(16, 5), direct(16, 5, unroll_kw=False),
                      Knobs("gspc", 8, 4, rows=2, unroll_kw=False), direct(8, 4, rows_first=True),
                      direct(16, 4, layout=16)]:
            features = workload_features(workload, knobs, LANES)
            assert features.shape == (len(FEATURE_NAMES),) and np.isfinite(features).all()
    first, last = FEATURE_NAMES.index("log2(1 + knob 0)"), FEATURE_NAMES.index(f"log2(1 + knob {MAX_KNOBS - 1})")
    assert list(workload_features(WORKLOADS[0], direct(16, 5), LANES)[first:last + 1]) == [
        math.log2(1 + k) for k in (16, 5, 1, 0, 1, 0, 0)
    ]
    assert workload_features(WORKLOADS[0], direct(16, 5, layout=16), LANES)[last] == math.log2(17)  # the layout
    assert MISSING_KNOB not in workload_features(WORKLOADS[0], WINOGRAD_KNOBS, LANES)[first:last + 1]
    assert workload_features(WORKLOADS[0], WINOGRAD_KNOBS, LANES)[first + 3] == math.log2(3)  # the algorithm
    depthwise = FEATURE_NAMES.index("depthwise")
    assert workload_features(conv(32, 112, 32, groups=32), direct(16, 4), LANES)[depthwise] == 1
    assert workload_features(WORKLOADS[0], direct(16, 4), LANES)[depthwise] == 0
    # The register tile follows the template the knobs name: channels in vectors, or columns.
    assert register_tile(WORKLOADS[0], direct(24, 4), LANES) == RegisterTile(
        register_tile(WORKLOADS[0], direct(24, 4), LANES).efficiency, 8, 0.75
    )
    columns = register_tile(grouped, Knobs("gspc", 4, 16, rows=2), LANES)
    assert (columns.accumulators, columns.lane_use) == (8, 1.0) and 0 < columns.efficiency <= 1
    assert columns != register_tile(grouped, direct(4, 16), LANES)
    assert register_tile(grouped, WINOGRAD_KNOBS, LANES) == RegisterTile(1.0, 1, 1.0)


def test_workload_keys_parse_back():
    for workload in [*WORKLOADS, Workload((2, 3, 31, 17), 8, (3, 5), (2, 1), (1, 2, 0, 1), (1, 2), 1)]:
        assert parse_workload_key(workload.key) == workload
    with pytest.raises(TconvError, match="not a convolution workload key"):
        parse_workload_key("conv2d n1 c3")


def test_the_model_learns_what_the_issue_rate_model_misses():
    train, held_out = split_samples(synthetic_samples(), 40, seed=1)
    prior = LatencyModel(lanes=LANES).fit([])
    model = LatencyModel(lanes=LANES).fit(train)
    learned = rank_correlation(model, held_out, per_workload=True)
    assert learned > 0.8
    assert learned > rank_correlation(prior, held_out, per_workload=True) + 0.15
    assert rank_correlation(model, held_out) > 0.9
    # The best predicted schedule of a layer avoids the spilling tiles.
    workload = WORKLOADS[1]
    best_workload, best_knobs = model.rank([(workload, k) for k in knob_grid(workload)])[0]
    assert best_workload == workload and best_knobs.columns <= 7
    seconds, std = model.predict(workload, direct(16, 4))
    measured = synthetic_seconds(workload, direct(16, 4), 0, np.random.default_rng(0))
    assert abs(math.log(seconds / measured)) < 0.3 and 0 < std < LatencyModel.PRIOR_STD


def test_fitting_is_deterministic():
    train, held_out = split_samples(synthetic_samples(), 30, seed=2)
    pairs = [(w, k) for w, k, _ in held_out]
    first = LatencyModel(lanes=LANES).fit(train).predict_log(pairs)
    second = LatencyModel(lanes=LANES).fit(list(train)).predict_log(pairs)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert split_samples(synthetic_samples(), 30, seed=2)[0] == train


def test_no_one_or_two_samples_rank_by_the_issue_rate_model():
    samples = synthetic_samples(noise=0)
    workload = WORKLOADS[0]
    pairs = [(workload, k) for k in knob_grid(workload)]
    baseline = np.array([baseline_log_seconds(w, k, LANES) for w, k in pairs])
    for count in (0, 1, 2):
        model = LatencyModel(lanes=LANES).fit(samples[:count])
        mean, std = model.predict_log(pairs)
        assert np.isfinite(mean).all() and (std > 0).all()
        assert sorted(model.rank(pairs)) == sorted(pairs)
        if count < 2:  # no sample, or one that only sets the scale: the issue-rate model's order
            assert np.allclose(mean - baseline, (mean - baseline)[0])
    # One sample sets the scale: its own prediction is its measurement.
    workload, knobs, seconds = samples[5]
    predicted, _ = LatencyModel(lanes=LANES).fit([samples[5]]).predict(workload, knobs)
    assert math.isclose(predicted, seconds, rel_tol=1e-6)


def test_lower_confidence_bound_prefers_the_unknown():
    samples = synthetic_samples()
    workload = WORKLOADS[0]
    measured = [s for s in samples if s[0] == workload and s[1].channels == 16]
    model = LatencyModel(lanes=LANES).fit(measured)
    near, far = (workload, direct(16, 4)), (WORKLOADS[2], direct(4, 4))
    (_, near_std), (_, far_std) = model.predict(*near), model.predict(*far)
    assert far_std > near_std
    with pytest.raises(TconvError, match="unknown ranking strategy 'ucb'"):
        model.rank([near], strategy="ucb")


def test_models_come_from_a_tuning_database(tmp_path):
    database = TuningDatabase(tmp_path / "db.jsonl")
    samples = synthetic_samples()[:12]
    for workload, knobs, seconds in samples:
        database.add(workload, "cpu-a", knobs, seconds)
    database.add(WORKLOADS[3], "cpu-b", direct(16, 2), 1.0)
    reread = database_samples(TuningDatabase(tmp_path / "db.jsonl"), "cpu-a")
    assert sorted(reread, key=repr) == sorted(samples, key=repr)
    model = LatencyModel.from_database(database, "cpu-a", lanes=LANES)
    assert len(model.samples) == 12


def test_a_large_database_is_fitted_on_a_bounded_sample_with_the_focus_first(tmp_path, monkeypatch):
    import tconv.search.cost_model as cost_model

    monkeypatch.setattr(cost_model, "MAX_SAMPLES", 100)
    database = TuningDatabase(tmp_path / "db.jsonl")
    samples = synthetic_samples()
    for workload, knobs, seconds in samples:
        database.add(workload, "cpu", knobs, seconds)
    assert len(samples) > 100
    focus = WORKLOADS[1]
    own = [s for s in samples if s[0] == focus]
    assert 0 < len(own) < 100
    model = LatencyModel.from_database(database, "cpu", lanes=LANES, focus=[focus])
    assert len(model.samples) == 100
    assert sum(1 for w, _, _ in model.samples if w == focus) == len(own)


def test_bad_inputs_are_errors():
    with pytest.raises(TconvError, match="positive seconds"):
        LatencyModel(lanes=LANES).fit([(WORKLOADS[0], (16, 4), 0.0)])
    with pytest.raises(TconvError, match="2 held-out measurements or more, got 1"):
        rank_correlation(LatencyModel(lanes=LANES), synthetic_samples()[:1])
    with pytest.raises(TconvError, match="cannot train on 5 of 3"):
        split_samples(synthetic_samples()[:3], 5)
