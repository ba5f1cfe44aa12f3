"""A quantised network compiles with the TVM backend for the CPU (its int8
kernels) into an artifact that `tconv run` runs, with the reference
executor's result; the LLVM backend, TVM's cuda target, export to
upstream MLIR and `tconv optimize` refuse it at its first quantized op,
with its position, before doing anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import assert_usage_error, assert_user_error, tconv

import numpy as np

from tconv.ir.loader import load_module, module_text
from tconv.ir.params import init_params, load_store, save_store, store_path_for
from tconv.semantics.reference import run

QUANTISED = """\
func.func @net(%x: tensor<1x2x6x6xf32>) -> tensor<1x4x6x6xf32> {
  %q = tconv.quantize %x scale [0.05] zero_point [128] : (tensor<1x2x6x6xf32>) -> tensor<1x2x6x6xui8>
  %d = tconv.dequantize %q scale [0.05] zero_point [128] : (tensor<1x2x6x6xui8>) -> tensor<1x2x6x6xf32>
  %w = tconv.param "conv.weight" init kaiming_normal : tensor<4x2x3x3xf32>
  %y = tconv.conv2d %d, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x2x6x6xf32>, tensor<4x2x3x3xf32>) -> tensor<1x4x6x6xf32>
  func.return %y : tensor<1x4x6x6xf32>
}
"""


INT8 = """\
func.func @net(%x: tensor<1x3x6x6xf32>) -> tensor<1x16x6x6xf32> {
  %q = tconv.quantize %x scale [0.05] zero_point [128] : (tensor<1x3x6x6xf32>) -> tensor<1x3x6x6xui8>
  %d = tconv.dequantize %q scale [0.05] zero_point [128] : (tensor<1x3x6x6xui8>) -> tensor<1x3x6x6xf32>
  %w = tconv.param "conv.weight" init kaiming_normal : tensor<16x3x3x3xf32>
  %wq = tconv.quantize %w scale [0.01] zero_point [0] : (tensor<16x3x3x3xf32>) -> tensor<16x3x3x3xi8>
  %wd = tconv.dequantize %wq scale [0.01] zero_point [0] : (tensor<16x3x3x3xi8>) -> tensor<16x3x3x3xf32>
  %y = tconv.conv2d %d, %wd strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x3x6x6xf32>, tensor<16x3x3x3xf32>) -> tensor<1x16x6x6xf32>
  %r = tconv.relu %y : tensor<1x16x6x6xf32>
  func.return %r : tensor<1x16x6x6xf32>
}
"""


@pytest.fixture
def network(tmp_path: Path) -> Path:
    path = tmp_path / "net.mlir"
    path.write_text(QUANTISED)
    save_store(store_path_for(path), init_params(load_module(path)))
    return path


def test_llvm_refuses_quantized_ops_with_their_position(capsys, network):
    assert_user_error(
        tconv(capsys, "compile", network, "-o", network.parent / "out", "--backend", "llvm"),
        "net.mlir:2:3: error: llvm backend: int8 kernels are not implemented in this backend yet ('tconv.quantize')",
    )
    assert not (network.parent / "out").exists()


def test_tvm_cuda_refuses_quantized_ops_with_their_position(capsys, network):
    assert_user_error(
        tconv(capsys, "compile", network, "-o", network.parent / "out", "--target", "cuda"),
        "net.mlir:2:3: error: tvm cuda backend: int8 kernels are not implemented in this backend yet",
    )
    assert not (network.parent / "out").exists()


@pytest.mark.parametrize("text", [QUANTISED, INT8], ids=["float32-layer", "int8-layer"])
def test_tvm_compiles_and_runs_a_quantised_network(capsys, tmp_path, text):
    """The artifact computes what the reference executor computes on the QDQ
    form: a 4-channel layer stays float32 around its QDQ pairs
    (`fake_quantize` kernels); a 16-channel one runs as an int8 kernel (uint8,
    int8 and int32 tensors in the plan), within half an accumulator step."""
    network = tmp_path / "net.mlir"
    network.write_text(text)
    save_store(store_path_for(network), init_params(load_module(network)))
    folder = network.parent
    shape = tuple(load_module(network).body.block.ops.first.function_type.inputs.data[0].get_shape())
    x = np.random.default_rng(0).normal(0, 1, shape).astype(np.float32)
    np.save(folder / "x.npy", x)
    status, _, err = tconv(capsys, "compile", network, "-o", folder / "out", "--backend", "tvm")
    assert status == 0, err
    status, _, err = tconv(capsys, "run", folder / "out", "--input", folder / "x.npy", "--output", folder / "y.npy")
    assert status == 0, err
    module = load_module(network)
    (expected,) = run(module, load_store(store_path_for(network)), x)
    np.testing.assert_allclose(np.load(folder / "y.npy"), expected, rtol=1e-5, atol=0.5 * 0.05 * 0.01 + 1e-5)
    plan = (folder / "out" / "plan.txt").read_text()
    assert (" u8 " in plan and " i8 " in plan and " i32 " in plan) == (text == INT8)


def test_export_mlir_writes_quantized_ops_that_import_back(capsys, network):
    out = network.parent / "out.mlir"
    status, _, err = tconv(capsys, "export-mlir", network, "-o", out)
    assert status == 0, err
    text = out.read_text()
    assert "tconv." not in text.replace("tconv.param", "").replace("tconv.init", "")
    assert "arith.fptoui" in text and "arith.uitofp" in text and "tensor<1x2x6x6xi8>" in text
    status, _, err = tconv(capsys, "import-mlir", out, "-o", network.parent / "back.mlir")
    assert status == 0, err
    assert module_text(load_module(network.parent / "back.mlir")) == module_text(load_module(network))


def test_optimize_refuses_a_quantised_network_with_its_position(capsys, network):
    assert_user_error(
        tconv(capsys, "optimize", network, "--budget", "5", "-o", network.parent / "opt"),
        "net.mlir:2:3: error: tconv optimize: the network is quantised ('tconv.quantize'); "
        "optimize the float32 network (with --data and --quantize",
    )
    assert not (network.parent / "opt").exists()


def test_optimize_quantize_needs_data_and_the_cpu_target(capsys, tmp_path):
    out = ["-o", tmp_path / "opt"]
    assert_usage_error(tconv(capsys, "optimize", "resnet20", "--quantize", *out), "--quantize needs --data")
    on_gpu = ["--quantize", "--data", "digits", "--target", "cuda"]
    assert_usage_error(tconv(capsys, "optimize", "resnet20", *on_gpu, *out), "int8 kernels run on the cpu target only")
    assert_usage_error(tconv(capsys, "optimize", "resnet20", "--sparsify", "0.1", *out), "--sparsify needs --data")
    assert_usage_error(tconv(capsys, "optimize", "resnet20", "--sparsify", "1.5", "--data", "digits", *out),
                       "--sparsify must be a density between 0 and 1, got 1.5")
    assert not (tmp_path / "opt").exists()
