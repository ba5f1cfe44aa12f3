"""`tconv tune --target cuda`: the CUDA kernels' thread tile as a schedule
in the IR (honoured or refused by the TVM backend), its knob space, the
tuning loop and `tconv compile --target cuda` applying what it recorded —
compiled here with nvcc; measuring and running need a GPU (`gpu` tests)."""

import json
import shutil

import numpy as np
import pytest
import tvm
from support import assert_user_error, relative_error, tconv

from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError, module_text, parse_module
from tconv.ir.params import init_params, save_store, store_path_for
from tconv.ir.schedule import ConvSchedule
from tconv.lowering.tvm.artifact import compile_artifact
from tconv.lowering.tvm.build import LoweringError, build_kernels, lower_kernels
from tconv.lowering.tvm.cuda_library import cuda_source
from tconv.passes.select import layer_name
from tconv.runtime.plan import read_plan
from tconv.search.cuda_tuning import (
    GPU_TILES,
    CudaSchedules,
    KernelStore,
    gpu_architecture,
    gpu_schedule,
    time_torch_launches,
)
from tconv.search.tuning import (
    WINOGRAD_KNOBS,
    CpuSchedules,
    TuningDatabase,
    apply_tuning,
    direct,
    tunable_convs,
    tunable_workloads,
    tune,
    workload_of,
)
from tconv.semantics.reference import run

pytestmark = pytest.mark.skipif(
    tvm.get_global_func("target.build.cuda", allow_missing=True) is None,
    reason="this TVM has no CUDA code generator",
)
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_gpu = pytest.mark.skipif(not gpu_available(), reason="needs an NVIDIA GPU with torch CUDA")


def convs(batch=1):
    """A dense, a grouped (8 channels a group) and a depthwise convolution."""
    b = NetworkBuilder("convs", (batch, 16, 12, 12))
    x = b.relu(b.conv2d(b.input, 32, 3, padding=1, name="dense"))
    x = b.conv2d(x, 32, 3, padding=1, groups=4, name="grouped")
    return b.finish(b.conv2d(x, 32, 3, padding=1, groups=32, name="dw"))


def scheduled(module, name, schedule):
    (conv,) = [c for c in tunable_convs(module) if layer_name(c) == name]
    conv.properties["schedule"] = schedule.to_attr()
    return module


def test_a_schedule_sets_the_thread_tile_of_a_cuda_convolution():
    """At batch 1 the backend runs a thread per output; a schedule asks for
    a tile all the same (the dense layer 16 × 2, the grouped one 4 × 4)."""
    module = scheduled(scheduled(convs(), "dense", gpu_schedule(16, 2)), "grouped", gpu_schedule(4, 4))
    source = cuda_source(build_kernels(module, "cuda", arch="sm_90")[0])
    # Registers for a tile in the two tiled kernels, one in the depthwise one; tiled, they stage in shared memory.
    assert "float conv_local_ptr[32];" in source and source.count("float conv_local_ptr[1];") == 1
    assert source.count("__shared__ alignas(64) float pad_shared_ptr[") == 2
    # Unscheduled, a thread per output (the dense layer aside, a Winograd convolution by default).
    untiled = cuda_source(build_kernels(convs(), "cuda", arch="sm_90", winograd=False)[0])
    assert untiled.count("float conv_local_ptr[1];") == 3 and "pad_shared_ptr" not in untiled


@pytest.mark.parametrize("groups, schedule, message", [
    (1, 'tile = {oc = [16], ow = [2]}, order = ["n", "g", "oc.0", "oh", "ow.0", "ic", "kh", "kw", "ow.1", "oc.1"]',
     "on cuda it sets only tiles of oc and ow (the thread's tile), not order"),
    (1, 'tile = {oc = [16], ow = [2]}, unroll = ["kh", "kw"]', "not unroll"),
    (1, "tile = {oh = [2]}", "on cuda it tiles only loops oc and ow (the thread's tile), not 'oh'"),
    (1, "tile = {oc = [4, 2]}", "splits 'oc' once, not 2 times"),
    (4, "tile = {oc = [16]}", "a thread tile of 16 channels does not divide the 8 output channels"),
    (32, "tile = {g = [4]}", "a depthwise convolution runs a thread per output on cuda"),
    (1, 'layout = {input = "NCHW8c", output = "NCHW8c"}', "cuda kernels read and write NCHW"),
])
def test_schedules_cuda_cannot_run_are_located_errors(groups, schedule, message):
    text = module_text(convs()).replace(f"groups {groups} :", f"groups {groups} schedule {{{schedule}}} :")
    line = 1 + text.splitlines().index(next(l for l in text.splitlines() if "schedule {" in l))
    with pytest.raises(LoweringError, match="tvm backend:") as error:
        build_kernels(parse_module(text, "convs.mlir"), "cuda", arch="sm_90")
    assert message in str(error.value) and f"convs.mlir:{line}:" in str(error.value)


def test_the_knob_space_is_the_tiles_that_divide_a_group():
    dense, grouped, depthwise = (workload_of(c) for c in tunable_convs(convs(batch=8)))
    schedules = CudaSchedules("sm_90")
    assert schedules.target == "tvm cuda sm_90 kernels=2"
    # The backend's default first (a Winograd convolution), then its own tile (batch 8,
    # 12²: too few outputs to tile), then the others.
    assert schedules.candidates(dense)[:2] == [WINOGRAD_KNOBS, direct(1, 1)]
    assert sorted((k.channels, k.columns) for k in schedules.candidates(dense)[1:]) == sorted(GPU_TILES)
    tiles = {(k.channels, k.columns) for k in schedules.candidates(grouped)}
    assert tiles == {t for t in GPU_TILES if 8 % t[0] == 0} and (16, 2) not in tiles  # no Winograd with groups
    assert schedules.tunes(dense) and not schedules.tunes(depthwise)
    assert tunable_workloads(convs(batch=8), schedules) == [dense, grouped]
    assert schedules.schedule(dense, direct(8, 4)) == gpu_schedule(8, 4)
    assert schedules.schedule(dense, WINOGRAD_KNOBS) == ConvSchedule(algorithm="winograd")


def test_winograd_is_tuned_against_the_direct_tiles(tmp_path):
    """Where the lowering runs a convolution as a Winograd convolution by
    default (3×3, batch 64), Winograd is the first candidate; when it
    measures fastest, the convolution's schedule names it and compiles to
    Winograd's kernels; when a tile does, to that tile."""
    b = NetworkBuilder("large", (64, 64, 28, 28))
    module = b.finish(b.conv2d(b.input, 64, 3, padding=1, name="conv"))
    (dense,) = [workload_of(c) for c in tunable_convs(module)]
    schedules = CudaSchedules("sm_90")
    candidates = schedules.candidates(dense)
    assert candidates[0] == WINOGRAD_KNOBS and direct(16, 2) in candidates
    for fastest, kinds in [(WINOGRAD_KNOBS, ["winograd_input", "winograd_matmul", "winograd_output"]),
                           (direct(8, 2), ["conv2d"])]:
        database = TuningDatabase(tmp_path / f"{fastest.algorithm}.jsonl")
        tune(module, database, 60, None, progress=None, schedules=schedules,
             measure_fn=lambda workload, knobs: 1e-3 if knobs == fastest else 2e-3)
        tuned = module.clone()
        assert apply_tuning(tuned, database, None, schedules) == 1
        _, program = lower_kernels(tuned, "cuda")
        assert [call.symbol.split("_", 1)[1] for call in program.calls] == kinds


@needs_nvcc
def test_tiles_tuned_for_an_architecture_are_what_compile_applies(tmp_path, capsys):
    """`tune` with the cuda schedules records under the architecture's key;
    `tconv compile --target cuda --arch` of that architecture applies the
    fastest (here made up: 4 × 2 for both), another architecture does not."""
    module = convs()
    ir = tmp_path / "convs.mlir"
    ir.write_text(module_text(module))
    save_store(store_path_for(ir), init_params(module))
    database = TuningDatabase(tmp_path / "db.jsonl")
    schedules = CudaSchedules("sm_90")
    measured = []

    def measure(workload, knobs):
        measured.append((workload.groups, knobs))
        return 1e-3 * (1 + abs(knobs.channels - 4) + abs(knobs.columns - 2))

    reports = tune(module, database, 60, None, progress=None, measure_fn=measure, schedules=schedules)
    assert [r.knobs for r in reports] == [direct(4, 2), direct(4, 2)]
    assert {groups for groups, _ in measured} == {1, 4}  # the depthwise layer has no knob
    records = [json.loads(line) for line in (tmp_path / "db.jsonl").read_text().splitlines()]
    assert {r["target"] for r in records} == {schedules.target}
    assert apply_tuning(convs(), database, None, CpuSchedules(2)) == 0  # not the CPU's

    status, _, err = tconv(capsys, "compile", ir, "--target", "cuda", "--arch", "sm_90", "--tuning",
                           tmp_path / "db.jsonl", "-o", tmp_path / "gpu")
    assert status == 0 and "applied tuned schedules to 2 convolution(s)" in err
    status, _, err = tconv(capsys, "compile", ir, "--target", "cuda", "--arch", "sm_80", "--tuning",
                           tmp_path / "db.jsonl", "-o", tmp_path / "gpu80")
    assert status == 0 and "applied tuned schedules" not in err


@needs_nvcc
def test_the_store_compiles_each_tile_once(tmp_path):
    dense = workload_of(tunable_convs(convs())[0])
    schedules = CudaSchedules("sm_90")
    store = KernelStore(tmp_path / "kernels", "sm_90")
    first = store.artifact(dense, direct(16, 2), schedules)
    built = (first / read_plan(first).library).stat().st_mtime_ns
    assert store.artifact(dense, direct(16, 2), schedules) == first
    assert (first / read_plan(first).library).stat().st_mtime_ns == built
    other = store.artifact(dense, direct(1, 1), schedules)
    assert other != first and (other / read_plan(other).library).exists()
    assert store.prepared == {}  # built on demand, not prepared: the candidates stay the backend's
    # The index survives: a new store on the directory holds both, for sm_90.
    again = KernelStore(tmp_path / "kernels")
    assert again.arch == "sm_90" and again.artifact(dense, direct(1, 1), schedules) == other
    (tmp_path / "kernels" / "index.json").write_text("{")
    with pytest.raises(TconvError, match="not a tconv kernel store"):
        KernelStore(tmp_path / "kernels")


NO_TVM_BUILD = """
import sys

class NoTvm:  # a GPU machine without TVM
    def find_spec(self, name, path=None, target=None):
        if name == "tvm" or name.startswith("tvm."):
            raise ImportError("no TVM on this machine")

sys.meta_path.insert(0, NoTvm())
from tconv.ir.loader import load_module
from tconv.search.cuda_tuning import CudaSchedules, KernelStore
from tconv.search.tuning import tunable_convs, workload_of

store = KernelStore(sys.argv[1])
schedules = CudaSchedules(store.arch, store.prepared)
workload = workload_of(tunable_convs(load_module(sys.argv[2]))[0])
knobs = schedules.candidates(workload)
print(store.arch, len(knobs), knobs[0].describe())
store.prepared[workload.key] = knobs[:2]  # two of them, nvcc being slow here
print(store.build_prepared([workload], jobs=2), store.build_prepared([workload], jobs=2))
print(store.artifact(workload, knobs[1], schedules))
"""


@needs_nvcc
def test_kernels_prepared_here_are_built_where_there_is_no_tvm(tmp_path, capsys):
    """`tconv tune --prepare` writes each candidate's plan and CUDA source;
    a Python without TVM lists them and builds one with nvcc (what a GPU
    machine without TVM does before measuring it)."""
    import subprocess
    import sys

    module = convs(batch=8)
    ir = tmp_path / "convs.mlir"
    ir.write_text(module_text(module))
    save_store(store_path_for(ir), init_params(module))
    status, out, err = tconv(capsys, "tune", ir, "--target", "cuda", "--prepare", "--arch", "sm_90",
                             "--kernels", tmp_path / "kernels")
    assert status == 0, err
    grouped_tiles = sum(8 % t[0] == 0 for t in GPU_TILES)
    # The dense layer's tiles and its Winograd convolution, the grouped layer's tiles.
    assert f"prepared {len(GPU_TILES) + 1 + grouped_tiles} kernel(s)" in out and "of 2 workloads) for sm_90" in out
    assert f"tconv tune {ir} --target cuda --kernels {tmp_path / 'kernels'}" in out
    # Again: nothing new to write.
    assert "prepared 0 kernel(s)" in tconv(capsys, "tune", ir, "--target", "cuda", "--prepare", "--arch", "sm_90",
                                           "--kernels", tmp_path / "kernels")[1]
    assert_user_error(tconv(capsys, "tune", ir, "--target", "cuda", "--prepare", "--arch", "sm_80",
                            "--kernels", tmp_path / "kernels"), "holds kernels for sm_90, not sm_80")
    status, _, err = tconv(capsys, "tune", ir, "--prepare", "--kernels", tmp_path / "k")
    assert status == 2 and "--arch, --kernels and --prepare are for --target cuda" in err

    result = subprocess.run([sys.executable, "-c", NO_TVM_BUILD, str(tmp_path / "kernels"), str(ir)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    header, compiled, built = result.stdout.splitlines()
    # The Winograd convolution first: built here from its source too.
    assert header == f"sm_90 {len(GPU_TILES) + 1} winograd" and compiled == "2 0"
    from pathlib import Path

    plan = read_plan(Path(built))
    assert (Path(built) / plan.library).exists() and (Path(built) / plan.params).stat().st_size == plan.params_bytes


def test_launches_are_timed_in_place(tmp_path):
    """The timing loop on a cpu artifact run through torch (the GPU's path
    without the events): a positive, finite time per run."""
    from tconv.runtime.cuda import TorchRuntime

    module = convs()
    compile_artifact(module, init_params(module), tmp_path / "cpu")
    with TorchRuntime(tmp_path / "cpu", "cpu") as runtime:
        runtime.run(np.zeros((1, 16, 12, 12), np.float32))
        seconds = time_torch_launches(runtime, rounds=3, round_s=0.005)
    assert 0 < seconds < 1


@pytest.mark.skipif(gpu_available(), reason="checks the error on a machine without a GPU")
def test_tuning_for_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    module = convs()
    ir = tmp_path / "convs.mlir"
    ir.write_text(module_text(module))
    save_store(store_path_for(ir), init_params(module))
    assert_user_error(tconv(capsys, "tune", ir, "--target", "cuda", "--db", tmp_path / "db.jsonl"),
                      "tuning for cuda measures on an NVIDIA GPU of this machine")
    assert not (tmp_path / "db.jsonl").exists()


@pytest.mark.gpu
@needs_gpu
@needs_nvcc
def test_every_tile_matches_the_reference_on_a_gpu(tmp_path):
    from tconv.runtime.cuda import CudaRuntime

    module = convs(batch=2)
    params = init_params(module)
    x = np.random.default_rng(0).standard_normal((2, 16, 12, 12), dtype=np.float32)
    (want,) = run(module, params, x)
    for channels, columns in GPU_TILES:
        tiled = scheduled(convs(batch=2), "dense", gpu_schedule(channels, columns))
        if 8 % channels == 0:
            tiled = scheduled(tiled, "grouped", gpu_schedule(channels, columns))
        compile_artifact(tiled, params, tmp_path / f"t{channels}x{columns}", target="cuda",
                         arch=gpu_architecture())
        with CudaRuntime(tmp_path / f"t{channels}x{columns}") as runtime:
            (got,) = runtime.run(x)
        assert relative_error(got, want) < 1e-4, (channels, columns)


@pytest.mark.gpu
@needs_gpu
@needs_nvcc
def test_tune_for_cuda_end_to_end_on_a_gpu(tmp_path, capsys):
    module = convs(batch=8)
    ir = tmp_path / "convs.mlir"
    ir.write_text(module_text(module))
    save_store(store_path_for(ir), init_params(module))
    db = tmp_path / "db.jsonl"
    status, out, err = tconv(capsys, "tune", ir, "--target", "cuda", "--budget", "60", "--db", db)
    assert status == 0, err
    assert "conv2d n8 c16 h12 w12 o32 k3x3" in out and "tvm cuda sm_" in out
    status, _, err = tconv(capsys, "compile", ir, "--target", "cuda", "--arch", gpu_architecture(), "--tuning", db,
                           "-o", tmp_path / "gpu")
    assert status == 0 and "applied tuned schedules to 2 convolution(s)" in err
    # Prepared elsewhere, measured here.
    kernels = tmp_path / "kernels"
    assert tconv(capsys, "tune", ir, "--target", "cuda", "--prepare", "--arch", gpu_architecture(),
                 "--kernels", kernels)[0] == 0
    status, out, err = tconv(capsys, "tune", ir, "--target", "cuda", "--kernels", kernels, "--budget", "60",
                             "--db", tmp_path / "db2.jsonl")
    assert status == 0 and "conv2d n8 c16 h12 w12 o32 k3x3" in out, err
