"""GFLOP/s of tconv's TVM conv2d kernels beside ONNX Runtime's, single convs
at batch 1 (a measurement, not a test).

    TVM_NUM_THREADS=2 .venv/bin/python bench/tvm_conv.py [--threads 2] [--shapes NAME ...]

Each conv is a one-op tconv network compiled for this CPU; its kernel is
called directly. ONNX Runtime runs the same Conv with the same weights and
input (`tconv.search.timing.OrtRunner`: intra-op threads = --threads, output
pre-allocated and 64-byte aligned). The two are timed in alternating rounds
(`tconv.search.timing.interleaved_medians`); a ratio above 1 means tconv is faster.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

SHAPES = {
    # name: (channels, size, out_channels, kernel, stride, groups)
    "64ch 56² 3×3": (64, 56, 64, 3, 1, 1),
    "128ch 28² 3×3": (128, 28, 128, 3, 1, 1),
    "256ch 14² 3×3": (256, 14, 256, 3, 1, 1),
    "512ch 7² 3×3": (512, 7, 512, 3, 1, 1),
    "64ch 56² 3×3 g8": (64, 56, 64, 3, 1, 8),
    "64ch 56² 3×3 depthwise": (64, 56, 64, 3, 1, 64),
    "64→128 56² 3×3 s2": (64, 56, 128, 3, 2, 1),
    "64→128 56² 1×1 s2": (64, 56, 128, 1, 2, 1),
    "256→64 56² 1×1": (256, 56, 64, 1, 1, 1),
    "3→64 224² 7×7 s2": (3, 224, 64, 7, 2, 1),
    "16→96 112² 1×1": (16, 112, 96, 1, 1, 1),
    "256→256 32² 1×1": (256, 32, 256, 1, 1, 1),
    "512→512 16² 1×1": (512, 16, 512, 1, 1, 1),
    "1024→256 8² 1×1": (1024, 8, 256, 1, 1, 1),
    "320→1280 7² 1×1": (320, 7, 1280, 1, 1, 1),
    "960→160 7² 1×1": (960, 7, 160, 1, 1, 1),
    "24→144 56² 1×1": (24, 56, 144, 1, 1, 1),
    "144→24 56² 1×1": (144, 56, 24, 1, 1, 1),
    "192→32 28² 1×1": (192, 28, 32, 1, 1, 1),
    "576→96 14² 1×1": (576, 14, 96, 1, 1, 1),
    "96→576 14² 1×1": (96, 14, 576, 1, 1, 1),
    "96ch 112² 3×3 depthwise s2": (96, 112, 96, 3, 2, 96),
    "144ch 56² 3×3 depthwise": (144, 56, 144, 3, 1, 144),
}


def conv_network(channels, size, out_channels, kernel, stride, groups):
    from tconv.ir.builder import NetworkBuilder

    b = NetworkBuilder("conv", (1, channels, size, size))
    return b.finish(b.conv2d(b.input, out_channels, kernel, stride=stride, groups=groups, name="conv"))


def flops(channels, size, out_channels, kernel, stride, groups):
    out = (size + 2 * (kernel // 2) - kernel) // stride + 1
    return 2 * out_channels * (channels // groups) * kernel * kernel * out * out


def runners(shape, threads):
    """A call of the conv's TVM kernel and a run of the same Conv in ONNX
    Runtime, each a function of no arguments."""
    from tconv.search.timing import OrtRunner

    from tconv.ir.params import init_params
    from tconv.lowering.tvm.build import TvmNetwork

    module = conv_network(*shape)
    params = init_params(module)
    network = TvmNetwork(module)
    network.load_params(params)
    x = np.random.default_rng(0).standard_normal(network.program.inputs[0].shape).astype(np.float32)
    network.run(x)
    (call,) = network.program.calls
    kernel = network.kernels[call.symbol]
    args = [network.tensors[i] for i in call.args]
    return (lambda: kernel(*args)), OrtRunner(module, params, x, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TVM_NUM_THREADS", "2")))
    parser.add_argument("--repeat", type=int, default=10, help="runs per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    from tconv.search.timing import interleaved_medians

    print(f"{'conv':28} {'tconv/TVM GFLOP/s':>18} {'ORT GFLOP/s':>12} {'ratio':>6}")
    for name in args.shapes:
        shape = SHAPES[name]
        work = flops(*shape)
        tvm_kernel, ort = runners(shape, args.threads)
        tvm_s, ort_s = interleaved_medians([tvm_kernel, ort], args.rounds, args.repeat)
        print(f"{name:28} {work / tvm_s / 1e9:18.1f} {work / ort_s / 1e9:12.1f} {ort_s / tvm_s:6.2f}", flush=True)


if __name__ == "__main__":
    main()
