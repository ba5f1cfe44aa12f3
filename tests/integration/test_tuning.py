"""Auto-tuning: the search order, the database (resume, identical workloads
once), applying the results, and `tconv tune` / `tconv compile` end to end."""

import json

import numpy as np
import pytest

from tconv.cli.main import main
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError, module_text
from tconv.ir.ops import Conv2dOp
from tconv.ir.params import init_params, save_store, store_path_for
from tconv.ir.schedule import parse_schedule
from tconv.search.tuning import (
    TuningDatabase,
    apply_tuning,
    candidates,
    target_key,
    tune,
    tunable_convs,
    workload_of,
)


def network():
    """Two identical 3×3 convs (one workload), a grouped one and a depthwise one (not tuned)."""
    b = NetworkBuilder("net", (1, 16, 10, 10))
    x = b.relu(b.conv2d(b.input, 16, 3, padding=1, name="a"))
    x = b.relu(b.conv2d(x, 16, 3, padding=1, name="b"))
    x = b.conv2d(x, 16, 3, padding=1, groups=4, name="grouped")
    return b.finish(b.conv2d(x, 16, 3, padding=1, groups=16, name="dw"))


def fake_seconds(workload, knobs):
    """A made-up cost whose optimum is block 16 × tile 5 (or the grouped layer's 4 × 2)."""
    block, tile = knobs
    return 1e-3 * (1 + abs(tile - (5 if workload.groups == 1 else 2)) + abs(block - (16 if workload.groups == 1 else 4)))


def test_identical_workloads_are_tuned_once_and_runs_resume(tmp_path):
    module = network()
    assert [workload_of(c).groups for c in tunable_convs(module)] == [1, 1, 4]  # depthwise left out
    calls = []

    def measure(workload, knobs):
        calls.append((workload.key, knobs))
        return fake_seconds(workload, knobs)

    database = TuningDatabase(tmp_path / "db.jsonl")
    reports = tune(module, database, 1e9, threads=2, progress=None, measure_fn=measure)
    assert len(reports) == 2 and len(set(calls)) == len(calls)
    dense, grouped = reports
    assert dense.knobs == (16, 5) and grouped.knobs == (4, 2)
    # Each workload's first measurement is the backend's own default.
    first = {}
    for key, knobs in calls:
        first.setdefault(key, knobs)
    assert first[dense.workload.key] == candidates(dense.workload)[0]
    lines = (tmp_path / "db.jsonl").read_text().splitlines()
    assert len(lines) == len(calls) and json.loads(lines[0])["target"] == target_key(2)
    # A second run finds everything measured: nothing is measured again.
    calls.clear()
    again = tune(module, TuningDatabase(tmp_path / "db.jsonl"), 1e9, threads=2, progress=None, measure_fn=measure)
    assert calls == [] and [r.knobs for r in again] == [(16, 5), (4, 2)]


def test_a_budget_gives_every_workload_its_best_guesses_first(tmp_path):
    module = network()
    calls = []
    ticks = iter(range(10**6))

    def measure(workload, knobs):
        calls.append(workload.groups)
        return fake_seconds(workload, knobs)

    import tconv.search.tuning as tuning

    clock = tuning.time.monotonic
    tuning.time.monotonic = lambda: float(next(ticks))  # one "second" per look at the clock
    try:
        tune(module, TuningDatabase(tmp_path / "db.jsonl"), 6, threads=2, progress=None, measure_fn=measure)
    finally:
        tuning.time.monotonic = clock
    assert 2 <= len(calls) <= 6 and calls[:2] == [1, 4]  # round robin over the workloads


def test_apply_tuning_writes_the_best_knobs(tmp_path):
    module = network()
    database = TuningDatabase(tmp_path / "db.jsonl")
    tune(module, database, 1e9, threads=2, progress=None, measure_fn=fake_seconds)
    assert apply_tuning(module, database, threads=2) == 3
    schedules = [op.schedule for op in module.walk() if isinstance(op, Conv2dOp)]
    assert [parse_schedule(s).factor("oc") if s else None for s in schedules] == [16, 16, 4, None]
    # Another thread count is another target: nothing to apply.
    assert apply_tuning(network(), database, threads=7) == 0


def test_corrupt_database_lines_are_errors_but_a_cut_last_line_is_not(tmp_path):
    path = tmp_path / "db.jsonl"
    good = json.dumps({"workload": "w", "target": "t", "block": 8, "width_tile": 2, "seconds": 0.1})
    path.write_text(good + "\n" + '{"workload": "w", "tar')
    assert TuningDatabase(path).records == {("w", "t"): {(8, 2): 0.1}}
    path.write_text("not json\n" + good + "\n")
    with pytest.raises(TconvError, match=r"db.jsonl:1: not a tuning record"):
        TuningDatabase(path)


@pytest.mark.slow
def test_tune_then_compile_end_to_end(tmp_path, capsys):
    """Real measurements on a tiny network; the compiled artifact with the
    tuned schedules computes what the reference executor does."""
    from tconv.runtime.driver import Runtime
    from tconv.runtime.reference import run

    b = NetworkBuilder("tiny", (1, 8, 9, 9))
    module = b.finish(b.relu(b.conv2d(b.input, 16, 3, padding=1, name="conv")))
    ir = tmp_path / "tiny.mlir"
    ir.write_text(module_text(module))
    params = init_params(module, seed=1)
    save_store(store_path_for(ir), params)
    db = tmp_path / "db.jsonl"
    assert main(["tune", str(ir), "--budget", "4", "--db", str(db), "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "conv2d n1 c8 h9 w9 o16 k3x3" in out and db.exists()
    assert main(["compile", str(ir), "--tuning", str(db), "-o", str(tmp_path / "art")]) == 0
    assert "applied tuned schedules to 1 convolution(s)" in capsys.readouterr().err
    x = np.random.default_rng(0).standard_normal((1, 8, 9, 9), dtype=np.float32)
    with Runtime(tmp_path / "art") as runtime:
        (got,) = runtime.run(x)
    (want,) = run(module, params, x)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
    assert main(["tune", str(ir), "--target", "cuda"]) == 1
