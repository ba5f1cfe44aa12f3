"""End-to-end latency of zoo networks compiled by tconv's TVM lowering,
beside ONNX Runtime on the same network and weights, batch 1 (a
measurement, not a test).

    TVM_NUM_THREADS=2 .venv/bin/python bench/tvm_network.py resnet34 [mobilenet_v2 ...] [--threads 2] [--batch 8]

tconv runs twice: as a compiled artifact on the C runtime (`tconv compile`
then `Runtime.run`: what a deployment runs, input and output copies
included; `--layout` as `tconv compile`'s, default auto), and through
`TvmNetwork` (the kernels called one by one from Python through the TVM
runtime, as `run_tvm` does, activations NCHW). ONNX Runtime runs the
ONNX export of the same IR and parameter values (`tconv export`; batch-norm
kept as BatchNormalization, which ORT folds), with intra-op threads =
--threads and its output pre-allocated and 64-byte aligned. All three are
timed in alternating rounds (see `interleaved_medians`) and their outputs
compared. `--profile` lists
the time of each tconv kernel call.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from tconv.search.timing import OrtRunner, interleaved_medians


def module_input_shape(module):
    from tconv.ir.ops import shape_of
    from tconv.semantics.reference import single_function

    return shape_of(single_function(module).body.block.args[0])


def profile(network, repeat):
    """Median time of each call, run alone, slowest first; after a pause and
    a few runs of the whole network, so that the first call does not pay for
    ONNX Runtime's idle threads, still spinning from the rounds before (it
    once showed 1.4 ms for a 0.012 ms kernel)."""
    import time

    import tvm

    time.sleep(0.5)
    for _ in range(3):
        network.execute()
    rows = []
    for index, call in enumerate(network.program.calls):
        timer = network.runtime.time_evaluator(call.symbol, tvm.cpu(), number=5, repeat=repeat)
        seconds = timer(*(network.tensors[i] for i in call.args)).median
        shape = network.program.tensors[call.writes].shape
        rows.append((seconds, index, call.symbol, "+".join(call.ops), shape))
    total = sum(r[0] for r in rows)
    for seconds, index, symbol, ops_, shape in sorted(rows, reverse=True):
        print(f"  {seconds * 1e3:8.3f} ms {100 * seconds / total:5.1f}%  #{index:<3} {symbol:28} {ops_:32} {shape}")
    print(f"  {total * 1e3:8.3f} ms in all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*", default=["resnet34"])
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TVM_NUM_THREADS", "2")))
    parser.add_argument("--repeat", type=int, default=10, help="runs per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--layout", choices=("auto", "nchw"), default="auto")
    parser.add_argument("--batch", type=int, default=None, help="re-batch the networks (default: the zoo's, 1)")
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))

    import tempfile

    from tconv.compile import compile_network, rebatched
    from tconv.frontends.zoo import build, datasets
    from tconv.ir.params import init_params
    from tconv.lowering.tvm.build import TvmNetwork
    from tconv.runtime.driver import Runtime

    print(f"{'network':24} {'artifact ms':>11} {'TVM py ms':>9} {'ORT ms':>8} {'artifact/ORT':>12} "
          f"{'arena bytes':>11} {'activations':>11} {'rel diff':>8}")
    for name in args.networks:
        dataset = args.dataset if args.dataset in datasets(name) else None
        module = build(name, dataset)
        if args.batch is not None:
            module = rebatched(module, args.batch)
        params = init_params(module)
        # Random batch-norm statistics, so that folding them is exercised.
        rng = np.random.default_rng(0)
        for key, value in params.items():
            if key.endswith("running_var"):
                params[key] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
            elif key.endswith("running_mean"):
                params[key] = (0.1 * rng.standard_normal(value.shape)).astype(np.float32)
        x = rng.standard_normal(module_input_shape(module)).astype(np.float32)
        network = TvmNetwork(module)
        network.load_params(params)
        (tconv_out,) = network.run(x)
        scratch = tempfile.TemporaryDirectory(prefix="tconv-bench-")
        report = compile_network(module, params, f"{scratch.name}/net", layout=args.layout).report
        runtime = Runtime(report.directory, threads=args.threads)
        (artifact_out,) = runtime.run(x)
        ort = OrtRunner(module, params, x, args.threads)
        artifact_s, tconv_s, ort_s = interleaved_medians(
            [lambda: runtime.run(x), network.execute, ort], args.rounds, args.repeat
        )
        runtime.close()
        scratch.cleanup()
        ort_out = ort.output
        diff = max(np.linalg.norm(out - ort_out) / np.linalg.norm(ort_out) for out in (tconv_out, artifact_out))
        label = f"{name} ({dataset or datasets(name)[0]})"
        print(f"{label:24} {artifact_s * 1e3:11.2f} {tconv_s * 1e3:9.2f} {ort_s * 1e3:8.2f} "
              f"{artifact_s / ort_s:12.2f} {report.arena_bytes:11,} {report.activation_bytes:11,} {diff:8.1e}",
              flush=True)
        if args.profile:
            profile(network, 5)


if __name__ == "__main__":
    main()
