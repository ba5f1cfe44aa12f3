"""`tconv compile`: compile a network and its parameters into an artifact.

    tconv compile net.mlir --backend tvm --target cpu -o net.tconv
    tconv compile net.mlir --backend llvm -o net.tconv
    tconv run net.tconv --input x.npy --output y.npy

The artifact is a directory (plan.txt, the kernel library, the parameter
blob) that `tconv run DIR` and `tconv.runtime.driver.Runtime` execute
without TVM. The parameters come from the store beside the IR (`net.npz`
for `net.mlir`); they are packed and batch-norm-folded at compile time.
Kernels are built for the shapes in the IR, batch included; `--batch N`
builds them for batch N instead (the IR file is not changed).

`--backend llvm` builds the kernels as explicit loop nests through
llvmlite (`tconv.lowering.llvm`) into the same artifact format; it takes no
tuning database (the database holds TVM measurements); a convolution's own
IR schedule is honoured or refused. With `--target cuda` (sm_80 or sm_90) its
kernels are PTX, assembled by ptxas into a cubin where ptxas is installed
(else kept as PTX, for the driver to compile on the GPU machine), and run
there through the CUDA driver API (`tconv.runtime.cuda_driver`).

`--target cuda` compiles the kernels for an NVIDIA GPU (`--arch`, default
sm_90); with the TVM backend nvcc must be installed; the machine needs no
GPU. The TVM backend applies the thread tiles `tconv tune --target cuda`
recorded for that architecture. Such an artifact runs on a GPU machine
through `tconv.runtime.cuda` (TVM's) or `tconv.runtime.cuda_driver` (LLVM's;
see bench/gpu).
"""

from __future__ import annotations

import argparse
import re

from tconv.cli.command import Command, UsageError, note, positive_int
from tconv.compile import BACKENDS, LAYOUTS, TARGETS, compile_network
from tconv.ir.loader import load_module
from tconv.ir.params import bind_params, load_store, store_path_for


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE",
        help="tconv IR file; its parameters are read from the .npz beside it (net.npz for net.mlir)",
    )
    parser.add_argument(
        "--backend", default="tvm", choices=BACKENDS,
        help="the code generator (default: tvm)",
    )
    parser.add_argument(
        "--target", default="cpu", choices=TARGETS,
        help="the device the kernels run on (default: cpu, this machine)",
    )
    parser.add_argument(
        "--arch", default="sm_90", metavar="SM",
        help="cuda only: the GPU architecture (default: sm_90, H100)",
    )
    parser.add_argument(
        "--tuning", metavar="PATH",
        help="the tuning database whose best schedules to apply, this CPU's or (cuda) the --arch's "
        "(default: the one `tconv tune` writes, where it exists)",
    )
    parser.add_argument(
        "--no-tuning", action="store_true", help="ignore the tuning database (the backend's own choices)"
    )
    parser.add_argument(
        "--batch", type=positive_int, metavar="N",
        help="compile for batch size N (default: the IR's); an artifact runs only at the batch it was compiled for",
    )
    parser.add_argument(
        "--layout", default="auto", choices=LAYOUTS,
        help="tvm on cpu: where activations are stored in channel blocks of one vector (NCHW[16]c with "
        "AVX-512) between the convolutions that gain; auto (default) decides, nchw never does. With auto the "
        "tuning database's knobs are chosen among those measured in channel blocks too (tconv tune --layout "
        "auto); a network whose convolutions carry layouts (tconv-pack) keeps its own",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="DIR",
        help="the artifact directory to write (an existing artifact there is replaced)",
    )


def execute(args: argparse.Namespace) -> None:
    if args.target == "cuda" and not re.fullmatch(r"sm_[0-9]+[a-z]?", args.arch):
        raise UsageError(f"--arch: expected a CUDA architecture like sm_90, got '{args.arch}'")
    module = load_module(args.file)
    store = store_path_for(args.file)
    params = bind_params(module, load_store(store), source=str(store))
    database = None
    if args.backend == "llvm":
        if args.tuning:
            note("--tuning applies to the tvm backend only; ignored")
        if args.target == "cuda":
            from tconv.lowering.llvm.nvptx import ptxas

            if ptxas() is None:
                note("ptxas is not installed: the artifact keeps the kernels as PTX, which the CUDA driver "
                     "compiles when it loads them")
    elif not args.no_tuning:
        from tconv.search.tuning import TuningDatabase, default_database_path

        path = args.tuning or default_database_path()
        if args.tuning or path.exists():
            database = TuningDatabase(path)
    compiled = compile_network(
        module, params, args.output, backend=args.backend, target=args.target, arch=args.arch,
        database=database, batch=args.batch, layout=args.layout,
    )
    if compiled.tuned:
        note(f"applied tuned schedules to {compiled.tuned} convolution(s) from {database.path}")
    layouts = compiled.layouts
    if layouts is not None and layouts.packed:
        note(f"{layouts.packed} convolution(s) read or write activations in channel blocks (--layout nchw: none)")
    if layouts is not None and layouts.kept_tuned:
        note(f"{layouts.kept_tuned} convolution(s) stay NCHW: their schedules set loop knobs for NCHW kernels")
    if layouts is not None and layouts.nchw_tuned:
        note(f"{layouts.nchw_tuned} convolution(s) have tuned knobs for NCHW kernels only (tconv tune --layout "
             "nchw) and run their defaults in channel blocks: `tconv tune` measures them in blocks; "
             "--layout nchw applies the NCHW knobs")
    print(compiled.report.format())


COMPILE = Command(
    name="compile",
    help="compile a network into an artifact directory that `tconv run DIR` executes",
    description="Compile a network (IR + its parameter store) with the TVM or the LLVM backend into an "
    "artifact directory: plan.txt, the kernel library and the packed parameters. "
    "`tconv run DIR` runs it with the C runtime, without TVM (a cuda artifact: with "
    "tvm_ffi and torch on a GPU machine).",
    configure=configure,
    execute=execute,
)
