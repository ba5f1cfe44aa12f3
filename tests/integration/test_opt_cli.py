"""`tconv-opt` as a user meets it: exit statuses, messages, atomic output, stdin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tconv.cli.opt import main

VALID = """\
func.func @net(%x: tensor<1x30x8x8xf32>) -> tensor<1x30x8x8xf32> {
  %y = tconv.relu %x : tensor<1x30x8x8xf32>
  func.return %y : tensor<1x30x8x8xf32>
}
"""

INVALID = """\
func.func @net(%x: tensor<1x30x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %w = tconv.param "conv.weight" init kaiming_normal : tensor<8x7x3x3xf32>
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 4 : (tensor<1x30x8x8xf32>, tensor<8x7x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}
"""


@pytest.fixture
def valid(tmp_path: Path) -> Path:
    path = tmp_path / "valid.mlir"
    path.write_text(VALID)
    return path


@pytest.fixture
def invalid(tmp_path: Path) -> Path:
    path = tmp_path / "invalid.mlir"
    path.write_text(INVALID)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


def test_prints_the_module(capsys, valid: Path):
    status, out, err = run(capsys, str(valid))
    assert (status, err) == (0, "")
    assert "%y = tconv.relu %x : tensor<1x30x8x8xf32>" in out


def test_verify_error_is_located(capsys, invalid: Path):
    status, out, err = run(capsys, str(invalid))
    assert status == 1
    assert out == ""
    assert err == f"{invalid}:3:3: error: conv2d: input channels 30 not divisible by groups 4\n"


def test_verify_diagnostics_prints_to_stdout(capsys, invalid: Path):
    status, out, err = run(capsys, str(invalid), "--verify-diagnostics")
    assert (status, err) == (0, "")
    assert out == f"{invalid}:3:3: error: conv2d: input channels 30 not divisible by groups 4\n"


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("tconv-nope", "unknown pass 'tconv-nope'"),
        ("tconv-set-bach{batch=2}", "unknown pass 'tconv-set-bach' (did you mean tconv-set-batch"),
        ("tconv-set-batch{bacth=2}", "tconv-set-batch has no option 'bacth' (did you mean batch? its options: batch)"),
        ("tconv-group{groups=2 check-capacty=true}", "has no option 'check-capacty' (did you mean check-capacity"),
        ("tconv-set-batch{batch=two}", "tconv-set-batch: option 'batch' takes int, got 'two'"),
        ("tconv-set-batch{", "invalid pass pipeline 'tconv-set-batch{'"),
        ("tconv-set-batch", "tconv-set-batch needs option 'batch' (int): tconv-set-batch{batch=...}"),
        ("tconv-set-batch{batch=0}", "tconv-set-batch: batch must be a positive integer, got 0"),
        ("tconv-group{groups=2 init=copy}", "tconv-group: init must be one of auto, inherit, random, got 'copy'"),
        ("tconv-group{groups=2 seed=-1}", "tconv-group: seed must be at least 0, got -1"),
        # A float option reads an integer and an exponent without a point as numbers ...
        ("tconv-blockswap{budget=0.5 tolerance=2}", "tconv-blockswap: tolerance must be in (0, 1), got 2"),
        ("tconv-blockswap{budget=0.5 tolerance=1e-9 samples=0}", "tconv-blockswap: samples must be"),
        ("tconv-blockswap{budget=1.5e0}", "tconv-blockswap: budget 1.5 is above 1, so it is a parameter count"),
        # ... but not nan, inf or what overflows to inf.
        ("tconv-group{groups=2 min-capacity=nan}", "option 'min-capacity' takes float | int, got 'nan'"),
        ("tconv-group{groups=2 min-capacity=1e999}", "option 'min-capacity' takes float | int, got '1e999'"),
        # An integer beyond any float was an internal OverflowError.
        ("tconv-blockswap{budget=1" + "0" * 400 + "}", "option 'budget' is out of range: 100000000000..."),
        ("tconv-prune-channels{keep=-1" + "0" * 400 + "}", "option 'keep' is out of range: -10000000000... (401"),
    ],
)
def test_bad_pipeline_is_a_usage_error(capsys, valid: Path, pipeline: str, message: str):
    """Checked before the input is read: an option's value, like a flag's, is usage."""
    status, out, err = run(capsys, str(valid), "-p", pipeline)
    assert (status, out) == (2, "")
    assert err.startswith("usage: tconv-opt")
    assert message in err
    assert "['" not in err and "[\"" not in err


def test_failing_pass(capsys, valid: Path):
    """A pass that cannot rewrite this input is a user error, located at the input."""
    status, _, err = run(capsys, str(valid), "-p", 'tconv-group{groups=2 layers="conv9"}')
    assert status == 1
    assert err.startswith(f"{valid}: error: tconv-group: ")


def test_internal_error_is_status_3(capsys, valid: Path, monkeypatch):
    from tconv.cli.opt import TconvOptMain

    def crash(self, module):
        raise RuntimeError("boom")

    monkeypatch.setattr(TconvOptMain, "apply_passes", crash)
    status, _, err = run(capsys, str(valid))
    assert status == 3
    assert "internal error: RuntimeError: boom" in err


def test_help_documents_tconv_passes_and_their_options(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.index("tconv-set-batch") < out.index("xDSL's own passes are accepted as well")
    assert "- batch: int (required)  The new batch size" in out
    assert "- groups: int (required)" in out and "- init: str = auto  How new weights start" in out
    assert "convert-linalg-to-loops" not in out  # xDSL's passes: --list-passes
    assert main(["--list-passes"]) == 0
    listed = capsys.readouterr().out
    assert listed.index("tconv-blockswap") < listed.index("convert-linalg-to-loops")


def test_every_tconv_pass_and_option_is_described():
    from tconv.passes.describe import options, summary
    from tconv.universe import TCONV_UNIVERSE

    for name, load in TCONV_UNIVERSE.all_passes.items():
        pass_class = load()
        assert summary(pass_class) and not summary(pass_class).startswith(pass_class.__name__), name
        for option in options(pass_class):
            assert option.description, f"{name}: option {option.name} has no docstring"


def test_missing_file(capsys, tmp_path: Path):
    status, _, err = run(capsys, str(tmp_path / "nope.mlir"))
    assert status == 1
    assert err == f"{tmp_path / 'nope.mlir'}: error: cannot read: No such file or directory\n"


def test_directory_as_input(capsys, tmp_path: Path):
    status, _, err = run(capsys, str(tmp_path))
    assert status == 1
    assert err.startswith(f"{tmp_path}: error: cannot read:")


def test_not_utf8(capsys, tmp_path: Path):
    path = tmp_path / "binary.mlir"
    path.write_bytes(b"func.func @f() {\n  \xff\xfe\n}\n")
    status, _, err = run(capsys, str(path))
    assert status == 1
    assert err.startswith(f"{path}:2:3: error: not UTF-8 text")


def test_usage_error(capsys):
    assert main(["--no-such-option"]) == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_output_is_written(capsys, valid: Path, tmp_path: Path):
    output = tmp_path / "out.mlir"
    status, out, _ = run(capsys, str(valid), "-o", str(output), "-p", "tconv-set-batch{batch=3}")
    assert (status, out) == (0, "")
    assert "tensor<3x30x8x8xf32>" in output.read_text()


def test_failure_leaves_the_output_alone(capsys, invalid: Path, tmp_path: Path):
    output = tmp_path / "out.mlir"
    output.write_text("precious\n")
    status, _, _ = run(capsys, str(invalid), "-o", str(output))
    assert status == 1
    assert output.read_text() == "precious\n"
    assert {p.name for p in tmp_path.iterdir()} == {"invalid.mlir", "out.mlir"}


def test_unwritable_output(capsys, valid: Path, tmp_path: Path):
    output = tmp_path / "missing" / "out.mlir"
    status, _, err = run(capsys, str(valid), "-o", str(output))
    assert status == 1
    assert err.startswith(f"{output}: error: cannot write:")


def test_split_input_file_keeps_going(capsys, tmp_path: Path):
    path = tmp_path / "two.mlir"
    path.write_text(INVALID + "\n// -----\n\n" + INVALID)
    status, out, _ = run(capsys, str(path), "--split-input-file", "--verify-diagnostics")
    assert status == 0
    assert out.splitlines() == [
        f"{path}:3:3: error: conv2d: input channels 30 not divisible by groups 4",
        "// -----",
        f"{path}:11:3: error: conv2d: input channels 30 not divisible by groups 4",
    ]


@pytest.mark.parametrize("stdin_args", [[], ["-"]])
def test_reads_stdin(stdin_args: list[str]):
    result = subprocess.run(
        [sys.executable, "-m", "tconv.cli.opt", *stdin_args, "-p", "tconv-set-batch{batch=2}"],
        input=VALID,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "func.func @net(%x: tensor<2x30x8x8xf32>) -> tensor<2x30x8x8xf32>" in result.stdout


def test_stdin_errors_name_stdin():
    result = subprocess.run(
        [sys.executable, "-m", "tconv.cli.opt", "-"], input=INVALID, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr == "<stdin>:3:3: error: conv2d: input channels 30 not divisible by groups 4\n"


def _network_with_store(directory: Path) -> Path:
    from tconv.cli.files import write_network
    from tconv.ir.builder import NetworkBuilder
    from tconv.ir.params import init_params

    b = NetworkBuilder("small", (1, 3, 8, 8))
    module = b.finish(b.dense(b.flatten(b.global_avg_pool(b.conv2d(b.input, 4, 3, name="conv"))), 5, name="fc"))
    path = directory / "net.mlir"
    write_network(path, module, init_params(module, seed=2), {"weights": "trained"})
    return path


def test_set_batch_carries_the_parameter_store(capsys, tmp_path: Path):
    from tconv.cli.main import main as tconv_main
    from tconv.ir.params import load_provenance, load_store

    network = _network_with_store(tmp_path)
    output = tmp_path / "net_b4.mlir"
    status, _, err = run(capsys, str(network), "-p", "tconv-set-batch{batch=4}", "-o", str(output))
    assert (status, err) == (0, "")
    before, after = load_store(tmp_path / "net.npz"), load_store(tmp_path / "net_b4.npz")
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
    assert load_provenance(tmp_path / "net_b4.npz") == {"weights": "trained"}
    assert tconv_main(["run", str(output)]) == 0
    assert "batch 4" in capsys.readouterr().out


def test_no_store_where_a_pass_changed_a_parameter_it_does_not_rewrite(capsys, tmp_path: Path):
    from tconv.ir.params import load_store, save_store

    network = _network_with_store(tmp_path)
    store = load_store(tmp_path / "net.npz")
    store["conv.weight"] = store["conv.weight"][:2]  # as if the IR no longer matched its store
    save_store(tmp_path / "net.npz", store)
    output = tmp_path / "out.mlir"
    status, _, err = run(capsys, str(network), "-p", "tconv-set-batch{batch=2}", "-o", str(output))
    assert status == 0
    assert "no parameter store written beside" in err and "'conv.weight'" in err
    assert output.exists() and not (tmp_path / "out.npz").exists()
