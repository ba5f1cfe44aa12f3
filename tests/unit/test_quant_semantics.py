"""tconv.quantize / tconv.dequantize: the reference executor's integers
against ONNX Runtime's QuantizeLinear/DequantizeLinear on the same graph,
bit for bit (per tensor and per channel, int8 and uint8, scales and zero
points drawn by hypothesis), and the torch interpreter against both."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError, verify_module
from tconv.ir.ops import QuantizeOp
from tconv.semantics import reference

RANGES = {"i8": (-128, 127, TensorProto.INT8, np.int8), "ui8": (0, 255, TensorProto.UINT8, np.uint8)}


@st.composite
def quant_cases(draw):
    rank = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))
    kind = draw(st.sampled_from(sorted(RANGES)))
    low, high = RANGES[kind][:2]
    axis = draw(st.one_of(st.none(), st.integers(0, rank - 1)))
    count = 1 if axis is None else shape[axis]
    # Scales from tiny to large, as float32 values (what ONNX stores).
    exponents = draw(st.lists(st.floats(-12, 4), min_size=count, max_size=count))
    scales = [float(np.float32(2.0**e * 1.37)) for e in exponents]
    zero_points = draw(st.lists(st.integers(low, high), min_size=count, max_size=count))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    spread = float(np.float32(max(scales))) * (high - low) * draw(st.sampled_from([0.1, 0.6, 2.0]))
    x = (rng.standard_normal(shape) * spread).astype(np.float32)
    # Exact half-way points, where round-half-to-even decides.
    halves = rng.random(shape) < 0.3
    first_scale = np.float32(scales[0])
    x = np.where(halves & (axis is None), (rng.integers(-300, 300, shape) + 0.5).astype(np.float32) * first_scale, x)
    return shape, kind, axis, scales, zero_points, x.astype(np.float32)


def tconv_network(shape, kind, axis, scales, zero_points):
    b = NetworkBuilder("net", shape)
    q = b.quantize(b.input, scales, zero_points, axis, kind)
    y = b.dequantize(q, scales, zero_points, axis)
    module = b.finish(q, y)
    verify_module(module)
    return module


def onnx_session(shape, kind, axis, scales, zero_points):
    _, _, onnx_type, dtype = RANGES[kind]
    per_tensor = axis is None
    scale = np.asarray(scales[0] if per_tensor else scales, np.float32)
    zero_point = np.asarray(zero_points[0] if per_tensor else zero_points, dtype)
    attrs = {} if per_tensor else {"axis": axis}
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [
            helper.make_tensor_value_info("q", onnx_type, list(shape)),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape)),
        ],
        [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero_point, "z")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@settings(max_examples=60, deadline=None)
@given(quant_cases())
def test_reference_matches_onnxruntime_bit_for_bit(case):
    shape, kind, axis, scales, zero_points, x = case
    module = tconv_network(shape, kind, axis, scales, zero_points)
    # The reference executor takes a batch axis first; a rank-1 tensor is its own batch.
    q, y = reference.run(module, {}, x)
    expected_q, expected_y = onnx_session(shape, kind, axis, scales, zero_points).run(None, {"x": x})
    assert q.dtype == expected_q.dtype
    np.testing.assert_array_equal(q, expected_q)
    np.testing.assert_array_equal(y.view(np.uint32), expected_y.view(np.uint32))


@settings(max_examples=20, deadline=None)
@given(quant_cases())
def test_torch_interpreter_matches_the_reference(case):
    from tconv.semantics.torch_executor import torch_run

    shape, kind, axis, scales, zero_points, x = case
    module = tconv_network(shape, kind, axis, scales, zero_points)
    for got, expected in zip(torch_run(module, {}, x), reference.run(module, {}, x)):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_round_half_to_even_and_saturation():
    module = tconv_network((1, 8), "i8", None, [0.5], [1])
    x = np.array([[0.25, 0.75, -0.25, -0.75, 1.25, 1000.0, -1000.0, 0.0]], np.float32)
    q, y = reference.run(module, {}, x)
    # x / 0.5 = 0.5, 1.5, -0.5, -1.5, 2.5 round to 0, 2, -0, -2, 2; then + 1, saturated.
    assert q.tolist() == [[1, 3, 1, -1, 3, 127, -128, 1]]
    assert y.tolist() == [[0.0, 1.0, 0.0, -1.0, 1.0, 63.0, -64.5, 0.0]]


def test_training_through_quantize_is_refused():
    from tconv.semantics.backward import BACKWARD

    module = tconv_network((1, 2), "ui8", None, [0.5], [3])
    op = next(o for o in module.walk() if isinstance(o, QuantizeOp))
    with pytest.raises(TconvError, match="cannot train through 'tconv.quantize'"):
        BACKWARD[QuantizeOp](op, np.ones((1, 2), np.float32), np.ones((1, 2), np.float32))
