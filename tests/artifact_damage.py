"""Small compiled artifacts to damage, and `tconv run` on them in a
subprocess, where a crash shows as a signal rather than ending the tests.
Shared by tests/integration/test_artifact_robustness.py and
tests/property/test_fuzz_artifact.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tconv.runtime.plan import MANIFEST_FILE, PLAN_FILE, format_manifest

FILES = (PLAN_FILE, "kernels.so", "params.bin")
RUN_SECONDS = 60
"""A `tconv run` of a tiny artifact takes well under a second: past this, it hangs."""

_LOCATED = re.compile(r"(?P<file>[^\n]+?)(?::(?P<line>\d+):(?P<column>\d+))?: error: \S[^\n]*")


def tiny_network(batch: int):
    from tconv.ir.builder import NetworkBuilder

    b = NetworkBuilder("tiny", (batch, 3, 8, 8))
    x = b.relu(b.conv2d(b.input, 4, 3, padding=1, name="conv"))
    return b.finish(b.conv2d(x, 4, 1, name="pw"))


def tiny_artifact(directory: Path, batch: int) -> Path:
    """A two-convolution network compiled by the LLVM backend for `batch`."""
    from tconv.ir.params import init_params
    from tconv.lowering.llvm.artifact import compile_artifact

    module = tiny_network(batch)
    compile_artifact(module, init_params(module), directory)
    return directory


def reseal(directory: Path) -> None:
    """Rewrite the manifest for the files as they are now: damage the
    manifest cannot see, which the runtime's own checks must catch."""
    names = tuple(name for name in FILES if (directory / name).is_file())
    (directory / MANIFEST_FILE).write_text(format_manifest(directory, names))


def tconv_run(directory: Path, *options: str) -> subprocess.CompletedProcess:
    """`tconv run DIR` in a fresh process (raises TimeoutExpired if it hangs)."""
    code = "import sys\nfrom tconv.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run(
        [sys.executable, "-c", code, "run", str(directory), "--threads", "2", *options],
        capture_output=True, text=True, timeout=RUN_SECONDS,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("tconv: note:")]


def assert_clean(result: subprocess.CompletedProcess, directory: Path) -> str:
    """The run succeeded, or failed with exit status 1 and one message
    located in the artifact (`FILE[:LINE:COL]: error: ...`, FILE the
    directory or a file in it); never a signal, traceback or internal error.
    The message, or "" on success."""
    assert result.returncode >= 0, f"killed by signal {-result.returncode}: {result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    if result.returncode == 0:
        return ""
    assert result.returncode == 1, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    match = _LOCATED.fullmatch(lines[0])
    assert match, lines[0]
    assert Path(match["file"]) in (directory, *(directory / name for name in (*FILES, MANIFEST_FILE))), lines[0]
    return lines[0]
