"""CUDA compilation without a GPU: every kind of kernel gets the GPU schedule
and nvcc compiles TVM's CUDA host code for sm_90 into a library that tvm_ffi
loads here, with every kernel symbol of the plan. Running the kernels is a
GPU check (`bench/gpu`, and the `gpu`-marked test below)."""

import shutil
import subprocess

import numpy as np
import pytest
import tvm
import tvm_ffi

from tconv.cli.main import main
from tconv.frontends.zoo import build
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError, module_text
from tconv.ir.params import init_params, save_store, store_path_for
from tconv.lowering.tvm.artifact import compile_artifact
from tconv.lowering.tvm.build import build_kernels
from tconv.lowering.tvm.cuda_library import cuda_source
from tconv.lowering.tvm.schedule_gpu import conv_tile
from tconv.runtime.plan import read_plan
from tconv.semantics.reference import run

pytestmark = pytest.mark.skipif(
    tvm.get_global_func("target.build.cuda", allow_missing=True) is None,
    reason="this TVM has no CUDA code generator",
)
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")


def every_kernel_kind():
    """One network with every op the lowering has a kernel for."""
    b = NetworkBuilder("kinds", (2, 16, 14, 14))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 32, 3, stride=2, groups=2, name="conv"), name="bn"))
    x = b.relu(b.add(x, b.conv2d(b.input, 32, 1, stride=2, name="shortcut")))
    depthwise = b.relu6(b.conv2d(x, 32, 3, padding=2, groups=32, dilation=2, name="dw"))
    x = b.concat([b.slice_channels(depthwise, 0, 16), b.channel_shuffle(x, 4)])
    x = b.max_pool2d(x, 3, stride=2, padding=1)
    x = b.concat([b.slice(x, 2, 0, 2), b.slice(x, 2, 1, 3)], axis=2)  # overlapping row strips
    x = b.avg_pool2d(b.batch_norm(x, name="bn2"), 2, stride=1)
    x = b.relu(b.batch_norm(x, name="bn3"))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


def test_every_kernel_kind_gets_a_gpu_schedule():
    executable, program = build_kernels(every_kernel_kind(), "cuda", arch="sm_90")
    source = cuda_source(executable)
    for symbol in program.symbols:
        assert f"{symbol}_kernel" in source
    # One thread per output, accumulating in a register: no global scratch memory.
    assert "TVMBackendAllocWorkspace" not in source
    assert "threadIdx.x" in source


def test_large_batches_register_tile_the_direct_convolution():
    """A thread accumulates a tile of output channels × columns where enough
    threads remain (batch 64), a single output otherwise (batch 1); the
    channels of a tile divide a group's. Tiled, a thread block stages its
    operands in shared memory."""
    assert conv_tile(64 * 64 * 56 * 56, 64) == (16, 2)
    assert conv_tile(64 * 64 * 56 * 56, 8) == (8, 2)
    assert conv_tile(1 * 64 * 56 * 56, 64) == (1, 1)
    assert conv_tile(64 * 64 * 56 * 56, 2) == (2, 2)
    assert conv_tile(64 * 512 * 4 * 4, 512) == (2, 2)
    b = NetworkBuilder("tiled", (128, 16, 32, 32))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 32, 3, padding=1, groups=4, name="grouped"), name="bn"))
    x = b.relu(b.add(x, b.conv2d(b.input, 32, 3, padding=1, name="dense")))
    # (The dense 3×3 would run as a Winograd convolution by default: see below.)
    executable, program = build_kernels(b.finish(x), "cuda", arch="sm_90", winograd=False)
    source = cuda_source(executable)
    # 8 of a group's 8 channels × 2 columns, 16 of 32 ungrouped ones × 2; epilogues in the same
    # thread; the input window and the weights staged in shared memory.
    assert source.count("float conv_local_ptr[16];") == 1 and source.count("float conv_local_ptr[32];") == 1
    assert source.count("__shared__ alignas(64) float pad_shared_ptr[") == 2
    assert source.count("__shared__ alignas(64) float arg1_shared_ptr[") == 2
    assert "__syncthreads()" in source and "TVMBackendAllocWorkspace" not in source


@needs_nvcc
def test_large_batch_3x3_convolutions_run_as_winograd(tmp_path):
    """A 3×3 stride-1 convolution is three kernels (transforms a thread per
    tile and channel, the product staged in shared memory, at batch 64 in
    blocks of 64 × 128 products, 8 × 8 a thread),
    with the epilogue in the last; a strided one stays direct. nvcc builds
    them; the plan holds the transformed weight and the two intermediates."""
    b = NetworkBuilder("winograd", (64, 64, 28, 28))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 64, 3, padding=1, name="c1"), name="bn"))
    x = b.relu(b.add(x, b.conv2d(x, 64, 3, padding=1, name="c2")))
    module = b.finish(b.conv2d(x, 64, 3, stride=2, padding=1, name="strided"))
    executable, program = build_kernels(module, "cuda", arch="sm_90")
    kinds = [call.symbol.split("_", 1)[1] for call in program.calls]
    assert kinds == ["winograd_input", "winograd_matmul", "winograd_output"] * 2 + ["conv2d"]
    assert program.calls[2].ops == ("conv2d", "batch_norm", "relu")
    assert program.calls[5].ops == ("conv2d", "add", "relu")
    source = cuda_source(executable)
    # The product: U and V staged in shared memory, 8 × 8 products a thread; the inverse: 36 M values a thread.
    assert "float4 arg0_shared_ptr[" in source and "float4 arg1_shared_ptr[" in source
    assert "float matmul_local_ptr[64];" in source and "float arg0_local_ptr[36];" in source
    assert "TVMBackendAllocWorkspace" not in source
    report = compile_artifact(module, init_params(module), tmp_path / "gpu", target="cuda", arch="sm_90")
    plan = read_plan(report.directory)
    assert [t.shape for t in plan.tensors if "winograd" in t.name] == [(36, 64, 64)] * 2
    assert (36, 64, 3200) in [t.shape for t in plan.tensors]  # V and M: 64 images × 7 × 7 tiles, to 128s


@needs_nvcc
@pytest.mark.parametrize("shape, out_channels, kernel, stride, groups, staged", [
    ((64, 3, 224, 224), 64, 7, 2, 1, True),  # ImageNet's stem: its window fits 48 KB
    ((16, 64, 8, 600), 64, 3, 1, 32, False),  # 300 column tiles: more threads than a block holds
])
def test_tiled_convolutions_stay_within_a_thread_block(tmp_path, shape, out_channels, kernel, stride, groups, staged):
    """Staging stops at CUDA's limits (48 KB of shared memory, the threads of
    a block): what does not fit runs a thread per output; both build with nvcc."""
    b = NetworkBuilder("edge", shape)
    module = b.finish(b.conv2d(b.input, out_channels, kernel, stride=stride, padding=kernel // 2, groups=groups))
    executable, _ = build_kernels(module, "cuda", arch="sm_90")
    assert ("pad_shared_ptr" in cuda_source(executable)) == staged
    compile_artifact(module, init_params(module), tmp_path / "gpu", target="cuda", arch="sm_90")
    assert read_plan(tmp_path / "gpu").target == "cuda"


@needs_nvcc
@pytest.mark.slow
def test_resnet18_cifar_compiles_for_sm_90_and_loads(tmp_path):
    """The CI check of the issue: a whole network through nvcc, loadable without a GPU."""
    module = build("resnet18", "cifar10")
    report = compile_artifact(module, init_params(module), tmp_path / "r18", target="cuda", arch="sm_90")
    plan = read_plan(report.directory)
    assert (plan.target, plan.arch) == ("cuda", "sm_90")
    library = tvm_ffi.load_module(str(report.directory / plan.library))
    for call in plan.calls:
        assert library[call.symbol] is not None
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", str(report.directory / plan.library)],
        capture_output=True, text=True, check=True,
    ).stdout
    assert {c.symbol for c in plan.calls} <= {
        line.split()[-1].removeprefix("__tvm_ffi_") for line in symbols.splitlines()
    }


@needs_nvcc
def test_cli_cuda_artifact_and_its_errors(tmp_path, capsys):
    module = every_kernel_kind()
    (tmp_path / "net.mlir").write_text(module_text(module))
    save_store(store_path_for(tmp_path / "net.mlir"), init_params(module))
    out = tmp_path / "net.gpu"
    assert main(["compile", str(tmp_path / "net.mlir"), "--target", "cuda", "-o", str(out)]) == 0
    assert read_plan(out).target == "cuda"
    assert main(["compile", str(tmp_path / "net.mlir"), "--target", "cuda", "--arch", "90",
                 "-o", str(tmp_path / "x")]) == 2
    capsys.readouterr()
    if not _gpu_available():
        # No GPU here: running it is refused with the reason, not a traceback.
        assert main(["run", str(out)]) == 1
        assert "running a cuda artifact needs" in capsys.readouterr().err


def test_missing_nvcc_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NVCC", str(tmp_path / "no-nvcc"))
    monkeypatch.setenv("PATH", "")
    module = every_kernel_kind()
    with pytest.raises(TconvError, match=r"cannot run nvcc \(.*no-nvcc\): No such file"):
        compile_artifact(module, init_params(module), tmp_path / "gpu", target="cuda")
    assert not (tmp_path / "gpu").exists()


def _gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_available(), reason="needs an NVIDIA GPU with torch CUDA")
@needs_nvcc
def test_cuda_artifact_matches_the_reference_on_a_gpu(tmp_path):
    from tconv.runtime.cuda import CudaRuntime

    module = every_kernel_kind()
    params = init_params(module)
    compile_artifact(module, params, tmp_path / "gpu", target="cuda")
    x = np.random.default_rng(0).standard_normal((2, 16, 14, 14), dtype=np.float32)
    with CudaRuntime(tmp_path / "gpu") as runtime:
        (got,) = runtime.run(x)
    (want,) = run(module, params, x)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


def test_no_nvcc_on_path_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("NVCC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    module = every_kernel_kind()
    with pytest.raises(TconvError, match=r"nvcc not found: .*put it on PATH or set \$NVCC"):
        compile_artifact(module, init_params(module), tmp_path / "gpu", target="cuda")
    assert not (tmp_path / "gpu").exists()


def test_torch_runtime_maps_the_plan_onto_torch_tensors(tmp_path):
    """The cuda driver's plan-to-tensor mapping, checked on the CPU: a cpu
    artifact's kernels through tvm_ffi on torch CPU tensors match the reference."""
    from tconv.runtime.cuda import TorchRuntime

    module = every_kernel_kind()
    params = init_params(module)
    compile_artifact(module, params, tmp_path / "cpu")
    x = np.random.default_rng(1).standard_normal((2, 16, 14, 14), dtype=np.float32)
    with TorchRuntime(tmp_path / "cpu", "cpu") as runtime:
        (got,) = runtime.run(x)
        (again,) = runtime.run(x)
        assert runtime.arena_bytes > 0
    (want,) = run(module, params, x)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
    np.testing.assert_array_equal(got, again)
