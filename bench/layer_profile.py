"""Where a network's time goes, layer by layer, in tconv and in ONNX Runtime,
each measured inside its own running network (a measurement, not a test).

    .venv/bin/python bench/layer_profile.py mobilenet_v1 --dataset imagenet
    .venv/bin/python bench/layer_profile.py net.mlir --threads 2 --rounds 15

A kernel timed alone can run 2-3x faster or slower than in its network, on
these shared machines (docs/benchmarks.md, "Four networks on AMD Zen 3");
this compares each layer as the two run it for real. tconv: the compiled
artifact on the C runtime (`Runtime.profile`, one call at a time). ONNX
Runtime: the ONNX export (`OrtRunner`) with its own profiler on, as
optimised as a user gets it (NCHWc, fused convolutions). Rounds alternate
between the two; each call's time is its fastest over all runs (both sides
the same way), so the columns add up to less than a run takes.

Convolutions are paired in execution order by the element count of their
outputs, looking a few kernels ahead where the two run a block's branches
in different orders (`pair_convolutions`); the totals by kind are printed
too.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONV_OPS = ("Conv", "FusedConv")
"""ONNX Runtime's convolution kernels (NCHWc's fused ones included)."""


@dataclass
class Layer:
    name: str
    kind: str
    elements: int
    seconds: float


def conv_layers(module) -> dict[str, tuple[str, int]]:
    """Each convolution's kind (1×1, k×k, depthwise or grouped) and output
    size, by the layer name the runtime's profile gives it (its weight's
    name); the size as the IR has it, where the call may write another
    shape (a Winograd kernel its tiles)."""
    from tconv.ir.ops import Conv2dOp, shape_of
    from tconv.search.tuning import workload_of

    layers = {}
    for op in module.walk():
        if isinstance(op, Conv2dOp) and hasattr(op.weight.owner, "param_name"):
            workload = workload_of(op)
            name = op.weight.owner.param_name.removesuffix(".weight")
            if workload.groups > 1:
                kind = "depthwise" if workload.depthwise else "grouped"
            else:
                kind = "x".join(map(str, workload.kernel))
            layers[name] = (f"conv {kind}", int(np.prod(shape_of(op.output))))
    return layers


def tconv_layers(runtime, convs: dict[str, tuple[str, int]], runs: int) -> list[list[Layer]]:
    """`runs` single-run profiles of the artifact, each its calls in plan
    order, a convolution's calls as one layer: Winograd's input transform
    (written to a tensor of its own, so named after none) joins the
    convolution after it, its product and output transform (named after
    the convolution) the one before."""
    profiles = []
    for _ in range(runs):
        layers: list[Layer] = []
        carried = 0.0
        for call in runtime.profile(1):
            if call.symbol.endswith("winograd_input"):
                carried += call.seconds
                continue
            if call.layer in convs and layers and layers[-1].name == call.layer:
                layers[-1].seconds += call.seconds
                continue
            kind, elements = convs.get(call.layer, (call.symbol.split("_", 1)[-1], int(np.prod(call.shape))))
            layers.append(Layer(call.layer, kind, elements, call.seconds + carried))
            carried = 0.0
        profiles.append(layers)
    return profiles


def ort_layers(events: list[dict]) -> list[list[Layer]]:
    """ONNX Runtime's profile events, split into runs, each its node kernels
    in execution order."""
    runs: list[list[Layer]] = []
    current: list[Layer] | None = None
    seen: set[str] = set()
    for event in sorted(events, key=lambda e: e.get("ts", 0)):
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        args = event["args"]
        if current is None or args.get("node_index") in seen:
            current, seen = [], set()
            runs.append(current)
        seen.add(args.get("node_index"))
        shapes = [list(s.values())[0] for s in args.get("output_type_shape", [])]
        elements = int(np.prod(shapes[0])) if shapes else 0
        op = args.get("op_name", "?")
        current.append(Layer(event["name"][: -len("_kernel_time")], "conv" if op in CONV_OPS else op, elements,
                             event["dur"] / 1e6))
    return runs


def fastest(profiles: list[list[Layer]]) -> list[Layer]:
    """Each call's fastest time over the runs that have the most common call list."""
    shape = collections.Counter(tuple(layer.name for layer in run) for run in profiles).most_common(1)[0][0]
    same = [run for run in profiles if tuple(layer.name for layer in run) == shape]
    best = np.min([[layer.seconds for layer in run] for run in same], axis=0)
    return [Layer(layer.name, layer.kind, layer.elements, float(s)) for layer, s in zip(same[0], best)]


def profile(module, params, threads: int, rounds: int, runs: int, scratch: str):
    from tconv.compile import compile_network
    from tconv.runtime.driver import Runtime
    from tconv.search.timing import OrtRunner

    report = compile_network(module, params, Path(scratch) / "artifact").report
    runtime = Runtime(report.directory, threads=threads)
    (x,) = runtime.arena_inputs()
    x[...] = np.random.default_rng(0).standard_normal(x.shape)
    onnxruntime = OrtRunner(module, params, x.copy(), threads, profile_prefix=str(Path(scratch) / "ort"))
    convs = conv_layers(module)
    ours = []
    for _ in range(rounds):
        time.sleep(0.2)
        runtime.profile(3)  # warm up after the pause
        ours += tconv_layers(runtime, convs, runs)
        time.sleep(0.2)
        for _ in range(3 + runs):
            onnxruntime()
    theirs = ort_layers(json.loads(Path(onnxruntime.session.end_profiling()).read_text()))
    runtime.close()
    return fastest(ours), fastest(theirs)


PAIRING_WINDOW = 4
"""How many of ONNX Runtime's unpaired convolutions, in its order, a
convolution of tconv's looks through for one of its output's size (the
two may run a block's branches in different orders)."""


def pair_convolutions(ours: list[Layer], theirs: list[Layer]) -> list[tuple[Layer, Layer | None]]:
    """Each of tconv's convolutions, in its order, with the first of ONNX
    Runtime's still unpaired, within `PAIRING_WINDOW`, whose output has as
    many elements (None where there is none)."""
    waiting = list(theirs)
    pairs = []
    for layer in ours:
        match = next((other for other in waiting[:PAIRING_WINDOW] if other.elements == layer.elements), None)
        if match is not None:
            waiting.remove(match)
        pairs.append((layer, match))
    return pairs


def report(ours: list[Layer], theirs: list[Layer]) -> str:
    lines = [f"tconv {sum(x.seconds for x in ours) * 1e3:.3f} ms in {len(ours)} calls, "
             f"ONNX Runtime {sum(x.seconds for x in theirs) * 1e3:.3f} ms in {len(theirs)} kernels "
             "(sums of each call's fastest)", "", "By kind, ms:"]
    for side, layers in (("tconv", ours), ("ONNX Runtime", theirs)):
        totals = collections.Counter()
        counts = collections.Counter()
        for layer in layers:
            totals[layer.kind] += layer.seconds * 1e3
            counts[layer.kind] += 1
        lines.append(f"  {side}: " + ", ".join(f"{k} {v:.3f} ({counts[k]})" for k, v in totals.most_common()))
    lines += ["", "| # | layer | kind | output elements | tconv ms | ONNX Runtime ms | tconv vs ORT |",
              "|---|---|---|---|---|---|---|"]
    our_convs = [layer for layer in ours if layer.kind.startswith("conv")]
    their_convs = [layer for layer in theirs if layer.kind == "conv"]
    unmatched = 0
    for index, (a, b) in enumerate(pair_convolutions(our_convs, their_convs)):
        if b is None:
            unmatched += 1
            lines.append(f"| {index} | {a.name} | {a.kind[5:]} | {a.elements} | {a.seconds * 1e3:.3f} | - | - |")
            continue
        lines.append(f"| {index} | {a.name} | {a.kind[5:]} | {a.elements} | {a.seconds * 1e3:.3f} | "
                     f"{b.seconds * 1e3:.3f} | {b.seconds / a.seconds:.2f} |")
    if unmatched:
        lines.append(f"\n{unmatched} of tconv's convolutions found no ONNX Runtime kernel of their size nearby")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network", help="a zoo network's name, or a tconv IR file (its store beside it)")
    parser.add_argument("--dataset", help="zoo networks: cifar10 or imagenet (default: the network's first)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=10, help="profiled runs per round and side")
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    from tconv.ir.params import init_params

    if args.network.endswith(".mlir"):
        from tconv.ir.loader import load_module
        from tconv.ir.params import load_store, store_path_for

        module = load_module(args.network)
        params = load_store(store_path_for(args.network))
    else:
        from tconv.frontends.zoo import build

        module = build(args.network, args.dataset)
        params = init_params(module)
    with tempfile.TemporaryDirectory() as scratch:
        ours, theirs = profile(module, params, args.threads, args.rounds, args.runs, scratch)
    print(report(ours, theirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
