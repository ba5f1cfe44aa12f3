"""Fuzzing tconv-opt's pass pipelines and their options.

Random pipelines of one to three tconv passes, with option values drawn from
each option's type as `tconv.passes.describe` reports it (integers zero,
negative and huge; strings empty, unicode, with regular-expression
metacharacters for `layers`; booleans; floats nan and inf; lists), unknown
option names, and pipeline texts broken afterwards (unbalanced braces and
quotes, stray commas), run in process as `tconv-opt net.mlir -p PIPELINE -o
out.mlir` on a small network with its parameter store beside it (conv,
batch norm, relu, add, concat, slice, dense), on `tconv zoo resnet18
--dataset cifar10`, and on broken texts of the small network (the mutations
of test_fuzz.py). Every run must either succeed, writing output IR that
parses and verifies with a store beside it whose entries fit its
parameters, or fail as one message: exit status 1 (located at
`FILE:LINE:COL` where the input was read) or 2 (a usage error), no
traceback, no internal error, no output file.

`TCONV_FUZZ_CASES` sets the number of cases per test (`make fuzz`); the
default is a short profile for `make test`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz import MUTATIONS, RandomChoices, fuzz_settings, time_limit

from tconv.cli.files import write_network
from tconv.cli.main import main as tconv_main
from tconv.cli.opt import main as opt_main
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import parse_module, verify_module
from tconv.ir.ops import shape_of
from tconv.ir.params import init_params, load_store, param_ops, store_path_for
from tconv.passes.describe import PassOption, options
from tconv.passes.registry import PASSES

CASE_SECONDS = 60
"""A case takes well under a second on the small network, a few on resnet18."""

PASS_NAMES = list(PASSES)
OPTIONS: dict[str, list[PassOption]] = {name: options(load()) for name, load in PASSES.items()}

LAYER_NAMES = ["conv1", "conv2", "conv3", "fc", "bn1", "layer1.0.conv1", "stem.conv"]
LAYERS = [
    "", "conv1", "conv2", "conv1,conv2", "conv.*", "conv[", "(", ")", "*", "+", "?", "conv1|fc", "^conv", "conv$",
    ".*", "[a-", "\\", "\\d+", "α", "conv\u00e91", " ", "conv1 conv2", "layer1\\.0\\..*", "fc", "nope", "{", "}",
    "a{2,", "(?P<x>", "(?", "x" * 300,
]
STRINGS = ["", "α", "é", "naswot", "fisher", "auto", "inherit", "zeros", "oc", "ow", "oh", "oc,ow", "per-channel",
           "per-tensor", "uint8", "int8", "minmax", "percentile", "digits", "cifar10", "random", "n,oc,oh,ow",
           "oc,ic,kh,kw", " ", "\x00", "a b", "-1", "🙂"]
INTEGERS = [0, 1, 2, 3, 4, 8, 16, -1, -8, 2**31, 2**63, -(2**63), 10**30, 10**400]
FLOATS = ["0", "0.0", "0.5", "1", "1.0", "2.5", "-1", "nan", "inf", "-inf", "1e308", "1e-300", "1e999", "99.99",
          "100", "50"]
ODD = ["", "x", "1.5", "true", "0x10", "--", "1,2", "[1]", "'a'", "\"\"", "{}", "=", "é"]
BROKEN = ["{", "}", "{{", "}}", '"', "'", ",", ",,", "=", " ", "\\", "\x00", "{a=}", "{=1}", "tconv-"]


def small_network():
    b = NetworkBuilder("small", (1, 3, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 8, 3, padding=1, name="conv1"), name="bn1"))
    y = b.relu(b.batch_norm(b.conv2d(x, 8, 3, padding=1, name="conv2"), name="bn2"))
    x = b.add(x, y)
    x = b.concat([x, b.slice_channels(b.conv2d(x, 8, 1, name="conv3"), 2, 4)], axis=1)
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 4, name="fc"))


@pytest.fixture(scope="module")
def networks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("fuzz_passes")
    module = small_network()
    small = directory / "small" / "net.mlir"
    small.parent.mkdir()
    write_network(small, module, init_params(module), {"weights": "initial"})
    resnet = directory / "resnet18" / "net.mlir"
    resnet.parent.mkdir()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert tconv_main(["zoo", "resnet18", "--dataset", "cifar10", "-o", str(resnet)]) == 0
    return {"small": small, "resnet18": resnet}


@st.composite
def option_value(draw: st.DrawFn, option: PassOption) -> str:
    kind = option.type
    if option.name == "layers" or (kind == "str" and draw(st.integers(0, 3)) == 0):
        value = draw(st.sampled_from(LAYERS + LAYER_NAMES))
    elif kind == "str":
        value = draw(st.sampled_from(STRINGS + ([option.default] if option.default else [])))
    elif kind == "bool":
        value = draw(st.sampled_from(["true", "false", "true", "false", "1", "0", "yes", "True", ""]))
    elif kind == "int":
        value = str(draw(st.one_of(st.sampled_from(INTEGERS), st.integers(-4, 16))))
    elif "float" in kind:
        numbers = st.one_of(st.integers(-2, 200), st.sampled_from(INTEGERS)).map(str)
        value = draw(st.one_of(st.sampled_from(FLOATS), numbers))
    elif kind.startswith("tuple"):
        value = ",".join(str(draw(st.sampled_from(INTEGERS[:8]))) for _ in range(draw(st.integers(0, 4))))
    else:
        value = draw(st.sampled_from(STRINGS))
    if draw(st.integers(0, 14)) == 0:
        value = draw(st.sampled_from(ODD))
    if kind == "str" and draw(st.booleans()):
        value = '"' + value.replace('"', "") + '"'
    elif kind == "str" and re.search(r"[\s{}=,\"]", value):
        value = '"' + value.replace('"', "") + '"' if draw(st.integers(0, 3)) else value
    return value


@st.composite
def pass_spec(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(PASS_NAMES))
    if draw(st.integers(0, 19)) == 0:
        name = draw(st.sampled_from(["tconv-nope", "tconv-group ", "", "tconv_group", "TCONV-GROUP", "canonicalize"]))
    parts = []
    for option in OPTIONS.get(name, []):
        required = option.default is None
        if draw(st.integers(0, 9)) < (9 if required else 3):
            spelling = option.name if draw(st.integers(0, 4)) else option.name.replace("-", "_")
            parts.append(f"{spelling}={draw(option_value(option))}")
    if draw(st.integers(0, 19)) == 0:
        parts.append(f"{draw(st.sampled_from(['nope', 'group', 'layer', 'α', '']))}={draw(st.sampled_from(ODD))}")
    if draw(st.integers(0, 19)) == 0 and parts:
        parts.append(parts[0])  # an option given twice
    if not parts and draw(st.booleans()):
        return name
    return name + "{" + " ".join(parts) + "}"


@st.composite
def pipeline(draw: st.DrawFn) -> str:
    text = ",".join(draw(pass_spec()) for _ in range(draw(st.integers(1, 3))))
    for _ in range(draw(st.sampled_from([0] * 8 + [1, 2]))):
        index = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:index] + draw(st.sampled_from(BROKEN)) + text[index:]
        else:
            text = text[:index] + text[index + 1:]
    return text


def check_outcome(network: Path, output: Path, status: int, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "internal error" not in stderr, stderr
    store = store_path_for(output)
    if status == 0:
        module = parse_module(output.read_text(), str(output))
        verify_module(module)
        if store.exists():
            arrays = load_store(store)
            for op in param_ops(module):
                assert op.param_name in arrays, f"{op.param_name} is not in the store written beside the output"
                assert tuple(arrays[op.param_name].shape) == shape_of(op.result), op.param_name
                assert np.isfinite(arrays[op.param_name]).all() or arrays[op.param_name].dtype.kind not in "fc"
        else:
            assert "no parameter store written" in stderr, stderr
        output.unlink()
        store.unlink(missing_ok=True)
        return
    assert status in (1, 2), f"status {status}\n{stderr}"
    assert not output.exists() and not store.exists(), "a failed run wrote its output"
    messages = [line for line in stderr.splitlines() if "error:" in line]
    assert len(messages) == 1, stderr
    if status == 1:
        source = re.escape(str(network))
        assert re.match(rf"({source}:\d+:\d+|{source}|{re.escape(str(store_path_for(network)))}): error: \S",
                        messages[0]) or messages[0].startswith("error: "), stderr
    else:
        assert messages[0].startswith("tconv-opt: error: "), stderr


def run_case(network: Path, pipeline_text: str) -> None:
    output = network.parent / "out.mlir"
    output.unlink(missing_ok=True)
    store_path_for(output).unlink(missing_ok=True)
    stderr = io.StringIO()
    with (time_limit(CASE_SECONDS), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr)):
        status = opt_main([str(network), "-p", pipeline_text, "-o", str(output)])
    check_outcome(network, output, status, stderr.getvalue())
    leftovers = sorted(set(os.listdir(network.parent)) - {"net.mlir", "net.npz", "case.mlir", "case.npz"})
    assert not leftovers, f"a run left {leftovers} behind"


@fuzz_settings(25)
@given(data=st.data())
def test_pipelines_on_a_small_network(networks: dict[str, Path], data: st.DataObject):
    run_case(networks["small"], data.draw(pipeline()))


@fuzz_settings(5)
@given(data=st.data())
def test_pipelines_on_resnet18(networks: dict[str, Path], data: st.DataObject):
    run_case(networks["resnet18"], data.draw(pipeline()))


@fuzz_settings(10)
@given(data=st.data())
def test_pipelines_on_broken_ir(networks: dict[str, Path], data: st.DataObject):
    """The small network's text broken by test_fuzz.py's mutations, its store beside it."""
    small = networks["small"]
    case = small.parent / "case.mlir"
    choices = RandomChoices(data.draw(st.randoms(use_true_random=False)))
    text = small.read_text()
    for _ in range(data.draw(st.integers(1, 2))):
        text = choices.choice(MUTATIONS)(text, choices)
    case.write_text(text, encoding="utf-8")
    store_path_for(case).write_bytes(store_path_for(small).read_bytes())
    run_case(case, data.draw(pipeline()))
