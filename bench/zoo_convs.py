"""Every distinct convolution of the zoo networks, tconv's default kernel
beside ONNX Runtime's, slowest ratio first (a measurement, not a test).

    TVM_NUM_THREADS=2 .venv/bin/python bench/zoo_convs.py [densenet_bc100 wrn40_2 ...] [--threads 2]

Finds the layers where the backend's own choice (no tuning database: the
algorithm and blocking `tconv.kernels.algorithm` gives) falls behind. Each
workload runs as `tconv compile` runs it (`--layout auto`; `--layout nchw`
for NCHW kernels throughout): a convolution whose default is the direct
template, or depthwise, in channel blocks of one vector where
`tuning.tuned_layouts` packs it (its default knobs between the depthwise
1×1 convolutions that write its input in blocks and read its output,
`tuning.conv_network`, those two not timed), the others (Winograd, GSPC)
NCHW. Its kernels (three for Winograd) are called directly and timed in
alternating rounds with the same Conv in ONNX Runtime
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
    """How often each convolution workload occurs in the networks `names`
    (each on its first data set), and the first network that has it."""
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


def compiled_knobs(workload, layout: bool):
    """The knobs `tconv compile` runs `workload` by without a tuning
    database (`compile.unpacked_algorithm` decides which run NCHW; a 1×1
    on a small image runs unscheduled, the pointwise kernel), and a word
    for them."""
    from tconv.compile import unpacked_algorithm
    from tconv.ir.schedule import DIRECT
    from tconv.search import tuning

    unit = tuning.cpu_unit()
    unpacked = unpacked_algorithm(workload, workload.nonzeros, unit)
    if unpacked in tuning.FIXED_KNOBS:
        return tuning.FIXED_KNOBS[unpacked], unpacked
    candidates = tuning.candidates(workload, unit.lanes if layout and unpacked is None else 0)
    # Where the backend's own choice is a kernel no schedule asks for (a 1×1
    # tiling the flattened positions), the candidates list it as
    # unscheduled: that is what the compiled network runs.
    unscheduled = [k for k in candidates if k.algorithm == tuning.UNSCHEDULED_ALGORITHM]
    knobs = (unscheduled or candidates)[0]
    return knobs, ("direct " if knobs.algorithm == DIRECT else "") + knobs.describe()


def runners(workload, knobs, threads):
    """The workload's kernels with `knobs`, and the same Conv alone in ONNX
    Runtime. Both first run the measurement network (with the packing
    convolutions where `knobs` has a layout) and their outputs are compared;
    ONNX Runtime is then timed on a network of the one Conv, as tconv's
    timed calls leave the packing convolutions out (timed with them, ONNX
    Runtime's depthwise layers had looked 4-6x slower than in its own
    networks)."""
    from tconv.lowering.tvm.build import TvmNetwork
    from tconv.search import tuning
    from tconv.search.timing import OrtRunner

    module = tuning.conv_network(workload, knobs)
    params = tuning.measurement_params(module)
    network = TvmNetwork(module)
    network.load_params(params)
    x = np.random.default_rng(0).standard_normal(workload.input).astype(np.float32)
    (out,) = network.run(x)
    calls = [
        (network.kernels[call.symbol], [network.tensors[i] for i in call.args])
        for call in tuning.measured_calls(network.program.calls, knobs, workload)
    ]

    def run() -> None:
        for kernel, args in calls:
            kernel(*args)

    check = OrtRunner(module, params, x, threads)
    check()
    error = np.linalg.norm(out - check.output) / np.linalg.norm(check.output)
    assert error < 1e-4, f"{workload.key}: tconv and ONNX Runtime differ by {error:.1e}"
    alone = tuning.conv_network(workload, tuning.UNSCHEDULED)
    return run, OrtRunner(alone, tuning.measurement_params(alone), x, threads)


def main() -> None:
    from tconv.frontends.zoo import network_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*", help="zoo networks (default: all)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TVM_NUM_THREADS", "2")))
    parser.add_argument("--repeat", type=int, default=10, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layout", choices=("auto", "nchw"), default="auto", help="as `tconv compile --layout`")
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    from tconv.search.timing import interleaved_medians

    counts, origin = zoo_workloads(args.networks or network_names())
    rows = []
    for index, (workload, count) in enumerate(counts.items()):
        knobs, chosen = compiled_knobs(workload, args.layout == "auto")
        tconv_run, ort = runners(workload, knobs, args.threads)
        tconv_s, ort_s = interleaved_medians([tconv_run, ort], args.rounds, args.repeat)
        rows.append((ort_s / tconv_s, workload, count, tconv_s, ort_s, chosen))
        print(f"  {index + 1}/{len(counts)} {workload.key}: {ort_s / tconv_s:.2f} {chosen}", flush=True)
    total = sum(count * tconv_s for _, _, count, tconv_s, _, _ in rows)
    print("\n| convolution | network | count | tconv GFLOP/s | ORT GFLOP/s | tconv vs ORT | share | default |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for ratio, workload, count, tconv_s, ort_s, chosen in sorted(rows, key=lambda row: row[0]):
        work = workload.flops
        print(
            f"| {workload.key} | {origin[workload]} | {count} | {work / tconv_s / 1e9:.1f} | "
            f"{work / ort_s / 1e9:.1f} | {ratio:.2f} | {100 * count * tconv_s / total:.1f}% | {chosen} |"
        )


if __name__ == "__main__":
    main()
