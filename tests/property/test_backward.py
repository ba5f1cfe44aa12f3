"""The backward functions of the reference executor against central finite
differences of its forward functions, in float64, on hypothesis-generated
shapes and properties; then the driver on a small network.

Each check differentiates f(operands) = Σ forward(op, operands)·R for a random
R, so the backward function's output gradient is R. Every operand's gradient
is checked along one random direction (which sees an error anywhere in it)
and at up to `ELEMENTS` single elements (which sees where it is).
"""

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from op_cases import slice_cases
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region, SSAValue

from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError, verify_module
from tconv.ir.ops import (
    AddOp,
    AvgPool2dOp,
    BatchNormOp,
    ChannelShuffleOp,
    ConcatOp,
    Conv2dOp,
    DenseOp,
    FlattenOp,
    GlobalAvgPoolOp,
    MaxPool2dOp,
    Relu6Op,
    ReluOp,
    SliceChannelsOp,
    SliceOp,
    tensor_type,
)
from tconv.ir.params import init_params
from tconv.semantics import backward as bw
from tconv.semantics.reference import FORWARD, run

EXAMPLES = settings(max_examples=20, deadline=None)
ELEMENTS = 24
STEP = 1e-6
TOLERANCE = 1e-6


def single_op(shapes: Sequence[Sequence[int]], make: Callable[[list[SSAValue]], Operation]) -> Operation:
    """The op `make` builds over function arguments of the given shapes, in a
    verified module (so the shapes obey the op's rules)."""
    block = Block(arg_types=[tensor_type(shape) for shape in shapes])
    op = make(list(block.args))
    block.add_ops([op, func.ReturnOp(op.results[0])])
    module = ModuleOp([func.FuncOp("f", ([a.type for a in block.args], [op.results[0].type]), Region(block))])
    verify_module(module)
    return op


def normal(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    return rng.standard_normal(tuple(shape))


def away_from(rng: np.random.Generator, shape: Sequence[int], kinks: Sequence[float]) -> np.ndarray:
    """Normal values scaled by 3, none within 0.05 of a kink (where a finite
    difference would straddle it)."""
    values = 3 * rng.standard_normal(tuple(shape))
    for kink in kinks:
        near = np.abs(values - kink) < 0.05
        values[near] += 0.1
    return values


def distinct(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """Values at least 0.01 apart, so that no pooling window has a tie."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) - size / 2) * 0.01


def check_gradients(
    op: Operation,
    operands: list[np.ndarray],
    seed: int,
    forward: Callable[..., np.ndarray] | None = None,
    gradient: Callable[..., tuple] | None = None,
    skip: Sequence[int] = (),
) -> None:
    """The op's backward function (or `gradient`) agrees with central
    differences of its forward function (or `forward`) for every operand not
    in `skip`."""
    forward = forward or FORWARD[type(op)]
    gradient = gradient or bw.BACKWARD[type(op)]
    rng = np.random.default_rng(seed)
    cotangent = rng.standard_normal(forward(op, *operands).shape)

    def objective() -> float:
        return float(np.sum(forward(op, *operands) * cotangent))

    # Rounding in the objective, amplified by 1/STEP, bounds what differences can resolve.
    noise = 1e-9 * (1 + float(np.sum(np.abs(forward(op, *operands) * cotangent))))
    grads = gradient(op, cotangent, *operands)
    assert len(grads) == len(operands)
    for index, (array, grad) in enumerate(zip(operands, grads)):
        if index in skip:
            continue
        assert grad is not None, f"operand {index}: no gradient"
        assert grad.shape == array.shape and grad.dtype == np.float64, f"operand {index}"
        scale = max(float(np.abs(grad).max()), 1e-3)
        original = array.copy()

        direction = rng.standard_normal(array.shape)
        array[...] = original + STEP * direction
        plus = objective()
        array[...] = original - STEP * direction
        minus = objective()
        array[...] = original
        numeric = (plus - minus) / (2 * STEP)
        expected = float(np.sum(grad * direction))
        assert abs(numeric - expected) <= TOLERANCE * scale * np.sqrt(array.size) + noise, (
            f"operand {index}: directional derivative {numeric} by differences, {expected} by backward"
        )

        flat = array.reshape(-1)
        for element in rng.choice(array.size, min(array.size, ELEMENTS), replace=False):
            flat[element] = original.flat[element] + STEP
            plus = objective()
            flat[element] = original.flat[element] - STEP
            minus = objective()
            flat[element] = original.flat[element]
            numeric = (plus - minus) / (2 * STEP)
            assert abs(numeric - grad.flat[element]) <= TOLERANCE * scale + noise, (
                f"operand {index}, element {np.unravel_index(element, array.shape)}: "
                f"{numeric} by differences, {grad.flat[element]} by backward"
            )


# Convolution and dense ------------------------------------------------------


@st.composite
def conv_cases(draw):
    """Groups, kernels (1×1, even, rectangular), strides, dilations and
    asymmetric padding on an input just large enough for one output position."""
    groups = draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    strides = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(4))
    spans = [d * (k - 1) + 1 for d, k in zip(dilations, kernel)]
    return dict(
        batch=draw(st.integers(1, 3)),
        groups=groups,
        in_channels=groups * draw(st.integers(1, 3)),
        out_channels=groups * draw(st.integers(1, 3)),
        height=max(1, spans[0] - padding[0] - padding[2]) + draw(st.integers(0, 3)),
        width=max(1, spans[1] - padding[1] - padding[3]) + draw(st.integers(0, 3)),
        kernel=kernel,
        strides=strides,
        dilations=dilations,
        padding=padding,
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


def _conv_case(**overrides):
    case = dict(batch=2, groups=1, in_channels=3, out_channels=2, height=5, width=6, kernel=(3, 3),
                strides=(1, 1), dilations=(1, 1), padding=(0, 0, 0, 0), bias=True, seed=1)
    return case | overrides


@EXAMPLES
@given(conv_cases())
@example(_conv_case(strides=(2, 2), padding=(1, 1, 1, 1)))
@example(_conv_case(dilations=(2, 2), height=7, width=7, padding=(2, 0, 1, 1)))
@example(_conv_case(groups=3, in_channels=3, out_channels=6, kernel=(1, 1), strides=(2, 1)))
@example(_conv_case(batch=3, in_channels=5, out_channels=3, kernel=(2, 3), padding=(0, 2, 1, 0)))
def test_conv2d(case):
    x_shape = (case["batch"], case["in_channels"], case["height"], case["width"])
    w_shape = (case["out_channels"], case["in_channels"] // case["groups"], *case["kernel"])
    shapes = [x_shape, w_shape] + ([(case["out_channels"],)] if case["bias"] else [])
    op = single_op(shapes, lambda args: Conv2dOp(
        *args[:2], args[2] if case["bias"] else None,
        strides=case["strides"], padding=case["padding"], dilations=case["dilations"], groups=case["groups"],
    ))
    rng = np.random.default_rng(case["seed"])
    check_gradients(op, [normal(rng, s) for s in shapes], case["seed"])


def test_conv2d_skips_the_gradients_it_is_not_asked_for():
    op = single_op([(2, 4, 5, 5), (6, 2, 3, 3)], lambda args: Conv2dOp(*args, groups=2, padding=1))
    rng = np.random.default_rng(0)
    x, w = normal(rng, (2, 4, 5, 5)), normal(rng, (6, 2, 3, 3))
    grad_out = normal(rng, (2, 6, 5, 5))
    full = bw.conv2d(op, grad_out, x, w)
    only_x = bw.conv2d(op, grad_out, x, w, needs=[True, False])
    only_w = bw.conv2d(op, grad_out, x, w, needs=[False, True])
    assert only_x[1] is None and only_w[0] is None
    np.testing.assert_allclose(only_x[0], full[0], rtol=1e-12)
    np.testing.assert_allclose(only_w[1], full[1], rtol=1e-12)


@EXAMPLES
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 5), st.booleans(), st.integers(0, 2**16))
def test_dense(batch, in_features, out_features, bias, seed):
    shapes = [(batch, in_features), (out_features, in_features)] + ([(out_features,)] if bias else [])
    op = single_op(shapes, lambda args: DenseOp(*args[:2], args[2] if bias else None))
    rng = np.random.default_rng(seed)
    check_gradients(op, [normal(rng, s) for s in shapes], seed)


# Normalisation and activations ----------------------------------------------

ACTIVATION_SHAPES = st.one_of(
    st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4)),
    st.tuples(st.integers(1, 4), st.integers(1, 5)),
)


def _batch_norm_operands(rng, shape):
    channels = (shape[1],)
    return [
        normal(rng, shape),
        normal(rng, channels),
        normal(rng, channels),
        normal(rng, channels),
        rng.uniform(0.5, 2.0, channels),
    ]


def _batch_norm(shape, epsilon):
    channels = (shape[1],)
    return single_op([shape] + [channels] * 4, lambda args: BatchNormOp(*args, epsilon=epsilon))


@EXAMPLES
@given(ACTIVATION_SHAPES, st.sampled_from([1e-5, 0.1]), st.integers(0, 2**16))
def test_batch_norm_inference(shape, epsilon, seed):
    check_gradients(_batch_norm(shape, epsilon), _batch_norm_operands(np.random.default_rng(seed), shape), seed)


@EXAMPLES
@given(ACTIVATION_SHAPES, st.sampled_from([1e-3, 0.1]), st.integers(0, 2**16))
def test_batch_norm_training(shape, epsilon, seed):
    """Batch statistics: the running mean and variance get no gradient. (An
    epsilon of 1e-3 keeps 1/σ moderate on batches of two nearly equal values,
    where finite differences of a steep function lose their accuracy.)"""
    op = _batch_norm(shape, epsilon)
    operands = _batch_norm_operands(np.random.default_rng(seed), shape)
    check_gradients(
        op, operands, seed,
        forward=bw.batch_norm_train, gradient=bw.batch_norm_train_backward, skip=(3, 4),
    )
    grads = bw.batch_norm_train_backward(op, np.ones(shape), *operands)
    assert grads[3] is None and grads[4] is None


def test_batch_norm_training_normalises_with_the_batch_statistics():
    op = _batch_norm((4, 3, 2, 2), 1e-5)
    rng = np.random.default_rng(0)
    x = 5 + 3 * normal(rng, (4, 3, 2, 2))
    y = bw.batch_norm_train(op, x, np.ones(3), np.zeros(3), np.full(3, 100.0), np.full(3, 100.0))
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)


@EXAMPLES
@given(ACTIVATION_SHAPES, st.integers(0, 2**16))
def test_relu(shape, seed):
    op = single_op([shape], lambda args: ReluOp(args[0]))
    check_gradients(op, [away_from(np.random.default_rng(seed), shape, [0])], seed)


@EXAMPLES
@given(ACTIVATION_SHAPES, st.integers(0, 2**16))
def test_relu6(shape, seed):
    op = single_op([shape], lambda args: Relu6Op(args[0]))
    x = away_from(np.random.default_rng(seed), shape, [0, 6]) * 1.5  # some above 6
    check_gradients(op, [x], seed)


@EXAMPLES
@given(ACTIVATION_SHAPES, st.integers(0, 2**16))
def test_add(shape, seed):
    op = single_op([shape, shape], lambda args: AddOp(*args))
    rng = np.random.default_rng(seed)
    check_gradients(op, [normal(rng, shape), normal(rng, shape)], seed)


# Pooling --------------------------------------------------------------------


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (
        draw(st.integers(0, kernel[0] - 1)),
        draw(st.integers(0, kernel[1] - 1)),
        draw(st.integers(0, kernel[0] - 1)),
        draw(st.integers(0, kernel[1] - 1)),
    )
    return dict(
        shape=(
            draw(st.integers(1, 3)),
            draw(st.integers(1, 3)),
            max(1, kernel[0] - padding[0] - padding[2]) + draw(st.integers(0, 4)),
            max(1, kernel[1] - padding[1] - padding[3]) + draw(st.integers(0, 4)),
        ),
        kernel=kernel,
        strides=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=padding,
        seed=draw(st.integers(0, 2**16)),
    )


@EXAMPLES
@given(pool_cases())
@example(dict(shape=(2, 3, 5, 5), kernel=(3, 3), strides=(2, 2), padding=(1, 1, 1, 1), seed=0))
def test_max_pool2d(case):
    op = single_op([case["shape"]], lambda args: MaxPool2dOp(
        args[0], kernel=case["kernel"], strides=case["strides"], padding=case["padding"]
    ))
    check_gradients(op, [distinct(np.random.default_rng(case["seed"]), case["shape"])], case["seed"])


def test_max_pool2d_gives_a_tie_to_the_first_maximum():
    op = single_op([(1, 1, 2, 2)], lambda args: MaxPool2dOp(args[0], kernel=2))
    (grad,) = bw.max_pool2d(op, np.ones((1, 1, 1, 1)), np.zeros((1, 1, 2, 2)))
    np.testing.assert_array_equal(grad, [[[[1, 0], [0, 0]]]])


@EXAMPLES
@given(pool_cases(), st.booleans())
@example(dict(shape=(2, 3, 5, 5), kernel=(3, 3), strides=(2, 2), padding=(1, 1, 1, 1), seed=0), True)
@example(dict(shape=(2, 3, 5, 5), kernel=(3, 3), strides=(2, 2), padding=(1, 1, 1, 1), seed=0), False)
def test_avg_pool2d(case, count_include_pad):
    op = single_op([case["shape"]], lambda args: AvgPool2dOp(
        args[0], kernel=case["kernel"], strides=case["strides"], padding=case["padding"],
        count_include_pad=count_include_pad,
    ))
    check_gradients(op, [normal(np.random.default_rng(case["seed"]), case["shape"])], case["seed"])


FEATURE_MAPS = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4))


@EXAMPLES
@given(FEATURE_MAPS, st.integers(0, 2**16))
def test_global_avg_pool(shape, seed):
    op = single_op([shape], lambda args: GlobalAvgPoolOp(args[0]))
    check_gradients(op, [normal(np.random.default_rng(seed), shape)], seed)


# Layout ---------------------------------------------------------------------


@EXAMPLES
@given(FEATURE_MAPS, st.integers(0, 2**16))
def test_flatten(shape, seed):
    op = single_op([shape], lambda args: FlattenOp(args[0]))
    check_gradients(op, [normal(np.random.default_rng(seed), shape)], seed)


@EXAMPLES
@given(
    FEATURE_MAPS, st.integers(0, 3), st.lists(st.integers(1, 3), min_size=1, max_size=3), st.integers(0, 2**16)
)
def test_concat(shape, axis, sizes, seed):
    shapes = [tuple(size if d == axis else n for d, n in enumerate(shape)) for size in sizes]
    op = single_op(shapes, lambda args: ConcatOp(args, axis=axis))
    rng = np.random.default_rng(seed)
    check_gradients(op, [normal(rng, s) for s in shapes], seed)


@EXAMPLES
@given(FEATURE_MAPS, st.data())
def test_slice_channels(shape, data):
    start = data.draw(st.integers(0, shape[1] - 1))
    size = data.draw(st.integers(1, shape[1] - start))
    seed = data.draw(st.integers(0, 2**16))
    op = single_op([shape], lambda args: SliceChannelsOp(args[0], start=start, size=size))
    check_gradients(op, [normal(np.random.default_rng(seed), shape)], seed)


@EXAMPLES
@given(slice_cases())
def test_slice(case):
    axis, start, size = case["axis"], case["start"], case["size"]
    op = single_op([case["shape"]], lambda args: SliceOp(args[0], axis=axis, start=start, size=size))
    check_gradients(op, [normal(np.random.default_rng(case["seed"]), case["shape"])], case["seed"])


@EXAMPLES
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**16))
def test_channel_shuffle(batch, groups, per_group, size, seed):
    shape = (batch, groups * per_group, size, size + 1)
    op = single_op([shape], lambda args: ChannelShuffleOp(args[0], groups=groups))
    check_gradients(op, [normal(np.random.default_rng(seed), shape)], seed)


def test_every_forward_function_has_a_backward_function():
    assert set(bw.BACKWARD) == set(FORWARD)


# The loss -------------------------------------------------------------------


@EXAMPLES
@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 2**16))
def test_softmax_cross_entropy(batch, classes, seed):
    rng = np.random.default_rng(seed)
    logits = 3 * normal(rng, (batch, classes))
    labels = rng.integers(0, classes, batch)
    loss, grad = bw.softmax_cross_entropy(logits, labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    expected = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(batch), labels])
    assert loss == pytest.approx(expected, rel=1e-12)
    for index in np.ndindex(logits.shape):
        moved = logits.copy()
        moved[index] += STEP
        plus = bw.softmax_cross_entropy(moved, labels)[0]
        moved[index] -= 2 * STEP
        minus = bw.softmax_cross_entropy(moved, labels)[0]
        assert (plus - minus) / (2 * STEP) == pytest.approx(grad[index], abs=1e-8)


# The driver -----------------------------------------------------------------


def small_network():
    """conv, batch-norm, relu, a residual add, pooling and a classifier."""
    b = NetworkBuilder("small", (2, 3, 6, 6))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 4, 3, name="conv1"), name="bn1"))
    y = b.batch_norm(b.conv2d(x, 4, 3, groups=2, name="conv2"), name="bn2")
    x = b.relu6(b.add(x, y))
    x = b.avg_pool2d(b.max_pool2d(x, 2), 3, padding=1, stride=1)
    return b.finish(b.dense(b.flatten(x), 5, name="fc"))


def perturbed(params, inputs):
    """The network's parameters with nonzero batch-norm shifts and running
    statistics, and the inputs, in float64."""
    rng = np.random.default_rng(7)
    params = {name: np.asarray(value, np.float64) + (0.3 * rng.standard_normal(value.shape)
              if name.startswith("bn") and not name.endswith("running_var") else 0.0)
              for name, value in params.items()}
    return params, [np.asarray(x, np.float64) for x in inputs]


@pytest.mark.parametrize("mode", bw.BATCH_NORM_MODES)
def test_driver_gradients_match_finite_differences_of_the_loss(mode):
    module = small_network()
    rng = np.random.default_rng(3)
    params, (x,) = perturbed(init_params(module, seed=2), [rng.standard_normal((3, 3, 6, 6))])
    labels = np.array([0, 4, 2])
    result = bw.forward_backward(module, params, [x], labels, batch_norm=mode, dtype=np.float64)
    assert set(result.param_grads) == set(params)

    def loss() -> float:
        return bw.forward_backward(module, params, [x], labels, batch_norm=mode, dtype=np.float64).loss

    (argument,) = module.ops.first.body.block.args
    checked = [(params[name], result.param_grads[name]) for name in ("conv1.weight", "bn2.bias", "fc.weight")]
    checked.append((x, result.grads[argument]))
    if mode == "inference":
        checked.append((params["bn1.running_var"], result.param_grads["bn1.running_var"]))
    for array, grad in checked:
        for element in rng.choice(array.size, 4, replace=False):
            original = array.flat[element]
            array.flat[element] = original + STEP
            plus = loss()
            array.flat[element] = original - STEP
            minus = loss()
            array.flat[element] = original
            assert (plus - minus) / (2 * STEP) == pytest.approx(grad.flat[element], abs=1e-8)
    if mode == "train":
        assert not result.param_grads["bn1.running_mean"].any()


def test_driver_inference_mode_computes_what_run_computes():
    module = small_network()
    params = init_params(module, seed=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6), dtype=np.float32)
    result = bw.forward_backward(module, params, [x], np.array([1, 3]), batch_norm="inference")
    (expected,) = run(module, params, x)
    np.testing.assert_array_equal(result.logits, expected)
    assert result.logits.dtype == np.float32
    assert all(g.dtype == np.float32 for g in result.param_grads.values())


def test_driver_keeps_what_it_is_asked_to_keep():
    module = small_network()
    params = init_params(module, seed=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6), dtype=np.float32)
    labels = np.array([1, 3])
    full = bw.forward_backward(module, params, [x], labels)
    ops = list(module.ops.first.body.block.ops)
    relu = next(op for op in ops if isinstance(op, ReluOp)).results[0]
    part = bw.forward_backward(module, params, [x], labels, keep={relu}, param_grads=False)
    assert part.param_grads == {}
    assert relu in part.grads and part.loss == full.loss
    np.testing.assert_array_equal(part.grads[relu], full.grads[relu])
    np.testing.assert_array_equal(part.values[relu], full.values[relu])
    kept_results = {v for v in part.values if isinstance(v.owner, Operation) and v.owner.name != "tconv.param"}
    assert kept_results == {relu}


def test_driver_rejects_bad_labels_and_outputs():
    module = small_network()
    params = init_params(module)
    x = np.zeros((2, 3, 6, 6), np.float32)
    with pytest.raises(TconvError, match="integer class indices"):
        bw.forward_backward(module, params, [x], np.array([0.0, 1.0]))
    with pytest.raises(TconvError, match="expected shape 2"):
        bw.forward_backward(module, params, [x], np.array([0, 1, 2]))
    with pytest.raises(TconvError, match=r"classes in \[0, 5\)"):
        bw.forward_backward(module, params, [x], np.array([0, 5]))
    with pytest.raises(TconvError, match="batch_norm must be one of"):
        bw.forward_backward(module, params, [x], np.array([0, 1]), batch_norm="eval")

    b = NetworkBuilder("maps", (2, 3, 6, 6))
    maps = b.finish(b.conv2d(b.input, 4, 3))
    with pytest.raises(TconvError, match="N x classes"):
        bw.forward_backward(maps, init_params(maps), [x], np.array([0, 1]))
