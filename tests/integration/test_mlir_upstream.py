"""The exported MLIR in upstream MLIR's own parser and verifiers.

Runs where an upstream `*-opt` tool is found: `$TCONV_MLIR_OPT`, else
`mlir-opt` or `iree-opt` on PATH (IREE's `iree-opt`, from the
`iree-base-compiler` wheel, registers the same upstream dialects). Skipped
without one: none is a dependency of tconv.

Upstream must accept the exported text as it is, and what it prints back,
also after `--canonicalize --cse` (constants hoisted out of bodies, shared
`tensor.empty` and fills), must import to the original network.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from xdsl.dialects.builtin import ModuleOp

from tconv.frontends import zoo
from tconv.frontends.mlir import from_linalg, linalg_text, parse_linalg, to_linalg
from tconv.ir.loader import load_module, module_text

EVERY_OP = Path(__file__).parents[1] / "filecheck" / "interop" / "export_linalg.mlir"


def upstream_opt() -> str | None:
    return os.environ.get("TCONV_MLIR_OPT") or shutil.which("mlir-opt") or shutil.which("iree-opt")


pytestmark = pytest.mark.skipif(upstream_opt() is None, reason="no mlir-opt or iree-opt (set TCONV_MLIR_OPT)")


def without_names(module: ModuleOp) -> str:
    """The module's text with every SSA value numbered: upstream renames them."""
    for op in module.walk():
        for result in op.results:
            result.name_hint = None
        for region in op.regions:
            for block in region.blocks:
                for argument in block.args:
                    argument.name_hint = None
    return module_text(module)


def networks():
    yield pytest.param(lambda: load_module(EVERY_OP), id="every-op")
    for name in ("resnet18", "resnext29_2x64d", "densenet_bc100", "mobilenet_v2"):
        yield pytest.param(lambda name=name: zoo.build(name), id=name)


@pytest.mark.parametrize("passes", [[], ["--canonicalize", "--cse"]], ids=["as-is", "canonicalized"])
@pytest.mark.parametrize("network", list(networks()))
def test_upstream_accepts_the_export_and_its_output_imports_back(network, passes, tmp_path):
    module = network()
    exported = tmp_path / "exported.mlir"
    exported.write_text(linalg_text(to_linalg(module)))
    run = subprocess.run(
        [upstream_opt(), *passes, str(exported)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    printed = tmp_path / "upstream.mlir"
    printed.write_text(run.stdout)
    back = from_linalg(parse_linalg(run.stdout, str(printed)))
    assert without_names(back) == without_names(module)
