"""Quantised networks: tconv's int8 lowering beside ONNX Runtime's int8 on
the same network and calibration data, and both beside their float32
selves, batch 1 (a measurement, not a test).

    .venv/bin/python bench/int8_network.py [resnet18 mobilenet_v2 ...] [--threads 2] [--samples 16]

For each zoo network (random weights, random batch-norm statistics):

- tconv int8: `tconv-quantize` (per-channel int8 weights, uint8
  activations, min-max calibration on `--samples` digits images fitted to
  the input), compiled by the TVM backend (int8 kernels where a
  convolution fits, `int8_network`) into an artifact run by the C runtime
  (`tconv compile`, then `Runtime.run`: input and output copies included);
- tconv f32: the float32 network, the same way;
- ORT int8: ONNX Runtime's own recipe on the ONNX export of the same
  float32 network: `quant_pre_process` (which folds batch-norm), then
  `quantize_static` in QDQ form with the same options and calibration
  inputs; ORT fuses the QDQ pairs into its int8 kernels;
- ORT f32: the float32 export;
- tconv on ORT's model: ORT int8's QDQ model itself, imported (`tconv
  import`) and compiled by the TVM backend (its adds are QDQ'd as ORT's
  QLinearAdd: `int8_add` kernels).

All four run in alternating rounds (`interleaved_medians`); the table
gives milliseconds and tconv int8's ratio to each (above 1: tconv int8 is
faster), and how far each int8 network's output is from its float32 one
(relative L2), and tconv int8's from the reference executor on its QDQ
form.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from tvm_network import module_input_shape  # noqa: E402


def random_params(module, seed=0):
    from tconv.ir.params import init_params

    params = init_params(module, seed)
    rng = np.random.default_rng(seed)
    for key, value in params.items():
        if key.endswith("running_var"):
            params[key] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        elif key.endswith("running_mean"):
            params[key] = (0.1 * rng.standard_normal(value.shape)).astype(np.float32)
    return params


def tconv_quantised(module, params, samples):
    from xdsl.context import Context

    from tconv.passes.nas.store import ParamStore, using_store
    from tconv.passes.quant.quantize import QuantizePass

    quantised = module.clone()
    with using_store(ParamStore(arrays=dict(params))):
        QuantizePass(samples=samples).apply(Context(), quantised)
    return quantised


def ort_quantised(model_bytes: bytes, calibration: np.ndarray, scratch: Path) -> bytes:
    """ONNX Runtime's static QDQ quantisation of the model (its pre-processing first)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self, name):
            self.items = iter([{name: calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    import onnx

    source, prepared, target = scratch / "f32.onnx", scratch / "prepared.onnx", scratch / "int8.onnx"
    source.write_bytes(model_bytes)
    quant_pre_process(str(source), str(prepared))
    name = onnx.load(str(prepared)).graph.input[0].name
    quantize_static(
        str(prepared), str(target), Reader(name), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
    )
    return target.read_bytes()


def relative(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*", default=["resnet18"])
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TVM_NUM_THREADS", "2")))
    parser.add_argument("--samples", type=int, default=16, help="calibration inputs")
    parser.add_argument("--repeat", type=int, default=10, help="runs per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="time each call of the int8 network")
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))

    import onnx

    from tconv.frontends.onnx import import_model
    from tconv.frontends.onnx.exporter import export_model
    from tconv.frontends.zoo import build, datasets
    from tconv.lowering.tvm.artifact import compile_artifact
    from tconv.lowering.tvm.build import TvmNetwork, lower_kernels
    from tconv.passes.quant.quantize import calibration_inputs
    from tconv.runtime.driver import Runtime
    from tconv.search.timing import OrtRunner, interleaved_medians
    from tconv.semantics.reference import run

    print(f"{'network':24} {'int8 ms':>8} {'f32 ms':>8} {'ORT int8':>8} {'ORT f32':>8} "
          f"{'/ORT int8':>9} {'/f32':>6} {'/ORT f32':>8} {'int8 calls':>10} {'err':>7} {'ORT err':>7} {'vs QDQ':>7} "
          f"{'ORT model ms':>12} {'/ORT int8':>9} {'vs ORT':>7}")
    for name in args.networks:
        dataset = args.dataset if args.dataset in datasets(name) else None
        module = build(name, dataset)
        params = random_params(module)
        x = np.random.default_rng(1).standard_normal(module_input_shape(module)).astype(np.float32)
        quantised = tconv_quantised(module, params, args.samples)
        scratch = tempfile.TemporaryDirectory(prefix="tconv-bench-")
        runtimes = [
            Runtime(compile_artifact(net, params, f"{scratch.name}/{kind}").directory, threads=args.threads)
            for kind, net in (("int8", quantised), ("f32", module))
        ]
        (int8_out,), (f32_out,) = (runtime.run(x) for runtime in runtimes)
        model = export_model(module, params).SerializeToString()
        calibration = calibration_inputs(module, "digits", args.samples)
        ort_model = ort_quantised(model, calibration, Path(scratch.name))
        ort_int8 = OrtRunner.of_model(ort_model, x, args.threads)
        ort_f32 = OrtRunner.of_model(model, x, args.threads)
        imported, imported_params = import_model(onnx.load_from_string(ort_model), batch=1)
        runtimes.append(Runtime(compile_artifact(imported, imported_params, f"{scratch.name}/ort").directory,
                                threads=args.threads))
        (imported_out,) = runtimes[2].run(x)
        (qdq_out,) = run(quantised, params, x)
        int8_s, f32_s, ort_int8_s, ort_f32_s, imported_s = interleaved_medians(
            [lambda: runtimes[0].run(x), lambda: runtimes[1].run(x), ort_int8, ort_f32, lambda: runtimes[2].run(x)],
            args.rounds, args.repeat,
        )
        for runtime in runtimes:
            runtime.close()
        scratch.cleanup()
        _, program = lower_kernels(quantised)
        kernels = sum(call.symbol.endswith("int8_conv2d") for call in program.calls)
        label = f"{name} ({dataset or datasets(name)[0]})"
        print(f"{label:24} {int8_s * 1e3:8.2f} {f32_s * 1e3:8.2f} {ort_int8_s * 1e3:8.2f} {ort_f32_s * 1e3:8.2f} "
              f"{ort_int8_s / int8_s:9.2f} {f32_s / int8_s:6.2f} {ort_f32_s / int8_s:8.2f} "
              f"{kernels:>4}/{len(program.calls):<5} {relative(int8_out, f32_out):7.1e} "
              f"{relative(ort_int8.output, ort_f32.output):7.1e} {relative(int8_out, qdq_out):7.1e} "
              f"{imported_s * 1e3:12.2f} {ort_int8_s / imported_s:9.2f} {relative(imported_out, ort_int8.output):7.1e}",
              flush=True)
        if args.profile:
            from tvm_network import profile

            int8 = TvmNetwork(quantised)
            int8.load_params(params)
            int8.run(x)
            profile(int8, 5)


if __name__ == "__main__":
    main()
