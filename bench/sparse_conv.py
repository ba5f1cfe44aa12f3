"""Where weight sparsity starts to pay on this CPU: the sparse convolution
kernel against the dense one, single convs at batch 1, across densities
(a measurement, not a test).

    .venv/bin/python bench/sparse_conv.py [--threads 2] [--densities 0.02 0.05 ...] [--shapes NAME ...]

For each layer the weights are pruned by `tconv-sparsify` (per layer: every
output channel keeps its largest weights) and the same network compiled
twice by the TVM backend: with the sparse kernel (`algorithm = "sparse"`,
`tconv.lowering.tvm.sparse_conv`) and with the dense kernel the backend
picks by default for the shape (Winograd for the 3×3 stride-1 layers, else
direct or GSPC; `algorithm.default_algorithm`). ONNX Runtime's dense Conv of
the same pruned weights is timed beside them: it does not skip zeros either.
All three alternate rounds (`interleaved_medians`, medians). "sparse /
dense" above 1 means the sparse kernel is faster; the last column is the
densest measured density at which it was (the crossover lies between it
and the next one).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from tvm_conv import SHAPES as CONV_SHAPES
from tvm_conv import conv_network, flops

SHAPES = {
    "64ch 32² 3×3": (64, 32, 64, 3, 1, 1),  # ResNet-18 CIFAR, stage 1
    "128ch 16² 3×3": (128, 16, 128, 3, 1, 1),
    "256ch 8² 3×3": (256, 8, 256, 3, 1, 1),
    "512ch 4² 3×3": (512, 4, 512, 3, 1, 1),
    **{name: CONV_SHAPES[name] for name in ("64ch 56² 3×3", "64→128 56² 3×3 s2", "256→256 32² 1×1")},
}
DENSITIES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def kernel_runner(module, params, x):
    """A run of the network's kernels (one, or Winograd's three) and their names."""
    from tconv.lowering.tvm.build import TvmNetwork

    network = TvmNetwork(module)
    network.load_params(params)
    network.run(x)
    kinds = "+".join(call.symbol.split("_", 1)[1] for call in network.program.calls)
    return network.execute, kinds


def runners(shape, density, threads):
    from xdsl.context import Context
    from xdsl.dialects.builtin import DictionaryAttr, StringAttr

    from tconv.ir.ops import Conv2dOp
    from tconv.ir.params import init_params
    from tconv.passes.nas.store import ParamStore, using_store
    from tconv.passes.sparse.sparsify import SparsifyPass
    from tconv.search.timing import OrtRunner

    module = conv_network(*shape)
    store = ParamStore(arrays=init_params(module))
    with using_store(store):
        SparsifyPass(density=density).apply(Context(), module)
    params = store.arrays
    x = np.random.default_rng(0).standard_normal((1, shape[0], shape[1], shape[1])).astype(np.float32)
    conv = next(op for op in module.walk() if isinstance(op, Conv2dOp))
    conv.properties["schedule"] = DictionaryAttr({"algorithm": StringAttr("sparse")})
    sparse, _ = kernel_runner(module, params, x)
    del conv.properties["schedule"]
    nonzeros = conv.properties.pop("nonzeros")  # the dense default, whatever the density
    dense, dense_kind = kernel_runner(module, params, x)
    conv.properties["nonzeros"] = nonzeros
    return sparse, dense, dense_kind, OrtRunner(module, params, x, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TVM_NUM_THREADS", "2")))
    parser.add_argument("--repeat", type=int, default=10, help="runs per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--densities", type=float, nargs="*", default=list(DENSITIES))
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    from tconv.search.timing import interleaved_medians

    print(f"{'conv':22} {'density':>7} {'sparse ms':>9} {'dense ms':>8} {'(kernel)':18} {'ORT ms':>7} "
          f"{'sparse/dense':>12} {'sparse/ORT':>10} {'sparse GFLOP/s':>14}")
    for name in args.shapes:
        shape = SHAPES[name]
        wins = []
        for density in args.densities:
            sparse, dense, kind, ort = runners(shape, density, args.threads)
            sparse_s, dense_s, ort_s = interleaved_medians([sparse, dense, ort], args.rounds, args.repeat)
            useful = flops(*shape) * density
            print(f"{name:22} {density:7.2f} {sparse_s * 1e3:9.3f} {dense_s * 1e3:8.3f} {kind:18} "
                  f"{ort_s * 1e3:7.3f} {dense_s / sparse_s:12.2f} {ort_s / sparse_s:10.2f} "
                  f"{useful / sparse_s / 1e9:14.1f}", flush=True)
            if sparse_s < dense_s:
                wins.append(density)
        print(f"{name:22} sparse faster up to density {max(wins) if wins else 'none measured'}", flush=True)


if __name__ == "__main__":
    main()
