"""Fuzzing the artifact loader with damaged artifacts.

A tiny network compiled by the LLVM backend for batch 1 and for batch 2;
each case copies the batch-1 artifact and damages it: files truncated, bytes
flipped, files swapped with the batch-2 artifact's, plan lines edited,
deleted or repeated. Half the cases then re-write the manifest for the
damaged files, so that the damage reaches the C runtime's own checks (the
plan's rules, the library's ELF extents, the plan fingerprint). Bytes
flipped inside the kernel library are never re-sealed: code that changed
and still links cannot be told from code that was compiled, and only the
manifest's hash refuses it.

`tconv run DIR` then runs in a subprocess, so that a crash is a signal and
not the end of the test run: it must exit 0, or 1 with one message located
in the artifact (`FILE[:LINE:COL]: error: ...`), within a timeout.

`TCONV_FUZZ_CASES` sets the number of cases (default: a short profile of
30, a few seconds); `make fuzz` sets a long one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from artifact_damage import FILES, assert_clean, reseal, tconv_run, tiny_artifact
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz import fuzz_settings

from tconv.runtime.plan import MANIFEST_FILE


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("fuzz-artifacts")
    return {batch: tiny_artifact(root / f"batch{batch}", batch) for batch in (1, 2)}


def plan_line_edit(data: st.DataObject, text: str) -> str:
    """`text` with one line deleted, repeated, or with one token replaced."""
    lines = text.split("\n")
    at = data.draw(st.integers(0, len(lines) - 1), label="line")
    edit = data.draw(st.sampled_from(["delete", "repeat", "token"]), label="edit")
    if edit == "delete":
        del lines[at]
    elif edit == "repeat":
        lines.insert(at, lines[at])
    else:
        tokens = lines[at].split(" ")
        index = data.draw(st.integers(0, len(tokens) - 1), label="token")
        tokens[index] = data.draw(st.sampled_from(
            ["0", "1", "64", "4096", "18446744073709551615", "1099511627776", "-1", "x",
             "", "tensor", "call", "end", "f16", "param", "arena", "kernels.so", "../x"]
        ), label="new token")
        lines[at] = " ".join(tokens)
    return "\n".join(lines)


def damage(data: st.DataObject, directory: Path, other: Path) -> bool:
    """Damage one file of `directory` (`other` is another artifact); whether
    the damage may be re-sealed."""
    name = data.draw(st.sampled_from([*FILES, MANIFEST_FILE]), label="file")
    path = directory / name
    content = path.read_bytes()
    kinds = ["truncate", "flip", "swap"] + (["edit"] if name == "plan.txt" else [])
    kind = data.draw(st.sampled_from(kinds), label="damage")
    if kind == "truncate":
        path.write_bytes(content[: data.draw(st.integers(0, max(len(content) - 1, 0)), label="keep")])
    elif kind == "flip":
        flipped = bytearray(content)
        # (A file an earlier damage truncated to nothing has no byte to flip.)
        for _ in range(data.draw(st.integers(1, 4), label="flips") if flipped else 0):
            at = data.draw(st.integers(0, len(flipped) - 1), label="at")
            flipped[at] ^= data.draw(st.integers(1, 255), label="mask")
        path.write_bytes(bytes(flipped))
    elif kind == "swap":
        shutil.copyfile(other / name, path)
    else:
        # (surrogateescape: an earlier damage may have left bytes that are not UTF-8.)
        edited = plan_line_edit(data, content.decode(errors="surrogateescape"))
        path.write_bytes(edited.encode(errors="surrogateescape"))
    return not (name == "kernels.so" and kind == "flip")


@fuzz_settings(30)
@given(data=st.data())
def test_damaged_artifacts_run_or_fail_cleanly(artifacts, data):
    with tempfile.TemporaryDirectory(prefix="tconv-fuzz-artifact-") as scratch:
        directory = Path(shutil.copytree(artifacts[1], Path(scratch) / "net"))
        sealable = True
        for _ in range(data.draw(st.integers(1, 2), label="damages")):
            sealable &= damage(data, directory, artifacts[2])
        if sealable and data.draw(st.booleans(), label="reseal"):
            reseal(directory)
        assert_clean(tconv_run(directory), directory)
