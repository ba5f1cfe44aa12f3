"""GFLOP/s of one 3×3 convolution (+ batch-norm + ReLU, as ResNet runs it)
compiled by the LLVM backend and by the TVM backend, each as an artifact run
by the C runtime on the same threads.

    python bench/llvm_conv.py [--threads 2] [--repeat 20]

Layers: ResNet-34's 3×3 convolutions (64 channels at 56², 128 at 28², 256 at
14², 512 at 7², batch 1, padding 1) and the 64-channel one with 8 groups.
Each number is the median over `--repeat` timed runs of `Runtime.execute`
(the kernels on the arena, no input copy), after two warm-up runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tconv.ir.builder import NetworkBuilder
from tconv.ir.params import init_params
from tconv.runtime.driver import Runtime

LAYERS = [(64, 56, 1), (128, 28, 1), (256, 14, 1), (512, 7, 1), (64, 56, 8)]


def layer(channels: int, size: int, groups: int):
    b = NetworkBuilder(f"conv{channels}", (1, channels, size, size))
    x = b.conv2d(b.input, channels, 3, padding=1, groups=groups, name="conv")
    return b.finish(b.relu(b.batch_norm(x, name="bn")))


def flops(channels: int, size: int, groups: int) -> int:
    return 2 * channels * (channels // groups) * 9 * size * size


def seconds(directory: Path, threads: int, repeat: int) -> float:
    with Runtime(directory, threads) as runtime:
        runtime.arena_inputs()[0][...] = np.random.default_rng(0).standard_normal(runtime.inputs[0].shape)
        for _ in range(2):
            runtime.execute()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            runtime.execute()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--backends", default="llvm,tvm")
    args = parser.parse_args()
    backends = args.backends.split(",")
    print(f"{'layer':>22} " + " ".join(f"{b + ' GFLOP/s':>14}" for b in backends))
    for channels, size, groups in LAYERS:
        module = layer(channels, size, groups)
        params = init_params(module, 0)
        row = []
        with tempfile.TemporaryDirectory() as scratch:
            for backend in backends:
                directory = Path(scratch) / backend
                if backend == "llvm":
                    from tconv.lowering.llvm.artifact import compile_artifact
                else:
                    from tconv.lowering.tvm.artifact import compile_artifact
                compile_artifact(module, params, directory)
                row.append(flops(channels, size, groups) / seconds(directory, args.threads, args.repeat) / 1e9)
        name = f"{channels}ch {size}² g{groups}"
        print(f"{name:>22} " + " ".join(f"{g:14.1f}" for g in row), flush=True)


if __name__ == "__main__":
    main()
