"""`tconv optimize` end to end on this machine: real layer measurements
(TVM kernels), real capacity checks, the answer compiled and timed beside
the original; then its outputs are used as a user would use them."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import onnx
import pytest
from support import assert_usage_error, assert_user_error, relative_error, small_resnet, tconv

from tconv.cli.files import write_network
from tconv.cli.main import main
from tconv.ir.loader import load_module
from tconv.ir.params import init_params, load_store
from tconv.runtime.driver import Runtime
from tconv.semantics.reference import run


@pytest.fixture(scope="module")
def optimized(tmp_path_factory):
    """As a user would: `tconv train small.mlir --data digits -o trained.npz`, then
    `tconv optimize trained.mlir --data digits --max-accuracy-drop 5 --budget 40
    -o out`: (status, stdout, stderr, out dir, the trained input file)."""
    root = tmp_path_factory.mktemp("optimize")
    module = small_resnet()
    write_network(root / "small.mlir", module, init_params(module, seed=1))
    out = root / "out"
    environment = pytest.MonkeyPatch()
    environment.setenv("TCONV_TUNING_DB", str(root / "tuning.jsonl"))
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["train", str(root / "small.mlir"), "--data", "digits", "--epochs", "2", "--lr", "0.1",
                       "-o", str(root / "trained.npz")])
        assert status == 0, stderr.getvalue()
        status = main(["optimize", str(root / "trained.mlir"), "--budget", "40", "--seeds", "2", "--data", "digits",
                       "--max-accuracy-drop", "5", "--train-budget", "120", "--train-epochs", "2", "-o", str(out)])
    yield status, stdout.getvalue(), stderr.getvalue(), out, root / "trained.mlir"
    environment.undo()


def test_writes_every_output(optimized):
    status, stdout, stderr, out, _ = optimized
    assert status == 0, stderr
    for name in ("optimized.mlir", "optimized.npz", "optimized.onnx", "report.json", "report.md", "pareto.png"):
        assert (out / name).is_file(), name
    assert (out / "artifact" / "plan.txt").is_file()
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| latency, measured (ms) |" in stdout
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.")], "staging left behind"


def test_report_is_consistent(optimized):
    _, _, _, out, _ = optimized
    report = json.loads((out / "report.json").read_text())
    original, best = report["original"], report["optimized"]
    assert original["measured_ms"] > 0 and best["measured_ms"] > 0
    assert best["verdict"] in ("original", "legal", "within noise")
    if best["verdict"] != "original":
        assert best["measured_ms"] < original["measured_ms"]
        assert report["speedup"]["vs_original_tconv"] == pytest.approx(original["measured_ms"] / best["measured_ms"])
    assert [row["layer"] for row in report["layers"]] == [
        "conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2"
    ]
    assert report["search_seconds"] <= 40 * 1.1
    assert report["candidates"][0]["label"] == "original"
    assert "## Layers" in (out / "report.md").read_text()


def test_the_answer_keeps_the_accuracy_the_report_states(optimized):
    """Its validation accuracy, within the allowed drop, and what ONNX Runtime
    running the exported answer measures on the same split."""
    import onnxruntime

    from tconv.train.data import load_dataset

    _, stdout, _, out, _ = optimized
    report = json.loads((out / "report.json").read_text())
    original, best = report["original"], report["optimized"]
    assert original["accuracy"] > 0.5
    assert best["accuracy"] >= original["accuracy"] - 0.05
    assert "| validation accuracy (%) |" in stdout
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    data = load_dataset("digits", (1, 3, 8, 8), 10)
    session = onnxruntime.InferenceSession(str(out / "optimized.onnx"))
    name = session.get_inputs()[0].name
    predictions = np.concatenate([session.run(None, {name: x[None]})[0].argmax(1) for x in data.x_val])
    assert np.mean(predictions == data.y_val) == pytest.approx(best["accuracy"], abs=1 / len(data.y_val))


def test_the_artifact_computes_the_optimized_network(optimized):
    _, _, _, out, _ = optimized
    module = load_module(out / "optimized.mlir")
    params = load_store(out / "optimized.npz")
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    (expected,) = run(module, params, x)
    runtime = Runtime(out / "artifact", threads=1)
    (actual,) = runtime.run(x)
    runtime.close()
    assert relative_error(actual, expected) < 1e-5
    onnx.checker.check_model(onnx.load(out / "optimized.onnx"))


def test_a_second_run_resumes_from_the_database(optimized, capsys, tmp_path):
    _, _, _, _, source = optimized
    database = source.parent / "tuning.jsonl"
    first = database.read_text().count("\n")
    status, _, err = tconv(capsys, "optimize", source, "--budget", "20", "--seeds", "2", "-o", tmp_path / "again")
    assert status == 0, err
    # Nothing the first run measured is measured again: every (workload, knobs) is recorded once.
    records = [json.loads(line) for line in database.read_text().splitlines()]
    keys = [tuple(sorted((k, v) for k, v in record.items() if k != "seconds")) for record in records]
    assert len(keys) == len(set(keys)) and len(records) >= first


def test_bad_inputs(capsys, tmp_path):
    assert_usage_error(tconv(capsys, "optimize", "no-such-net", "-o", tmp_path / "x"),
                       "no such file or zoo network 'no-such-net'")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "mine.txt").write_text("keep")
    assert_user_error(tconv(capsys, "optimize", "resnet18", "-o", occupied), "not a tconv optimize output")
    assert_user_error(tconv(capsys, "optimize", "resnet18", "--data", "digits", "-o", tmp_path / "w"),
                      "weights of resnet18 (cifar10) are not trained")
    assert not (tmp_path / "w").exists()
    assert (occupied / "mine.txt").read_text() == "keep"
    status, _, err = tconv(capsys, "optimize", "resnet18", "--target", "fpga", "-o", tmp_path / "y")
    assert status == 2 and "--target" in err and not (tmp_path / "y").exists()
    assert_user_error(tconv(capsys, "optimize", "resnet18", "--target", "rpc:nobody@127.0.0.1:9", "-o",
                            tmp_path / "z"), "tracker")
    assert not (tmp_path / "z").exists()


def test_a_bad_database_or_output_place_fails_before_the_search(capsys, tmp_path, monkeypatch):
    """A tuning database that is not UTF-8, an output (or a database) under a
    regular file: located user errors, before any search time is spent."""
    import tconv.search.optimize as search

    def no_search(*args, **kwargs):
        raise AssertionError("the search started")

    monkeypatch.setattr(search.Search, "run", no_search)
    database = tmp_path / "db.jsonl"
    database.write_bytes(b"\n\xff\xfe\n\n")
    assert_user_error(tconv(capsys, "optimize", "resnet18", "--db", database, "-o", tmp_path / "a"),
                      f"{database}:2:1: error: the tuning database is not UTF-8 text (byte 0xff)")
    regular = tmp_path / "regular"
    regular.write_text("")
    assert_user_error(tconv(capsys, "optimize", "resnet18", "--db", tmp_path / "new.jsonl", "-o", regular / "sub" / "o"),
                      f"{regular / 'sub' / 'o'}: error: cannot create the output directory: {regular} is not a directory")
    assert_user_error(tconv(capsys, "optimize", "resnet18", "--db", regular / "db.jsonl", "-o", tmp_path / "b"),
                      f"{regular / 'db.jsonl'}: error: cannot write the tuning database: {regular} is not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.jsonl", "regular"]
