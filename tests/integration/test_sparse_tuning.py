"""The sparse kernel chosen per layer by measurement: a convolution that
declares its nonzero weights (`tconv-sparsify`) is its own workload, whose
candidates include the sparse kernel beside the dense ones; `tconv
compile` runs whichever the tuning database found faster."""

import json

import numpy as np
import pytest
from support import relative_error

from tconv.compile import LayoutPlan, compile_network, schedule_network
from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import Conv2dOp
from tconv.ir.params import init_params
from tconv.ir.schedule import ConvSchedule, parse_schedule
from tconv.ir.syntax import int_attr
from tconv.search.tuning import (
    SPARSE_KNOBS,
    WINOGRAD_KNOBS,
    CpuSchedules,
    Knobs,
    TuningDatabase,
    Workload,
    candidates,
    conv_network,
    default_threads,
    knobs_of_schedule,
    measurement_params,
    schedule_of,
    tune,
    workload_of,
)

K = 16 * 9
"""Weights of one output channel of a 16-channel 3×3 convolution."""


@pytest.fixture(autouse=True)
def avx2_host(monkeypatch):
    """Candidates and defaults are those of znver3 (8 lanes), whatever x86 CPU runs the tests."""
    from tconv.lowering.tvm import target

    monkeypatch.setattr(target, "host_cpu", lambda: "znver3")


def workload(nonzeros):
    return Workload((1, 16, 10, 10), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, nonzeros)


def test_a_pruned_convolution_is_a_workload_of_its_own_with_the_sparse_kernel_among_its_knobs():
    sparse, half, dense = workload(K // 10), workload(K // 2), workload(None)
    assert sparse.key == dense.key + f" nz{K // 10}"
    # 10% pays by default on a CPU (algorithm.SPARSE_DENSITY): the sparse kernel first; 50% does not: second.
    assert candidates(sparse)[0] == SPARSE_KNOBS and candidates(half)[1] == SPARSE_KNOBS
    assert candidates(half, 8)[:3] == [candidates(half, 8)[0], SPARSE_KNOBS, WINOGRAD_KNOBS]
    assert SPARSE_KNOBS not in candidates(dense)
    assert CpuSchedules(2).runs(half, SPARSE_KNOBS) and not CpuSchedules(2).runs(dense, SPARSE_KNOBS)
    assert schedule_of(half, SPARSE_KNOBS) == ConvSchedule(algorithm="sparse")
    assert knobs_of_schedule(half, ConvSchedule(algorithm="sparse")) == SPARSE_KNOBS
    assert Knobs.from_record(SPARSE_KNOBS.record()) == SPARSE_KNOBS and SPARSE_KNOBS.describe() == "sparse"
    with pytest.raises(ValueError, match="reads and writes NCHW"):
        Knobs("sparse", 0, 0, layout=8)


@pytest.mark.parametrize("nonzeros", [1, K // 10, K // 2])
def test_the_measurement_network_keeps_the_declared_nonzeros_and_computes_the_convolution(nonzeros):
    from tconv.lowering.tvm.build import TvmNetwork
    from tconv.semantics.reference import run

    w = workload(nonzeros)
    for knobs in (SPARSE_KNOBS, candidates(w)[0] if nonzeros != K // 10 else candidates(w)[1]):
        module = conv_network(w, knobs)
        (conv,) = [op for op in module.walk() if isinstance(op, Conv2dOp)]
        assert conv.weight_nonzeros == nonzeros and workload_of(conv) == w
        params = measurement_params(module)
        weight = params[conv.weight.owner.param_name]
        assert ((weight.reshape(16, -1) != 0).sum(axis=1) == nonzeros).all()
        network = TvmNetwork(module)
        network.load_params(params)
        x = np.random.default_rng(0).standard_normal(w.input, dtype=np.float32)
        (got,) = network.run(x)
        (want,) = run(module, params, x)
        assert relative_error(got, want) < 1e-5


def pruned_network():
    """Two pruned 3×3 layers: `thin` at 10% (sparse by default), `thick` at 50% (dense by default)."""
    b = NetworkBuilder("pruned", (1, 16, 10, 10))
    x = b.relu(b.conv2d(b.input, 16, 3, padding=1, name="thin"))
    module = b.finish(b.relu(b.conv2d(x, 16, 3, padding=1, name="thick")))
    thin, thick = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    thin.properties["nonzeros"] = int_attr(K // 10)
    thick.properties["nonzeros"] = int_attr(K // 2)
    params = init_params(module, seed=4)
    for conv in (thin, thick):
        name = conv.weight.owner.param_name
        rows = params[name].reshape(16, -1).copy()
        rows[:, conv.weight_nonzeros:] = 0  # within what each declares
        params[name] = rows.reshape(params[name].shape)
    return module, params


def test_compile_runs_the_kernel_measured_faster_for_each_layer(tmp_path):
    """Against the defaults (sparse at 10%, dense at 50%): the measurements
    say the 10% layer runs faster dense and the 50% layer faster sparse,
    and the compiled network runs them so, computing what the reference
    executor does."""
    from tconv.runtime.driver import Runtime
    from tconv.semantics.reference import run

    module, params = pruned_network()
    thin, thick = (workload_of(op) for op in module.walk() if isinstance(op, Conv2dOp))

    def fake_seconds(workload, knobs):
        sparse_wins = workload == thick
        return 1e-4 if (knobs == SPARSE_KNOBS) == sparse_wins else 2e-4

    database = TuningDatabase(tmp_path / "db.jsonl")
    threads = default_threads()
    for layout in (0, 8):
        tune(module, database, 1e9, threads, progress=None, measure_fn=fake_seconds,
             schedules=CpuSchedules(threads, layout))
    records = [json.loads(line) for line in (tmp_path / "db.jsonl").read_text().splitlines()]
    assert {r["workload"] for r in records if r["algorithm"] == "sparse"} == {thin.key, thick.key}

    for layout in ("nchw", "auto"):
        scheduled = module.clone()
        tuned, plan = schedule_network(scheduled, database, threads=threads, layout=layout)
        # auto: nothing to pack between the network's input and the sparse kernel's NCHW input
        assert tuned == 2 and plan == (None if layout == "nchw" else LayoutPlan())
        first, second = (parse_schedule(op.schedule) for op in scheduled.walk() if isinstance(op, Conv2dOp))
        assert first.algorithm is None and first.transforms_loops  # dense knobs, though 10% is sparse by default
        assert second == ConvSchedule(algorithm="sparse")  # though 50% is dense by default

    compile_network(module, params, tmp_path / "net", database=database, threads=threads)
    x = np.random.default_rng(1).standard_normal((1, 16, 10, 10), dtype=np.float32)
    with Runtime(tmp_path / "net", threads=2) as runtime:
        (got,) = runtime.run(x)
    (want,) = run(module, params, x)
    assert relative_error(got, want) < 1e-5


def test_a_pruned_workload_shares_the_dense_records_of_its_unpruned_twin(tmp_path):
    """Dense kernels run as fast on zeros: a pruned layer's dense knobs are
    the unpruned layer's records, and tuning it measures only what those
    lack (the sparse kernel first); its own records rank ahead."""
    database = TuningDatabase(tmp_path / "db.jsonl")
    schedules = CpuSchedules(2)
    pruned, twin = workload(K // 2), workload(None)
    dense_default = candidates(pruned)[0]
    database.add(twin, schedules.target, dense_default, 2e-4)
    assert database.measured(pruned, schedules.target) == {dense_default: 2e-4}
    assert database.chosen(pruned, schedules) == (dense_default, 2e-4)
    database.add(pruned, schedules.target, SPARSE_KNOBS, 1e-4)
    assert database.chosen(pruned, schedules) == (SPARSE_KNOBS, 1e-4)
    assert database.measured(twin, schedules.target) == {dense_default: 2e-4}  # the twin keeps its own

    module, _ = pruned_network()
    tune(module, database, 1e9, 2, progress=None, measure_fn=lambda workload, knobs: 3e-4, schedules=schedules)
    lines = [json.loads(line) for line in (tmp_path / "db.jsonl").read_text().splitlines()]
    pruned_default = [r for r in lines if r["workload"] == pruned.key and Knobs.from_record(r) == dense_default]
    # Known from the twin: measured again only side by side with the sparse kernel, never alone.
    assert pruned_default and all("round" in r for r in pruned_default)
