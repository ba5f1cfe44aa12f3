"""Compile the GPU check's cuda artifacts on this (CPU) machine.

    .venv/bin/python bench/gpu/prepare.py [--arch sm_90] [--out bench/gpu/build] [--backends tvm,llvm]

Each case gets `<out>/<case>/`, the TVM backend's artifact (its CUDA host
code compiled by nvcc), and `<out>/<case>.llvm/`, the LLVM backend's (PTX
assembled by ptxas into a cubin, launched through the CUDA driver API).
Parameter files are left out (ResNet-34's 85 MB would not fit what travels
to the GPU machine): the artifact's `program.pkl` (the call list, no TVM or
llvmlite in it) lets `run.py` write the same parameter file there from the
same seeded parameters.

For `tconv tune --target cuda` there (`check.sh`), each batch-64 case's IR
goes to `<out>/tune/<case>.mlir` and every candidate thread tile of its
convolutions into the kernel store `<out>/tune/kernels` (`tconv tune
--prepare`): the GPU machine compiles and measures them without TVM.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

from cases import SEED, backend_list, cases_matching, directory_name

from tconv.cli.main import main as tconv
from tconv.ir.loader import module_text
from tconv.ir.params import init_params
from tconv.kernels.artifact import PARAMS_FILE


def compile_tvm(module, params, target: Path, arch: str):
    """The TVM backend's cuda artifact at `target`, and its call list."""
    from tconv.lowering.tvm.artifact import compile_artifact
    from tconv.lowering.tvm.build import lower_kernels

    report = compile_artifact(module, params, target, "cuda", arch)
    return report, lower_kernels(module, "cuda", arch)[1]


def compile_llvm(module, params, target: Path, arch: str):
    """The LLVM backend's cuda artifact at `target`, and its call list."""
    from tconv.lowering.llvm.artifact import CUDA_PACKING, compile_artifact
    from tconv.lowering.llvm.build import lower_program

    report = compile_artifact(module, params, target, "cuda", arch)
    return report, lower_program(module, CUDA_PACKING)[1]


COMPILERS = {"tvm": compile_tvm, "llvm": compile_llvm}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--out", default=str(Path(__file__).parent / "build"))
    parser.add_argument("--backends", default="tvm,llvm", type=backend_list,
                        help="comma-separated: tvm, llvm (default: both)")
    parser.add_argument("--only", default="", help="the cases whose names match this regular expression")
    args = parser.parse_args()
    for case in cases_matching(args.only):
        module = case.build()
        params = init_params(module, seed=SEED)
        for backend in args.backends:
            start = time.perf_counter()
            target = Path(args.out) / directory_name(case, backend)
            report, program = COMPILERS[backend](module, params, target, args.arch)
            (target / "program.pkl").write_bytes(pickle.dumps(program))
            (target / PARAMS_FILE).unlink()
            print(f"{case.name:24s} {backend:4s} {report.calls:3d} calls  "
                  f"{time.perf_counter() - start:5.1f} s  -> {target}")
        if case.batch == 64 and "tvm" in args.backends:
            tune = Path(args.out) / "tune"
            tune.mkdir(parents=True, exist_ok=True)
            ir = tune / f"{directory_name(case, 'tvm')}.mlir"
            ir.write_text(module_text(module))
            status = tconv(["tune", str(ir), "--target", "cuda", "--prepare", "--arch", args.arch,
                            "--kernels", str(tune / "kernels")])
            if status:
                return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
