"""Compile the GPU check's cuda artifacts on this (CPU) machine, with nvcc.

    .venv/bin/python bench/gpu/prepare.py [--arch sm_90] [--out bench/gpu/build]

Each case gets `<out>/<case>/` holding the artifact. Parameter files are
left out (ResNet-34's 85 MB would not fit what travels to the GPU machine):
the case's `program.pkl` (the call list, no TVM in it) lets `run.py` write
the same parameter file there from the same seeded parameters.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

from cases import CASES, SEED, directory_name

from tconv.ir.params import init_params
from tconv.lowering.tvm.artifact import PARAMS_FILE, compile_artifact
from tconv.lowering.tvm.build import lower_kernels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--out", default=str(Path(__file__).parent / "build"))
    args = parser.parse_args()
    for case in CASES:
        start = time.perf_counter()
        module = case.build()
        target = Path(args.out) / directory_name(case)
        report = compile_artifact(module, init_params(module, seed=SEED), target, "cuda", args.arch)
        _, program = lower_kernels(module, "cuda", args.arch)
        (target / "program.pkl").write_bytes(pickle.dumps(program))
        (target / PARAMS_FILE).unlink()
        print(f"{case.name:24s} {report.calls:3d} calls  {time.perf_counter() - start:5.1f} s  -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
