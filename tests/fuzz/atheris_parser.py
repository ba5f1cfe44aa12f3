"""Coverage-guided fuzzing of the IR parser and verifier with atheris.

    make fuzz-parser                       # 100,000 runs
    make fuzz-parser FUZZ_PARSER_RUNS=-1   # until stopped (Ctrl-C)

Inputs start from the dialect's filecheck texts (tests/filecheck/dialect/*.mlir,
split at `// -----`) and are mutated by libFuzzer, guided by the coverage of
tconv's and xDSL's Python code. Every input must parse and verify or fail as a
diagnostic (`TconvError`); anything else is a bug: atheris stops and writes
the input as crash-*. Not part of `make test`: the hypothesis fuzz tests in
tests/property/ are the tests; this is the long, guided search for what they
miss.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["tconv", "xdsl"]):
    from tconv.errors import TconvError
    from tconv.ir.loader import decode_text, parse_module, verify_module

SEEDS = Path(__file__).parents[1] / "filecheck" / "dialect"


def check(data: bytes) -> None:
    """Parse and verify `data` as IR; a located diagnostic is a pass."""
    try:
        verify_module(parse_module(decode_text(data, "fuzz.mlir"), "fuzz.mlir"))
    except TconvError:
        pass


def seed_corpus(directory: Path) -> None:
    """The dialect's filecheck inputs, one file per `// -----` chunk."""
    for path in sorted(SEEDS.glob("*.mlir")):
        chunks = path.read_text().split("// -----")
        for index, chunk in enumerate(chunks):
            text = "\n".join(line for line in chunk.splitlines() if not line.lstrip().startswith("// "))
            (directory / f"{path.stem}-{index}.mlir").write_text(text)


def main() -> None:
    corpus = Path(tempfile.mkdtemp(prefix="tconv-parser-corpus-"))
    seed_corpus(corpus)
    atheris.Setup([*sys.argv, str(corpus)], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
