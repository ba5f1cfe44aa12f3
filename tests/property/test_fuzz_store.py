"""Fuzzing the parameter store reader with damaged stores.

A small network's valid `.npz` is damaged: members renamed, dropped or
duplicated, their `.npy` headers given another dtype, shape or order, the
archive written stored or deflated, then truncated or with bytes flipped. The
result goes through `tconv run net.mlir` and `tconv-opt net.mlir -p
tconv-group{groups=2} -o out.mlir` in process. Every run must either succeed
or fail as one located message (`net.npz: error: ...`, or
`net.mlir:LINE:COL: error: ...` at the parameter an entry does not fit):
exit status 1, no traceback, no internal error, nothing written.

`TCONV_FUZZ_CASES` sets the number of cases (`make fuzz`); the default is a
short profile for `make test`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz import fuzz_settings

from tconv.cli.files import write_network
from tconv.cli.main import main as tconv_main
from tconv.cli.opt import main as opt_main
from tconv.ir.builder import NetworkBuilder
from tconv.ir.params import init_params

DESCRS = ["'<f4'", "'<f8'", "'>f4'", "'<f2'", "'<i4'", "'|u1'", "'|b1'", "'<c8'", "'<U3'", "'|S2'", "'|O'",
          "'|V4'", "[('a', '<f4')]", "('<f4', (2,))", "'xyz'", "''", "1", "None"]
SHAPES = ["(8, 8, 3, 3)", "(8, 8, 3)", "(8, 8, 1, 3)", "()", "(0,)", "(-1,)", "(99999999999,)",
          "(100000, 100000, 100, 100)", "(2**70,)", "(1.5,)", "[8, 8]", "'8'", "(8, 8, 3, 3"]


def small_network():
    b = NetworkBuilder("small", (1, 3, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 8, 3, name="conv1"), name="bn1"))
    x = b.conv2d(x, 8, 3, name="conv2")
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 4, name="fc"))


class Members(dict):
    """The valid store's members, by name (shown by name only when a case fails)."""

    def __repr__(self) -> str:
        return f"<members {', '.join(self)}>"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    directory = tmp_path_factory.mktemp("fuzz_store")
    module = small_network()
    write_network(directory / "net.mlir", module, init_params(module), {"weights": "trained"})
    with zipfile.ZipFile(directory / "net.npz") as archive:
        members = Members((info.filename, archive.read(info)) for info in archive.infolist())
    return directory, members


def _header(descr: str, fortran: bool, shape: str) -> bytes:
    text = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    text += " " * (63 - (len(text) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


def _body(npy: bytes) -> bytes:
    """A .npy member's data, after its header."""
    if not npy.startswith(b"\x93NUMPY\x01"):
        return npy
    return npy[10 + int.from_bytes(npy[8:10], "little"):]


@st.composite
def damaged_store(draw: st.DrawFn, members: dict[str, bytes]) -> bytes:
    members = dict(members)
    for _ in range(draw(st.integers(0, 3))):
        names = list(members)
        name = draw(st.sampled_from(names))
        kind = draw(st.sampled_from(["rename", "drop", "header", "body"]))
        if kind == "rename":
            new = draw(st.sampled_from([name[:-4], "conv2.weight.npy", "fc.bias.npy", "x/y.npy", "dir/", name + ".npy",
                                        "__tconv_provenance__.npy", draw(st.text("abz.-_/ é\\", min_size=1, max_size=8)) + ".npy"]))
            members[new] = members.pop(name)
        elif kind == "drop":
            del members[name]
        elif kind == "header":
            descr = draw(st.sampled_from(DESCRS))
            shape = draw(st.one_of(st.sampled_from(SHAPES), st.lists(st.integers(0, 20), max_size=4).map(
                lambda dims: "(" + "".join(f"{d}, " for d in dims) + ")")))
            members[name] = _header(descr, draw(st.booleans()), shape) + _body(members[name])
        else:
            cut = draw(st.integers(0, len(members[name])))
            members[name] = members[name][:cut] + draw(st.binary(max_size=16))
    buffer = io.BytesIO()
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            # zipfile cannot write a name it normalises to nothing ("/", "").
            archive.writestr(name if zipfile.ZipInfo(name).filename else "unnamed", data)
    data = bytearray(buffer.getvalue())
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        if draw(st.booleans()):
            del data[draw(st.integers(0, len(data) - 1)):]
        else:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data)


def check_outcome(directory: Path, status: int, stderr: str, outputs: list[Path]) -> None:
    assert "Traceback" not in stderr, stderr
    assert "internal error" not in stderr, stderr
    if status == 0:
        for output in outputs:
            output.unlink(missing_ok=True)
    else:
        assert status == 1, f"status {status}\n{stderr}"
        messages = [line for line in stderr.splitlines() if not line.startswith(("remark:", "tconv: note:"))]
        assert len(messages) == 1, stderr
        store, ir = re.escape(str(directory / "net.npz")), re.escape(str(directory / "net.mlir"))
        assert re.match(rf"({store}|{ir}:\d+:\d+): error: \S", messages[0]), stderr
    assert sorted(os.listdir(directory)) == ["net.mlir", "net.npz"], "a run left a file behind"


def run_case(directory: Path, store: bytes) -> None:
    (directory / "net.npz").write_bytes(store)
    network = str(directory / "net.mlir")
    output = directory / "out.mlir"
    for main, argv, outputs in [
        (tconv_main, ["run", network], []),
        (opt_main, [network, "-p", "tconv-group{groups=2}", "-o", str(output)], [output, output.with_suffix(".npz")]),
    ]:
        stderr = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            status = main(argv)
        check_outcome(directory, status, stderr.getvalue(), outputs)


@fuzz_settings(50)
@given(data=st.data())
def test_damaged_stores(workdir: tuple[Path, dict[str, bytes]], data: st.DataObject):
    directory, members = workdir
    run_case(directory, data.draw(damaged_store(members)))
