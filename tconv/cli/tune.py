"""`tconv tune`: search each convolution's schedule knobs by measurement.

    tconv tune net.mlir --budget 120            # measures, keeps results in the tuning database
    tconv compile net.mlir -o net.art           # applies the best schedules found
    tconv tune net.mlir --target cuda           # the CUDA kernels' thread tiles, on this machine's GPU
    tconv compile net.mlir --target cuda --arch sm_90 -o net-gpu.art

Results go to the tuning database (`--db`, default `$TCONV_TUNING_DB` or
`~/.cache/tconv/tuning.jsonl`), keyed by workload and target; a second run
resumes where the first stopped. See `tconv.search.tuning` and, for cuda
(which needs nvcc, torch with CUDA and a GPU), `tconv.search.cuda_tuning`.
"""

from __future__ import annotations

import argparse
import os

from tconv.cli.command import Command, positive_int
from tconv.ir.loader import TconvError, load_module, module_text, write_text_atomic


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
        "--write", metavar="OUT.mlir", help="also write the IR with the best schedules applied"
    )


def execute(args: argparse.Namespace) -> None:
    if not args.budget > 0:
        raise TconvError(f"error: --budget must be positive, got {args.budget}")
    if args.threads:
        os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM starts its thread pool
    module = load_module(args.file)
    # Imported on use: TVM loads only when something is measured.
    from tconv.search.tuning import (
        CpuSchedules,
        TuningDatabase,
        apply_tuning,
        default_database_path,
        default_threads,
        format_reports,
        tune,
    )

    database = TuningDatabase(args.db or default_database_path())
    if args.target == "cuda":
        from tconv.search.cuda_tuning import TvmCudaMeasurer

        with TvmCudaMeasurer(args.device) as measurer:
            schedules = measurer.schedules
            reports = tune(module, database, args.budget, None, measure_fn=measurer.measure, schedules=schedules)
    else:
        schedules = CpuSchedules(default_threads())
        reports = tune(module, database, args.budget, None, schedules=schedules)
    if not reports:
        depthwise = " (on cuda, depthwise ones have no knobs)" if args.target == "cuda" else ""
        print(f"nothing to tune: no convolution without a schedule of its own{depthwise}")
        return
    print(format_reports(reports), end="")
    print(f"database: {database.path} ({schedules.target})")
    if args.write:
        applied = apply_tuning(module, database, None, schedules)
        write_text_atomic(args.write, module_text(module))
        print(f"wrote {args.write} ({applied} convolutions scheduled)")


TUNE = Command(
    name="tune",
    help="tune each convolution's schedule by measurement (kept in a tuning database)",
    configure=configure,
    execute=execute,
)
