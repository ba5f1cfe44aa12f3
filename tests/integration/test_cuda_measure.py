"""`tconv optimize --target cuda` without a GPU: `CudaMeasurer` and
`CudaNetworkTimer` drive `CudaDevice` over a stand-in for libcuda.so.1 that
runs the GPU kernels' host emulation (tests/cuda_standin.py), so the
compile → bundle → driver calls → events path is the one a GPU takes; only
the numbers are the CPU's. The search on them, and the command end to end.
On a machine with a GPU the `gpu`-marked test runs the real thing."""

from __future__ import annotations

import ctypes
import itertools
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
from cuda_standin import FakeDriver, HostEmulation
from support import assert_user_error, relative_error, small_resnet, tconv

from tconv.cli.files import write_network
from tconv.errors import TconvError
from tconv.ir.loader import load_module
from tconv.ir.params import init_params, load_store
from tconv.runtime.cuda_driver import BUNDLE_FILE, CudaDevice, DriverRuntime
from tconv.runtime.plan import read_plan
from tconv.search import cuda_measure
from tconv.search.cuda_measure import CudaMeasurer, arch_for
from tconv.search.latency import LayerLatencies
from tconv.search.network_timer import CudaNetworkTimer
from tconv.search.optimize import OptimizeOptions, Search
from tconv.search.report import UNTUNED_SCHEDULE, build_report, layer_rows, markdown
from tconv.search.space import conv_layers
from tconv.search.tuning import UNSCHEDULED, TuningDatabase, Workload, candidates
from tconv.semantics.reference import run


def gpu_available() -> bool:
    try:
        return ctypes.CDLL("libcuda.so.1").cuInit(0) == 0
    except OSError:
        return False


class StandIn:
    """A stand-in GPU: the driver the measurer opens (it answers queries),
    and a device per artifact that runs the module's kernels on this CPU;
    every driver made is kept, to check what was called."""

    def __init__(self, scratch, capability=(9, 0)) -> None:
        self.scratch = scratch
        self.capability = capability
        self.counter = itertools.count()
        self.drivers: list[FakeDriver] = []

    def driver(self, module=None) -> FakeDriver:
        emulation = None if module is None else HostEmulation(module, self.scratch / f"emu{next(self.counter)}")
        self.drivers.append(FakeDriver(emulation, self.capability, name=b"Stand-in GPU"))
        return self.drivers[-1]

    def device_for(self, module) -> CudaDevice:
        return CudaDevice(driver=self.driver(module))

    def measurer(self, **options) -> CudaMeasurer:
        return CudaMeasurer(driver=self.driver(), device_for=self.device_for, rounds=2, round_s=0.002, **options)


WORKLOADS = {
    "grouped": Workload((1, 16, 8, 8), 32, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),
    "depthwise": Workload((1, 16, 8, 8), 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 16),
    "stride 2": Workload((1, 16, 8, 8), 32, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
}


def test_the_measurer_times_grouped_depthwise_and_strided_convolutions(tmp_path):
    standin = StandIn(tmp_path)
    measurer = standin.measurer()
    assert (measurer.target_key, measurer.arch, measurer.tunable) == ("cuda sm_90 Stand-in GPU", "sm_90", False)
    for name, workload in WORKLOADS.items():
        seconds = measurer.measure(workload, UNSCHEDULED)
        assert math.isfinite(seconds) and seconds > 0, name
        driver = standin.drivers[-1]
        # The conv kernel's launches ran (warm-up, calibration, rounds), timed by events that are gone.
        assert len(driver.launches) >= 4 and driver.events == {} and driver.retained == 0, name
    # Other knobs: the same GPU kernel, not built again.
    built = dict(measurer._built)
    workload = WORKLOADS["grouped"]
    assert measurer.measure(workload, candidates(workload)[-1]) > 0
    assert measurer._built == built
    plan = read_plan(built[workload.key][0])
    assert (plan.target, plan.arch, plan.library) == ("cuda", "sm_90", BUNDLE_FILE)
    measurer.close()
    assert standin.drivers[0].retained == 0


def test_the_architecture_follows_the_device(tmp_path):
    assert (arch_for(80), arch_for(86), arch_for(89), arch_for(90)) == ("sm_80", "sm_80", "sm_80", "sm_90")
    ampere = StandIn(tmp_path, capability=(8, 6)).measurer()
    assert (ampere.target_key, ampere.arch) == ("cuda sm_86 Stand-in GPU", "sm_80")
    with pytest.raises(TconvError, match="the GPU is sm_75; the llvm backend compiles cuda for sm_80, sm_90"):
        StandIn(tmp_path, capability=(7, 5)).measurer()
    with pytest.raises(TconvError, match="--arch sm_90: the GPU is sm_86"):
        StandIn(tmp_path, capability=(8, 6)).measurer(arch="sm_90")


def test_a_search_measures_each_workload_once_on_the_gpu(tmp_path):
    standin = StandIn(tmp_path)
    measurer = standin.measurer()
    module = small_resnet()
    database = TuningDatabase(tmp_path / "db.jsonl")
    latencies = LayerLatencies(database, measurer)
    options = OptimizeOptions(budget_s=120, seeds=(0, 1), capacity_batch=16, measure_networks=True)
    timer = CudaNetworkTimer(tmp_path / "builds", measurer.arch, measurer.device_for, rounds=2, runs=3)
    search = Search(module, init_params(module), latencies, options, network_timer=timer)
    result = search.run()

    assert result.original.measured_seconds > 0 and timer.ort_seconds is None
    assert result.best is result.original or result.best.measured_seconds < result.original.measured_seconds
    assert database.records and latencies.measurements == len(database.records)
    records = [json.loads(line) for line in (tmp_path / "db.jsonl").read_text().splitlines()]
    assert {record["target"] for record in records} == {"cuda sm_90 Stand-in GPU"}
    # No budget went to tuning: one measurement per workload, with no schedule.
    assert len({record["workload"] for record in records}) == len(records)
    for measured in database.records.values():
        (knobs,) = measured
        assert knobs == UNSCHEDULED
    assert result.model_rank_correlation is None

    rows = layer_rows(result, latencies, conv_layers(module))
    assert {part for row in rows for part in row.schedule.split(", ")} == {UNTUNED_SCHEDULE}
    report = build_report(result, rows, {"network": "small", "target": latencies.target, "budget_seconds": 120.0,
                                         "min_capacity": 1.0, "threads": 1, "ort_original_ms": None})
    text = markdown(report)
    assert "on cuda sm_90 Stand-in GPU" in text and "ONNX Runtime" not in text
    assert report["original"]["measured_ms"] > 0 and "vs_onnxruntime_original" not in report["speedup"]
    measurer.close()


def test_optimize_for_cuda_writes_the_gpu_artifact(tmp_path, capsys, monkeypatch):
    """The command's cuda branch end to end, on the stand-in GPU."""
    standin = StandIn(tmp_path)
    monkeypatch.setattr(cuda_measure, "CudaMeasurer", lambda: standin.measurer())
    module = small_resnet()
    write_network(tmp_path / "small.mlir", module, init_params(module, seed=1))
    status, out, err = tconv(capsys, "optimize", tmp_path / "small.mlir", "--target", "cuda", "--budget", "60",
                             "--seeds", "2", "--db", tmp_path / "db.jsonl", "-o", tmp_path / "out")
    assert status == 0, err
    assert "| latency, measured (ms) |" in out and "ONNX Runtime" not in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["target"] == "cuda sm_90 Stand-in GPU" and report["original"]["measured_ms"] > 0
    assert report["ort_original_ms"] is None
    plan = read_plan(tmp_path / "out" / "artifact")
    assert (plan.target, plan.arch, plan.library) == ("cuda", "sm_90", BUNDLE_FILE)
    # The artifact computes the optimized network.
    optimized = load_module(tmp_path / "out" / "optimized.mlir")
    params = load_store(tmp_path / "out" / "optimized.npz")
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with DriverRuntime(tmp_path / "out" / "artifact", standin.device_for(optimized)) as runtime:
        (actual,) = runtime.run(x)
    (expected,) = run(optimized, params, x)
    assert relative_error(actual, expected) < 1e-5
    targets = {json.loads(line)["target"] for line in (tmp_path / "db.jsonl").read_text().splitlines()}
    assert targets == {"cuda sm_90 Stand-in GPU"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "staging left behind"


@pytest.mark.skipif(gpu_available(), reason="a GPU is present: the gpu test runs the command")
def test_without_a_gpu_optimize_for_cuda_is_a_clean_error(tmp_path, capsys):
    module = small_resnet()
    write_network(tmp_path / "small.mlir", module, init_params(module))
    assert_user_error(
        tconv(capsys, "optimize", tmp_path / "small.mlir", "--target", "cuda", "--budget", "10",
              "--db", tmp_path / "db.jsonl", "-o", tmp_path / "out"),
        "error: no CUDA device",
    )
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert not (tmp_path / "db.jsonl").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs an NVIDIA GPU and its driver")
def test_optimize_for_cuda_on_a_gpu(tmp_path, capsys):
    measurer = CudaMeasurer()
    assert measurer.target_key.startswith(f"cuda sm_{measurer.device.compute_capability()} ")
    for name, workload in WORKLOADS.items():
        seconds = measurer.measure(workload, UNSCHEDULED)
        assert 1e-7 < seconds < 0.1, name
    measurer.close()

    module = small_resnet()
    write_network(tmp_path / "small.mlir", module, init_params(module, seed=1))
    status, out, err = tconv(capsys, "optimize", tmp_path / "small.mlir", "--target", "cuda", "--budget", "60",
                             "--seeds", "2", "--db", tmp_path / "db.jsonl", "-o", tmp_path / "out")
    assert status == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["target"].startswith("cuda sm_") and report["original"]["measured_ms"] > 0
    optimized = load_module(tmp_path / "out" / "optimized.mlir")
    params = load_store(tmp_path / "out" / "optimized.npz")
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with DriverRuntime(tmp_path / "out" / "artifact") as runtime:
        (actual,) = runtime.run(x)
    (expected,) = run(optimized, params, x)
    assert relative_error(actual, expected) < 1e-4
    shutil.rmtree(tmp_path / "out")


NO_TVM = """
import sys

class NoTvm:  # the GPU machine's Python has no TVM
    def find_spec(self, name, path=None, target=None):
        if name == "tvm" or name.startswith("tvm."):
            raise ImportError("no TVM on this machine")

sys.meta_path.insert(0, NoTvm())
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", sys.argv[1]]))
"""


def test_the_gpu_search_imports_no_tvm(tmp_path):
    """Measuring and searching for cuda run where TVM is not installed: the
    search test above, in a Python that cannot import TVM."""
    test = f"{__file__}::test_a_search_measures_each_workload_once_on_the_gpu"
    result = subprocess.run([sys.executable, "-c", NO_TVM, test], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
