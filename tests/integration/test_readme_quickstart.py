"""The README's quickstart runs as written: every command of the ```sh
block(s) under its "Quickstart" heading, in order, in an empty directory,
with the virtual environment's `bin/` first on PATH, exits 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = pytest.mark.slow


def quickstart_blocks(text: str) -> list[str]:
    """The bodies of the ```sh blocks between the "## Quickstart" heading and the next heading of its level."""
    match = re.search(r"^## Quickstart\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Quickstart' section"
    return re.findall(r"^```sh\n(.*?)^```\s*$", match.group(1), re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[str]:
    """The shell commands of a block, one per entry: a line, with its `\\`
    continuations and, for a here-document (`<<'EOF'`), the lines up to its
    delimiter. Blank lines and whole-line comments are left out."""
    lines = block.splitlines()
    result: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command = [line]
        while command[-1].endswith("\\") and i < len(lines):
            command.append(lines[i])
            i += 1
        heredoc = re.search(r"<<-?\s*(['\"]?)(\w+)\1", command[-1])
        if heredoc:
            delimiter = heredoc.group(2)
            while i < len(lines):
                command.append(lines[i])
                i += 1
                if command[-1].strip() == delimiter:
                    break
            else:
                raise AssertionError(f"here-document without its closing {delimiter}: {line}")
        result.append("\n".join(command))
    return result


def test_the_quickstart_is_found():
    steps = [c for block in quickstart_blocks(README.read_text()) for c in commands(block)]
    assert steps, "the quickstart has no commands"
    assert steps[0].startswith("tconv ")
    assert any(step.startswith("tconv optimize") for step in steps)


def test_every_command_runs_as_written(tmp_path):
    steps = [c for block in quickstart_blocks(README.read_text()) for c in commands(block)]
    environment = dict(os.environ)
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", "")])
    # The search and the compiler read and write the tuning database: a private one.
    environment["TCONV_TUNING_DB"] = str(tmp_path / "tuning.jsonl")
    workdir = tmp_path / "quickstart"
    workdir.mkdir()
    for number, step in enumerate(steps, 1):
        done = subprocess.run(
            ["bash", "-c", step], cwd=workdir, env=environment, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, (
            f"quickstart step {number} exited {done.returncode}:\n{step}\n"
            f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
        )
