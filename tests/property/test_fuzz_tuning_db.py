"""Fuzzing the tuning database reader with damaged databases.

A valid database for a small network (its convolutions' candidate knobs,
measured one by one and in a side-by-side round, as `tconv tune` writes them)
is damaged line by line: lines cut short, bytes flipped, bytes that are not
UTF-8, fields given values of the wrong JSON type (strings, lists, null,
booleans, floats, NaN), knobs zero, negative or huge, unknown algorithms,
keys dropped or added, records moved to other workloads and targets, lines
duplicated, swapped or emptied. The result is read by `tconv compile net.mlir
-o OUT` in process, as `$TCONV_TUNING_DB` (the TVM backend, the one that
applies tuned schedules; the kernels are lowered to TVM's tensor IR but not
built, which is what takes a compile its time), and by `tconv optimize --db`
up to its search. Every run must either succeed (what a record says of a
convolution it cannot run is left out: the database is a cache) or fail as
one message located in the database, `DB:LINE:COL: error: ...`, exit status
1, no traceback, no internal error, no output left behind.

`TCONV_FUZZ_CASES` sets the number of cases (`make fuzz`); the default is a
short profile for `make test`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz import fuzz_settings

from tconv.cli.files import write_network
from tconv.cli.main import main as tconv_main
from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import Conv2dOp
from tconv.ir.params import init_params
from tconv.search.tuning import TuningDatabase, candidates, default_threads, target_key, workload_of

VALUES = [
    0, 1, 2, 3, 4, 7, 8, 16, 64, 1000, 2**16, 2**16 + 1, -1, -8, 2**31, 2**63, 10**30, 10**400, 1.5, -0.0, 1e308,
    1e-300, float("nan"),
    float("inf"), float("-inf"), "", "8", "x", "direct", "gspc", "winograd", "unscheduled", "é", None, True, False,
    [], [8], {}, {"block": 8},
]
ALGORITHMS = ["direct", "gspc", "winograd", "unscheduled", "Direct", "im2col", "", "auto"]
KEYS = ["workload", "target", "algorithm", "block", "width_tile", "rows", "unroll_kw", "rows_first", "columns",
        "seconds", "round"]


def small_network():
    b = NetworkBuilder("small", (1, 8, 8, 8))
    x = b.relu(b.conv2d(b.input, 16, 3, padding=1, name="conv1"))
    x = b.conv2d(x, 16, 3, padding=1, groups=4, name="grouped")
    x = b.conv2d(x, 16, 3, padding=1, groups=16, name="depthwise")
    x = b.conv2d(x, 8, 1, name="pointwise")
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 4, name="fc"))


class Lines(list):
    """The valid database's lines (shown by count only when a case fails)."""

    def __repr__(self) -> str:
        return f"<{len(self)} valid lines>"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    directory = tmp_path_factory.mktemp("fuzz_tuning_db")
    module = small_network()
    write_network(directory / "net.mlir", module, init_params(module), {"weights": "initial"})
    database = TuningDatabase(directory / "valid.jsonl")
    target = target_key(default_threads())
    for index, conv in enumerate(op for op in module.walk() if isinstance(op, Conv2dOp)):
        workload = workload_of(conv)
        knobs = candidates(workload)[:4]
        for rank, k in enumerate(knobs):
            database.add(workload, target, k, 1e-3 * (rank + 1 + index))
        database.add_round(workload, target, {k: 1e-3 * (len(knobs) - rank) for rank, k in enumerate(knobs[:2])})
    lines = Lines((directory / "valid.jsonl").read_bytes().splitlines(keepends=True))
    (directory / "valid.jsonl").unlink()
    return directory, lines


@st.composite
def damaged_line(draw: st.DrawFn, line: bytes, lines: list[bytes]) -> bytes:
    kind = draw(st.sampled_from(["field", "field", "drop", "extra", "algorithm", "other", "cut", "flip", "bytes",
                                 "empty", "json"]))
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict) or not record:  # damaged before
        kind = draw(st.sampled_from(["cut", "flip", "bytes", "empty"]))
    if kind in ("cut", "flip", "bytes"):
        data = bytearray(line.rstrip(b"\n"))
        index = draw(st.integers(0, len(data)))
        if kind == "cut":
            del data[index:]
        elif kind == "flip" and data:
            data[min(index, len(data) - 1)] ^= draw(st.integers(1, 255))
        else:
            data[index:index] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\x00", b"\xed\xa0\x80", b"\r"]))
        return bytes(data) + b"\n"
    if kind == "empty":
        return draw(st.sampled_from([b"\n", b"  \n", b"\t\n", b"{}\n", b"[]\n", b"null\n", b"1\n", b'"x"\n']))
    if kind == "field":
        for _ in range(draw(st.integers(1, 3))):
            record[draw(st.sampled_from(KEYS))] = draw(st.sampled_from(VALUES))
    elif kind == "drop":
        record.pop(draw(st.sampled_from(sorted(record))), None)
    elif kind == "extra":
        record[draw(st.sampled_from(["note", "x", "", "seconds2", "é"]))] = draw(st.sampled_from(VALUES))
    elif kind == "algorithm":
        record["algorithm"] = draw(st.sampled_from(ALGORITHMS))
    elif kind == "other":
        other = json.loads(draw(st.sampled_from(lines)))
        key = draw(st.sampled_from(["workload", "target"]))
        record[key] = draw(st.sampled_from([other[key], other[key] + "x", other[key][:-1], "", "cpu"]))
    else:
        return json.dumps(draw(st.sampled_from([[record], record.get("seconds"), str(record)]))).encode() + b"\n"
    if draw(st.booleans()) and kind != "field":
        record["seconds"] = 1e-9  # the fastest: the knobs compile applies
    return json.dumps(record).encode() + b"\n"


@st.composite
def damaged_database(draw: st.DrawFn, valid: list[bytes]) -> bytes:
    lines = list(valid)
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["line", "line", "line", "duplicate", "swap", "delete"]))
        if kind == "line":
            lines[index] = draw(damaged_line(lines[index], valid))
        elif kind == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), lines[index])
        elif kind == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
        elif len(lines) > 1:
            del lines[index]
    data = b"".join(lines)
    if draw(st.integers(0, 4)) == 0:
        data = data[: draw(st.integers(0, len(data)))]  # an interrupted write
    return data


class Lowered:
    """What the stand-in for the artifact's build returns."""

    def format(self) -> str:
        return "lowered"


def lower_only(module, params, out_dir, target="cpu", arch="sm_90"):
    """`compile_artifact` up to TVM's build: the parameters bound and every
    kernel lowered, its schedule honoured or refused."""
    from tconv.ir.params import bind_params
    from tconv.lowering.tvm.build import lower_kernels, make_target

    bind_params(module, params)
    lower_kernels(module, make_target(target, arch))
    return Lowered()


class SearchStarted(BaseException):
    """`tconv optimize` got past its start (the database read) to its search."""


def check_outcome(directory: Path, database: Path, status: int, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "internal error" not in stderr, stderr
    if status != 0:
        assert status == 1, f"status {status}\n{stderr}"
        messages = [line for line in stderr.splitlines() if "error:" in line]
        assert len(messages) == 1, stderr
        assert re.match(rf"{re.escape(str(database))}:\d+:\d+: error: \S", messages[0]), stderr
    leftovers = sorted(set(os.listdir(directory)) - {"net.mlir", "net.npz", "db.jsonl", "out"})
    assert not leftovers, f"a run left {leftovers} behind"
    if status != 0:
        assert not (directory / "out").exists(), "a failed run wrote its output"


def run_case(directory: Path, data: bytes, monkeypatch: pytest.MonkeyPatch) -> str:
    import shutil

    import tconv.cli.optimize
    import tconv.lowering.tvm.artifact

    database = directory / "db.jsonl"
    database.write_bytes(data)
    output = directory / "out"
    shutil.rmtree(output, ignore_errors=True)
    monkeypatch.setenv("TCONV_TUNING_DB", str(database))
    monkeypatch.setattr(tconv.lowering.tvm.artifact, "compile_artifact", lower_only)
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        status = tconv_main(["compile", str(directory / "net.mlir"), "--layout", "nchw", "-o", str(output)])
    check_outcome(directory, database, status, stderr.getvalue())
    shutil.rmtree(output, ignore_errors=True)
    compiled = stderr.getvalue()

    def search_started(args):
        raise SearchStarted

    monkeypatch.setattr(tconv.cli.optimize, "_load", search_started)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            status = tconv_main(["optimize", str(directory / "net.mlir"), "--db", str(database), "--budget", "1",
                                 "-o", str(directory / "out" / "net.mlir")])
    except SearchStarted:
        status = 0
    check_outcome(directory, database, status, stderr.getvalue())
    assert database.read_bytes() == data, "reading the database changed it"
    return compiled


@fuzz_settings(30)
@given(data=st.data())
def test_damaged_databases(workdir: tuple[Path, list[bytes]], monkeypatch: pytest.MonkeyPatch,
                           data: st.DataObject):
    directory, lines = workdir
    run_case(directory, data.draw(damaged_database(lines)), monkeypatch)


def test_the_valid_database_applies(workdir: tuple[Path, list[bytes]], monkeypatch: pytest.MonkeyPatch):
    directory, lines = workdir
    assert "applied tuned schedules to 4 convolution(s)" in run_case(directory, b"".join(lines), monkeypatch)
