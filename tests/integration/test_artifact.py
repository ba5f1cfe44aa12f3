"""Artifacts end to end: `compile_artifact` (TVM, this CPU) → plan + params +
kernel library → the C runtime (`Runtime`, no TVM), against the reference
executor; and the same through `tconv compile` / `tconv run DIR`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from support import relative_error

from tconv.cli.files import write_network
from tconv.cli.main import main
from tconv.frontends import zoo
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError
from tconv.ir.params import init_params
from tconv.lowering.tvm.artifact import compile_artifact
from tconv.runtime.driver import Runtime
from tconv.runtime.plan import read_plan
from tconv.semantics.reference import run


def random_params(module, seed=0):
    """init_params, with non-trivial biases and batch-norm statistics so that
    folding is exercised."""
    rng = np.random.default_rng(seed)
    params = init_params(module)
    for name, value in params.items():
        if name.endswith("running_var"):
            params[name] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        elif name.endswith(("running_mean", "bias")):
            params[name] = (0.1 * rng.standard_normal(value.shape)).astype(np.float32)
    return params


def small_network():
    """conv+bn+relu, a grouped conv, a pool, an add, a concat and a dense layer."""
    b = NetworkBuilder("small", (2, 3, 12, 12))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 8, 3, name="stem"), name="stem_bn"))
    grouped = b.relu(b.batch_norm(b.conv2d(x, 8, 3, groups=4, name="grouped"), name="grouped_bn"))
    x = b.add(x, grouped)
    x = b.max_pool2d(x, 2)
    side = b.conv2d(x, 4, 1, bias=True, name="side")
    x = b.concat([x, side])
    x = b.flatten(b.global_avg_pool(x))
    return b.finish(b.dense(x, 5, name="fc"))


def check_artifact(module, directory, threads=2):
    params = random_params(module)
    report = compile_artifact(module, params, directory)
    assert report.arena_bytes < report.activation_bytes
    assert report.calls == len(read_plan(directory).calls)
    with Runtime(directory, threads=threads) as runtime:
        assert runtime.arena_bytes == report.arena_bytes
        image = np.random.default_rng(1).standard_normal(runtime.inputs[0].shape).astype(np.float32)
        (actual,) = runtime.run(image)
        (again,) = runtime.run(image)
    (expected,) = run(module, params, image)
    assert actual.shape == expected.shape
    assert relative_error(actual, expected) < 1e-4
    np.testing.assert_array_equal(again, actual)
    return report


def test_small_network_artifact_matches_reference(tmp_path):
    report = check_artifact(small_network(), tmp_path / "small")
    assert report.params_bytes % 64 == 0
    plan = read_plan(tmp_path / "small")
    assert all(t.offset % 64 == 0 for t in plan.tensors)


def test_resnet18_cifar_artifact_matches_reference(tmp_path):
    report = check_artifact(zoo.build("resnet18", "cifar10"), tmp_path / "resnet18")
    # Liveness reuse: far below the sum of all activations.
    assert report.arena_bytes < report.activation_bytes / 2


def test_unknown_targets_are_refused(tmp_path):
    with pytest.raises(TconvError, match="unknown target 'tpu'"):
        compile_artifact(small_network(), {}, tmp_path / "tpu", target="tpu")
    assert not (tmp_path / "tpu").exists()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """`tconv compile` of the small network: (work dir, artifact, IR path)."""
    work = tmp_path_factory.mktemp("cli")
    module = small_network()
    write_network(work / "small.mlir", module, random_params(module))
    artifact = work / "small.art"
    assert main(["compile", str(work / "small.mlir"), "--backend", "tvm", "--target", "cpu",
                 "-o", str(artifact)]) == 0
    return work, artifact


def test_cli_compile_then_run_matches_reference(compiled, capsys):
    work, artifact = compiled
    image = np.random.default_rng(3).standard_normal((2, 3, 12, 12)).astype(np.float32)
    np.save(work / "x.npy", image)
    assert main(["run", str(artifact), "--input", str(work / "x.npy"), "--output", str(work / "y.npy")]) == 0
    assert main(["run", str(work / "small.mlir"), "--input", str(work / "x.npy"),
                 "--output", str(work / "ref.npy")]) == 0
    out = capsys.readouterr().out
    assert "C runtime" in out and "reference backend" in out
    assert relative_error(np.load(work / "y.npy"), np.load(work / "ref.npy")) < 1e-4


def test_cli_run_of_an_artifact_with_random_input(compiled, capsys):
    work, artifact = compiled
    assert main(["run", str(artifact), "--seed", "4", "--threads", "1"]) == 0
    assert "random N(0,1), seed 4" in capsys.readouterr().out


def test_cli_run_profile_lists_every_call(compiled, capsys):
    work, artifact = compiled
    assert main(["run", str(artifact), "--profile", "3"]) == 0
    out = capsys.readouterr().out
    from tconv.runtime.plan import read_plan

    calls = read_plan(artifact / "plan.txt").calls
    assert "profile (mean of 3 runs; calls in plan order)" in out and "the calls together" in out
    rows = [line.split() for line in out.splitlines() if line.strip().split(" ")[0].isdigit()]
    assert [(int(row[0]), row[-1]) for row in rows] == [(k, call.symbol) for k, call in enumerate(calls)]


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda w, a: ["run", str(w / "small.mlir"), "--profile", "2"], "--profile times compiled artifacts only"),
        (lambda w, a: ["run", str(a), "--input", str(w / "bad.npy")], "must have shape 2x3x12x12, got 2x3x11x11"),
        (lambda w, a: ["run", str(a), "--input", str(w / "one.npy")],
         "batch 1, but the artifact {a} is compiled for batch 2; compile one for batch 1 from the IR with "
         "`tconv compile NET.mlir --batch 1 -o DIR`"),
        (lambda w, a: ["run", str(a), "--batch", "3"], "is compiled for batch 2; compile one for batch 3"),
        (lambda w, a: ["run", str(w)], "not a tconv artifact"),
        (lambda w, a: ["compile", str(w / "missing.mlir"), "-o", str(w / "m.art")], "missing.mlir"),
    ],
)
def test_cli_errors_are_clean(compiled, capsys, make_args, message):
    work, artifact = compiled
    np.save(work / "bad.npy", np.zeros((2, 3, 11, 11), np.float32))
    np.save(work / "one.npy", np.zeros((1, 3, 12, 12), np.float32))
    assert main(make_args(work, artifact)) == 1
    err = capsys.readouterr().err
    assert message.format(a=artifact) in err and "Traceback" not in err and "internal error" not in err


def test_cli_compile_for_another_batch(compiled, capsys):
    """`--batch` compiles the IR at another batch; the IR file stays as it was."""
    work, _ = compiled
    before = (work / "small.mlir").read_text()
    artifact = work / "small_b3.art"
    assert main(["compile", str(work / "small.mlir"), "--batch", "3", "-o", str(artifact)]) == 0
    assert (work / "small.mlir").read_text() == before
    image = np.random.default_rng(5).standard_normal((3, 3, 12, 12)).astype(np.float32)
    np.save(work / "x3.npy", image)
    assert main(["run", str(artifact), "--input", str(work / "x3.npy"), "--output", str(work / "y3.npy")]) == 0
    assert main(["run", str(work / "small.mlir"), "--input", str(work / "x3.npy"),
                 "--output", str(work / "ref3.npy")]) == 0
    assert "batch 3" in capsys.readouterr().out
    assert relative_error(np.load(work / "y3.npy"), np.load(work / "ref3.npy")) < 1e-4


def test_cli_compile_usage_errors(compiled, capsys):
    work, _ = compiled
    for bad in (["--backend", "xla"], ["--batch", "0"]):
        assert main(["compile", str(work / "small.mlir"), *bad, "-o", str(work / "c.art")]) == 2
        assert "usage: tconv compile" in capsys.readouterr().err
    assert not (work / "c.art").exists()


def test_cli_run_of_a_corrupt_plan_is_clean(compiled, tmp_path, capsys):
    import shutil

    _, artifact = compiled
    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    text = (broken / "plan.txt").read_text()
    (broken / "plan.txt").write_text(text.replace("arena ", "arena x", 1))
    assert main(["run", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "plan.txt:" in err and "Traceback" not in err


def test_running_an_artifact_does_not_import_tvm(compiled):
    _, artifact = compiled
    code = (
        "import sys\nfrom tconv.cli.main import main\n"
        f"assert main(['run', {str(artifact)!r}]) == 0\n"
        "assert not any(m == 'tvm' or m.startswith('tvm.') for m in sys.modules), 'tvm imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
