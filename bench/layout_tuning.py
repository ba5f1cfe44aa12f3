"""Tuning in channel blocks against tuning in NCHW and no tuning: zoo
networks compiled three ways, beside ONNX Runtime (a measurement, not a
test).

    TVM_NUM_THREADS=2 .venv/bin/python bench/layout_tuning.py mobilenet_v2 resnet18 [--budget 120] [--db PATH] \
        [--batch 8]

For each network, `tune` spends `--budget` seconds in each layout (NCHW
kernels as `tconv tune --layout nchw`, channel blocks as `--layout auto`)
into one database (`--db`, default a new one in a temporary directory; a
database with records resumes them). The network is then compiled three
ways: untuned in channel blocks (`tconv compile --no-tuning`), with the
NCHW knobs (`--layout nchw`) and with the knobs for blocks (`--layout
auto`, the default); the three artifacts and ONNX Runtime run in
alternating rounds (`interleaved_medians`), their outputs compared. The
ratios are each artifact's time over ONNX Runtime's: below 1, tconv is
faster. `--batch B` re-batches each network first (`tconv-set-batch`): its
workloads, and so its records, are the batch's own (tuned per batch).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from tvm_network import module_input_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*", default=["mobilenet_v2", "resnet18"])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TVM_NUM_THREADS", "2")))
    parser.add_argument("--budget", type=float, default=120.0, help="tuning seconds per network and layout")
    parser.add_argument("--db", help="the tuning database (default: a new one)")
    parser.add_argument("--repeat", type=int, default=10, help="runs per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=None, help="re-batch the networks (default: the zoo's, 1)")
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    from tconv.compile import activation_block, compile_network, rebatched
    from tconv.frontends.zoo import build
    from tconv.ir.params import init_params
    from tconv.runtime.driver import Runtime
    from tconv.search.timing import OrtRunner, interleaved_medians
    from tconv.search.tuning import CpuSchedules, TuningDatabase, tune

    scratch = Path(tempfile.mkdtemp(prefix="tconv-bench-"))
    database = TuningDatabase(args.db or scratch / "tuning.jsonl")
    print(f"{'network':14} {'untuned ms':>10} {'NCHW-tuned ms':>13} {'block-tuned ms':>14} {'ORT ms':>7} "
          f"{'ratios to ORT':>20} {'rel diff':>8}")
    for name in args.networks:
        module = build(name)
        if args.batch is not None:
            module = rebatched(module, args.batch)
        params = init_params(module)
        x = np.random.default_rng(0).standard_normal(module_input_shape(module), dtype=np.float32)
        for layout in ("nchw", "auto"):
            tune(module, database, args.budget, args.threads, progress=None,
                 schedules=CpuSchedules(args.threads, activation_block(module, layout)))
        runtimes = []
        for label, options in (("untuned", dict(layout="auto")), ("nchw", dict(layout="nchw", database=database)),
                               ("blocks", dict(layout="auto", database=database))):
            compile_network(module, params, scratch / f"{name}-{label}", threads=args.threads, **options)
            runtimes.append(Runtime(scratch / f"{name}-{label}", threads=args.threads))
        ort = OrtRunner(module, params, x, args.threads)
        outputs = [runtime.run(x)[0] for runtime in runtimes]
        seconds = interleaved_medians([*(lambda r=r: r.run(x) for r in runtimes), ort], args.rounds, args.repeat)
        for runtime in runtimes:
            runtime.close()
        diff = max(np.linalg.norm(out - ort.output) / np.linalg.norm(ort.output) for out in outputs)
        ratios = " ".join(f"{s / seconds[-1]:.2f}" for s in seconds[:-1])
        print(f"{name:14} {seconds[0] * 1e3:10.2f} {seconds[1] * 1e3:13.2f} {seconds[2] * 1e3:14.2f} "
              f"{seconds[3] * 1e3:7.2f} {ratios:>20} {diff:8.1e}", flush=True)


if __name__ == "__main__":
    main()
