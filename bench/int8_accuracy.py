"""Accuracy of a trained network before and after int8 quantisation, on the
held-out split of its data: tconv's int8 kernels against the float32
network and ONNX Runtime's int8 model of it (a measurement, not a test).

    .venv/bin/tconv zoo resnet18 --dataset cifar10 -o r18.mlir
    .venv/bin/tconv train r18.mlir --data digits --epochs 8 --augment -o r18_trained.npz
    .venv/bin/python bench/int8_accuracy.py r18_trained.mlir [--data digits] [--samples 64]

- float32: the trained network through the TVM backend;
- tconv int8: `tconv-quantize` (per-channel int8 weights, uint8
  activations, min-max calibration on `--samples` training inputs of
  `--data`), compiled by the TVM backend (its int8 kernels);
- QDQ reference: the same quantised network in the reference executor;
- ORT int8: `quant_pre_process` and `quantize_static` (QDQ, the same
  options and calibration inputs) of the ONNX export of the float32 network.

Each classifies every validation input (batch 1); the table gives the
accuracy in percent and the drop from float32 in points.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from int8_network import ort_quantised  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network", help="a trained network's IR (its store beside it)")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--samples", type=int, default=64, help="calibration inputs")
    args = parser.parse_args()

    from xdsl.context import Context

    from tconv.frontends.onnx.exporter import export_model
    from tconv.ir.loader import load_module
    from tconv.ir.ops import shape_of
    from tconv.ir.params import load_store, store_path_for
    from tconv.lowering.tvm.build import TvmNetwork
    from tconv.passes.nas.store import ParamStore, using_store
    from tconv.passes.quant.quantize import QuantizePass, calibration_inputs
    from tconv.search.timing import OrtRunner
    from tconv.semantics.reference import run, single_function
    from tconv.train.data import load_dataset

    module = load_module(args.network)
    params = load_store(store_path_for(args.network))
    function = single_function(module)
    input_shape = shape_of(function.body.block.args[0])
    classes = shape_of(function.function_type.outputs.data[0])[1]
    data = load_dataset(args.data, input_shape, classes)
    quantised = module.clone()
    with using_store(ParamStore(arrays=dict(params))):
        QuantizePass(data=args.data, samples=args.samples).apply(Context(), quantised)

    def classify(call) -> np.ndarray:
        return np.array([int(np.argmax(call(data.x_val[i : i + 1]))) for i in range(len(data.x_val))])

    networks = {}
    for name, net in (("float32", module), ("tconv int8", quantised)):
        compiled = TvmNetwork(net)
        compiled.load_params(params)
        networks[name] = compiled
    predictions = {name: classify(lambda x, n=net: n.run(x)[0]) for name, net in networks.items()}
    predictions["QDQ reference"] = np.concatenate(
        [run(quantised, params, data.x_val[i : i + 64])[0].argmax(axis=1) for i in range(0, len(data.x_val), 64)]
    )
    with tempfile.TemporaryDirectory(prefix="tconv-bench-") as scratch:
        model = export_model(module, params).SerializeToString()
        int8_model = ort_quantised(model, calibration_inputs(module, args.data, args.samples), Path(scratch))
    session = OrtRunner.of_model(int8_model, data.x_val[:1], 1)
    name = session.session.get_inputs()[0].name
    predictions["ORT int8"] = classify(lambda x: session.session.run(None, {name: x})[0])

    baseline = 100 * np.mean(predictions["float32"] == data.y_val)
    print(f"{args.network}: {len(data.y_val)} validation inputs of {args.data}, calibration on {args.samples}")
    print(f"{'network':16} {'accuracy %':>10} {'drop (points)':>13} {'agrees with tconv int8':>22}")
    for label, predicted in predictions.items():
        accuracy = 100 * np.mean(predicted == data.y_val)
        agree = 100 * np.mean(predicted == predictions["tconv int8"])
        print(f"{label:16} {accuracy:10.2f} {baseline - accuracy:13.2f} {agree:21.1f}%")


if __name__ == "__main__":
    main()
