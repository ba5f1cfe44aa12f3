"""ONNX interop of quantised networks: a QDQ model that onnxruntime's
`quantize_static` writes imports (activation and weight QDQ pairs kept) and
runs in the reference executor as ONNX Runtime runs it; a network quantised
by `tconv-quantize` exports as QDQ, runs in ONNX Runtime as in the reference
executor, and imports back to the same IR."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from support import onnxruntime_int8_is_exact
from xdsl.context import Context

from tconv.frontends.onnx import OnnxImportError, import_model
from tconv.frontends.onnx.exporter import export_model
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import verify_module
from tconv.ir.ops import Conv2dOp, DenseOp, DequantizeOp, QuantizeOp
from tconv.ir.params import init_params
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.quant.quantize import QuantizePass
from tconv.semantics import reference
from tconv.train.data import load_dataset


def session(model: onnx.ModelProto) -> onnxruntime.InferenceSession:
    """ONNX Runtime running the QDQ nodes as written (its optimiser would
    fuse them into integer kernels, which round differently)."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def float_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {
        "conv1.weight": rng.standard_normal((8, 1, 3, 3)).astype(np.float32) * 0.5,
        "conv1.bias": rng.standard_normal(8).astype(np.float32) * 0.1,
        "conv2.weight": rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.2,
        "fc.weight": rng.standard_normal((10, 16)).astype(np.float32) * 0.3,
        "fc.bias": np.zeros(10, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2.weight"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", (1, 1, 8, 8), 10)


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory, digits):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": digits.x_train[i : i + 1]} for i in range(16)])

        def get_next(self):
            return next(self.batches, None)

    folder = tmp_path_factory.mktemp("qdq")
    onnx.save(float_model(), folder / "float.onnx")
    quantize_static(
        str(folder / "float.onnx"), str(folder / "qdq.onnx"), Reader(),
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )
    return onnx.load(folder / "qdq.onnx")


def test_quantize_static_qdq_model_imports_and_runs_as_onnxruntime_does(qdq_model, digits):
    assert {node.op_type for node in qdq_model.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    module, params = import_model(qdq_model, batch=1)
    layers = [op for op in module.walk() if isinstance(op, (Conv2dOp, DenseOp))]
    assert len(layers) == 3
    for layer in layers:
        # The input's pair and the weight's (its int8 initializer, re-quantized exactly).
        assert isinstance(layer.input.owner, DequantizeOp) and isinstance(layer.input.owner.input.owner, QuantizeOp)
        assert isinstance(layer.weight.owner, DequantizeOp)
    assert layers[0].weight.owner.channel_axis == 0
    x = digits.x_val[:32]
    expected = session(qdq_model).run(None, {"x": x})[0]
    got = reference.run(module, params, x)[0]
    # Float convolutions sum in another order: a value on a rounding boundary
    # may land one step of the output's scale away, rarely.
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()
    assert np.mean(np.isclose(got, expected, rtol=1e-4, atol=1e-5)) > 0.9


def test_quantised_network_exports_as_qdq_and_round_trips(digits):
    b = NetworkBuilder("tiny", (1, 1, 8, 8))
    x = b.relu(b.conv2d(b.input, 8, 3, padding=1, name="conv1"))
    x = b.relu(b.conv2d(x, 16, 3, padding=1, stride=2, name="conv2"))
    module = b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))
    params = init_params(module, seed=1)
    with using_store(ParamStore(arrays=dict(params))):
        QuantizePass(samples=16).apply(Context(), module)
    verify_module(module)

    model = export_model(module, params, batch_name="N")
    onnx.checker.check_model(model)
    counts = [node.op_type for node in model.graph.node]
    assert counts.count("QuantizeLinear") == 6 and counts.count("DequantizeLinear") == 6
    x = digits.x_val[:32]
    expected = reference.run(module, params, x)[0]
    got = session(model).run(None, {"input": x})[0]
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()
    assert np.mean(np.isclose(got, expected, rtol=1e-4, atol=1e-5)) > 0.9

    back, back_params = import_model(model, batch=1)
    assert sum(isinstance(op, QuantizeOp) for op in back.walk()) == 6
    np.testing.assert_array_equal(reference.run(back, back_params, x)[0], expected)


def test_unsupported_quantization_is_named():
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "int16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int16), "z")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(OnnxImportError, match="zero_point holds int16 values; tconv quantizes to int8 or uint8"):
        import_model(model)


def assert_computes_onnxruntimes_result(network, module, params, model, images):
    """The compiled network computes, image by image, what the reference
    executor and ONNX Runtime without its optimiser (the QDQ graph as ONNX
    defines it) compute, and what ONNX Runtime's own integer kernels compute
    where they are exact (`onnxruntime_int8_is_exact`)."""
    plain = onnxruntime.SessionOptions()
    plain.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    sessions = [onnxruntime.InferenceSession(model.SerializeToString(), plain, providers=["CPUExecutionProvider"])]
    if onnxruntime_int8_is_exact():
        sessions.append(onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]))
    for x in images:
        got = network.run(x[None])[0]
        np.testing.assert_array_equal(got, reference.run(module, params, x[None])[0])
        for session in sessions:
            np.testing.assert_allclose(got, session.run(None, {"x": x[None]})[0], rtol=1e-5, atol=1e-6)


def test_a_quantize_static_model_compiles_to_int8_kernels_that_compute_onnxruntimes_result(qdq_model, digits):
    """Imported, ONNX Runtime's QDQ model compiles with the TVM backend: both
    convolutions run as int8 kernels, and the network computes ONNX
    Runtime's result (`assert_computes_onnxruntimes_result`)."""
    from tconv.lowering.tvm.build import TvmNetwork

    module, params = import_model(qdq_model, batch=1)
    network = TvmNetwork(module)
    network.load_params(params)
    assert sum(call.symbol.endswith("int8_conv2d") for call in network.program.calls) == 2
    assert_computes_onnxruntimes_result(network, module, params, qdq_model, digits.x_val[:16])


def test_a_quantize_static_residual_add_runs_as_a_uint8_kernel(tmp_path, digits):
    """ONNX Runtime quantises a residual Add's inputs and output (its
    QLinearAdd): imported, the add is one uint8 kernel (`int8_add`) between
    int8 convolutions that write uint8, and the network computes ONNX
    Runtime's result."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from tconv.lowering.tvm.build import TvmNetwork

    rng = np.random.default_rng(1)
    weights = {
        "c1.weight": rng.standard_normal((16, 1, 3, 3)).astype(np.float32) * 0.5,
        "c2.weight": rng.standard_normal((16, 16, 3, 3)).astype(np.float32) * 0.1,
        "c3.weight": rng.standard_normal((16, 16, 3, 3)).astype(np.float32) * 0.1,
        "fc.weight": rng.standard_normal((10, 16)).astype(np.float32) * 0.3,
    }
    nodes = [
        helper.make_node("Conv", ["x", "c1.weight"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2.weight"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"]),
        helper.make_node("Relu", ["s"], ["r2"]),
        helper.make_node("Conv", ["r2", "c3.weight"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "float.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": digits.x_train[i : i + 1]} for i in range(16)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "qdq.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    qdq = onnx.load(tmp_path / "qdq.onnx")
    module, params = import_model(qdq, batch=1)
    network = TvmNetwork(module)
    network.load_params(params)
    kinds = [call.symbol.split("_", 1)[1] for call in network.program.calls]
    assert kinds.count("int8_add") == 1 and kinds.count("int8_conv2d") == 3
    assert_computes_onnxruntimes_result(network, module, params, qdq, digits.x_val[:16])
