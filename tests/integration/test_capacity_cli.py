"""`tconv capacity`: the metric and the network's counts, the seeded or given
minibatch, parameters with and without a store, and one clean message for
every bad input."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tconv.cli.capacity import DEFAULT_BATCH
from tconv.cli.files import write_network
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import load_module
from tconv.ir.params import init_params, load_store, parameter_count, save_store, store_path_for
from tconv.passes.analyses import capacity


from support import assert_usage_error, assert_user_error, tconv
def small_network():
    b = NetworkBuilder("small", (1, 3, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 8, 3, name="conv1"), name="bn1"))
    y = b.batch_norm(b.conv2d(x, 8, 3, name="conv2"), name="bn2")
    x = b.relu(b.add(x, y))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 4, name="fc"))


@pytest.fixture
def network(tmp_path: Path) -> Path:
    path = tmp_path / "small.mlir"
    module = small_network()
    write_network(path, module, init_params(module, seed=1))
    return path


def reported(out: str, metric: str) -> float:
    """The value on the metric's line."""
    (line,) = [line for line in out.splitlines() if line.split()[:1] == [metric]]
    return float(line.split()[1])


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 3, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", labels)
    return tmp_path / "x.npy", tmp_path / "y.npy", x, labels


# Output -----------------------------------------------------------------------


def test_fisher_on_a_random_minibatch(capsys, network):
    status, out, err = tconv(capsys, "capacity", network, "--metric", "fisher", "--batch", "8", "--seed", "3")
    assert status == 0, err
    assert "scikit-learn digits" in err and "8x3x8x8" in err and "seed 3" in err
    assert "(digits, seed 3)" in out
    module = load_module(network)
    params = load_store(store_path_for(network))
    expected = capacity.fisher_potential(module, params, *capacity.minibatch(module, 8, seed=3))
    assert reported(out, "fisher") == pytest.approx(expected.total, rel=1e-6)
    assert f"parameters   {parameter_count(module):,} learnable" in out
    assert "GFLOP" in out and "MB" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("conv")}
    assert rows["conv1"][1:3] == ["relu", "8"] and rows["conv2"][1:3] == ["batch_norm", "8"]
    assert float(rows["conv2"][3]) == pytest.approx(expected.by_name()["conv2"].total, rel=1e-3)


def test_naswot_default_batch_and_reproducible(capsys, network):
    first = tconv(capsys, "capacity", network, "--metric", "naswot")
    second = tconv(capsys, "capacity", network, "--metric", "naswot")
    assert first[0] == second[0] == 0
    assert f"{DEFAULT_BATCH}x3x8x8" in first[2]
    assert reported(first[1], "naswot") == reported(second[1], "naswot")
    assert "over 2 ReLUs" in first[1]


def test_the_default_metric_is_naswot_on_digits(capsys, network):
    status, out, err = tconv(capsys, "capacity", network, "--batch", "6")
    assert status == 0, err
    assert capacity.DEFAULT_METRIC == "naswot"
    module = load_module(network)
    expected = capacity.naswot_score(module, load_store(store_path_for(network)), capacity.minibatch(module, 6, 0)[0])
    assert reported(out, "naswot") == pytest.approx(expected.score, abs=1e-4)


def test_gaussian_source(capsys, network):
    status, out, err = tconv(capsys, "capacity", network, "--metric", "naswot", "--batch", "6", "--source", "gaussian")
    assert status == 0, err
    assert "random N(0,1)" in err and "(gaussian, seed 0)" in out
    module = load_module(network)
    x, _ = capacity.minibatch(module, 6, 0, source="gaussian")
    expected = capacity.naswot_score(module, load_store(store_path_for(network)), x).score
    assert reported(out, "naswot") == pytest.approx(expected, abs=1e-4)


def test_several_seeds_report_the_median_and_spread(capsys, network):
    store_path_for(network).unlink()  # without a store, each seed initialises its own parameters
    status, out, err = tconv(capsys, "capacity", network, "--metric", "fisher", "--batch", "6", "--seed", "2", "--seeds", "3")
    assert status == 0, err
    assert "seed 2, 3, 4" in err
    expected = capacity.measure_seeds(load_module(network), "fisher", seeds=(2, 3, 4), batch=6)
    assert reported(out, "fisher") == pytest.approx(expected.median, rel=1e-6)
    assert "median of 3 seeds" in out
    assert f"min {expected.low:.6e} max {expected.high:.6e}" in out
    assert "blocks at seed 2:" in out


def test_synflow_needs_no_data(capsys, network):
    status, out, err = tconv(capsys, "capacity", network, "--metric", "synflow")
    assert status == 0, err
    assert "batch of 1 (an all-ones input)" in out and "no --data" not in err
    module = load_module(network)
    expected = capacity.synflow_score(module, load_store(store_path_for(network)))
    assert reported(out, "synflow") == pytest.approx(expected, rel=1e-6)


def test_data_and_labels_from_files(capsys, network, data):
    x_path, y_path, x, labels = data
    status, out, err = tconv(capsys, "capacity", network, "--metric", "fisher", "--data", x_path, "--labels", y_path)
    assert status == 0, err
    assert "random" not in err
    module = load_module(network)
    expected = capacity.fisher_potential(module, load_store(store_path_for(network)), x, labels).total
    assert reported(out, "fisher") == pytest.approx(expected, rel=1e-6)
    assert "batch of 6" in out


def test_naswot_needs_no_labels(capsys, network, data):
    x_path, _, x, _ = data
    status, out, err = tconv(capsys, "capacity", network, "--metric", "naswot", "--data", x_path)
    assert status == 0, err
    module = load_module(network)
    expected = capacity.naswot_score(module, load_store(store_path_for(network)), x).score
    assert reported(out, "naswot") == pytest.approx(expected, abs=1e-4)


def test_without_a_store_the_parameters_are_initialised_with_the_seed(capsys, network):
    module = load_module(network)
    save_store(store_path_for(network), init_params(module, seed=5))
    with_store = tconv(capsys, "capacity", network, "--metric", "fisher", "--batch", "4", "--seed", "5")
    store_path_for(network).unlink()
    without = tconv(capsys, "capacity", network, "--metric", "fisher", "--batch", "4", "--seed", "5")
    assert with_store[0] == without[0] == 0
    assert "no parameter store" in without[2] and "seed 5" in without[2]
    assert reported(with_store[1], "fisher") == reported(without[1], "fisher")
    assert not store_path_for(network).exists()  # nothing written


# Errors -----------------------------------------------------------------------


def test_data_without_labels_and_labels_without_data(capsys, network, data):
    """Options that do not fit together are usage errors, as argparse's own."""
    x_path, y_path, _, _ = data
    assert_usage_error(tconv(capsys, "capacity", network, "--metric", "fisher", "--data", x_path), "--labels")
    assert_usage_error(tconv(capsys, "capacity", network, "--metric", "fisher", "--labels", y_path), "--data")
    assert_usage_error(tconv(capsys, "capacity", network, "--metric", "naswot", "--labels", y_path), "--data")
    assert_usage_error(tconv(capsys, "capacity", network, "--data", x_path, "--source", "digits"), "--source")


def test_bad_data(capsys, network, tmp_path, data):
    _, y_path, _, _ = data
    np.save(tmp_path / "wrong.npy", np.zeros((6, 3, 4, 4), np.float32))
    assert_user_error(
        tconv(
            capsys, "capacity", network, "--metric", "fisher", "--data", tmp_path / "wrong.npy", "--labels", y_path
        ),
        "wrong.npy: error:", "6x3x4x4", "Nx3x8x8",
    )
    np.save(tmp_path / "ints.npy", np.zeros((6, 3, 8, 8), np.int64))
    assert_user_error(
        tconv(capsys, "capacity", network, "--metric", "naswot", "--data", tmp_path / "ints.npy"), "int64",
    )
    assert_user_error(
        tconv(capsys, "capacity", network, "--metric", "naswot", "--data", tmp_path / "none.npy"),
        "none.npy: error: file not found",
    )


@pytest.mark.parametrize(
    "labels, fragments",
    [
        (np.array([0, 1, 2]), ["label array has shape 3", "expected 6"]),
        (np.zeros((6, 1), np.int64), ["label array has shape 6x1"]),
        (np.array([0, 1, 2, 3, 4, 0]), ["4 classes (0 to 3)", "from 0 to 4"]),
        (np.array([0, 1, 2, 3, -1, 0]), ["4 classes (0 to 3)", "from -1 to 3"]),
        (np.array([0.0, 1.0, 2.0, 3.0, 0.0, 1.0]), ["float64", "integer class labels"]),
        (np.array([True] * 6), ["bool", "integer class labels"]),
    ],
    ids=["too-few", "rank-2", "too-large", "negative", "float", "bool"],
)
def test_bad_labels(capsys, network, tmp_path, data, labels, fragments):
    x_path, _, _, _ = data
    np.save(tmp_path / "bad.npy", labels)
    assert_user_error(
        tconv(capsys, "capacity", network, "--metric", "fisher", "--data", x_path, "--labels", tmp_path / "bad.npy"),
        "bad.npy: error:", *fragments,
    )


def test_unreadable_labels(capsys, network, tmp_path, data):
    x_path, _, _, _ = data
    (tmp_path / "text.npy").write_text("0 1 2 3 0 1")
    assert_user_error(
        tconv(
            capsys, "capacity", network, "--metric", "fisher", "--data", x_path, "--labels", tmp_path / "text.npy"
        ),
        "text.npy: error: not a .npy file",
    )


def test_mis_shaped_parameter_in_the_store(capsys, network):
    store = store_path_for(network)
    arrays = load_store(store)
    arrays["conv1.weight"] = np.zeros((8, 3, 5, 5), np.float32)
    save_store(store, arrays)
    assert_user_error(tconv(capsys, "capacity", network, "--metric", "naswot"), "conv1.weight", "8x3x3x3")


def test_network_without_logits(capsys, tmp_path):
    b = NetworkBuilder("maps", (1, 3, 8, 8))
    module = b.finish(b.conv2d(b.input, 4, 3))
    path = tmp_path / "maps.mlir"
    write_network(path, module, init_params(module))
    assert_user_error(tconv(capsys, "capacity", path, "--metric", "fisher"), "N x classes")


def test_usage_errors(capsys, network, data):
    x_path, y_path, _, _ = data
    assert tconv(capsys, "capacity", network, "--metric", "snip")[0] == 2
    assert tconv(capsys, "capacity", network, "--source", "noise")[0] == 2
    assert tconv(capsys, "capacity", network, "--seeds", "0")[0] == 2
    assert tconv(capsys, "capacity", network, "--metric", "fisher", "--batch", "0")[0] == 2
    assert tconv(
        capsys, "capacity", network, "--metric", "fisher", "--batch", "4", "--data", x_path, "--labels", y_path
    )[0] == 2


def test_console_script(network):
    tconv_script = Path(sys.executable).parent / "tconv"
    result = subprocess.run(
        [str(tconv_script), "capacity", str(network), "--metric", "naswot", "--batch", "4"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TCONV_DEBUG": ""},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("small: naswot on a batch of 4")
    assert "tconv: note: no --data given" in result.stderr
