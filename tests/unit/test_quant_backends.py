"""Both backends, and export to upstream MLIR, refuse a quantised network at
its first quantized op, with its position, before lowering anything (there
are no int8 kernels yet)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import assert_user_error, tconv

from tconv.ir.loader import load_module
from tconv.ir.params import init_params, save_store, store_path_for

QUANTISED = """\
func.func @net(%x: tensor<1x2x6x6xf32>) -> tensor<1x4x6x6xf32> {
  %q = tconv.quantize %x scale [0.05] zero_point [128] : (tensor<1x2x6x6xf32>) -> tensor<1x2x6x6xui8>
  %d = tconv.dequantize %q scale [0.05] zero_point [128] : (tensor<1x2x6x6xui8>) -> tensor<1x2x6x6xf32>
  %w = tconv.param "conv.weight" init kaiming_normal : tensor<4x2x3x3xf32>
  %y = tconv.conv2d %d, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x2x6x6xf32>, tensor<4x2x3x3xf32>) -> tensor<1x4x6x6xf32>
  func.return %y : tensor<1x4x6x6xf32>
}
"""


@pytest.fixture
def network(tmp_path: Path) -> Path:
    path = tmp_path / "net.mlir"
    path.write_text(QUANTISED)
    save_store(store_path_for(path), init_params(load_module(path)))
    return path


@pytest.mark.parametrize("backend", ["llvm", "tvm"])
def test_compile_refuses_quantized_ops_with_their_position(capsys, network, backend):
    assert_user_error(
        tconv(capsys, "compile", network, "-o", network.parent / "out", "--backend", backend),
        f"net.mlir:2:3: error: {backend} backend: int8 kernels are not implemented in this backend yet ('tconv.quantize')",
    )
    assert not (network.parent / "out").exists()


def test_export_mlir_refuses_quantized_ops_with_their_position(capsys, network):
    assert_user_error(
        tconv(capsys, "export-mlir", network, "-o", network.parent / "out.mlir"),
        "net.mlir:2:3: error: export-mlir: no upstream MLIR form for 'tconv.quantize' yet",
    )
