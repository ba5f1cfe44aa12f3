"""Damaged artifacts are refused before anything runs, with one located
message and exit status 1: never a signal, a hang or a traceback.

The manifest (sizes and SHA-256 of every file) catches any change to a
file; beneath it, for damage a re-written manifest hides (and for C programs
that call `tconv_open` without the driver), the C runtime checks the plan's
rules, the library's ELF extents and the plan fingerprint the library
carries. Each test runs `tconv run` in a subprocess on a copy of a tiny LLVM
artifact. A last test builds the C runtime under AddressSanitizer and
UndefinedBehaviorSanitizer and opens damaged artifacts with it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from artifact_damage import assert_clean, reseal, tconv_run, tiny_artifact
from tconv.ir.loader import TconvError
from tconv.runtime import driver
from tconv.runtime.driver import Runtime
from tconv.runtime.plan import MANIFEST_FILE, PlanError, check_artifact

C_DRIVER = Path(__file__).parent / "c" / "run_artifact.c"
DAMAGED = "the artifact is damaged; compile it again"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[int, Path]:
    """The tiny network compiled for batch 1 and for batch 2."""
    root = tmp_path_factory.mktemp("artifacts")
    return {batch: tiny_artifact(root / f"batch{batch}", batch) for batch in (1, 2)}


@pytest.fixture
def broken(artifacts, tmp_path) -> Path:
    """A copy of the batch-1 artifact for a test to damage."""
    return Path(shutil.copytree(artifacts[1], tmp_path / "net"))


def refused(directory: Path, *fragments: str) -> str:
    message = assert_clean(result := tconv_run(directory), directory)
    assert result.returncode == 1
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_intact_artifact_runs(broken):
    assert tconv_run(broken).returncode == 0
    assert check_artifact(broken).calls


def test_truncated_library(broken):
    """Once SIGBUS: the loader mapped segments past the end of the file."""
    library = broken / "kernels.so"
    size = library.stat().st_size
    library.write_bytes(library.read_bytes()[: size // 2])
    refused(
        broken,
        f"{library}: error: does not match the artifact's manifest "
        f"(size {size // 2}, expected {size}) — {DAMAGED}",
    )
    reseal(broken)  # the C runtime's own check, beneath the manifest
    refused(broken, f"{library}: error: the kernel library is truncated", DAMAGED)


def test_flipped_bits_in_the_library(broken):
    """Once SIGILL: the kernels' code was run as it was."""
    library = broken / "kernels.so"
    data = bytearray(library.read_bytes())
    for at in range(0x1000, len(data), 97):
        data[at] ^= 0xFF
    library.write_bytes(bytes(data))
    refused(broken, f"{library}: error: does not match the artifact's manifest (its SHA-256", DAMAGED)


@pytest.mark.parametrize("swapped", ["kernels.so", "plan.txt"])
def test_files_of_another_batch(broken, artifacts, swapped):
    """Once a hang or SIGSEGV: kernels built for batch 2 called on batch-1
    tensors, or the other way round."""
    shutil.copyfile(artifacts[2] / swapped, broken / swapped)
    refused(broken, f"{broken / swapped}: error: does not match the artifact's manifest")
    reseal(broken)
    refused(
        broken,
        f"{broken / 'kernels.so'}: error: the kernel library was compiled with another plan",
        "compile the artifact again",
    )


def test_library_of_another_batch_is_refused_by_the_c_runtime(broken, artifacts):
    """Without the manifest check (a C program's view), the fingerprint
    alone refuses the library before any kernel is called."""
    shutil.copyfile(artifacts[2] / "kernels.so", broken / "kernels.so")
    with pytest.raises(TconvError, match="kernel library was compiled with another plan"):
        Runtime(broken, verify=False)


def test_a_damaged_name_in_the_manifest_is_located_there(broken):
    """One flipped bit turned `params.bin` into `qarams.bin` (found by the
    artifact fuzzer): the error is at the manifest's line, not at a file
    the artifact never had."""
    manifest = broken / MANIFEST_FILE
    text = manifest.read_text()
    manifest.write_text(text.replace("file params.bin", "file qarams.bin"))
    line = next(n for n, row in enumerate(text.splitlines(), start=1) if "params.bin" in row)
    refused(broken, f"{manifest}:{line}:6: error: lists `qarams.bin`, which is missing from {broken}",
            "compile it again")


def test_artifact_without_manifest_is_refused(broken):
    (broken / MANIFEST_FILE).unlink()
    refused(broken, f"{broken}: error: the artifact has no MANIFEST", "compile it again")
    with pytest.raises(PlanError, match="compiled by an older tconv"):
        Runtime(broken)


def test_damaged_manifest(broken):
    manifest = broken / MANIFEST_FILE
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    refused(broken, f"{manifest}:")
    manifest.write_text(text.replace("file params.bin", "file params.bin 12"))
    message = refused(broken, f"{manifest}:4:1: error: expected `file <name> <bytes> <sha256>`")
    manifest.write_text(text.replace("end\n", ""))
    refused(broken, f"{manifest}: error: no `end` line (the manifest is truncated)")
    manifest.write_text("".join(line for line in text.splitlines(True) if "params.bin" not in line))
    refused(broken, f"{manifest}: error: does not list `params.bin`")
    assert message


def test_plan_errors_are_located_to_line_and_column(broken):
    """`FILE:LINE:COL: error: ...`, not `tconv: error: FILE:LINE: ...`."""
    plan = broken / "plan.txt"
    lines = plan.read_text().split("\n")
    number = next(i for i, line in enumerate(lines) if line.startswith("call ")) + 1
    lines[number - 1] = lines[number - 1].replace("call ", "call  re-lu ", 1)
    plan.write_text("\n".join(lines))
    reseal(broken)
    message = refused(broken)
    assert re.fullmatch(
        rf"{re.escape(str(plan))}:{number}:7: error: `re-lu` is not a kernel symbol .*", message
    ), message


def test_plan_with_out_of_range_offset(broken):
    plan = broken / "plan.txt"
    text = plan.read_text()
    line = next(line for line in text.splitlines() if " arena " in line and line.startswith("tensor"))
    fields = line.split()
    fields[5] = str(1 << 40)
    plan.write_text(text.replace(line, " ".join(fields)))
    reseal(broken)
    refused(broken, "lie outside the arena")
    with pytest.raises(TconvError, match=r"plan\.txt:\d+:\d+: error: tensor \d+: bytes .* lie outside"):
        Runtime(broken, verify=False)


def test_truncated_params(broken):
    params = broken / "params.bin"
    params.write_bytes(params.read_bytes()[:-4])
    refused(broken, f"{params}: error: does not match the artifact's manifest")
    reseal(broken)
    refused(broken, f"{params}: error: has ")


# ------------------------------------------------- address sanitizer


@pytest.fixture(scope="module")
def asan_program(tmp_path_factory) -> Path:
    """tests/integration/c/run_artifact.c built together with the runtime's
    sources under AddressSanitizer and UndefinedBehaviorSanitizer (skipped
    where the compiler cannot)."""
    program = tmp_path_factory.mktemp("asan") / "run_artifact"
    built = subprocess.run(
        [
            os.environ.get("CC") or "cc", "-std=c11", "-g", "-O1",
            "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer", "-pthread", "-rdynamic", "-I", str(driver.SOURCE_DIR),
            "-o", str(program), str(C_DRIVER),
            *(str(driver.SOURCE_DIR / name) for name in driver.SOURCES), *driver.LIBS, "-lm",
        ],
        capture_output=True, text=True,
    )
    if built.returncode != 0:
        pytest.skip(f"no AddressSanitizer build: {built.stderr[-300:]}")
    probe = subprocess.run([str(program)], capture_output=True, text=True)
    if "Sanitizer" in probe.stderr and "usage:" not in probe.stderr:
        pytest.skip(f"AddressSanitizer does not run here: {probe.stderr[-300:]}")
    return program


def truncate(path: Path, keep: float) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def out_of_range_offset(directory: Path) -> None:
    plan = directory / "plan.txt"
    plan.write_text(re.sub(r"^(tensor \d+ \S+ f32 arena) \d+", r"\1 1099511627776", plan.read_text(),
                           count=1, flags=re.M))


DAMAGE = {
    "truncated plan": lambda d, other: truncate(d / "plan.txt", 0.6),
    "swapped library": lambda d, other: shutil.copyfile(other / "kernels.so", d / "kernels.so"),
    "swapped plan": lambda d, other: shutil.copyfile(other / "plan.txt", d / "plan.txt"),
    "truncated params": lambda d, other: truncate(d / "params.bin", 0.5),
    "out-of-range offset": lambda d, other: out_of_range_offset(d),
    "truncated library": lambda d, other: truncate(d / "kernels.so", 0.7),
    "library header only": lambda d, other: truncate(d / "kernels.so", 0.01),
}


def test_damaged_artifacts_under_address_sanitizer(asan_program, artifacts, tmp_path):
    """The C runtime alone (no manifest check) refuses each damaged artifact
    with a located message, and the sanitizers report nothing; the intact
    one runs."""
    environment = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
                   "UBSAN_OPTIONS": "print_stacktrace=1"}

    def run(directory: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(asan_program), str(directory), "2", "2"], capture_output=True,
                              text=True, timeout=120, env=environment)

    intact = run(artifacts[1])
    assert intact.returncode == 0 and "Sanitizer" not in intact.stderr, intact.stderr[-4000:]
    for name, damage in DAMAGE.items():
        directory = Path(shutil.copytree(artifacts[1], tmp_path / name.replace(" ", "-")))
        damage(directory, artifacts[2])
        result = run(directory)
        assert "Sanitizer" not in result.stderr and "runtime error" not in result.stderr, (
            name, result.stderr[-4000:])
        assert result.returncode == 1, (name, result.stderr[-4000:])
        assert f"{directory}/" in result.stderr and ": error: " in result.stderr, (name, result.stderr)


@pytest.mark.parametrize("language", ["c", "c++"])
def test_the_fingerprint_definition_exports_the_plan_fingerprint(artifacts, tmp_path, language):
    """What a cuda library's source ends with (nvcc compiles it as C++) and a
    cpu library links (as C): the exported constant the runtimes compare."""
    import ctypes

    from tconv.kernels.artifact import fingerprint_definition
    from tconv.runtime.plan import FINGERPRINT_SYMBOL, PLAN_FILE, plan_fingerprint, read_plan

    compiler = shutil.which("c++" if language == "c++" else "cc")
    if compiler is None:
        pytest.skip(f"no {language} compiler")
    plan = read_plan(artifacts[1])
    source = tmp_path / f"fingerprint.{'cpp' if language == 'c++' else 'c'}"
    source.write_text(fingerprint_definition(plan))
    library = tmp_path / "libfingerprint.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    value = ctypes.c_uint64.in_dll(ctypes.CDLL(str(library)), FINGERPRINT_SYMBOL).value
    assert value == plan_fingerprint((artifacts[1] / PLAN_FILE).read_bytes())
