"""CUDA compilation of the TVM kernels, without a GPU: the kernels build for
sm_90 and nvcc accepts the CUDA source TVM generates. Running them is a GPU
check (bench/gpu)."""

import shutil
import subprocess

import pytest
import tvm

from tconv.ir.builder import NetworkBuilder
from tconv.lowering.tvm.build import build_kernels

pytestmark = pytest.mark.skipif(
    tvm.get_global_func("target.build.cuda", allow_missing=True) is None,
    reason="this TVM has no CUDA code generator",
)


def conv_network():
    b = NetworkBuilder("conv", (1, 16, 14, 14))
    x = b.batch_norm(b.conv2d(b.input, 32, 3, stride=2, groups=2, name="conv"), name="bn")
    return b.finish(b.relu(b.add(x, b.conv2d(b.input, 32, 1, stride=2, name="shortcut"))))


def test_conv_builds_for_sm_90(tmp_path):
    executable, program = build_kernels(conv_network(), "cuda", arch="sm_90")
    (device_module,) = executable.mod.imports
    source = device_module.inspect_source()
    for symbol in program.symbols:
        assert f"{symbol}_kernel" in source
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed: the CUDA source was generated but not compiled")
    path = tmp_path / "kernels.cu"
    path.write_text(source)
    result = subprocess.run(
        ["nvcc", "-arch=sm_90", "-ptx", str(path), "-o", str(tmp_path / "kernels.ptx")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kernels.ptx").stat().st_size > 0
