"""The `tconv` command line: its outputs, and a clean message and status for every user error."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import assert_usage_error, assert_user_error, relative_error, tconv

from tconv.cli import run as run_command
from tconv.cli.files import write_network
from tconv.cli.main import main
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import load_module
from tconv.ir.params import init_params, load_store, parameter_count, save_store, store_path_for
from tconv.semantics import reference


def small_network():
    b = NetworkBuilder("small", (2, 3, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 8, 3, name="conv1"), name="bn1"))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


@pytest.fixture
def network(tmp_path: Path) -> Path:
    """A small network and its parameter store, as `tconv zoo -o` writes them."""
    path = tmp_path / "small.mlir"
    module = small_network()
    write_network(path, module, init_params(module, seed=1))
    return path


# tconv zoo --------------------------------------------------------------------


def test_zoo_writes_the_network_and_its_parameter_store(capsys, tmp_path):
    path = tmp_path / "wrn.mlir"
    status, out, _ = tconv(capsys, "zoo", "wrn40_2", "--dataset", "cifar10", "--seed", "3", "-o", path)
    assert status == 0
    module = load_module(path)
    store = load_store(store_path_for(path))
    assert store.keys() == init_params(module).keys()
    np.testing.assert_array_equal(store["conv0.weight"], init_params(module, seed=3)["conv0.weight"])
    assert f"wrote {path} (wrn40_2, input 1x3x32x32, {parameter_count(module):,} parameters, verified)" in out
    assert f"wrote {store_path_for(path)}" in out


def test_zoo_without_output_prints_the_ir_and_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = tconv(capsys, "zoo", "resnet18", "--batch", "4")
    assert status == 0
    assert "func.func @resnet18(" in out and "tensor<4x3x32x32xf32>" in out
    assert "no parameters written" in err
    assert list(tmp_path.iterdir()) == []


def test_zoo_list(capsys):
    status, out, _ = tconv(capsys, "zoo", "--list")
    assert status == 0
    assert any(line.split() == ["resnet34", "cifar10,", "imagenet"] for line in out.splitlines())


def test_zoo_unknown_network_or_dataset(capsys, tmp_path):
    out = tmp_path / "x.mlir"
    assert_usage_error(tconv(capsys, "zoo", "resnet35", "-o", out), "unknown network 'resnet35' (did you mean",
                       "resnet34")
    assert_usage_error(tconv(capsys, "zoo", "vgg16", "--dataset", "cifar10", "-o", out),
                       "--dataset: vgg16 has imagenet, not 'cifar10'")
    assert list(tmp_path.iterdir()) == []


def test_zoo_usage_errors(capsys):
    assert tconv(capsys, "zoo")[0] == 2
    assert tconv(capsys, "zoo", "resnet18", "--list")[0] == 2
    assert tconv(capsys, "zoo", "resnet18", "--batch", "0")[0] == 2


def test_zoo_output_into_a_missing_directory(capsys, tmp_path):
    assert_user_error(tconv(capsys, "zoo", "resnet18", "-o", tmp_path / "no" / "r.mlir"), "cannot write")


# tconv summary ----------------------------------------------------------------


def test_summary_prints_the_parameter_count(capsys, network):
    status, out, _ = tconv(capsys, "summary", network)
    assert status == 0
    count = parameter_count(small_network())
    assert f"{count:,} learnable" in out
    assert out.splitlines()[0] == "network small: input 2x3x8x8 f32, 6 layers"
    assert "conv1" in out and "GMAC" in out and "GFLOP" in out and "MB" in out


def test_summary_of_corrupt_ir_names_line_and_column(capsys, tmp_path):
    path = tmp_path / "corrupt.mlir"
    path.write_text(
        "func.func @f(%x: tensor<1x3x8x8xf32>) -> tensor<1x3x8x8xf32> {\n"
        "  %y = tconv.relu %x : tensor<1x3x8x8xf32>\n"
        "  %z = tconv.bogus %y\n"
        "  func.return %z : tensor<1x3x8x8xf32>\n"
        "}\n"
    )
    assert_user_error(tconv(capsys, "summary", path), f"{path}:3:", "error:")


def test_summary_of_a_missing_file(capsys, tmp_path):
    assert_user_error(tconv(capsys, "summary", tmp_path / "none.mlir"), "none.mlir: error: cannot read")


def test_binary_input_says_what_to_run_instead(capsys, tmp_path, network):
    """An ONNX model (or a store) given where IR text goes: the message names `tconv import`."""
    pytest.importorskip("onnx")
    model = tmp_path / "model.onnx"
    assert tconv(capsys, "export", network, "-o", model)[0] == 0
    capsys.readouterr()
    for command in ("summary", "run", "compile"):
        args = [command, model] + (["-o", tmp_path / "art"] if command == "compile" else [])
        assert_user_error(tconv(capsys, *args), f"{model}:", "not UTF-8 text",
                          f"an ONNX model is imported first: tconv import {model} -o model.mlir")
    store = tmp_path / "small.npz"
    assert_user_error(tconv(capsys, "summary", store), "a zip archive (a parameter store?)")
    from tconv.cli.opt import main as opt_main

    assert opt_main([str(model)]) == 1
    assert "tconv import" in capsys.readouterr().err


# tconv run --------------------------------------------------------------------


def test_run_on_random_input(capsys, network):
    status, out, err = tconv(capsys, "run", network, "--backend", "reference", "--batch", "3")
    assert status == 0
    assert "random N(0,1)" in err and "3x3x8x8" in err
    assert out.splitlines()[0] == "small on the reference backend, batch 3"
    assert "output  3x10" in out
    assert "ms per sample" in out and "GFLOP/s" in out


def test_run_with_input_and_output_files(capsys, network, tmp_path):
    x = np.random.default_rng(5).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    status, out, _ = tconv(
        capsys, "run", network, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"
    )
    assert status == 0
    assert f"wrote   {tmp_path / 'y.npy'}" in out
    module = load_module(network)
    (expected,) = reference.run(module, load_store(store_path_for(network)), x)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_run_seeded_input_is_reproducible(capsys, network, tmp_path):
    for name in ("a.npy", "b.npy"):
        assert tconv(capsys, "run", network, "--seed", "7", "--output", tmp_path / name)[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert np.load(tmp_path / "a.npy").shape == (2, 10)  # the IR's batch


def test_run_without_parameter_store(capsys, network, tmp_path):
    store_path_for(network).unlink()
    out = tmp_path / "y.npy"
    assert_user_error(tconv(capsys, "run", network, "--output", out), "small.npz: error: parameter store not found")
    assert not out.exists()


def test_run_with_a_mis_shaped_parameter(capsys, network, tmp_path):
    store = store_path_for(network)
    arrays = load_store(store)
    arrays["conv1.weight"] = np.zeros((8, 3, 5, 5), np.float32)
    save_store(store, arrays)
    out = tmp_path / "y.npy"
    assert_user_error(
        tconv(capsys, "run", network, "--output", out), "conv1.weight", "5x5", "8x3x3x3", f"{network}:"
    )
    assert not out.exists()


def test_run_with_bad_input_files(capsys, network, tmp_path):
    out = tmp_path / "y.npy"
    np.save(tmp_path / "small.npy", np.zeros((2, 3, 4, 4), np.float32))
    assert_user_error(
        tconv(capsys, "run", network, "--input", tmp_path / "small.npy", "--output", out),
        "input has shape 2x3x4x4", "Nx3x8x8",
    )
    np.save(tmp_path / "ints.npy", np.zeros((2, 3, 8, 8), np.int32))
    assert_user_error(tconv(capsys, "run", network, "--input", tmp_path / "ints.npy"), "int32")
    (tmp_path / "text.npy").write_text("not numpy")
    assert_user_error(tconv(capsys, "run", network, "--input", tmp_path / "text.npy"), "not a .npy file")
    assert_user_error(tconv(capsys, "run", network, "--input", tmp_path / "none.npy"), "none.npy: error: file not found")
    assert not out.exists()


def test_run_with_unknown_backend(capsys, network):
    assert_usage_error(tconv(capsys, "run", network, "--backend", "tpu"), "invalid choice: 'tpu'")


@pytest.mark.parametrize("backend", ["tvm", "llvm"])
def test_run_on_a_compiling_backend_at_another_batch(capsys, network, tmp_path, backend):
    """The compiled backends build for the input's batch (3 here, not the IR's) and
    agree with the reference executor."""
    status, _, err = tconv(capsys, "run", network, "--batch", "3", "--output", tmp_path / "ref.npy")
    assert status == 0, err
    status, out, err = tconv(capsys, "run", network, "--batch", "3", "--backend", backend,
                             "--output", tmp_path / "out.npy")
    assert status == 0, err
    assert f"on the {backend} backend, batch 3" in out
    expected, actual = np.load(tmp_path / "ref.npy"), np.load(tmp_path / "out.npy")
    assert actual.shape == expected.shape and relative_error(actual, expected) < 1e-5
    # The time is the run's, after a warm-up; building the kernels is reported apart.
    assert "ms  (median of 3 runs after a warm-up;" in out
    assert "compile " in out and "not in the time" in out


def test_run_times_the_run_without_compiling(capsys, network, monkeypatch):
    """A slow build shows in the compile line, never in the time."""
    import contextlib
    import time

    @contextlib.contextmanager
    def slow_build(module, params, batch):
        time.sleep(0.5)
        yield lambda inputs: [np.zeros((batch, 10), np.float32)]

    monkeypatch.setitem(run_command.BACKENDS, "tvm", slow_build)
    status, out, err = tconv(capsys, "run", network, "--backend", "tvm")
    assert status == 0, err
    time_ms = float(next(line for line in out.splitlines() if line.startswith("  time")).split()[1])
    compile_s = float(next(line for line in out.splitlines() if line.startswith("  compile")).split()[1])
    assert time_ms < 100 and compile_s >= 0.5


def test_run_usage_error(capsys, network, tmp_path):
    assert tconv(capsys, "run", network, "--batch", "2", "--input", tmp_path / "x.npy")[0] == 2


def test_internal_error_is_one_message_without_traceback(capsys, network, monkeypatch):
    def broken(*args):
        raise RuntimeError("kaput")

    monkeypatch.setitem(run_command.BACKENDS, "reference", broken)
    status, _, err = tconv(capsys, "run", network)
    assert status == 3
    assert "tconv: internal error: RuntimeError: kaput" in err
    assert "TCONV_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("TCONV_DEBUG", "1")
    with pytest.raises(RuntimeError, match="kaput"):
        main(["run", str(network)])


# The installed console script -------------------------------------------------


def console_script() -> str:
    beside_python = Path(sys.executable).parent / "tconv"
    found = str(beside_python) if beside_python.exists() else shutil.which("tconv")
    assert found, "the tconv console script is not installed"
    return found


def run_console_script(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(
        [console_script(), *map(str, argv)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "TCONV_DEBUG": ""},
    )


def test_console_script_summary_and_run(network, tmp_path):
    summary = run_console_script("summary", network)
    assert summary.returncode == 0, summary.stderr
    assert f"{parameter_count(small_network()):,} learnable" in summary.stdout
    run = run_console_script("run", network, "--backend", "reference", "--output", tmp_path / "y.npy")
    assert run.returncode == 0, run.stderr
    assert np.load(tmp_path / "y.npy").shape == (2, 10)


def test_console_script_user_error_has_no_traceback(tmp_path):
    path = tmp_path / "broken.mlir"
    path.write_text("func.func @f(%x: tensor<1x3x8x8xf32>) {\n  %y = tconv.bogus %x : tensor<1x3x8x8xf32>\n}\n")
    result = run_console_script("summary", path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"{path}:2:"), result.stderr
    assert "Traceback" not in result.stderr


# A zoo network: zoo, summary and a reference run --------------------------------------


@pytest.mark.slow
def test_zoo_summary_and_reference_run(capsys, tmp_path):
    """ResNet-34 for CIFAR-10 from the zoo, its summary, a reference run at batch 2."""
    path = tmp_path / "resnet34.mlir"
    assert tconv(capsys, "zoo", "resnet34", "--dataset", "cifar10", "-o", path)[0] == 0
    status, out, _ = tconv(capsys, "summary", path)
    assert status == 0
    assert "21,282,122 learnable" in out  # as torchvision-style ResNet-34 with a 10-class head
    logits = tmp_path / "logits.npy"
    status, out, _ = tconv(capsys, "run", path, "--backend", "reference", "--batch", "2", "--output", logits)
    assert status == 0
    assert "output  2x10" in out
    assert np.load(logits).shape == (2, 10)
