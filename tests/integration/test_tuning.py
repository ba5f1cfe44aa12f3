"""Auto-tuning: the search order, the database (resume, identical workloads
once), applying the results, and `tconv tune` / `tconv compile` end to end."""

import json
import re
from dataclasses import replace

import numpy as np
import pytest

from tconv.cli.main import main
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError, module_text
from tconv.ir.ops import Conv2dOp
from tconv.ir.params import init_params, save_store, store_path_for
from tconv.ir.schedule import parse_schedule
from tconv.search.tuning import (
    CONFIRM,
    CONFIRM_PASSES,
    UNSCHEDULED,
    WINOGRAD_KNOBS,
    CpuSchedules,
    Knobs,
    TuningDatabase,
    Workload,
    apply_tuning,
    candidates,
    default_blocking,
    describe_knobs,
    direct,
    knobs_of_schedule,
    measure_side_by_side,
    schedule_of,
    target_key,
    tunable_convs,
    tune,
    unscheduled_differs,
    workload_of,
)


@pytest.fixture(autouse=True)
def avx2_host(monkeypatch):
    """The made-up optima below are among an AVX2 CPU's candidates (8 lanes,
    16 registers), and the models' orders the tests pin are that CPU's: every
    test here compiles and tunes for znver3, whatever x86 CPU runs it."""
    from tconv.lowering.tvm import target

    monkeypatch.setattr(target, "host_cpu", lambda: "znver3")


def network():
    """Two identical 3×3 convs (one workload), a grouped one and a depthwise one."""
    b = NetworkBuilder("net", (1, 16, 10, 10))
    x = b.relu(b.conv2d(b.input, 16, 3, padding=1, name="a"))
    x = b.relu(b.conv2d(x, 16, 3, padding=1, name="b"))
    x = b.conv2d(x, 16, 3, padding=1, groups=4, name="grouped")
    return b.finish(b.conv2d(x, 16, 3, padding=1, groups=16, name="dw"))


OPTIMA = {
    1: direct(16, 5, rows_first=True), 4: Knobs("gspc", 2, 8, rows=2), 16: Knobs("gspc", 1, 8, rows=5),
}
"""Made-up best knobs by groups: the dense layers' in the direct template
(rows first), the grouped and depthwise layers' in GSPC."""


def fake_seconds(workload, knobs):
    """A made-up cost, least at the workload's OPTIMA."""
    best = OPTIMA[workload.groups]
    return 1e-3 * (1 + sum(abs(k - b) for k, b in zip(knobs.slots(), best.slots())))


def test_identical_workloads_are_tuned_once_and_runs_resume(tmp_path):
    module = network()
    assert [workload_of(c).groups for c in tunable_convs(module)] == [1, 1, 4, 16]
    calls = []

    def measure(workload, knobs):
        calls.append((workload.key, knobs))
        return fake_seconds(workload, knobs)

    database = TuningDatabase(tmp_path / "db.jsonl")
    reports = tune(module, database, 1e9, threads=2, progress=None, measure_fn=measure)
    assert len(reports) == 3
    assert [r.knobs for r in reports] == [OPTIMA[1], OPTIMA[4], OPTIMA[16]]
    workloads = [r.workload for r in reports]
    measured = [(w.key, k) for w in workloads for k in candidates(w)]
    leaders = [
        (w.key, k) for w in workloads
        for k in sorted(candidates(w), key=lambda k: fake_seconds(w, k))[:CONFIRM]
    ]
    # Every candidate once, then each workload's CONFIRM fastest side by side, CONFIRM_PASSES times.
    assert sorted(calls) == sorted(measured + CONFIRM_PASSES * leaders)
    assert calls[-CONFIRM_PASSES * len(leaders):].count((workloads[0].key, OPTIMA[1])) == CONFIRM_PASSES
    dense = reports[0]
    # Each workload's first measurement is the backend's own default.
    first = {}
    for key, knobs in calls:
        first.setdefault(key, knobs)
    assert first[dense.workload.key] == candidates(dense.workload)[0]
    lines = [json.loads(line) for line in (tmp_path / "db.jsonl").read_text().splitlines()]
    assert len(lines) == len(measured) + len(leaders) and lines[0]["target"] == target_key(2)
    assert [line.get("round") is not None for line in lines] == [False] * len(measured) + [True] * len(leaders)
    # A second run finds every candidate measured: it only re-measures the leaders.
    calls.clear()
    again = tune(module, TuningDatabase(tmp_path / "db.jsonl"), 1e9, threads=2, progress=None, measure_fn=measure)
    assert sorted(calls) == sorted(CONFIRM_PASSES * leaders)
    assert [r.knobs for r in again] == [OPTIMA[1], OPTIMA[4], OPTIMA[16]]


def test_the_fastest_measurement_of_the_same_knobs_counts(tmp_path):
    """A loaded machine only ever slows a kernel down: of repeated
    measurements the fastest is the kernel's own speed."""
    workload = workload_of(tunable_convs(network())[0])
    database = TuningDatabase(tmp_path / "db.jsonl")
    for seconds in (3e-3, 1e-3, 2e-3):
        database.add(workload, "cpu", direct(8, 4), seconds)
    database.add(workload, "cpu", direct(16, 2), 1.5e-3)
    for db in (database, TuningDatabase(tmp_path / "db.jsonl")):
        assert db.measured(workload, "cpu") == {direct(8, 4): 1e-3, direct(16, 2): 1.5e-3}
        assert db.best(workload, "cpu") == (direct(8, 4), 1e-3)


def test_the_latest_round_ranks_its_knobs_by_its_own_times(tmp_path):
    """Knobs measured side by side compare fairly, records of different
    moments do not: the round's order counts, whatever their fastest
    records say; knobs measured after it compete with it; knobs it left
    out are out of the running."""
    workload = workload_of(tunable_convs(network())[0])
    a, b, c, d, e = (direct(8, t) for t in range(1, 6))
    database = TuningDatabase(tmp_path / "db.jsonl")
    database.add(workload, "cpu", d, 0.9e-3)  # before the round, left out of it
    database.add(workload, "cpu", a, 1.0e-3)  # a quiet moment
    database.add(workload, "cpu", b, 1.1e-3)
    database.add_round(workload, "cpu", {a: 2.0e-3, b: 1.8e-3})  # a loaded one: b is faster
    database.add(workload, "cpu", c, 1.9e-3)
    for db in (database, TuningDatabase(tmp_path / "db.jsonl")):
        assert db.ranking(workload, "cpu") == [(b, 1.8e-3), (c, 1.9e-3), (a, 2.0e-3), (d, 0.9e-3)]
        assert db.best(workload, "cpu") == (b, 1.8e-3) and db.measured(workload, "cpu")[a] == 1.0e-3
    database.add(workload, "cpu", e, 1.7e-3)
    assert database.leaders(workload, "cpu") == [e, b, c, a]
    # A later round replaces the earlier.
    database.add_round(workload, "cpu", {a: 1.5e-3, e: 1.6e-3})
    assert TuningDatabase(tmp_path / "db.jsonl").ranking(workload, "cpu")[:2] == [(a, 1.5e-3), (e, 1.6e-3)]


def test_side_by_side_measures_in_turns_and_keeps_whole_passes():
    workload = workload_of(tunable_convs(network())[0])
    calls = []

    def measure(w, knobs):
        calls.append(knobs)
        return {1: 3.0, 2: 2.0}[knobs[0]] + len(calls) * 0.01

    assert measure_side_by_side(workload, [(1, 1), (2, 1)], measure, passes=3) == {(1, 1): 3.03, (2, 1): 2.04}
    assert calls == [(1, 1), (2, 1)] * 3
    looks = iter(range(100))
    assert measure_side_by_side(workload, [(1, 1), (2, 1)], measure, stop=lambda: next(looks) >= 1) is None
    looks = iter(range(100))
    assert set(measure_side_by_side(workload, [(1, 1), (2, 1)], measure, stop=lambda: next(looks) >= 3)) == {
        (1, 1), (2, 1)}


def test_side_by_side_ranks_the_kernel_that_stays_fast_ahead_of_one_fast_once():
    """Two orders of the same tiles (64ch 56² on 2 threads): channel blocks
    first is the fastest in one quiet pass, rows first in the others."""
    workload = workload_of(tunable_convs(network())[0])
    blocks_first, rows_first = (16, 5, 1, 0, 1, 0), (16, 5, 1, 0, 1, 1)
    times = {blocks_first: iter([1.38, 1.66, 1.61, 1.70, 1.56]), rows_first: iter([1.39, 1.49, 1.45, 1.48, 1.50])}
    seconds = measure_side_by_side(workload, [blocks_first, rows_first], lambda w, k: next(times[k]), passes=5)
    assert seconds == {blocks_first: 1.61, rows_first: 1.48}


def test_knobs_measured_within_noise_of_the_fastest_go_by_the_model(tmp_path):
    """The backend's default and the same tiles in the other parallel order:
    3% apart, the default is kept; 10% apart, the faster wins."""
    workload = workload_of(tunable_convs(network())[0])
    schedules = CpuSchedules(2)
    default = candidates(workload)[0]
    flipped = replace(default, rows_first=not default.rows_first)
    database = TuningDatabase(tmp_path / "db.jsonl")
    database.add_round(workload, schedules.target, {flipped: 1.00e-3, default: 1.03e-3})
    assert database.best(workload, schedules.target)[0] == flipped
    assert database.chosen(workload, schedules) == (default, 1.03e-3)
    database.add_round(workload, schedules.target, {flipped: 1.00e-3, default: 1.10e-3})
    assert database.chosen(workload, schedules) == (flipped, 1.00e-3)
    # A knob left out of the latest round does not compete, however fast its old record.
    database.add(workload, schedules.target, direct(8, 1), 0.5e-3)
    database.add_round(workload, schedules.target, {flipped: 1.00e-3, default: 1.10e-3})
    assert database.chosen(workload, schedules) == (flipped, 1.00e-3)


def test_a_record_left_slow_by_a_loaded_moment_wins_again(tmp_path):
    """The database says the optimum ran 3x slower than it does (measured
    while the machine was busy): re-measuring the leaders puts it back first."""
    module = network()
    database = TuningDatabase(tmp_path / "db.jsonl")
    target = target_key(2)
    for conv in tunable_convs(module):
        workload = workload_of(conv)
        for knobs in candidates(workload):
            database.add(workload, target, knobs, fake_seconds(workload, knobs))
        database.add(workload, target, OPTIMA[workload.groups], 1e9)  # not kept: slower than its record
    dense = workload_of(tunable_convs(module)[0])
    stale = TuningDatabase(tmp_path / "stale.jsonl")
    for knobs, seconds in database.measured(dense, target).items():
        stale.add(dense, target, knobs, seconds * (3 if knobs == OPTIMA[1] else 1))
    ranked = sorted(stale.measured(dense, target), key=stale.measured(dense, target).get)
    assert ranked[0] != OPTIMA[1] and OPTIMA[1] in ranked[:CONFIRM]
    # The recorded leaders come first: a budget of one round is enough.
    calls = []
    ticks = iter(range(10**6))

    def measure(workload, knobs):
        calls.append((workload.key, knobs))
        return fake_seconds(workload, knobs)

    import tconv.search.tuning as tuning

    clock = tuning.time.monotonic
    tuning.time.monotonic = lambda: float(next(ticks))  # one "second" per look at the clock
    try:
        reports = tune(module, stale, CONFIRM_PASSES * CONFIRM + 1, threads=2, progress=None, measure_fn=measure)
    finally:
        tuning.time.monotonic = clock
    assert sorted(calls) == sorted(CONFIRM_PASSES * [(dense.key, k) for k in ranked[:CONFIRM]])
    assert reports[0].knobs == OPTIMA[1]


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
    assert 3 <= len(calls) <= 6 and calls[:3] == [1, 4, 16]  # round robin over the workloads


def test_apply_tuning_writes_the_best_knobs(tmp_path):
    module = network()
    database = TuningDatabase(tmp_path / "db.jsonl")
    tune(module, database, 1e9, threads=2, progress=None, measure_fn=fake_seconds)
    assert apply_tuning(module, database, threads=2) == 4
    schedules = [parse_schedule(op.schedule) for op in module.walk() if isinstance(op, Conv2dOp)]
    assert [s.factor("oc") for s in schedules] == [16, 16, 2, 1]
    assert [s.vectorize for s in schedules] == ["oc.1", "oc.1", "ow.1", "ow.1"]
    assert [s.factor("oh") for s in schedules] == [None, None, 2, 5]
    # Another thread count is another target: nothing to apply.
    assert apply_tuning(network(), database, threads=7) == 0


def test_corrupt_database_lines_are_errors_but_a_cut_last_line_is_not(tmp_path):
    path = tmp_path / "db.jsonl"
    good = json.dumps({"workload": "w", "target": "t", "block": 8, "width_tile": 2, "seconds": 0.1})
    path.write_text(good + "\n" + '{"workload": "w", "tar')
    assert TuningDatabase(path).records == {("w", "t"): {direct(8, 2): 0.1}}
    path.write_text("not json\n" + good + "\n")
    with pytest.raises(TconvError, match=r"db.jsonl:1:1: error: not a tuning record: Expecting value"):
        TuningDatabase(path)


GOOD = {"workload": "w", "target": "t", "algorithm": "direct", "block": 8, "width_tile": 2, "seconds": 0.1}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # JSON's Infinity and huge numbers as knobs were an internal OverflowError.
        ('{"workload": "w", "target": "t", "algorithm": "direct", "block": Infinity, "width_tile": 2, "seconds": 0.1}',
         r":1:57: error: not a tuning record: 'block' must be an integer, got Infinity"),
        ('{"workload": "w", "target": "t", "algorithm": "direct", "block": 8, "width_tile": 1' + "0" * 400
         + ', "seconds": 0.1}',
         r":1:69: error: not a tuning record: 'width_tile' must be an integer from 1 to 65536"),
        ('{"workload": "w", "target": "t", "algorithm": "direct", "block": 0, "width_tile": 2, "seconds": 0.1}',
         r":1:57: error: not a tuning record: 'block' must be an integer from 1 to 65536, got 0"),
        ('{"workload": "w", "target": "t", "algorithm": "im2col", "block": 8, "width_tile": 2, "seconds": 0.1}',
         r":1:34: error: not a tuning record: unknown algorithm \"im2col\""),
        ('{"workload": ["w"], "target": "t", "algorithm": "direct", "block": 8, "width_tile": 2, "seconds": 0.1}',
         r":1:2: error: not a tuning record: 'workload' must be a non-empty string"),
        ('{"workload": "w", "target": "t", "algorithm": "direct", "block": 8, "width_tile": 2, "seconds": NaN}',
         r":1:86: error: not a tuning record: 'seconds' must be a positive number, got NaN"),
        # An integer too large for a float passed the range check, then failed to convert.
        ('{"workload": "w", "target": "t", "algorithm": "direct", "block": 8, "width_tile": 2, "seconds": 1'
         + "0" * 400 + "}",
         r":1:86: error: not a tuning record: 'seconds' must be a positive number, got 1000"),
        ('{"workload": "w", "target": "t", "algorithm": "direct", "block": 8, "width_tile": 2}',
         r":1:1: error: not a tuning record: no 'seconds'"),
        ('[1, 2]', r":1:1: error: not a tuning record: expected a JSON object, got list"),
        ('{"workload": "w", "target": "t", "algorithm": "direct" "block": 8}',
         r":1:56: error: not a tuning record: Expecting ',' delimiter"),
        # Knobs no template has were an internal ValueError when compile applied them.
        (('{"workload": "w", "target": "t", "algorithm": "direct", "block": 8, "width_tile": 2, "rows": 2, '
          '"seconds": 1}'),
         r":1:86: error: not a tuning record: 'rows' is a knob of gspc"),
        (('{"workload": "w", "target": "t", "algorithm": "gspc", "block": 8, "width_tile": 2, "rows_first": 1, '
          '"seconds": 1}'),
         r":1:84: error: not a tuning record: 'rows_first' is a knob of the direct template"),
        ('{"workload": "w", "target": "t", "algorithm": "winograd", "block": 0, "width_tile": 0, "layout": 8, '
         '"seconds": 1}',
         r":1:88: error: not a tuning record: 'layout' is a knob of the direct template and of no schedule"),
    ],
    ids=["infinity", "huge", "zero", "algorithm", "workload-type", "nan-seconds", "huge-seconds", "no-seconds", "not-an-object",
         "syntax", "direct-rows", "gspc-rows-first", "winograd-layout"],
)
def test_a_bad_record_is_an_error_at_its_line_and_field(tmp_path, line: str, message: str):
    """Also on the last line: only a line that is not JSON there is an interrupted write."""
    path = tmp_path / "db.jsonl"
    for text in (json.dumps(GOOD) + "\n" + line + "\n" + json.dumps(GOOD) + "\n", json.dumps(GOOD) + "\n" + line):
        path.write_text(text)
        if "Expecting" in message and not text.endswith("\n"):
            assert TuningDatabase(path).records == {("w", "t"): {direct(8, 2): 0.1}}
            continue
        with pytest.raises(TconvError, match="^" + re.escape(str(path)) + message.replace(":1:", ":2:", 1)):
            TuningDatabase(path)


def test_a_carriage_return_is_no_line_end(tmp_path):
    path = tmp_path / "db.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\r\n" + b'{"workload": "w",\r "target": 1}\n' + b"\n")
    with pytest.raises(TconvError, match=r"db.jsonl:2:\d+: error: not a tuning record: 'target' must be"):
        TuningDatabase(path)


def test_knobs_a_workload_cannot_run_are_not_chosen(tmp_path):
    """A record names knobs by workload key; knobs the templates cannot run
    for that shape (a channel block that does not divide a group's output
    channels, Winograd where this CPU has no kernels for it) were applied,
    and compile failed at the convolution: they are out of the running."""
    module = network()
    grouped = workload_of([op for op in module.walk() if isinstance(op, Conv2dOp)][2])  # 4 channels a group
    schedules = CpuSchedules(2)
    database = TuningDatabase(tmp_path / "db.jsonl")
    database.add(grouped, schedules.target, direct(3, 2), 1e-9)
    database.add(grouped, schedules.target, WINOGRAD_KNOBS, 1e-9)
    database.add(grouped, schedules.target, Knobs("gspc", 2, 2), 1e-3)
    assert not schedules.runs(grouped, direct(3, 2)) and not schedules.runs(grouped, WINOGRAD_KNOBS)
    assert database.chosen(grouped, schedules) == (Knobs("gspc", 2, 2), 1e-3)
    assert all(schedules.runs(grouped, knobs) for knobs in candidates(grouped))


def test_records_name_their_algorithm_and_records_written_before_it_still_read(tmp_path):
    """A line names the knobs' algorithm, `block` and `width_tile` (the
    tile's channels and columns) and the other knobs where they are not
    the defaults; lines written before `algorithm` (the direct template's
    two fields, GSPC's `columns` 1, no schedule as block 0) read as they
    meant."""
    path = tmp_path / "db.jsonl"
    old = [
        {"workload": "w", "target": "t", "block": 8, "width_tile": 4, "seconds": 0.2},
        {"workload": "w", "target": "t", "block": 2, "width_tile": 8, "rows": 4, "columns": 1, "unroll_kw": 0,
         "seconds": 0.3},
        {"workload": "w", "target": "t", "block": 0, "width_tile": 0, "seconds": 0.4},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in old))
    database = TuningDatabase(path)
    gspc = Knobs("gspc", 2, 8, rows=4, unroll_kw=False)
    assert database.records[("w", "t")] == {direct(8, 4): 0.2, gspc: 0.3, UNSCHEDULED: 0.4}
    module = network()
    grouped = workload_of([op for op in module.walk() if isinstance(op, Conv2dOp)][2])
    database.add(grouped, "t", gspc, 0.1)
    database.add(grouped, "t", direct(4, 3), 0.3)
    database.add(grouped, "t", WINOGRAD_KNOBS, 0.2)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[:3] == old
    assert {k: v for k, v in lines[3].items() if k not in ("workload", "target", "seconds")} == {
        "algorithm": "gspc", "block": 2, "width_tile": 8, "rows": 4, "unroll_kw": 0,
    }
    assert set(lines[4]) == {"workload", "target", "algorithm", "block", "width_tile", "seconds"}  # defaults implicit
    assert lines[5]["algorithm"] == "winograd"
    again = TuningDatabase(path)
    assert again.records[("w", "t")] == database.records[("w", "t")]
    assert again.best(grouped, "t") == (gspc, 0.1)
    assert again.measured(grouped, "t") == {gspc: 0.1, direct(4, 3): 0.3, WINOGRAD_KNOBS: 0.2}


def test_knobs_name_blockings_and_schedules_both_ways():
    workload = Workload((1, 16, 10, 10), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4)
    dense = Workload((1, 16, 10, 10), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    for knobs in [direct(16, 5), direct(8, 7, unroll_kw=False), Knobs("gspc", 2, 8, rows=4),
                  Knobs("gspc", 1, 16, rows=2, unroll_kw=False)]:
        assert Knobs.of_blocking(knobs.blocking()) == knobs
        on = workload if knobs.algorithm == "gspc" else dense
        assert knobs_of_schedule(on, schedule_of(on, knobs)) == knobs
        assert Knobs.from_record(knobs.record()) == knobs
    rows_first = direct(16, 4, rows_first=True)
    assert knobs_of_schedule(dense, schedule_of(dense, rows_first)) == rows_first
    assert schedule_of(dense, WINOGRAD_KNOBS).algorithm == "winograd" and schedule_of(dense, UNSCHEDULED) is None
    assert knobs_of_schedule(dense, schedule_of(dense, WINOGRAD_KNOBS)) == WINOGRAD_KNOBS
    assert Knobs.from_legacy((8, 4)) == direct(8, 4) and Knobs.from_legacy((0, 0)) == UNSCHEDULED
    assert describe_knobs(Knobs("gspc", 2, 8, rows=4, unroll_kw=False)) == "gspc 2x4x8 kw rolled"
    assert describe_knobs(direct(16, 5)) == "16x5" and describe_knobs(WINOGRAD_KNOBS) == "winograd"
    assert describe_knobs(rows_first) == "16x4 rows first"
    with pytest.raises(ValueError, match="expected 2 to 6 integers"):
        Knobs.from_legacy((1,))
    with pytest.raises(ValueError, match="unknown algorithm"):
        Knobs("fft")


def test_grouped_and_depthwise_workloads_search_gspc_from_the_default():
    convs = [op for op in network().walk() if isinstance(op, Conv2dOp)]
    dense, grouped, depthwise = (workload_of(convs[i]) for i in (0, 2, 3))
    for workload in (grouped, depthwise):
        space = candidates(workload)
        assert space[0] == Knobs.of_blocking(default_blocking(workload)) and len(set(space)) == len(space)
        assert {k.algorithm for k in space} == {"gspc", "direct"}  # both templates
        for k in space:
            assert workload.out_group % k.channels == 0 or (workload.depthwise and k.algorithm == "direct")
            assert k.rows == 1 or k.algorithm == "gspc"
            assert not k.rows_first  # a choice of ungrouped convolutions
    assert depthwise.depthwise and all(k.channels == 1 for k in candidates(depthwise) if k.algorithm == "gspc")
    dense_space = candidates(dense)
    # dense layers: the direct template, and Winograd (second, after the backend's default)
    assert {k.algorithm for k in dense_space} == {"direct", "winograd"} and dense_space[1] == WINOGRAD_KNOBS
    # ... the direct template in both orders of the parallel loops
    tiles = [k for k in dense_space if k.tiled]
    assert {replace(k, rows_first=False) for k in tiles if k.rows_first} == {k for k in tiles if not k.rows_first}
    wide = NetworkBuilder("wide", (1, 8, 12, 12))
    five = workload_of(next(op for op in wide.finish(
        wide.conv2d(wide.input, 8, 5, padding=2, groups=8, name="dw")).walk() if isinstance(op, Conv2dOp)))
    assert any(not k.unroll_kw for k in candidates(five))  # 5 wide: the kernel-column loop rolled too


@pytest.mark.slow
def test_tuning_grouped_and_depthwise_layers_end_to_end(tmp_path):
    """Real measurements of a grouped and a depthwise layer, the first
    candidates of each (the default and GSPC's best guesses); the network
    with the tuned schedules computes what the reference executor does."""
    from tconv.lowering.tvm.build import run_tvm
    from tconv.semantics.reference import run

    b = NetworkBuilder("narrow", (1, 16, 12, 12))
    x = b.relu(b.conv2d(b.input, 16, 3, padding=1, groups=8, name="grouped"))
    module = b.finish(b.conv2d(x, 16, 3, stride=2, padding=1, groups=16, name="dw"))
    database = TuningDatabase(tmp_path / "db.jsonl")
    reports = tune(module, database, 6, threads=2, progress=None)
    assert [r.workload.groups for r in reports] == [8, 16] and all(r.measured >= 1 for r in reports)
    assert apply_tuning(module, database, threads=2) == 2
    params = init_params(module, seed=3)
    x = np.random.default_rng(0).standard_normal((1, 16, 12, 12), dtype=np.float32)
    (got,) = run_tvm(module, params, x)
    (want,) = run(module, params, x)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5


@pytest.mark.slow
def test_tune_then_compile_end_to_end(tmp_path, capsys):
    """Real measurements on a tiny network; the compiled artifact with the
    tuned schedules computes what the reference executor does."""
    from tconv.runtime.driver import Runtime
    from tconv.semantics.reference import run

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


def pointwise_network(size):
    b = NetworkBuilder("pw", (1, 64, size, size))
    return b.finish(b.conv2d(b.input, 64, 1, name="pw"))


def test_a_pointwise_default_no_schedule_can_name_is_a_candidate(tmp_path):
    """On a small image the backend tiles a 1×1 convolution's flattened
    positions, which no schedule asks for: "no schedule" is a candidate
    there, recorded as block 0, and applying it leaves the convolution alone."""
    (small,) = tunable_convs(pointwise_network(7))
    (large,) = tunable_convs(pointwise_network(56))
    assert unscheduled_differs(workload_of(small)) and not unscheduled_differs(workload_of(large))
    assert candidates(workload_of(small))[1] == UNSCHEDULED and UNSCHEDULED not in candidates(workload_of(large))
    assert UNSCHEDULED not in candidates(workload_of(tunable_convs(network())[0]))  # 3×3
    assert describe_knobs(UNSCHEDULED) == "unscheduled"

    module = pointwise_network(7)
    workload = workload_of(tunable_convs(module)[0])
    db = TuningDatabase(tmp_path / "db.jsonl")
    db.add(workload, target_key(2), direct(8, 4), 2e-3)
    db.add(workload, target_key(2), UNSCHEDULED, 1e-3)
    last = json.loads((tmp_path / "db.jsonl").read_text().splitlines()[-1])
    assert last["block"] == 0 and last["algorithm"] == "unscheduled"
    assert TuningDatabase(tmp_path / "db.jsonl").best(workload, target_key(2)) == (UNSCHEDULED, 1e-3)
    assert apply_tuning(module, db, threads=2) == 1
    (conv,) = tunable_convs(module)
    assert conv.schedule is None


def test_tuning_measures_the_unscheduled_pointwise_kernel(tmp_path):
    module = pointwise_network(7)
    seen = []

    def measure(workload, knobs):
        seen.append(knobs)
        return 1e-3 if knobs == UNSCHEDULED else 2e-3

    (report,) = tune(module, TuningDatabase(tmp_path / "db.jsonl"), 1e9, threads=2, progress=None, measure_fn=measure)
    assert seen[1] == UNSCHEDULED and report.knobs == UNSCHEDULED
    # What the tuner times for it is the backend's default kernel, and it computes the convolution.
    from tconv.lowering.tvm.build import TvmNetwork
    from tconv.search.tuning import conv_network as tuning_network
    from tconv.semantics.reference import run

    timed = tuning_network(report.workload, UNSCHEDULED)
    (conv,) = tunable_convs(timed)
    assert conv.schedule is None
    params = init_params(timed)
    x = np.random.default_rng(0).standard_normal(report.workload.input, dtype=np.float32)
    network = TvmNetwork(timed)
    network.load_params(params)
    np.testing.assert_allclose(network.run(x)[0], run(timed, params, x)[0], rtol=1e-4, atol=1e-4)


def test_unscheduled_counts_only_where_it_is_a_candidate(tmp_path):
    """`UNSCHEDULED` recorded for a 3×3 the backend ran as Winograd, before
    a schedule could ask for Winograd by name, is no candidate now (Winograd
    is `WINOGRAD_KNOBS`): its record stops counting."""
    workload = Workload((1, 64, 28, 28), 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1)
    schedules = CpuSchedules(2)
    default = candidates(workload)[0]
    database = TuningDatabase(tmp_path / "db.jsonl")
    database.add_round(workload, schedules.target, {UNSCHEDULED: 0.5e-3, default: 1.0e-3})
    assert UNSCHEDULED not in candidates(workload) and WINOGRAD_KNOBS in candidates(workload)
    assert database.chosen(workload, schedules) == (default, 1.0e-3)


def test_a_resumed_run_measures_winograd_before_the_recorded_leaders(tmp_path):
    """A workload whose records predate Winograd: a run measures "unscheduled"
    (its Winograd convolution) first, before re-measuring the recorded
    leaders, so that a short budget does not spend itself on those alone."""
    b = NetworkBuilder("net", (1, 64, 28, 28))
    module = b.finish(b.conv2d(b.input, 64, 3, padding=1, name="c"))
    (workload,) = [workload_of(conv) for conv in tunable_convs(module)]
    database = TuningDatabase(tmp_path / "db.jsonl")
    for knobs in candidates(workload)[:1] + candidates(workload)[2:6]:
        database.add(workload, target_key(2), knobs, 1e-3)
    assert candidates(workload)[1] == WINOGRAD_KNOBS
    calls = []
    ticks = iter(range(10**6))

    def measure(workload, knobs):
        calls.append(knobs)
        return 0.5e-3 if knobs == WINOGRAD_KNOBS else 1e-3

    import tconv.search.tuning as tuning

    clock = tuning.time.monotonic
    tuning.time.monotonic = lambda: float(next(ticks))  # one "second" per look at the clock
    try:
        tune(module, database, 2, threads=2, progress=None, measure_fn=measure)
    finally:
        tuning.time.monotonic = clock
    assert calls[0] == WINOGRAD_KNOBS
    assert database.chosen(workload, CpuSchedules(2))[0] == WINOGRAD_KNOBS
    # `tconv compile` reproduces it: the schedule names the algorithm, the backend runs Winograd's kernels.
    from tconv.lowering.tvm.build import lower_kernels

    assert apply_tuning(module, database, threads=2) == 1
    (conv,) = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    assert parse_schedule(conv.schedule).algorithm == "winograd"
    kinds = [call.symbol.split("_", 1)[1] for call in lower_kernels(module)[1].calls]
    assert kinds == ["winograd_input", "winograd_matmul", "winograd_output"]
