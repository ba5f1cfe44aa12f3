"""`tconv tune`: search each convolution's schedule knobs by measurement.

    tconv tune net.mlir --budget 120            # measures, keeps results in the tuning database
    tconv compile net.mlir -o net.art           # applies the best schedules found
    tconv tune net.mlir --target cuda           # the CUDA kernels' thread tiles, on this machine's GPU
    tconv compile net.mlir --target cuda --arch sm_90 -o net-gpu.art

    tconv tune net.mlir --target cuda --prepare --arch sm_90 --kernels k/   # no GPU: the candidates' sources
    tconv tune net.mlir --target cuda --kernels k/                          # on a GPU machine without TVM

Results go to the tuning database (`--db`, default `$TCONV_TUNING_DB` or
`~/.cache/tconv/tuning.jsonl`), keyed by workload and target; a second run
resumes where the first stopped. See `tconv.search.tuning` and, for cuda
(which needs nvcc, torch with CUDA and a GPU), `tconv.search.cuda_tuning`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from tconv.cli.command import Command, UsageError, positive_int
from tconv.compile import LAYOUTS
from tconv.ir.loader import load_module, module_text, write_text_atomic


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="tconv IR file")
    parser.add_argument("--target", default="cpu", choices=("cpu", "cuda"), help="where to measure (default: cpu)")
    parser.add_argument(
        "--budget", type=float, default=60.0, metavar="SECONDS", help="measuring time to spend (default: 60)"
    )
    parser.add_argument("--db", metavar="PATH", help="the tuning database (default: the cache's tuning.jsonl)")
    parser.add_argument(
        "--threads", type=positive_int, metavar="T", help="threads to tune for (default: the CPUs available)"
    )
    parser.add_argument(
        "--device", type=int, default=0, metavar="N", help="cuda only: the GPU to measure on (default: 0)"
    )
    parser.add_argument(
        "--arch", metavar="SM", help="cuda only: the architecture to compile for (default: the GPU's, or --kernels')"
    )
    parser.add_argument(
        "--kernels", metavar="DIR",
        help="cuda only: keep the candidates' kernels in DIR and measure those already there (see --prepare)",
    )
    parser.add_argument(
        "--prepare", action="store_true",
        help="cuda only: write every candidate's kernel source into --kernels DIR for --arch and measure nothing "
        "(needs TVM, not a GPU; a GPU machine with nvcc then tunes with --kernels DIR, without TVM)",
    )
    parser.add_argument(
        "--layout", default="auto", choices=LAYOUTS,
        help="cpu: the activation layouts to measure in, as `tconv compile --layout` will store them: auto "
        "(default) measures convolutions that can be packed in channel blocks of one vector (and Winograd in "
        "NCHW), nchw measures NCHW kernels only",
    )
    parser.add_argument(
        "--write", metavar="OUT.mlir",
        help="also write the IR with the best schedules applied (and, with --layout auto, the layouts)",
    )


def execute(args: argparse.Namespace) -> None:
    if not args.budget > 0:
        raise UsageError(f"--budget must be positive, got {args.budget}")
    if args.target != "cuda" and (args.arch or args.kernels or args.prepare):
        raise UsageError("--arch, --kernels and --prepare are for --target cuda")
    if args.arch and not re.fullmatch(r"sm_[0-9]+[a-z]?", args.arch):
        raise UsageError(f"--arch: expected a CUDA architecture like sm_90, got '{args.arch}'")
    if args.prepare and not (args.kernels and args.arch):
        raise UsageError("--prepare writes into --kernels DIR for --arch SM: give both")
    if args.threads:
        os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM starts its thread pool
    module = load_module(args.file)
    # Imported on use: TVM loads only when something is measured.
    from tconv.compile import activation_block, schedule_network
    from tconv.search.tuning import (
        CpuSchedules,
        TuningDatabase,
        apply_tuning,
        default_database_path,
        default_threads,
        format_reports,
        tunable_workloads,
        tune,
    )

    if args.prepare:
        prepare(module, args.kernels, args.arch, args.file)
        return
    database = TuningDatabase(args.db or default_database_path())
    if args.target == "cuda":
        from tconv.search.cuda_tuning import TvmCudaMeasurer

        with TvmCudaMeasurer(args.device, args.arch, args.kernels) as measurer:
            schedules = measurer.schedules
            if args.kernels:
                workloads = tunable_workloads(module, schedules)
                built = measurer.store.build_prepared(workloads, len(os.sched_getaffinity(0)))
                if built:
                    print(f"compiled {built} prepared kernel(s) in {args.kernels}", file=sys.stderr)
            reports = tune(module, database, args.budget, None, measure_fn=measurer.measure, schedules=schedules)
    else:
        schedules = CpuSchedules(default_threads(), activation_block(module, args.layout))
        reports = tune(module, database, args.budget, None, schedules=schedules)
    if not reports:
        depthwise = " (on cuda, depthwise ones have no knobs)" if args.target == "cuda" else ""
        print(f"nothing to tune: no convolution without a schedule of its own{depthwise}")
        return
    print(format_reports(reports), end="")
    print(f"database: {database.path} ({schedules.target})")
    if args.write:
        if args.target == "cuda":
            applied = apply_tuning(module, database, None, schedules)
        else:
            applied, _ = schedule_network(module, database, layout=args.layout)
        write_text_atomic(args.write, module_text(module))
        print(f"wrote {args.write} ({applied} convolutions scheduled)")


TUNE = Command(
    name="tune",
    help="tune each convolution's schedule by measurement (kept in a tuning database)",
    configure=configure,
    execute=execute,
)


def prepare(module, directory: str, arch: str, file: str) -> None:
    """`--prepare`: every candidate of every tunable workload into the kernel store `directory`."""
    from tconv.search.cuda_tuning import CudaSchedules, KernelStore
    from tconv.search.tuning import tunable_workloads

    store = KernelStore(directory, arch)
    schedules = CudaSchedules(arch)
    workloads = tunable_workloads(module, schedules)
    written = sum(store.prepare(w, schedules.candidates(w), schedules) for w in workloads)
    candidates = sum(len(store.prepared[w.key]) for w in workloads)
    print(f"prepared {written} kernel(s) ({candidates} candidates of {len(workloads)} workloads) for {arch} "
          f"in {directory}")
    print(f"measure them on a GPU machine: tconv tune {file} --target cuda --kernels {directory}")
