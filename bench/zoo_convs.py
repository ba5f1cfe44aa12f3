"""Every distinct convolution of the zoo networks, tconv's default kernel
beside ONNX Runtime's, slowest ratio first (a measurement, not a test).

    TVM_NUM_THREADS=2 .venv/bin/python bench/zoo_convs.py [densenet_bc100 wrn40_2 ...] [--threads 2]

Finds the layers where the backend's own choice (no tuning database: the
algorithm and blocking `tconv.kernels.algorithm` gives) falls behind: each
workload is a one-convolution network compiled for this CPU (activations
NCHW, as `bench/tvm_conv.py` compiles them) and its kernel called
directly, timed in alternating rounds with the same Conv in ONNX Runtime
(`interleaved_medians`). "share" is the layer's time times its count in
the networks that have it, over the sum for all rows: where fixing a row
pays most.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

import numpy as np


def zoo_workloads(names):
    """{workload: count} over the networks `names` (each on its first data set)."""
    from tconv.frontends.zoo import build, datasets
    from tconv.ir.ops import Conv2dOp
    from tconv.search.tuning import workload_of

    counts: Counter = Counter()
    origin: dict = {}
    for name in names:
        module = build(name, datasets(name)[0])
        for op in module.walk():
            if isinstance(op, Conv2dOp):
                workload = workload_of(op)
                counts[workload] += 1
                origin.setdefault(workload, name)
    return counts, origin


def one_conv(workload):
    from tconv.ir.builder import NetworkBuilder

    b = NetworkBuilder("conv", workload.input)
    x = b.conv2d(
        b.input, workload.out_channels, workload.kernel, stride=workload.strides, padding=workload.padding,
        dilation=workload.dilations, groups=workload.groups, name="conv",
    )
    return b.finish(x)


def runners(workload, threads):
    from tconv.ir.params import init_params
    from tconv.lowering.tvm.build import TvmNetwork
    from tconv.search.timing import OrtRunner

    module = one_conv(workload)
    params = init_params(module)
    network = TvmNetwork(module)
    network.load_params(params)
    x = np.random.default_rng(0).standard_normal(workload.input).astype(np.float32)
    network.run(x)
    (call,) = network.program.calls
    kernel = network.kernels[call.symbol]
    args = [network.tensors[i] for i in call.args]
    return (lambda: kernel(*args)), OrtRunner(module, params, x, threads)


def flops(workload) -> int:
    n = workload.input[0]
    kh, kw = workload.kernel
    return 2 * n * workload.out_channels * workload.in_group * kh * kw * workload.out_height * workload.out_width


def main() -> None:
    from tconv.frontends.zoo import network_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*", help="zoo networks (default: all)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TVM_NUM_THREADS", "2")))
    parser.add_argument("--repeat", type=int, default=10, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    from tconv.kernels import algorithm
    from tconv.kernels.target import host_vector_unit
    from tconv.search.timing import interleaved_medians

    unit = host_vector_unit()
    counts, origin = zoo_workloads(args.networks or network_names())
    rows = []
    for index, (workload, count) in enumerate(counts.items()):
        tconv_kernel, ort = runners(workload, args.threads)
        tconv_s, ort_s = interleaved_medians([tconv_kernel, ort], args.rounds, args.repeat)
        chosen = algorithm.default_algorithm(workload, unit)
        if chosen != algorithm.WINOGRAD:
            chosen += f" {algorithm.default_blocking(workload, unit)}"
        rows.append((ort_s / tconv_s, workload, count, tconv_s, ort_s, chosen))
        print(f"  {index + 1}/{len(counts)} {workload.key}: {ort_s / tconv_s:.2f}", flush=True)
    total = sum(count * tconv_s for _, _, count, tconv_s, _, _ in rows)
    print("\n| convolution | network | count | tconv GFLOP/s | ORT GFLOP/s | tconv vs ORT | share | default |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for ratio, workload, count, tconv_s, ort_s, chosen in sorted(rows, key=lambda row: row[0]):
        work = flops(workload)
        print(
            f"| {workload.key} | {origin[workload]} | {count} | {work / tconv_s / 1e9:.1f} | "
            f"{work / ort_s / 1e9:.1f} | {ratio:.2f} | {100 * count * tconv_s / total:.1f}% | {chosen} |"
        )


if __name__ == "__main__":
    main()
