"""The LLVM backend's cuda artifacts without a GPU: every kernel of a network
as PTX that ptxas assembles for sm_80 and sm_90, a kernel bundle whose
launches cover the plan's calls, and the driver runtime's plan-to-launch
mapping run through the kernels' host emulation (the GPU functions' bodies
compiled for this CPU) against the reference (that device, and a stand-in
for libcuda under `CudaDevice`, are in tests/cuda_standin.py). Launching on
a GPU is the `gpu`-marked test below and `bench/gpu`."""

import ctypes
import json
import re
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest
from cuda_standin import FakeDriver, HostEmulation
from support import assert_user_error, relative_error, tconv, trained_like_params

from tconv.cli.files import write_network
from tconv.cli.main import main as tconv_main
from tconv.errors import TconvError
from tconv.frontends.zoo import build
from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import shape_of
from tconv.lowering.llvm.artifact import CUDA_PACKING, compile_artifact
from tconv.lowering.llvm.build import lower_program
from tconv.lowering.llvm.nvptx import BLOCK, emit_ptx, gpu_nest, threads
from tconv.runtime.cuda_driver import BUNDLE_FILE, DriverRuntime, launch_steps, parse_bundle, read_bundle
from tconv.runtime.plan import PLAN_FILE, plan_fingerprint, read_plan
from tconv.semantics.reference import run, single_function

needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas is not installed")


def grouped_and_depthwise():
    """A grouped convolution, a depthwise one (dilated, padded, fused ReLU6),
    a residual add and every layout op: the kernels a thread-per-output
    mapping can get wrong."""
    b = NetworkBuilder("gdw", (2, 16, 14, 14))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 32, 3, stride=2, groups=4, name="grouped"), name="bn"))
    x = b.relu(b.add(x, b.conv2d(b.input, 32, 1, stride=2, name="shortcut")))
    depthwise = b.relu6(b.conv2d(x, 32, 3, padding=2, groups=32, dilation=2, name="dw"))
    x = b.concat([b.slice_channels(depthwise, 0, 16), b.channel_shuffle(x, 4)])
    x = b.max_pool2d(x, 3, stride=2, padding=1)
    x = b.concat([b.slice(x, 2, 0, 2), b.slice(x, 2, 1, 3)], axis=2)  # overlapping row strips
    x = b.avg_pool2d(b.batch_norm(x, name="bn2"), 2, stride=1)
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


def random_inputs(module, seed=0):
    shapes = [shape_of(a) for a in single_function(module).body.block.args]
    return [np.random.default_rng(seed).standard_normal(s, dtype=np.float32) for s in shapes]


def ptx_entries(ptx: str) -> dict[str, int]:
    """Each `.entry` of the PTX and its parameter count."""
    return {name: params.count(".param") for name, params in re.findall(r"\.entry (\w+)\(([^)]*)\)", ptx)}


def gpu_available() -> bool:
    try:
        return ctypes.CDLL("libcuda.so.1").cuInit(0) == 0
    except OSError:
        return False


@needs_ptxas
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_resnet18_cifar_becomes_a_cubin_with_every_kernel_of_its_plan(tmp_path, arch):
    module = build("resnet18", "cifar10")
    report = compile_artifact(module, trained_like_params(module), tmp_path / "r18", "cuda", arch)
    plan = read_plan(report.directory)
    assert (plan.target, plan.arch, plan.library) == ("cuda", arch, BUNDLE_FILE)
    bundle = read_bundle(report.directory / BUNDLE_FILE)
    bundle.check_plan(plan, plan_fingerprint((report.directory / PLAN_FILE).read_bytes()), "r18")
    assert (bundle.arch, bundle.image_kind, bundle.image[:4]) == (arch, "cubin", b"\x7fELF")
    assert {k.symbol for k in bundle.kernels} == {c.symbol for c in plan.calls}

    # Every launched function is in the cubin and takes the plan call's arguments.
    (tmp_path / "kernels.cubin").write_bytes(bundle.image)
    symbols = subprocess.run(["nm", tmp_path / "kernels.cubin"], capture_output=True, text=True, check=True).stdout
    defined = {line.split()[-1] for line in symbols.splitlines() if " T " in line}
    kernels, _ = lower_program(module, CUDA_PACKING)
    entries = ptx_entries(emit_ptx(kernels, arch))
    arguments = {c.symbol: len(c.args) for c in plan.calls}
    for kernel in bundle.kernels:
        for launch in kernel.launches:
            assert launch.function in defined
            assert entries[launch.function] == kernel.args == arguments[kernel.symbol]

    # Each launch has a thread per point of its nest, and no block more.
    sources = {k.symbol: k for k in kernels}
    for kernel in bundle.kernels:
        for launch, nest in zip(kernel.launches, sources[kernel.symbol].nests, strict=True):
            points = threads(gpu_nest(nest))
            assert launch.block == BLOCK
            assert (launch.grid - 1) * BLOCK < points <= launch.grid * BLOCK


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_grouped_and_depthwise_kernels_launched_by_the_plan_match_the_reference(tmp_path, arch):
    """The driver runtime's launches (names, grids, argument addresses, order)
    through the host emulation of the very functions the PTX holds."""
    module = grouped_and_depthwise()
    params = trained_like_params(module)
    compile_artifact(module, params, tmp_path / "net", "cuda", arch)
    inputs = random_inputs(module)
    device = HostEmulation(module, tmp_path)
    with DriverRuntime(tmp_path / "net", device) as runtime:
        (actual,) = runtime.run(*inputs)
        steps = len(device.launched)
        (again,) = runtime.run(*inputs)
    (expected,) = run(module, params, *inputs)
    assert relative_error(actual, expected) < 1e-5
    np.testing.assert_array_equal(actual, again)
    plan = read_plan(tmp_path / "net")
    bundle = read_bundle(tmp_path / "net" / BUNDLE_FILE)
    if shutil.which("ptxas"):
        assert (bundle.arch, bundle.image_kind, bundle.image[:4]) == (arch, "cubin", b"\x7fELF")
    assert steps == sum(len(bundle.kernel(c.symbol).launches) for c in plan.calls)
    assert {launch.function for launch in device.launched} == {
        launch.function for kernel in bundle.kernels for launch in kernel.launches
    }


@pytest.mark.slow
def test_resnet18_cifar_launched_through_the_host_emulation_matches_the_reference(tmp_path):
    module = build("resnet18", "cifar10")
    params = trained_like_params(module)
    compile_artifact(module, params, tmp_path / "r18", "cuda", "sm_90")
    inputs = random_inputs(module)
    with DriverRuntime(tmp_path / "r18", HostEmulation(module, tmp_path)) as runtime:
        (actual,) = runtime.run(*inputs)
    (expected,) = run(module, params, *inputs)
    assert relative_error(actual, expected) < 1e-5


def test_launch_steps_address_each_call_s_tensors_in_order(tmp_path):
    module = grouped_and_depthwise()
    compile_artifact(module, trained_like_params(module), tmp_path / "net", "cuda", "sm_90")
    plan = read_plan(tmp_path / "net")
    bundle = read_bundle(tmp_path / "net" / BUNDLE_FILE)
    arena, params = 1 << 40, 1 << 41
    steps = iter(launch_steps(plan, bundle, arena, params))
    for call in plan.calls:
        expected = tuple((arena if plan.tensors[i].location == "arena" else params) + plan.tensors[i].offset
                         for i in call.args)
        for launch in bundle.kernel(call.symbol).launches:
            step = next(steps)
            assert (step.function, step.grid, step.block, step.addresses) == (
                launch.function, launch.grid, launch.block, expected)
    assert next(steps, None) is None


def test_without_ptxas_the_bundle_keeps_the_ptx(tmp_path, monkeypatch, capsys):
    module = grouped_and_depthwise()
    write_network(tmp_path / "net.mlir", module, trained_like_params(module))
    monkeypatch.setenv("PATH", str(tmp_path))
    status, out, err = tconv(capsys, "compile", tmp_path / "net.mlir", "--backend", "llvm", "--target", "cuda",
                             "--arch", "sm_80", "-o", tmp_path / "net.gpu")
    assert status == 0, err
    assert "ptxas is not installed: the artifact keeps the kernels as PTX" in err
    bundle = read_bundle(tmp_path / "net.gpu" / BUNDLE_FILE)
    assert bundle.image_kind == "ptx"
    ptx = bundle.image.decode()
    assert ".target sm_80" in ptx
    assert ptx_entries(ptx) == {l.function: k.args for k in bundle.kernels for l in k.launches}


def test_cli_compiles_for_cuda_and_running_without_a_gpu_is_a_clean_error(tmp_path, capsys):
    module = grouped_and_depthwise()
    write_network(tmp_path / "net.mlir", module, trained_like_params(module))
    status, out, err = tconv(capsys, "compile", tmp_path / "net.mlir", "--backend", "llvm", "--target", "cuda",
                             "--arch", "sm_90", "-o", tmp_path / "net.gpu")
    assert status == 0, err
    assert "wrote" in out and read_plan(tmp_path / "net.gpu").arch == "sm_90"
    assert_user_error(
        tconv(capsys, "compile", tmp_path / "net.mlir", "--backend", "llvm", "--target", "cuda",
              "--arch", "sm_75", "-o", tmp_path / "old.gpu"),
        "the llvm backend compiles cuda for sm_80, sm_90, not 'sm_75'",
    )
    assert not (tmp_path / "old.gpu").exists()
    if gpu_available():
        pytest.skip("a GPU is present: running is the gpu test's")
    assert_user_error(tconv(capsys, "run", tmp_path / "net.gpu"), "error: no CUDA device")


def test_a_broken_or_mismatched_bundle_is_a_clear_error(tmp_path):
    module = grouped_and_depthwise()
    compile_artifact(module, trained_like_params(module), tmp_path / "net", "cuda", "sm_90")
    path = tmp_path / "net" / BUNDLE_FILE
    table = json.loads(path.read_bytes())
    with pytest.raises(TconvError, match="not a tconv cuda kernel bundle"):
        parse_bundle(b"\x7fELF", "x")
    with pytest.raises(TconvError, match=r"`grid` must be a positive integer, found 0"):
        broken = json.loads(json.dumps(table))
        broken["kernels"][0]["launches"][0]["grid"] = 0
        parse_bundle(json.dumps(broken).encode(), "x")
    first = table["kernels"][0]
    first["args"] += 1
    path.write_text(json.dumps(table))
    with pytest.raises(TconvError, match=rf"kernel `{first['symbol']}` takes {first['args']} arguments, "
                                         rf"the plan passes {first['args'] - 1}"):
        DriverRuntime(tmp_path / "net")  # refused before any device is opened


def test_a_bundle_of_another_compile_is_refused(tmp_path):
    """Another batch: the same kernel symbols and argument counts, other shapes."""
    module = grouped_and_depthwise()
    params = trained_like_params(module)
    compile_artifact(module, params, tmp_path / "b2", "cuda", "sm_90")
    other = tmp_path / "b1"
    write_network(tmp_path / "gdw.mlir", module, params)
    assert tconv_main(["compile", str(tmp_path / "gdw.mlir"), "--backend", "llvm", "--target", "cuda",
                       "--batch", "1", "-o", str(other)]) == 0
    shutil.copyfile(other / BUNDLE_FILE, tmp_path / "b2" / BUNDLE_FILE)
    with pytest.raises(TconvError, match="the kernels were compiled with another plan .*compile the artifact again"):
        DriverRuntime(tmp_path / "b2")
    with pytest.raises(TconvError, match="`plan_fingerprint` must be 16 hex digits"):
        table = json.loads((other / BUNDLE_FILE).read_bytes())
        del table["plan_fingerprint"]
        parse_bundle(json.dumps(table).encode(), "x")


def test_the_driver_runtime_refuses_other_artifacts(tmp_path):
    module = grouped_and_depthwise()
    compile_artifact(module, trained_like_params(module), tmp_path / "cpu")
    with pytest.raises(TconvError, match="is not an llvm cuda artifact .*target cpu, library kernels.so"):
        DriverRuntime(tmp_path / "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs an NVIDIA GPU and its driver")
@needs_ptxas
def test_llvm_cuda_artifact_matches_the_reference_on_a_gpu(tmp_path):
    module = grouped_and_depthwise()
    params = trained_like_params(module)
    compile_artifact(module, params, tmp_path / "gpu", "cuda", "sm_80")
    inputs = random_inputs(module)
    with DriverRuntime(tmp_path / "gpu") as runtime:
        (actual,) = runtime.run(*inputs)
    (expected,) = run(module, params, *inputs)
    assert relative_error(actual, expected) < 1e-4


def test_the_cuda_device_drives_the_driver_api_with_the_plan_s_launches(tmp_path):
    """`CudaDevice`'s driver calls (kernelParams marshalling included),
    against a stand-in driver that runs the host emulation."""
    from tconv.runtime.cuda_driver import CudaDevice

    module = grouped_and_depthwise()
    params = trained_like_params(module)
    compile_artifact(module, params, tmp_path / "net", "cuda", "sm_90")
    inputs = random_inputs(module)
    driver = FakeDriver(HostEmulation(module, tmp_path))
    with DriverRuntime(tmp_path / "net", CudaDevice(driver=driver)) as runtime:
        (actual,) = runtime.run(*inputs)
        expected_launches = [(s.function, s.grid, s.block, s.addresses) for s in runtime.steps]
    (expected,) = run(module, params, *inputs)
    assert relative_error(actual, expected) < 1e-5
    assert driver.launches == expected_launches
    image = read_bundle(tmp_path / "net" / BUNDLE_FILE).image
    assert driver.loaded == [image.split(b"\0", 1)[0]]  # what a char* to the image shows
    assert len(driver.freed) == 2


@needs_ptxas
def test_a_cubin_of_another_architecture_falls_back_to_its_ptx(tmp_path):
    """An sm_80 cubin does not load on an sm_90 GPU (seen on an H100): the
    PTX the bundle keeps beside it does, compiled by the driver."""
    from tconv.runtime.cuda_driver import CudaDevice

    module = grouped_and_depthwise()
    params = trained_like_params(module)
    compile_artifact(module, params, tmp_path / "net", "cuda", "sm_80")
    bundle = read_bundle(tmp_path / "net" / BUNDLE_FILE)
    assert bundle.image_kind == "cubin" and b".target sm_80" in bundle.ptx
    inputs = random_inputs(module)
    driver = FakeDriver(HostEmulation(module, tmp_path), runs_cubins=False)
    with DriverRuntime(tmp_path / "net", CudaDevice(driver=driver)) as runtime:
        (actual,) = runtime.run(*inputs)
    (expected,) = run(module, params, *inputs)
    assert relative_error(actual, expected) < 1e-5
    assert driver.loaded == [bundle.image.split(b"\0", 1)[0], bundle.ptx]
    # A bundle without the PTX: a clear error, not the driver's code alone.
    (tmp_path / "net" / BUNDLE_FILE).write_bytes(replace(bundle, ptx=None).to_bytes())
    driver = FakeDriver(HostEmulation(module, tmp_path), runs_cubins=False)
    with pytest.raises(TconvError, match=r"a cubin for sm_80 without their PTX, and this GPU \(sm_90\) does not run"):
        DriverRuntime(tmp_path / "net", CudaDevice(driver=driver))


def test_the_cuda_device_reports_a_missing_device_or_an_old_gpu(tmp_path):
    from tconv.runtime.cuda_driver import CudaDevice

    module = grouped_and_depthwise()
    compile_artifact(module, trained_like_params(module), tmp_path / "net", "cuda", "sm_90")
    emulation = HostEmulation(module, tmp_path)
    with pytest.raises(TconvError, match=r"no CUDA device: cuInit failed with CUDA_ERROR_NO_DEVICE \(100\)"):
        CudaDevice(driver=FakeDriver(emulation, status_of_init=100))
    with pytest.raises(TconvError, match="compiled for sm_90; the GPU is sm_80"):
        DriverRuntime(tmp_path / "net", CudaDevice(driver=FakeDriver(emulation, capability=(8, 0))))
