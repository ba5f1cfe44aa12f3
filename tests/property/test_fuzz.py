"""Fuzzing tconv-opt's parser and verifier with broken IR.

Valid texts (the functions of tests/filecheck/dialect/ops.mlir and a small
built network, in custom and generic syntax) are truncated, have tokens
deleted, duplicated or swapped, characters flipped, numbers replaced (negative,
zero, huge, not integers), types swapped and attribute values redrawn; the
result goes through `tconv-opt FILE -o OUT` in process (and, for a few cases,
as a real subprocess). Every run must either succeed and write valid IR, or
fail as a diagnostic: exit status 1, a `FILE:LINE:COL: error:` message, no
traceback, no output file.

`TCONV_FUZZ_CASES` replaces each test's count of cases (`make fuzz` runs the
long profile); `fuzz_settings` says so for every fuzz test of the project.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tconv.cli.opt import main
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import module_text, parse_module, verify_module

T = TypeVar("T")

OPS_MLIR = Path(__file__).parents[1] / "filecheck" / "dialect" / "ops.mlir"


def _seed_texts() -> list[str]:
    text = "\n".join(line for line in OPS_MLIR.read_text().splitlines() if not line.startswith("//"))
    functions = ["func.func" + body for body in text.split("func.func")[1:]]

    builder = NetworkBuilder("tiny", (1, 3, 8, 8))
    x = builder.relu(builder.batch_norm(builder.conv2d(builder.input, 8, 3, stride=2, name="conv1"), name="bn1"))
    y = builder.conv2d(x, 8, 3, groups=2, bias=True, name="conv2")
    x = builder.max_pool2d(builder.add(x, y), 2)
    x = builder.channel_shuffle(builder.concat([x, builder.slice_channels(x, 2, 4)], axis=1), 3)
    network = module_text(builder.finish(builder.dense(builder.flatten(builder.global_avg_pool(x)), 10)))

    custom = [*functions, network]
    generic = [module_text(parse_module(t), generic=True) for t in custom]
    return custom + generic


SEEDS = _seed_texts()

TOKEN = re.compile(r'"[^"\n]*"|[%@^][\w.$-]+|-?\d+(?:\.\d+)?(?:e[+-]?\d+)?|[A-Za-z_][\w.]*|->|\S')
NUMBER = re.compile(r"-?\d+")
TYPE = re.compile(r"\bf32\b|\bi64\b|tensor<[^<>]*>")
ATTRIBUTE = re.compile(
    r"(strides|padding|dilations|kernel) \[[^\]]*\]"
    r"|(strides|padding|dilations|kernel) = array<i64(?:: [^>]*)?>"
    r"|(groups|axis|start|size) -?\d+|(groups|axis|start|size) = -?\d+ : i64"
    r"|epsilon [-\w.+]+"
)

HUGE = [2**31, 2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 10**30, 10**400]
ODD_NUMBERS = ["1.5", "-0.0", "1e999", "0x10", "true", "-", "+1", "007", ""]
TYPES = [
    "f16", "f64", "bf16", "i1", "i32", "i0", "si8", "i16777216", "i99999999999", "index",
    "none", "tensor<f32>", "tensor<?x3xf32>", "tensor<0x3xf32>", "tensor<*xf32>",
    "tensor<1x8x4x4xi64>", "memref<2xf32>", "vector<4xf32>", "!tconv.nope", "tensor<1x1x1x1x1xf32>",
]
CHARACTERS = list('{}[]()<>:,=%@^"\\#!-+.x0123456789 \t\nαé\x00\x7f')
EPSILONS = ["0.0", "-1.0", "1e-300", "1e300", "inf", "5", "1e999"]


class Choices(Protocol):
    """Where a mutation draws its choices from: hypothesis or a seeded Random."""

    def integer(self, low: int, high: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...


@dataclass
class HypothesisChoices:
    data: st.DataObject

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(options))


@dataclass
class RandomChoices:
    rng: random.Random

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)


def random_number(choices: Choices) -> str:
    kind = choices.choice(["small", "small", "huge", "wide", "odd"])
    if kind == "small":
        return str(choices.integer(-3, 12))
    if kind == "huge":
        return str(choices.choice(HUGE))
    if kind == "wide":
        return str(choices.integer(-(2**70), 2**70))
    return choices.choice(ODD_NUMBERS)


CASE_SECONDS = 10


def fuzz_settings(cases: int) -> Callable:
    """The hypothesis settings of a fuzz test: `cases` examples (the short
    profile of `make test`), or `$TCONV_FUZZ_CASES` (`make fuzz`); no
    deadline (each case has its own time limit); its fixtures built once."""
    return settings(
        max_examples=int(os.environ.get("TCONV_FUZZ_CASES") or cases),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                               HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


class CaseTimeout(BaseException):
    """A case ran past its time limit (a BaseException, so that no `except
    Exception` on the way turns it into a diagnostic)."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise CaseTimeout(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_in_process(workdir: Path, text: str) -> None:
    """Run `tconv-opt case.mlir -o out.mlir` and check that it either succeeds
    with valid output or fails with a clean, located diagnostic, in well under
    CASE_SECONDS (a case takes milliseconds)."""
    source = workdir / "case.mlir"
    output = workdir / "out.mlir"
    source.write_text(text, encoding="utf-8")
    output.unlink(missing_ok=True)
    stdout, stderr = io.StringIO(), io.StringIO()
    with time_limit(CASE_SECONDS), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main([str(source), "-o", str(output)])
    check_outcome(source, output, status, stderr.getvalue())


def check_outcome(source: Path, output: Path, status: int, stderr: str) -> None:
    if status == 0:
        # What was accepted prints as valid IR.
        verify_module(parse_module(output.read_text(), "output"))
        return
    assert status == 1, f"status {status}\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert not output.exists(), "a failed run wrote its output file"
    assert re.match(rf"{re.escape(str(source))}:\d+:\d+: error: \S", stderr), stderr
    assert "internal" not in stderr, stderr


# Mutations: each takes a valid text and returns a broken one.


def truncate(text: str, choices: Choices) -> str:
    return text[: choices.integer(0, len(text))]


def edit_token(text: str, choices: Choices) -> str:
    """Delete, duplicate or swap tokens."""
    tokens = [m.span() for m in TOKEN.finditer(text)]
    if len(tokens) < 2:
        return text[:-1]
    kind = choices.choice(["delete", "duplicate", "swap"])
    start, end = choices.choice(tokens)
    if kind == "delete":
        return text[:start] + text[end:]
    if kind == "duplicate":
        return text[:end] + " " + text[start:end] + text[end:]
    (s1, e1), (s2, e2) = sorted([(start, end), choices.choice(tokens)])
    if e1 > s2:
        return text
    return text[:s1] + text[s2:e2] + text[e1:s2] + text[s1:e1] + text[e2:]


def flip_character(text: str, choices: Choices) -> str:
    if not text:
        return text
    index = choices.integer(0, len(text) - 1)
    return text[:index] + choices.choice(CHARACTERS) + text[index + 1 :]


def replace_number(text: str, choices: Choices) -> str:
    numbers = list(NUMBER.finditer(text))
    if not numbers:
        return text
    match = choices.choice(numbers)
    return text[: match.start()] + random_number(choices) + text[match.end() :]


def swap_type(text: str, choices: Choices) -> str:
    types = list(TYPE.finditer(text))
    if not types:
        return text
    match = choices.choice(types)
    return text[: match.start()] + choices.choice(TYPES) + text[match.end() :]


def redraw_attribute(text: str, choices: Choices) -> str:
    """Give one property (strides, padding, groups, ...) random values, in the
    syntax the text uses."""
    attributes = list(ATTRIBUTE.finditer(text))
    if not attributes:
        return text
    match = choices.choice(attributes)
    old = match.group(0)
    name = old.split()[0]

    def value() -> str:
        return str(choices.integer(-2, 8)) if choices.integer(0, 4) else str(choices.choice(HUGE))

    if name == "epsilon":
        new = f"epsilon {choices.choice(EPSILONS)}"
    elif "[" in old:
        new = f"{name} [{', '.join(value() for _ in range(choices.integer(0, 6)))}]"
    elif "array<" in old:
        values = [value() for _ in range(choices.integer(0, 6))]
        new = f"{name} = array<i64: {', '.join(values)}>" if values else f"{name} = array<i64>"
    elif " = " in old:
        new = f"{name} = {value()} : i64"
    else:
        new = f"{name} {value()}"
    return text[: match.start()] + new + text[match.end() :]


MUTATIONS = [truncate, edit_token, flip_character, replace_number, swap_type, redraw_attribute]


Mutation = Callable[[str, Choices], str]


def mutated(choices: Choices, mutations: Sequence[Mutation], count: int = 1) -> str:
    text = choices.choice(SEEDS)
    for _ in range(count):
        text = choices.choice(mutations)(text, choices)
    return text


@fuzz_settings(300)
@given(st.data())
def test_truncated(workdir: Path, data: st.DataObject):
    run_in_process(workdir, mutated(HypothesisChoices(data), [truncate]))


@fuzz_settings(450)
@given(st.data())
def test_token_edits(workdir: Path, data: st.DataObject):
    run_in_process(workdir, mutated(HypothesisChoices(data), [edit_token]))


@fuzz_settings(350)
@given(st.data())
def test_character_flips(workdir: Path, data: st.DataObject):
    run_in_process(workdir, mutated(HypothesisChoices(data), [flip_character]))


@fuzz_settings(450)
@given(st.data())
def test_numbers(workdir: Path, data: st.DataObject):
    run_in_process(workdir, mutated(HypothesisChoices(data), [replace_number]))


@fuzz_settings(250)
@given(st.data())
def test_types(workdir: Path, data: st.DataObject):
    run_in_process(workdir, mutated(HypothesisChoices(data), [swap_type]))


@fuzz_settings(450)
@given(st.data())
def test_attributes(workdir: Path, data: st.DataObject):
    run_in_process(workdir, mutated(HypothesisChoices(data), [redraw_attribute], count=data.draw(st.integers(1, 3))))


@fuzz_settings(350)
@given(st.data())
def test_mixed(workdir: Path, data: st.DataObject):
    run_in_process(workdir, mutated(HypothesisChoices(data), MUTATIONS, count=data.draw(st.integers(2, 4))))


def test_deep_nesting_is_a_diagnostic(workdir: Path):
    run_in_process(workdir, "func.func @f() -> () {\n  %x = \"test.x\"() {a = " + "[" * 5000 + "} : () -> ()\n}\n")


@pytest.mark.parametrize(
    "text",
    [
        'func.func @f() {\n  %w = tconv.param "conv.weight init kaiming_normal : tensor<8x8x3x3xf32>' + " x" * 200 + "\n}\n",
        '"func.func @f(%x: tensor<1x8x4x4xf32>) -> tensor<1x8x4x4xf32> {' + " x" * 200 + "\n}\n",
        'func.func @f() {\n  %w = tconv.param "conv.weight' + "x" * 200 + '\\q" init zeros : tensor<8xf32>\n}\n',
    ],
    ids=["in-a-line", "first-token", "bad-escape"],
)
def test_unterminated_string_is_fast(workdir: Path, text: str):
    # xDSL 0.74's string pattern backtracks exponentially on these; tconv's lexer must not.
    run_in_process(workdir, text)


SUBPROCESS_CASES = 20


def test_subprocesses(tmp_path: Path):
    """A few cases through the real console script, four at a time."""
    choices = RandomChoices(random.Random(0))
    tconv_opt = Path(sys.executable).parent / "tconv-opt"
    command = [str(tconv_opt)] if tconv_opt.exists() else [sys.executable, "-m", "tconv.cli.opt"]
    cases = []
    for index in range(SUBPROCESS_CASES):
        source, output = tmp_path / f"case{index}.mlir", tmp_path / f"out{index}.mlir"
        source.write_text(mutated(choices, MUTATIONS, count=choices.integer(1, 3)), encoding="utf-8")
        cases.append((source, output))
    for batch in range(0, len(cases), 4):
        running = [
            (source, output, subprocess.Popen([*command, str(source), "-o", str(output)], stderr=subprocess.PIPE, text=True))
            for source, output in cases[batch : batch + 4]
        ]
        for source, output, process in running:
            _, stderr = process.communicate(timeout=120)
            check_outcome(source, output, process.returncode, stderr)
