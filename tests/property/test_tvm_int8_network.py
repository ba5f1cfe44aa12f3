"""Quantised networks through the TVM lowering (`int8_network`): each QDQ
convolution that fits runs as one int8 kernel, absorbing batch-norm, a
residual, the activation and the quantize of its result, and the network
computes what the reference executor computes on its QDQ form, within the
rounding the int8 semantics allow (`semantics.int8`): half an accumulator
step on a float32 output, one level on a uint8 one. Shapes from hypothesis:
dense, grouped and depthwise layers, channels that fill no block, strides,
int8 and uint8 activations."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xdsl.context import Context

from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import Conv2dOp
from tconv.ir.params import init_params
from tconv.kernels.fusion import kernel_groups
from tconv.lowering.tvm.build import TvmNetwork
from tconv.lowering.tvm.int8_network import plan_int8
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.quant.quantize import QuantizePass
from tconv.semantics.reference import run, run_all, single_function
from tconv.train.data import load_dataset


@st.composite
def layers(draw):
    kind = draw(st.sampled_from(["dense", "dense", "grouped", "depthwise"]))
    if kind == "dense":
        groups, channels, out_channels = 1, draw(st.integers(1, 20)), draw(st.sampled_from([16, 32, 5, 24]))
    elif kind == "grouped":
        groups = draw(st.integers(2, 3))
        channels, out_channels = groups * 4 * draw(st.integers(1, 2)), groups * 16
    else:
        groups = channels = out_channels = draw(st.sampled_from([8, 16, 20]))
    kernel = draw(st.sampled_from([1, 3]))
    stride = draw(st.integers(1, 2))
    residual = channels == out_channels and stride == 1 and draw(st.booleans())
    signed = draw(st.booleans())
    return {
        "batch": draw(st.integers(1, 2)), "channels": channels, "out_channels": out_channels, "groups": groups,
        "size": (draw(st.integers(2, 9)), draw(st.integers(2, 9))), "kernel": kernel, "stride": stride,
        "bias": draw(st.booleans()), "batch_norm": draw(st.booleans()), "residual": residual,
        "activation": draw(st.sampled_from([None, "relu", "relu6"])),
        "element_type": "i8" if signed else "ui8",
        "zero_point": 0 if signed else draw(st.integers(0, 255)),
        "requantize": draw(st.booleans()), "seed": draw(st.integers(0, 2**16)),
    }


def network(case, out_levels=None):
    """The case's layer in QDQ form, as `tconv-quantize` writes it; with
    `out_levels` (scale, zero point) its result is quantised again and read
    by a 1x1 convolution whose weights are the identity, so that the
    network's output is that quantisation's levels, scaled."""
    rng = np.random.default_rng(case["seed"])
    channels, out_channels = case["channels"], case["out_channels"]
    b = NetworkBuilder("int8", (case["batch"], channels, *case["size"]))
    x_scale = float(np.float32(rng.uniform(0.01, 0.05)))
    x = b.qdq(b.input, [x_scale], [case["zero_point"]], element_type=case["element_type"])
    w_q = rng.integers(-127, 128, (out_channels, channels // case["groups"], case["kernel"], case["kernel"]))
    w_scale = rng.uniform(0.002, 0.02, out_channels).astype(np.float32)
    y = b.conv2d(x, out_channels, case["kernel"], stride=case["stride"], groups=case["groups"], bias=case["bias"],
                 name="conv", weight_scales=[float(s) for s in w_scale])
    params = {"conv.weight": (w_q * w_scale[:, None, None, None]).astype(np.float32),
              "conv.bias": rng.normal(0, 0.3, out_channels).astype(np.float32)}
    if case["batch_norm"]:
        y = b.batch_norm(y, name="bn")
        params.update({
            "bn.weight": (rng.uniform(0.5, 1.5, out_channels) * rng.choice([-1, 1], out_channels)).astype(np.float32),
            "bn.bias": rng.normal(0, 0.3, out_channels).astype(np.float32),
            "bn.running_mean": rng.normal(0, 0.3, out_channels).astype(np.float32),
            "bn.running_var": rng.uniform(0.5, 2, out_channels).astype(np.float32),
        })
    if case["residual"]:
        y = b.add(y, x)
    if case["activation"] is not None:
        y = b.relu(y) if case["activation"] == "relu" else b.relu6(y)
    if out_levels is not None:
        scale, zero_point = out_levels
        y = b.qdq(y, [scale], [zero_point])
        y = b.conv2d(y, out_channels, 1, name="identity", weight_scales=[1.0] * out_channels)
        params["identity.weight"] = np.eye(out_channels, dtype=np.float32)[:, :, None, None]
    module = b.finish(y)
    low, high = (-128, 127) if case["element_type"] == "i8" else (0, 255)
    levels = rng.integers(low, high + 1, (case["batch"], channels, *case["size"]))
    return module, params, ((levels - case["zero_point"]) * x_scale).astype(np.float32)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=layers())
def test_a_quantised_layer_computes_its_qdq_form(case):
    module, params, x = network(case)
    out_levels = None
    if case["requantize"]:
        (y,) = run(module, params, x)
        low, high = min(float(y.min()), 0.0), max(float(y.max()), 0.0)
        scale = float(np.float32(max(high - low, 1e-3) / 255))
        out_levels = (scale, int(np.clip(np.rint(-low / scale), 0, 255)))
        module, params, x = network(case, out_levels)
    (reference,) = run(module, params, x)
    net = TvmNetwork(module)
    net.load_params(params)
    (actual,) = net.run(x)
    int8 = {call.symbol.split("_", 1)[1] for call in net.program.calls} & {"int8_conv2d"}
    if case["groups"] == 1 and case["out_channels"] % 16 == 0:
        assert int8, "a dense layer whose output fits runs as an int8 kernel"
    if out_levels is not None:
        # The output is a quantisation's levels, scaled: one level apart at most.
        assert np.abs(actual - reference).max() <= out_levels[0] * 1.001
    else:
        bound = 1e-4 * max(1.0, float(np.abs(reference).max()))
        # Half an accumulator step of bias (x_scale · w_scale, at most 0.05 · 0.02), times the batch-norm's factor.
        step = 0.05 * 0.02 * (1.5 / np.sqrt(0.5) if case["batch_norm"] else 1.0)
        assert np.abs(actual - reference).max() <= 0.5 * step + bound


def resnet_block():
    """conv → bn → relu → conv → bn → add → relu, as `tconv-quantize` leaves it."""
    b = NetworkBuilder("block", (1, 16, 8, 8))
    scales = [0.01] * 32
    x = b.relu(b.batch_norm(b.conv2d(b.qdq(b.input, [0.05], [128]), 32, 3, name="c0", weight_scales=scales), name="b0"))
    y = b.relu(b.batch_norm(b.conv2d(b.qdq(x, [0.05], [0]), 32, 3, name="c1", weight_scales=scales), name="b1"))
    y = b.batch_norm(b.conv2d(b.qdq(y, [0.05], [0]), 32, 3, name="c2", weight_scales=scales), name="b2")
    y = b.relu(b.add(y, x))
    # A group's 1 output channel fills no block of 16: stays float32.
    z = b.conv2d(b.qdq(y, [0.05], [0]), 8, 3, groups=8, name="grouped", weight_scales=[0.01] * 8)
    return b.finish(z)


def test_the_int8_plan_of_a_residual_block():
    module = resnet_block()
    function = single_function(module)
    plan = plan_int8(function, list(kernel_groups(function)))
    convs = [op for op in function.body.block.ops if isinstance(op, Conv2dOp)]
    c0, c1, c2, grouped = (plan.layers.get(op) for op in convs)
    assert c0 and c1 and c2 and grouped is None
    # c0's result is also the residual: it writes float32 and a quantize kernel reads it;
    # c1's result only feeds c2: c1 writes c2's uint8 input itself.
    assert c0.output is None and c2.output is None
    assert c1.output is c2.quantize and plan.stored[c1.output] == 32
    assert plan.stored[c0.quantize] == 16  # the network input, C4


def test_the_compiled_block_matches_the_reference():
    module = resnet_block()
    rng = np.random.default_rng(0)
    params = {}
    for op in single_function(module).walk():
        if op.name == "tconv.param":
            shape = tuple(op.results[0].type.get_shape())
            params[op.param_name] = rng.normal(0, 0.05 if len(shape) == 4 else 0.2, shape).astype(np.float32)
            if op.param_name.endswith("running_var"):
                params[op.param_name] = np.abs(params[op.param_name]) + 0.5
    x = rng.normal(0, 1, (1, 16, 8, 8)).astype(np.float32)
    net = TvmNetwork(module)
    net.load_params(params)
    kinds = [call.symbol.split("_", 1)[1] for call in net.program.calls]
    assert kinds == ["quantize", "int8_conv2d", "quantize", "int8_conv2d", "int8_conv2d",
                     "fake_quantize", "conv2d"]
    (actual,) = net.run(x)
    (reference,) = run(module, params, x)
    # Levels that round differently inside move the output by a few of the last layer's steps.
    assert np.abs(actual - reference).max() <= 0.005 * np.abs(reference).max()


def test_a_trained_network_keeps_its_accuracy_in_int8_kernels():
    """Digits, a network whose classifier is fitted in closed form (ridge
    regression on random convolutional features), quantised by
    `tconv-quantize`: its int8 kernels classify the held-out images as the
    reference executor's QDQ form does, and about as well as float32."""
    digits = load_dataset("digits", (1, 1, 8, 8), 10)
    b = NetworkBuilder("features", (1, 1, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 16, 3, name="conv1"), name="bn1"))
    x = b.relu(b.conv2d(x, 32, 3, stride=2, name="conv2"))
    features = b.flatten(x)
    module = b.finish(b.dense(features, 10, name="fc"))
    params = init_params(module, seed=2)
    train = run_all(module, params, digits.x_train)[features].astype(np.float64)
    targets = np.eye(10)[digits.y_train]
    params["fc.weight"] = np.linalg.solve(train.T @ train + np.eye(train.shape[1]), train.T @ targets).T.astype(
        np.float32)
    quantised = module.clone()
    with using_store(ParamStore(arrays=dict(params))):
        QuantizePass(samples=64).apply(Context(), quantised)

    net = TvmNetwork(quantised)
    net.load_params(params)
    assert sum(call.symbol.endswith("int8_conv2d") for call in net.program.calls) == 2
    x_val, y_val = digits.x_val, digits.y_val
    int8 = np.array([net.run(x_val[i : i + 1])[0][0].argmax() for i in range(len(x_val))])
    qdq = run(quantised, params, x_val)[0].argmax(axis=1)
    f32 = run(module, params, x_val)[0].argmax(axis=1)
    assert np.mean(int8 == qdq) >= 0.99
    assert np.mean(f32 == y_val) > 0.85
    assert np.mean(int8 == y_val) >= np.mean(f32 == y_val) - 0.01


def residual_network():
    """Two residual blocks, the second with a projection shortcut, float32."""
    b = NetworkBuilder("residual", (1, 3, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 16, 3, name="stem"), name="stem_bn"))
    y = b.relu(b.batch_norm(b.conv2d(x, 16, 3, name="a1"), name="a1_bn"))
    x = b.relu(b.add(b.batch_norm(b.conv2d(y, 16, 3, name="a2"), name="a2_bn"), x))
    y = b.relu(b.batch_norm(b.conv2d(x, 32, 3, stride=2, name="b1"), name="b1_bn"))
    shortcut = b.batch_norm(b.conv2d(x, 32, 1, stride=2, name="proj"), name="proj_bn")
    x = b.relu(b.add(b.batch_norm(b.conv2d(y, 32, 3, name="b2"), name="b2_bn"), shortcut))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


def test_a_residual_block_with_quantized_residuals_runs_in_uint8():
    """With `residuals=quantized` the first block's add reads the block
    input's integers: its second convolution reads them as its residual and
    writes the next block's uint8 input; the projection block's shortcut
    gets a QDQ pair of its own, so the projection writes uint8 too: no
    quantize kernel but the network input's. Both forms compute the
    reference's result on their QDQ form."""
    module = residual_network()
    params = init_params(module, seed=3)
    x = np.random.default_rng(3).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    kinds = {}
    for residuals in ("quantized", "float"):
        quantised = module.clone()
        with using_store(ParamStore(arrays=dict(params))):
            QuantizePass(samples=16, residuals=residuals).apply(Context(), quantised)
        net = TvmNetwork(quantised)
        net.load_params(params)
        kinds[residuals] = [(call.symbol.split("_", 1)[1], call.ops) for call in net.program.calls]
        (actual,) = net.run(x)
        (reference,) = run(quantised, params, x)
        assert np.abs(actual - reference).max() <= 0.02 * np.abs(reference).max(), residuals
    assert [kind for kind, _ in kinds["quantized"]].count("quantize") == 1
    assert ("int8_conv2d", ("conv2d", "batch_norm", "add", "relu", "quantize")) in kinds["quantized"]
    assert ("int8_conv2d", ("conv2d", "batch_norm", "quantize")) in kinds["quantized"]  # the projection
    assert [kind for kind, _ in kinds["float"]].count("quantize") == 3  # and the stem's and a2's float32 outputs


def test_a_float32_reader_of_a_kernels_integers_reads_them_back():
    """conv1's quantised result is read by an int8 layer and by a float32
    pooling: conv1 still writes uint8, and the pooling reads the levels back
    through a `dequantize` kernel (one level apart from the reference at most)."""
    b = NetworkBuilder("two_readers", (1, 3, 8, 8))
    x = b.qdq(b.input, [0.03], [128])
    y = b.qdq(b.relu(b.conv2d(x, 16, 3, name="conv1", weight_scales=[0.01] * 16)), [0.02], [0])
    z = b.conv2d(y, 16, 3, name="conv2", weight_scales=[0.01] * 16)
    module = b.finish(b.global_avg_pool(y), z)
    rng = np.random.default_rng(4)
    params = {
        "conv1.weight": (rng.integers(-127, 128, (16, 3, 3, 3)) * 0.01).astype(np.float32),
        "conv2.weight": (rng.integers(-127, 128, (16, 16, 3, 3)) * 0.01).astype(np.float32),
    }
    net = TvmNetwork(module)
    net.load_params(params)
    calls = [(call.symbol.split("_", 1)[1], call.ops) for call in net.program.calls]
    assert ("int8_conv2d", ("conv2d", "relu", "quantize")) in calls and ("dequantize", ("dequantize",)) in calls
    image = rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    (pooled, actual), (pooled_reference, reference) = net.run(image), run(module, params, image)
    assert np.abs(pooled - pooled_reference).max() <= 0.02 * 1.001
    assert np.abs(actual - reference).max() <= 0.02 * np.abs(reference).max()
