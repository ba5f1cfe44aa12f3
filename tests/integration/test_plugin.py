"""Plain `xdsl-opt` loads tconv through the `xdsl.universe` entry point: it
parses tconv IR (a zoo network included) and runs tconv's passes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tconv.ir.loader import module_text, parse_module, verify_module

SMALL = """\
func.func @net(%x: tensor<1x3x8x8xf32>) -> tensor<1x10xf32> {
  %w = tconv.param "conv.weight" init kaiming_normal : tensor<4x3x3x3xf32>
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
  %r = tconv.relu %y : tensor<1x4x8x8xf32>
  %g = tconv.global_avg_pool %r : (tensor<1x4x8x8xf32>) -> tensor<1x4x1x1xf32>
  %f = tconv.flatten %g : (tensor<1x4x1x1xf32>) -> tensor<1x4xf32>
  %fw = tconv.param "fc.weight" init kaiming_normal : tensor<10x4xf32>
  %o = tconv.dense %f, %fw : (tensor<1x4xf32>, tensor<10x4xf32>) -> tensor<1x10xf32>
  func.return %o : tensor<1x10xf32>
}
"""


def tool(name: str) -> str:
    """A console script of the environment running the tests, else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"'{name}' is neither beside {sys.executable} nor on PATH")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_xdsl_opt_runs_set_batch(tmp_path: Path):
    path = tmp_path / "net.mlir"
    path.write_text(SMALL)
    result = run(tool("xdsl-opt"), str(path), "-p", "tconv-set-batch{batch=4}")
    assert result.returncode == 0, result.stderr
    assert "func.func @net(%x: tensor<4x3x8x8xf32>) -> tensor<4x10xf32>" in result.stdout
    assert "tconv.dense %f, %fw : (tensor<4x4xf32>, tensor<10x4xf32>) -> tensor<4x10xf32>" in result.stdout
    # What xdsl-opt prints is valid tconv IR.
    verify_module(parse_module(result.stdout, "xdsl-opt output"))


def test_xdsl_opt_parses_a_zoo_network(tmp_path: Path):
    from tconv.frontends import zoo

    path = tmp_path / "resnet18.mlir"
    text = module_text(zoo.build("resnet18"))
    path.write_text(text)
    result = run(tool("xdsl-opt"), str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == text.rstrip("\n")


def test_xdsl_opt_parses_tconv_zoo_output(tmp_path: Path):
    path = tmp_path / "resnet18.mlir"
    written = run(tool("tconv"), "zoo", "resnet18", "-o", str(path))
    assert written.returncode == 0, written.stderr
    result = run(tool("xdsl-opt"), str(path), "-p", "tconv-set-batch{batch=2}")
    assert result.returncode == 0, result.stderr
    assert "tensor<2x3x" in result.stdout
