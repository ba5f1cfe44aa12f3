"""Measuring through TVM's RPC: a tracker and two device servers on
loopback, a short tuning run whose every measurement goes through them, and
the errors for a bad key, a busy key and an unreachable tracker."""

import socket
import time

import pytest

import tconv.search.tuning as tuning
from tconv.errors import TconvError
from tconv.ir.builder import NetworkBuilder
from tconv.search.rpc import LocalTracker, RpcMeasurer, RpcTarget, TrackerClient, parse_rpc_target
from tconv.search.tuning import (
    NOISE,
    CpuSchedules,
    TuningDatabase,
    direct,
    target_key,
    tunable_convs,
    tune,
    workload_of,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local():
    with LocalTracker(servers=2) as tracker:
        yield tracker


def two_convs():
    """Two different small convolutions: two workloads."""
    b = NetworkBuilder("net", (1, 16, 8, 8))
    x = b.relu(b.conv2d(b.input, 16, 3, padding=1, name="a"))
    return b.finish(b.conv2d(x, 32, 1, name="b"))


def test_a_short_search_measures_through_both_servers(local, tmp_path, monkeypatch):
    servers = local.servers()
    assert len(servers) == 2
    measurer = RpcMeasurer(local.target, timeout_s=30)
    assert measurer.check() == servers
    module = two_convs()
    calls = []

    def measure(workload, knobs):
        calls.append((workload.key, knobs))
        return measurer.measure(workload, knobs)

    database = TuningDatabase(tmp_path / "db.jsonl")
    # The search's clock counts measurements: a budget of 4 "seconds" is two
    # rounds, the two best guesses of each workload.
    monkeypatch.setattr(tuning.time, "monotonic", lambda: float(len(calls)))
    reports = tune(module, database, budget_s=4, threads=2, progress=None, measure_fn=measure)
    monkeypatch.undo()
    assert len(calls) == 4
    workloads = {workload_of(c).key for c in tunable_convs(module)}
    assert len(workloads) == 2 and {key for key, _ in calls} == workloads
    # Each measurement was one session with a device the tracker handed out: both servers took some.
    assert sum(measurer.servers_used.values()) == len(calls)
    assert set(measurer.servers_used) == set(servers)
    # Every measurement is in the database, positive, and the reports give the
    # knobs `chosen` picks: the fastest, or the models' first within NOISE of it.
    reread = TuningDatabase(tmp_path / "db.jsonl")
    recorded = [(w.key, k, s) for w in (r.workload for r in reports)
                for k, s in reread.measured(w, target_key(2)).items()]
    assert sorted((key, knobs) for key, knobs, _ in recorded) == sorted(calls)
    assert all(0 < seconds < 1 for _, _, seconds in recorded)
    assert {r.workload.key for r in reports} == workloads
    for report in reports:
        assert (report.knobs, report.best) == reread.chosen(report.workload, CpuSchedules(2))
        assert report.best <= min(reread.measured(report.workload, target_key(2)).values()) * (1 + NOISE)
    # Both servers offer themselves again once their sessions have closed.
    deadline = time.monotonic() + 20
    with TrackerClient("127.0.0.1", local.port) as tracker:
        while tracker.summary()["queue_info"][local.key]["free"] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert tracker.summary()["queue_info"][local.key]["free"] == 2


def test_a_key_no_server_has_is_an_error_naming_the_keys(local):
    workload = workload_of(tunable_convs(two_convs())[0])
    with pytest.raises(TconvError, match=r"has no device with key 'jetson' \(registered keys: local\)"):
        RpcMeasurer(RpcTarget("jetson", "127.0.0.1", local.port)).measure(workload, direct(16, 4))


def test_a_busy_key_times_out(local):
    workload = workload_of(tunable_convs(two_convs())[0])
    # Take both devices from the tracker (and never connect to them).
    holders = [TrackerClient("127.0.0.1", local.port) for _ in range(2)]
    try:
        for holder in holders:
            holder.request(local.key, timeout_s=10)
        busy = r"no device with key 'local' came free .* within 1 s \(2 registered, all busy\)"
        with pytest.raises(TconvError, match=busy):
            RpcMeasurer(local.target, timeout_s=1).measure(workload, direct(16, 4))
    finally:
        for holder in holders:
            holder.close()


def test_an_unreachable_tracker_is_an_error():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TconvError, match=f"cannot reach the RPC tracker at 127.0.0.1:{port}"):
        RpcMeasurer(RpcTarget("local", "127.0.0.1", port)).check()


def test_rpc_targets_parse(monkeypatch):
    monkeypatch.delenv("TVM_TRACKER_HOST", raising=False)
    monkeypatch.delenv("TVM_TRACKER_PORT", raising=False)
    assert parse_rpc_target("rpc:rasp4") == RpcTarget("rasp4", "127.0.0.1", 9190)
    assert parse_rpc_target("rpc:rasp4@10.0.0.2:9000") == RpcTarget("rasp4", "10.0.0.2", 9000)
    assert str(parse_rpc_target("rpc:rasp4@board.local:9000")) == "rpc:rasp4@board.local:9000"
    monkeypatch.setenv("TVM_TRACKER_HOST", "tracker.lan")
    monkeypatch.setenv("TVM_TRACKER_PORT", "9191")
    assert parse_rpc_target("rpc:jetson") == RpcTarget("jetson", "tracker.lan", 9191)
    monkeypatch.setenv("TVM_TRACKER_PORT", "nine")
    with pytest.raises(TconvError, match=r"\$TVM_TRACKER_PORT: expected a port number \(1-65535\), got 'nine'"):
        parse_rpc_target("rpc:jetson")
    for bad, message in [
        ("cpu", "expected rpc:KEY or rpc:KEY@HOST:PORT"),
        ("rpc:", "device key"),
        ("rpc:a b", "device key"),
        ("rpc:k@host", "'host' is not HOST:PORT"),
        ("rpc:k@host:0", "expected a port number"),
    ]:
        with pytest.raises(TconvError, match=message):
            parse_rpc_target(bad)


def test_tconv_optimize_measures_through_the_tracker(local, tmp_path, capsys, monkeypatch):
    """`tconv optimize --target rpc:KEY@HOST:PORT`: the search's layer
    measurements go to the devices behind the tracker, keyed by device in the
    database; the answer is still compiled (here) and reported."""
    import json

    from support import small_resnet, tconv

    from tconv.cli.files import write_network
    from tconv.ir.params import init_params

    module = small_resnet()
    write_network(tmp_path / "small.mlir", module, init_params(module))
    monkeypatch.setenv("TCONV_TUNING_DB", str(tmp_path / "db.jsonl"))
    target = f"rpc:{local.key}@127.0.0.1:{local.port}"
    status, out, err = tconv(capsys, "optimize", tmp_path / "small.mlir", "--target", target,
                             "--budget", "20", "--seeds", "2", "-o", tmp_path / "out")
    assert status == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["target"].startswith(f"rpc:{local.key} ")
    assert report["measurements"] > 0
    records = [json.loads(line) for line in (tmp_path / "db.jsonl").read_text().splitlines()]
    assert records and all(record["target"] == report["target"] for record in records)
    # Whole networks are not timed remotely: the report says estimated, not measured.
    assert report["original"]["measured_ms"] is None and report["original"]["estimated_ms"] > 0
    assert (tmp_path / "out" / "artifact" / "plan.txt").is_file()
