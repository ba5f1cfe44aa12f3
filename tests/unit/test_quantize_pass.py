"""`tconv-quantize`: the quantised network computes nearly what the f32 one
does on digits, a trained network keeps its accuracy, and the
choices of scales and zero points (weights symmetric per channel,
activations asymmetric uint8) hold what calibration saw."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.context import Context

from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import verify_module
from tconv.ir.ops import DequantizeOp, QuantizeOp
from tconv.ir.params import init_params
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.quant.quantize import QuantizePass, activation_qparams, weight_qparams
from tconv.semantics.reference import run, run_all
from tconv.train.data import load_dataset


def tiny_network():
    b = NetworkBuilder("tiny", (1, 1, 8, 8))
    x = b.relu(b.conv2d(b.input, 8, 3, padding=1, name="conv1"))
    x = b.relu(b.conv2d(x, 16, 3, padding=1, stride=2, name="conv2"))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", (1, 1, 8, 8), 10)


def quantised(module, params, **options):
    copy = module.clone()
    with using_store(ParamStore(arrays=dict(params))):
        QuantizePass(**options).apply(Context(), copy)
    verify_module(copy)
    return copy


def test_every_layer_reads_its_input_and_weight_through_qdq():
    module = tiny_network()
    result = quantised(module, init_params(module), samples=16)
    ops = list(result.walk())
    assert sum(isinstance(op, QuantizeOp) for op in ops) == 6  # 3 layers x (input, weight)
    for op in ops:
        if op.name in ("tconv.conv2d", "tconv.dense"):
            assert isinstance(op.operands[0].owner, DequantizeOp)
            assert isinstance(op.operands[1].owner, DequantizeOp)
            assert op.operands[1].owner.channel_axis == 0


def test_quantised_output_is_close_to_f32_on_digits(digits):
    module = tiny_network()
    params = init_params(module, seed=1)
    result = quantised(module, params, samples=32)
    x = digits.x_val[:64]
    expected = run(module, params, x)[0]
    got = run(result, params, x)[0]
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


def test_trained_network_keeps_its_accuracy(digits):
    """A random-feature network whose classifier is fitted (ridge regression
    on the features, in closed form: the fast way to a trained network)."""
    b = NetworkBuilder("features", (1, 1, 8, 8))
    x = b.relu(b.conv2d(b.input, 8, 3, padding=1, name="conv1"))
    x = b.relu(b.conv2d(x, 16, 3, padding=1, stride=2, name="conv2"))
    features = b.flatten(x)
    module = b.finish(b.dense(features, 10, name="fc"))
    params = init_params(module, seed=2)
    train_features = run_all(module, params, digits.x_train)[features]
    targets = np.eye(10, dtype=np.float64)[digits.y_train]
    gram = train_features.T.astype(np.float64) @ train_features + 1.0 * np.eye(train_features.shape[1])
    params["fc.weight"] = np.linalg.solve(gram, train_features.T @ targets).T.astype(np.float32)

    x, y = digits.x_val, digits.y_val
    f32_accuracy = np.mean(run(module, params, x)[0].argmax(axis=1) == y)
    assert f32_accuracy > 0.85
    for options in ({}, {"calibration": "percentile", "weights": "per-tensor", "activation_type": "int8"}):
        int8_accuracy = np.mean(run(quantised(module, params, samples=64, **options), params, x)[0].argmax(axis=1) == y)
        assert int8_accuracy >= f32_accuracy - 0.02, options


def test_scales_and_zero_points():
    w = np.array([[[[0.5, -1.27]]], [[[0.0, 0.0]]], [[[2.54, 1.0]]]], np.float32)
    scales, zero_points = weight_qparams(w, per_channel=True)
    assert scales == pytest.approx([0.01, 1.0, 0.02]) and zero_points == [0, 0, 0]
    assert weight_qparams(w, per_channel=False)[0] == pytest.approx([0.02])
    scale, zero_point = activation_qparams(-1.0, 3.0, "uint8")
    assert scale == pytest.approx(4 / 255) and zero_point == 64
    # The range is widened to hold 0: a positive tensor has zero point 0.
    assert activation_qparams(2.0, 5.1, "uint8") == (pytest.approx(0.02), 0)
    assert activation_qparams(-2.54, 1.0, "int8") == (pytest.approx(0.02), 0)
    assert activation_qparams(0.0, 0.0, "uint8") == (1.0, 0)


def test_a_residual_add_reads_the_dequantized_value_it_shares_with_a_layer():
    from tconv.ir.ops import AddOp

    b = NetworkBuilder("block", (1, 1, 8, 8))
    x = b.relu(b.conv2d(b.input, 8, 3, name="conv1"))
    y = b.relu(b.add(b.conv2d(x, 8, 3, name="conv2"), x))
    module = b.finish(b.dense(b.flatten(y), 10, name="fc"))
    params = init_params(module)
    for residuals, reads_dequantized in (("quantized", True), ("float", False)):
        result = quantised(module, params, samples=4, residuals=residuals)
        add = next(op for op in result.walk() if isinstance(op, AddOp))
        assert isinstance(add.rhs.owner, DequantizeOp) == reads_dequantized, residuals
        assert not isinstance(add.lhs.owner, DequantizeOp)  # the chain's own value
    # A projection block: the add reads no layer's input; its later operand (the shortcut) gets a pair.
    b = NetworkBuilder("projection", (1, 1, 8, 8))
    x = b.relu(b.conv2d(b.input, 8, 3, name="conv1"))
    main = b.conv2d(x, 16, 3, stride=2, name="conv2")
    shortcut = b.conv2d(x, 16, 1, stride=2, name="proj")
    module = b.finish(b.dense(b.flatten(b.relu(b.add(main, shortcut))), 10, name="fc"))
    add = next(op for op in quantised(module, init_params(module), samples=4).walk() if isinstance(op, AddOp))
    assert not isinstance(add.lhs.owner, DequantizeOp)
    assert isinstance(add.rhs.owner, DequantizeOp) and add.rhs.owner.input.owner.input.owner.name == "tconv.conv2d"
    with pytest.raises(Exception, match="residuals must be quantized or float, got 'int8'"):
        QuantizePass(residuals="int8")
