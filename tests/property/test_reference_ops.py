"""Each op of the reference executor against torch.nn.functional, on
hypothesis-generated shapes and properties.

The torch side runs in float64, so the measured error is the executor's own.
"""

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from op_cases import slice_cases
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region, SSAValue

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
    ParamOp,
    Relu6Op,
    ReluOp,
    SliceChannelsOp,
    SliceOp,
    tensor_type,
)
from tconv.ir.params import ParamError
from tconv.semantics.reference import run, run_all

EXAMPLES = settings(max_examples=50, deadline=None)


def single_op_network(
    input_shapes: Sequence[Sequence[int]],
    param_shapes: Sequence[Sequence[int]],
    make: Callable[[list[SSAValue], list[SSAValue]], object],
) -> ModuleOp:
    """A verified function of the given inputs that computes one op over them and
    over parameters `p0`, `p1`, ... of the given shapes."""
    block = Block(arg_types=[tensor_type(shape) for shape in input_shapes])
    params = [ParamOp(f"p{i}", shape, "zeros") for i, shape in enumerate(param_shapes)]
    block.add_ops(params)
    op = make(list(block.args), [p.result for p in params])
    block.add_ops([op, func.ReturnOp(op.results[0])])
    module = ModuleOp(
        [func.FuncOp("net", ([a.type for a in block.args], [op.results[0].type]), Region(block))]
    )
    verify_module(module)
    return module


def random_arrays(seed: int, *shapes: Sequence[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(shape), dtype=np.float32) for shape in shapes]


def as_torch(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, np.float64))


def assert_close(actual: np.ndarray, expected: torch.Tensor) -> None:
    expected = expected.numpy()
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    error = np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30)
    assert error < 1e-4, f"relative error {error:.2e}"


# Convolution ----------------------------------------------------------------

KERNELS = st.sampled_from([1, 3, 5, 7])


@st.composite
def conv_cases(draw):
    """Channels, groups, kernel, strides, dilations, asymmetric padding and an
    input just large enough for at least one output position."""
    if draw(st.booleans()):
        groups = draw(st.integers(1, 12))  # depthwise, with a channel multiplier
        group_in, group_out = 1, draw(st.integers(1, 2))
    else:
        groups = draw(st.integers(1, 4))
        group_in, group_out = draw(st.integers(1, 7)), draw(st.integers(1, 5))
    kernel = (draw(KERNELS), draw(KERNELS))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, 3)) for _ in range(4))
    top, left, bottom, right = padding
    spans = [d * (k - 1) + 1 for d, k in zip(dilations, kernel)]
    height = max(1, spans[0] - top - bottom) + draw(st.integers(0, 6))
    width = max(1, spans[1] - left - right) + draw(st.integers(0, 6))
    return dict(
        batch=draw(st.integers(1, 4)),
        groups=groups,
        in_channels=groups * group_in,
        out_channels=groups * group_out,
        height=height,
        width=width,
        kernel=kernel,
        strides=strides,
        dilations=dilations,
        padding=padding,
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


@EXAMPLES
@given(conv_cases())
def test_conv2d(case):
    x_shape = (case["batch"], case["in_channels"], case["height"], case["width"])
    w_shape = (case["out_channels"], case["in_channels"] // case["groups"], *case["kernel"])
    param_shapes = [w_shape] + ([(case["out_channels"],)] if case["bias"] else [])
    module = single_op_network(
        [x_shape],
        param_shapes,
        lambda xs, ps: Conv2dOp(
            xs[0],
            ps[0],
            ps[1] if case["bias"] else None,
            strides=case["strides"],
            padding=case["padding"],
            dilations=case["dilations"],
            groups=case["groups"],
        ),
    )
    x, *weights = random_arrays(case["seed"], x_shape, *param_shapes)
    (actual,) = run(module, {f"p{i}": w for i, w in enumerate(weights)}, x)

    top, left, bottom, right = case["padding"]
    expected = F.conv2d(
        F.pad(as_torch(x), (left, right, top, bottom)),
        as_torch(weights[0]),
        as_torch(weights[1]) if case["bias"] else None,
        stride=case["strides"],
        dilation=case["dilations"],
        groups=case["groups"],
    )
    assert_close(actual, expected)


def test_conv2d_splits_a_large_batch_into_chunks(monkeypatch):
    from tconv.semantics import reference

    monkeypatch.setattr(reference, "COLUMNS_BUDGET", 3 * 9 * 8 * 8 * 2)
    x_shape, w_shape = (5, 3, 8, 8), (4, 3, 3, 3)
    module = single_op_network(
        [x_shape], [w_shape], lambda xs, ps: Conv2dOp(xs[0], ps[0], padding=1)
    )
    x, w = random_arrays(1, x_shape, w_shape)
    (actual,) = run(module, {"p0": w}, x)
    assert_close(actual, F.conv2d(as_torch(x), as_torch(w), padding=1))


# Pooling --------------------------------------------------------------------


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (
        draw(st.integers(0, kernel[0] - 1)),
        draw(st.integers(0, kernel[1] - 1)),
        draw(st.integers(0, kernel[0] - 1)),
        draw(st.integers(0, kernel[1] - 1)),
    )
    top, left, bottom, right = padding
    return dict(
        shape=(
            draw(st.integers(1, 3)),
            draw(st.integers(1, 5)),
            max(1, kernel[0] - top - bottom) + draw(st.integers(0, 7)),
            max(1, kernel[1] - left - right) + draw(st.integers(0, 7)),
        ),
        kernel=kernel,
        strides=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=padding,
        seed=draw(st.integers(0, 2**16)),
    )


def torch_windows(x: torch.Tensor, case, fill: float) -> torch.Tensor:
    """N x C x (KH·KW) x (P·Q) windows of x padded with `fill`."""
    top, left, bottom, right = case["padding"]
    padded = F.pad(x, (left, right, top, bottom), value=fill)
    columns = F.unfold(padded, case["kernel"], stride=case["strides"])
    n, c = x.shape[:2]
    return columns.reshape(n, c, case["kernel"][0] * case["kernel"][1], -1)


def pooled_shape(x: np.ndarray, case) -> tuple[int, ...]:
    top, left, bottom, right = case["padding"]
    (kh, kw), (sh, sw) = case["kernel"], case["strides"]
    return (
        *x.shape[:2],
        (x.shape[2] + top + bottom - kh) // sh + 1,
        (x.shape[3] + left + right - kw) // sw + 1,
    )


@EXAMPLES
@given(pool_cases())
def test_max_pool2d(case):
    module = single_op_network(
        [case["shape"]],
        [],
        lambda xs, ps: MaxPool2dOp(
            xs[0], kernel=case["kernel"], strides=case["strides"], padding=case["padding"]
        ),
    )
    # All negative, so a zero-padding bug would win every edge window.
    x = -np.abs(random_arrays(case["seed"], case["shape"])[0]) - 1
    (actual,) = run(module, {}, x)
    top, left, bottom, right = case["padding"]
    expected = F.max_pool2d(
        F.pad(as_torch(x), (left, right, top, bottom), value=-np.inf),
        case["kernel"],
        stride=case["strides"],
    )
    assert_close(actual, expected)


@EXAMPLES
@given(pool_cases(), st.booleans())
def test_avg_pool2d(case, count_include_pad):
    module = single_op_network(
        [case["shape"]],
        [],
        lambda xs, ps: AvgPool2dOp(
            xs[0],
            kernel=case["kernel"],
            strides=case["strides"],
            padding=case["padding"],
            count_include_pad=count_include_pad,
        ),
    )
    x = random_arrays(case["seed"], case["shape"])[0] + 1
    (actual,) = run(module, {}, x)
    if count_include_pad:
        windows = torch_windows(as_torch(x), case, 0.0).mean(dim=2)
    else:
        windows = torch_windows(as_torch(x), case, float("nan")).nanmean(dim=2)
    assert_close(actual, windows.reshape(pooled_shape(x, case)))


@EXAMPLES
@given(st.integers(1, 3), st.integers(1, 4), st.booleans(), st.integers(0, 2**16))
def test_avg_pool2d_matches_torch_on_symmetric_padding(kernel, batch, count_include_pad, seed):
    padding = kernel // 2
    module = single_op_network(
        [(batch, 3, 7, 6)],
        [],
        lambda xs, ps: AvgPool2dOp(
            xs[0], kernel=kernel, strides=2, padding=padding, count_include_pad=count_include_pad
        ),
    )
    x = random_arrays(seed, (batch, 3, 7, 6))[0]
    (actual,) = run(module, {}, x)
    expected = F.avg_pool2d(
        as_torch(x), kernel, stride=2, padding=padding, count_include_pad=count_include_pad
    )
    assert_close(actual, expected)


def test_global_avg_pool_and_flatten():
    x = random_arrays(0, (3, 5, 4, 7))[0]
    pooled = single_op_network([x.shape], [], lambda xs, ps: GlobalAvgPoolOp(xs[0]))
    flat = single_op_network([x.shape], [], lambda xs, ps: FlattenOp(xs[0]))
    assert_close(run(pooled, {}, x)[0], F.adaptive_avg_pool2d(as_torch(x), 1))
    assert_close(run(flat, {}, x)[0], torch.flatten(as_torch(x), 1))


# Normalisation, dense and activations ---------------------------------------


@EXAMPLES
@given(
    st.integers(1, 4),
    st.integers(1, 9),
    st.sampled_from([(), (1, 1), (3, 5)]),
    st.floats(1e-6, 1e-2),
    st.integers(0, 2**16),
)
def test_batch_norm(batch, channels, spatial, epsilon, seed):
    x_shape, vector = (batch, channels, *spatial), (channels,)
    module = single_op_network(
        [x_shape], [vector] * 4, lambda xs, ps: BatchNormOp(xs[0], *ps, epsilon=epsilon)
    )
    x, scale, shift, mean, var = random_arrays(seed, x_shape, *[vector] * 4)
    var = np.abs(var) + 0.1
    (actual,) = run(module, {"p0": scale, "p1": shift, "p2": mean, "p3": var}, x)
    expected = F.batch_norm(
        as_torch(x), as_torch(mean), as_torch(var), as_torch(scale), as_torch(shift),
        training=False, eps=epsilon,
    )
    assert_close(actual, expected)


@EXAMPLES
@given(st.integers(1, 4), st.integers(1, 40), st.integers(1, 20), st.booleans(), st.integers(0, 2**16))
def test_dense(batch, in_features, out_features, bias, seed):
    shapes = [(batch, in_features), (out_features, in_features)] + ([(out_features,)] if bias else [])
    module = single_op_network(
        shapes[:1], shapes[1:], lambda xs, ps: DenseOp(xs[0], ps[0], ps[1] if bias else None)
    )
    x, *weights = random_arrays(seed, *shapes)
    (actual,) = run(module, {f"p{i}": w for i, w in enumerate(weights)}, x)
    expected = F.linear(as_torch(x), *(as_torch(w) for w in weights))
    assert_close(actual, expected)


@EXAMPLES
@given(st.sampled_from(["relu", "relu6", "add"]), st.integers(0, 2**16))
def test_elementwise(name, seed):
    shape = (2, 3, 4, 5)
    a, b = (4 * x for x in random_arrays(seed, shape, shape))
    op, reference = {
        "relu": (lambda xs, ps: ReluOp(xs[0]), lambda a, b: F.relu(a)),
        "relu6": (lambda xs, ps: Relu6Op(xs[0]), lambda a, b: F.relu6(a)),
        "add": (lambda xs, ps: AddOp(xs[0], xs[1]), lambda a, b: a + b),
    }[name]
    inputs = [a, b] if name == "add" else [a]
    module = single_op_network([shape] * len(inputs), [], op)
    (actual,) = run(module, {}, *inputs)
    assert_close(actual, reference(as_torch(a), as_torch(b)))


# Layout ---------------------------------------------------------------------


@EXAMPLES
@given(st.integers(0, 3), st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(0, 2**16))
def test_concat(axis, extents, seed):
    shapes = []
    for extent in extents:
        shape = [2, 3, 4, 5]
        shape[axis] = extent
        shapes.append(tuple(shape))
    module = single_op_network(shapes, [], lambda xs, ps: ConcatOp(xs, axis=axis))
    xs = random_arrays(seed, *shapes)
    (actual,) = run(module, {}, *xs)
    assert_close(actual, torch.cat([as_torch(x) for x in xs], dim=axis))


@EXAMPLES
@given(st.integers(1, 12), st.data())
def test_slice_channels(channels, data):
    start = data.draw(st.integers(0, channels - 1))
    size = data.draw(st.integers(1, channels - start))
    module = single_op_network(
        [(2, channels, 3, 3)], [], lambda xs, ps: SliceChannelsOp(xs[0], start=start, size=size)
    )
    x = random_arrays(start, (2, channels, 3, 3))[0]
    (actual,) = run(module, {}, x)
    assert_close(actual, as_torch(x)[:, start : start + size])


@EXAMPLES
@given(slice_cases())
def test_slice(case):
    axis, start, size = case["axis"], case["start"], case["size"]
    module = single_op_network(
        [case["shape"]], [], lambda xs, ps: SliceOp(xs[0], axis=axis, start=start, size=size)
    )
    x = random_arrays(case["seed"], case["shape"])[0]
    (actual,) = run(module, {}, x)
    assert_close(actual, torch.narrow(as_torch(x), axis, start, size))


@EXAMPLES
@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**16))
def test_channel_shuffle(groups, per_group, seed):
    shape = (2, groups * per_group, 3, 2)
    module = single_op_network([shape], [], lambda xs, ps: ChannelShuffleOp(xs[0], groups=groups))
    x = random_arrays(seed, shape)[0]
    (actual,) = run(module, {}, x)
    assert_close(actual, F.channel_shuffle(as_torch(x), groups))


# The interpreter ------------------------------------------------------------


def small_network() -> ModuleOp:
    return single_op_network(
        [(1, 3, 8, 8)], [(4, 3, 3, 3)], lambda xs, ps: Conv2dOp(xs[0], ps[0], padding=1)
    )


def test_run_accepts_any_batch_and_float_dtype():
    module = small_network()
    x, w = random_arrays(0, (5, 3, 8, 8), (4, 3, 3, 3))
    (actual,) = run(module, {"p0": w.astype(np.float64)}, x.astype(np.float64))
    assert actual.dtype == np.float32 and actual.shape == (5, 4, 8, 8)
    assert_close(actual, F.conv2d(as_torch(x), as_torch(w), padding=1))


def test_run_all_keeps_every_value():
    module = small_network()
    x, w = random_arrays(0, (2, 3, 8, 8), (4, 3, 3, 3))
    values = run_all(module, {"p0": w}, x)
    function = module.ops.first
    body = function.body.block
    assert values[body.args[0]] is not None
    assert all(op.results[0] in values for op in list(body.ops)[:-1])
    np.testing.assert_array_equal(values[body.ops.first.results[0]], w)


def test_run_handles_repeated_operands_and_unused_results():
    block = Block(arg_types=[tensor_type((1, 2, 3, 3))])
    unused = Relu6Op(block.args[0])
    double = AddOp(block.args[0], block.args[0])
    rectified = ReluOp(double.output)
    block.add_ops([unused, double, rectified, func.ReturnOp(double.output, rectified.output)])
    function = func.FuncOp("net", ([block.args[0].type], [double.output.type] * 2), Region(block))
    x = random_arrays(0, (2, 2, 3, 3))[0]
    results = run(ModuleOp([function]), {}, x)
    np.testing.assert_array_equal(results[0], 2 * x)
    np.testing.assert_array_equal(results[1], np.maximum(2 * x, 0))


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 3, 7, 8), "input 0: expected shape Nx3x8x8 (any batch N), got 2x3x7x8"),
        ((2, 4, 8, 8), "input 0: expected shape Nx3x8x8 (any batch N), got 2x4x8x8"),
        ((3, 8, 8), "input 0: expected shape Nx3x8x8 (any batch N), got 3x8x8"),
        ((0, 3, 8, 8), "input 0: expected shape Nx3x8x8 (any batch N), got 0x3x8x8"),
    ],
)
def test_run_rejects_a_wrongly_shaped_input(shape, message):
    w = random_arrays(0, (4, 3, 3, 3))[0]
    with pytest.raises(TconvError) as error:
        run(small_network(), {"p0": w}, np.zeros(shape, np.float32))
    assert str(error.value) == message


def test_run_rejects_the_wrong_number_of_inputs():
    w = random_arrays(0, (4, 3, 3, 3))[0]
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(TconvError, match="'net' takes 1 input, got 2"):
        run(small_network(), {"p0": w}, x, x)
    with pytest.raises(TconvError, match="'net' takes 1 input, got 0"):
        run(small_network(), {"p0": w})


def test_run_rejects_a_non_float_input():
    w = random_arrays(0, (4, 3, 3, 3))[0]
    with pytest.raises(TconvError, match="input 0: expected float32 values, got int64"):
        run(small_network(), {"p0": w}, np.zeros((1, 3, 8, 8), np.int64))


def test_run_rejects_missing_and_misshaped_params():
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ParamError, match="parameter 'p0' is missing"):
        run(small_network(), {}, x)
    with pytest.raises(ParamError, match="parameter 'p0': .* has shape 4x3x1x1, the IR expects 4x3x3x3"):
        run(small_network(), {"p0": np.zeros((4, 3, 1, 1), np.float32)}, x)


@pytest.mark.parametrize("count", [0, 2])
def test_run_needs_exactly_one_function(count):
    functions = [small_network().ops.first.clone() for _ in range(count)]
    with pytest.raises(TconvError, match=f"exactly one func.func, found {count}"):
        run(ModuleOp(functions), {}, np.zeros((1, 3, 8, 8), np.float32))
