"""int8 convolution kernels beside tconv's own float32 kernels and ONNX
Runtime's int8 `QLinearConv`, single convs at batch 1 (a measurement, not a
test).

    .venv/bin/python bench/int8_conv.py [--threads 2] [--shapes NAME ...]

- tconv int8: `tconv.lowering.tvm.int8_conv` (uint8 NHWC in, per-channel
  int8 weights, int32 accumulation, requantised to uint8 NHWC out; `vpdpbusd`
  where the CPU has it);
- tconv f32: the float32 network of the same conv through the TVM backend
  with its default algorithm (Winograd for the 3×3 stride-1 layers);
- ORT int8: a one-node `QLinearConv` model (uint8 NCHW in and out, the same
  per-channel weights), ONNX Runtime's int8 kernel, output pre-bound.

All three are timed in alternating rounds (`interleaved_medians`, medians);
ratios above 1 mean tconv int8 is faster.
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
    **{name: CONV_SHAPES[name] for name in (
        "64ch 56² 3×3", "128ch 28² 3×3", "256ch 14² 3×3", "512ch 7² 3×3", "64→128 56² 3×3 s2", "256→64 56² 1×1",
        "256→256 32² 1×1",
    )},
    "512ch 32² 3×3 g8": (512, 32, 512, 3, 1, 8),  # ResNeXt-29 8×64d, first stage
    "1024ch 16² 3×3 g8": (1024, 16, 1024, 3, 1, 8),  # its second stage
    **{name: CONV_SHAPES[name] for name in ("144ch 56² 3×3 depthwise", "96ch 112² 3×3 depthwise s2")},
}
"""ResNet's dense layers and MobileNetV2's depthwise ones from bench/tvm_conv.py,
and ResNeXt's grouped ones. (The channels of these layers fill whole blocks
of 16, so the stored input is the input.)"""

X_SCALE, X_ZERO, Y_SCALE, Y_ZERO = 0.02, 128, 0.05, 0


def quantized_operands(shape, seed=0):
    channels, size, out_channels, kernel, _, groups = shape
    rng = np.random.default_rng(seed)
    x_q = rng.integers(0, 256, (1, channels, size, size), dtype=np.uint8)
    w_q = rng.integers(-127, 128, (out_channels, channels // groups, kernel, kernel), dtype=np.int8)
    w_scale = rng.uniform(0.001, 0.004, out_channels).astype(np.float32)
    bias = rng.normal(0, 0.5, out_channels).astype(np.float32)
    return x_q, w_q, w_scale, bias


def tconv_int8(shape, threads, column_tile=None):
    import tvm

    from tconv.kernels.packing import pack_int8_conv2d_weight, pack_int8_depthwise_weight
    from tconv.lowering.tvm.int8_conv import Int8Conv, build_int8_conv2d
    from tconv.lowering.tvm.target import cpu_target, vector_unit
    from tconv.semantics.int8 import Requantization

    channels, size, out_channels, kernel, stride, groups = shape
    x_q, w_q, w_scale, bias = quantized_operands(shape)
    requantization = Requantization.of(X_SCALE, X_ZERO, w_q, w_scale, bias, "relu", Y_SCALE, Y_ZERO)
    pad = kernel // 2
    target = cpu_target(num_cores=threads)
    conv = Int8Conv(1, size, size, channels, out_channels, (kernel, kernel), groups, strides=(stride, stride),
                    padding=(pad,) * 4, zero_point=X_ZERO, out_zero_point=Y_ZERO, low=requantization.low,
                    high=requantization.high, column_tile=column_tile, dot=vector_unit(target).int8_dot)
    kernel_fn = build_int8_conv2d(conv, target)
    p, q = conv.output_size
    weight = (pack_int8_depthwise_weight(w_q) if conv.depthwise
              else pack_int8_conv2d_weight(w_q, channels, groups, pairs=conv.partials > 1))
    arrays = [tvm.runtime.tensor(a) for a in (
        np.ascontiguousarray(x_q.transpose(0, 2, 3, 1)), weight, requantization.offset, requantization.scale,
        np.empty((1, p, q, conv.out_channels_stored), np.uint8))]
    return lambda: kernel_fn(*arrays)


def ort_int8(shape, threads):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    _, size, out_channels, kernel, stride, groups = shape
    x_q, w_q, w_scale, bias = quantized_operands(shape)
    bias_q = np.rint(bias / (X_SCALE * w_scale)).astype(np.int32)
    pad = kernel // 2
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (np.float32(X_SCALE), "xs"), (np.uint8(X_ZERO), "xz"), (w_q, "w"), (w_scale, "ws"),
        (np.zeros(out_channels, np.int8), "wz"), (np.float32(Y_SCALE), "ys"), (np.uint8(Y_ZERO), "yz"),
        (bias_q, "b"))]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            kernel_shape=[kernel, kernel], pads=[pad] * 4, strides=[stride, stride], group=groups)
    p = (size + 2 * pad - kernel) // stride + 1
    graph = helper.make_graph(
        [node], "qconv", [helper.make_tensor_value_info("x", TensorProto.UINT8, x_q.shape)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, (1, out_channels, p, p))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    out = np.empty((1, out_channels, p, p), np.uint8)
    binding = session.io_binding()
    binding.bind_cpu_input("x", x_q)
    binding.bind_output("y", "cpu", 0, np.uint8, out.shape, out.ctypes.data)

    def run(keep=(x_q, out)):  # the bound buffers live as long as the runner
        session.run_with_iobinding(binding)

    return run


def tconv_f32(shape):
    from tconv.ir.params import init_params
    from tconv.lowering.tvm.build import TvmNetwork

    module = conv_network(*shape)
    network = TvmNetwork(module)
    network.load_params(init_params(module))
    x = np.random.default_rng(0).standard_normal(network.program.inputs[0].shape).astype(np.float32)
    network.run(x)
    calls = [(network.kernels[c.symbol], [network.tensors[i] for i in c.args]) for c in network.program.calls]

    def run():
        for kernel, args in calls:
            kernel(*args)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20, help="runs per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    from tconv.lowering.tvm.target import cpu_target, host_cpu, vector_unit
    from tconv.search.timing import interleaved_medians

    print(f"# {host_cpu()}, {args.threads} threads, int8 dot product: {vector_unit(cpu_target()).int8_dot}")
    print(f"{'conv':22} {'int8 GOP/s':>10} {'f32 GFLOP/s':>11} {'ORT int8':>9} {'×f32':>5} {'×ORT':>5}")
    for name in args.shapes:
        shape = SHAPES[name]
        work = flops(*shape)
        runners = [tconv_int8(shape, args.threads), tconv_f32(shape), ort_int8(shape, args.threads)]
        int8_s, f32_s, ort_s = interleaved_medians(runners, args.rounds, args.repeat)
        print(f"{name:22} {work / int8_s / 1e9:10.1f} {work / f32_s / 1e9:11.1f} {work / ort_s / 1e9:9.1f} "
              f"{f32_s / int8_s:5.2f} {ort_s / int8_s:5.2f}", flush=True)


if __name__ == "__main__":
    main()
