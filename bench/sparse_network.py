"""Pruned networks end to end: a zoo network pruned by `tconv-sparsify`,
compiled with the density threshold's kernels and with the kernels
`tconv tune` measured faster per layer, beside the dense network and ONNX
Runtime (a measurement, not a test).

    TVM_NUM_THREADS=2 .venv/bin/python bench/sparse_network.py resnet18 [--densities 0.05 0.2] [--budget 60]

For each density, every convolution keeps that share of its weights
(`tconv-sparsify{density=D}`, per output channel) and declares its
`nonzeros`. Three tconv artifacts (`--layout auto`): the dense network
(tuned), the pruned one untuned (the sparse kernel where the density is at
most `algorithm.SPARSE_DENSITY`, dense kernels elsewhere) and the pruned
one after `--budget` seconds of `tune` (each layer's sparse kernel measured
against its dense knobs, `tconv compile` running the faster). ONNX Runtime
runs the pruned network's export: it skips no zeros. All four alternate
rounds (`interleaved_medians`); the times are per run, the ratios over the
dense tconv artifact's (below 1: faster than dense).
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
    parser.add_argument("networks", nargs="*", default=["resnet18"])
    parser.add_argument("--densities", type=float, nargs="*", default=[0.05, 0.2])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TVM_NUM_THREADS", "2")))
    parser.add_argument("--budget", type=float, default=60.0, help="tuning seconds per network")
    parser.add_argument("--repeat", type=int, default=10, help="runs per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    from xdsl.context import Context

    from tconv.compile import activation_block, compile_network
    from tconv.frontends.zoo import build
    from tconv.ir.ops import Conv2dOp
    from tconv.ir.params import init_params
    from tconv.passes.nas.store import ParamStore, using_store
    from tconv.passes.sparse.sparsify import SparsifyPass
    from tconv.runtime.driver import Runtime
    from tconv.search.timing import OrtRunner, interleaved_medians
    from tconv.search.tuning import CpuSchedules, TuningDatabase, tune

    scratch = Path(tempfile.mkdtemp(prefix="tconv-bench-"))
    database = TuningDatabase(scratch / "tuning.jsonl")
    print(f"{'network':22} {'dense ms':>8} {'pruned ms':>9} {'tuned ms':>8} {'ORT ms':>7} {'pruned/dense':>12} "
          f"{'tuned/dense':>11} {'sparse layers':>13}")
    for name in args.networks:
        dense = build(name)
        dense_params = init_params(dense)
        x = np.random.default_rng(0).standard_normal(module_input_shape(dense), dtype=np.float32)
        schedules = CpuSchedules(args.threads, activation_block(dense))
        tune(dense, database, args.budget, args.threads, progress=None, schedules=schedules)
        compile_network(dense, dense_params, scratch / f"{name}-dense", database=database, threads=args.threads)
        for density in args.densities:
            module = dense.clone()
            store = ParamStore(arrays=dict(dense_params))
            with using_store(store):
                SparsifyPass(density=density).apply(Context(), module)
            params = store.arrays
            label = f"{name}-{density:g}"
            compile_network(module, params, scratch / f"{label}-untuned", threads=args.threads)
            tune(module, database, args.budget, args.threads, progress=None, schedules=schedules)
            compile_network(module, params, scratch / f"{label}-tuned", database=database, threads=args.threads)
            runtimes = [Runtime(scratch / directory, threads=args.threads)
                        for directory in (f"{name}-dense", f"{label}-untuned", f"{label}-tuned")]
            ort = OrtRunner(module, params, x, args.threads)
            seconds = interleaved_medians([*(lambda r=r: r.run(x) for r in runtimes), ort], args.rounds, args.repeat)
            for runtime in runtimes:
                runtime.close()
            sparse_layers = sum(1 for line in (scratch / f"{label}-tuned" / "plan.txt").read_text().splitlines()
                                if "sparse_conv2d" in line and line.startswith("call"))
            convs = sum(1 for op in module.walk() if isinstance(op, Conv2dOp))
            print(f"{name + f' at {density:.0%}':22} {seconds[0] * 1e3:8.2f} {seconds[1] * 1e3:9.2f} "
                  f"{seconds[2] * 1e3:8.2f} {seconds[3] * 1e3:7.2f} {seconds[1] / seconds[0]:12.2f} "
                  f"{seconds[2] / seconds[0]:11.2f} {f'{sparse_layers}/{convs}':>13}", flush=True)


if __name__ == "__main__":
    main()
