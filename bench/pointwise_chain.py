"""1×1 convolutions as they run inside a network: a chain of them, beside
ONNX Runtime on the same chain (a measurement, not a test).

    TVM_NUM_THREADS=2 .venv/bin/python bench/pointwise_chain.py [--threads 2] [--layout auto] [--tune SECONDS]
        [--shapes NAME ...]

A single convolution measures its layout conversions as much as its
kernel: ONNX Runtime reorders NCHW to its channel blocks and back around
one Conv, and tconv's NCHW kernels read an input another core has just
written differently from one they wrote themselves. So each case is a
chain of `--depth` 1×1 convolutions with ReLU, alternately C → C' and
C' → C, at one spatial size: tconv compiles it as `tconv compile` does
(`--layout`, default auto: channel blocks between the convolutions), ONNX
Runtime runs its export (its NCHWc kernels between the ends); both are
timed in alternating rounds (`interleaved_medians`) and the chain's time
is divided among its convolutions. `--tune SECONDS`: each chain's two
workloads are also tuned that long in the layout `--layout` gives them
(a new database in a temporary directory), and the chain compiled with
the knobs found runs beside the untuned one. The ratio is ONNX Runtime's time over tconv's: above 1, tconv is
faster.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

SHAPES = {
    # name: (channels, other channels, size): the zoo's 1×1 layers
    "MobileNetV2 24↔144 56²": (24, 144, 56),
    "MobileNetV2 32↔192 28²": (32, 192, 28),
    "MobileNetV2 64↔384 14²": (64, 384, 14),
    "MobileNetV2 96↔576 14²": (96, 576, 14),
    "MobileNetV2 160↔960 7²": (160, 960, 7),
    "ResNet-50 64↔256 56²": (64, 256, 56),
    "ResNet-50 128↔512 28²": (128, 512, 28),
    "ResNet-50 256↔1024 14²": (256, 1024, 14),
    "ResNet-50 512↔2048 7²": (512, 2048, 7),
    "256↔256 14²": (256, 256, 14),
}


def chain(channels: int, other: int, size: int, depth: int):
    from tconv.ir.builder import NetworkBuilder

    b = NetworkBuilder("chain", (1, channels, size, size))
    x = b.input
    for index in range(depth):
        x = b.relu(b.conv2d(x, other if index % 2 == 0 else channels, 1, bias=True, name=f"conv{index}"))
    return b.finish(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TVM_NUM_THREADS", "2")))
    parser.add_argument("--layout", choices=("auto", "nchw"), default="auto")
    parser.add_argument("--depth", type=int, default=8, help="convolutions in a chain (even)")
    parser.add_argument("--repeat", type=int, default=10, help="runs per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--tune", type=float, default=0.0, metavar="SECONDS", help="tune each chain first")
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    from tconv.compile import activation_block, compile_network
    from tconv.ir.params import init_params
    from tconv.runtime.driver import Runtime
    from tconv.search.timing import OrtRunner, interleaved_medians
    from tconv.search.tuning import CpuSchedules, TuningDatabase, tune

    tuned = args.tune > 0
    print(f"{'1×1 chain':26} {'tconv GFLOP/s':>13} {'tuned GFLOP/s' if tuned else '':>13} {'ORT GFLOP/s':>11} "
          f"{'ratio':>6} {'tuned ratio' if tuned else '':>11} {'rel diff':>8}")
    for name in args.shapes:
        channels, other, size = SHAPES[name]
        module = chain(channels, other, size, args.depth)
        params = init_params(module)
        x = np.random.default_rng(0).standard_normal((1, channels, size, size)).astype(np.float32)
        with tempfile.TemporaryDirectory(prefix="tconv-bench-") as scratch:
            compile_network(module, params, f"{scratch}/net", layout=args.layout, threads=args.threads)
            directories = [f"{scratch}/net"]
            if tuned:
                database = TuningDatabase(f"{scratch}/tuning.jsonl")
                schedules = CpuSchedules(args.threads, activation_block(module, args.layout))
                tune(module, database, args.tune, args.threads, progress=None, schedules=schedules)
                compile_network(module, params, f"{scratch}/tuned", layout=args.layout, database=database,
                                threads=args.threads)
                directories.append(f"{scratch}/tuned")
            runtimes = [Runtime(directory, threads=args.threads) for directory in directories]
            outputs = [runtime.run(x)[0] for runtime in runtimes]
            ort = OrtRunner(module, params, x, args.threads)
            *tconv_s, ort_s = interleaved_medians(
                [*(lambda r=r: r.run(x) for r in runtimes), ort], args.rounds, args.repeat
            )
            for runtime in runtimes:
                runtime.close()
        work = args.depth * 2 * channels * other * size * size
        diff = max(np.linalg.norm(out - ort.output) / np.linalg.norm(ort.output) for out in outputs)
        gflops = [f"{work / s / 1e9:13.1f}" for s in tconv_s] + [f"{'':>13}"] * (2 - len(tconv_s))
        ratios = [f"{ort_s / s:6.2f}" for s in tconv_s[:1]] + [f"{ort_s / s:11.2f}" for s in tconv_s[1:]]
        print(f"{name:26} {gflops[0]} {gflops[1]} {work / ort_s / 1e9:11.1f} {' '.join(ratios)} {diff:8.1e}",
              flush=True)


if __name__ == "__main__":
    main()
