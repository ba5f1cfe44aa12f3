"""The numpy reference executor: what every tconv op computes.

It is the oracle every backend and every classical pass is tested against,
and the engine that capacity metrics run on. Each op's meaning is one forward
function in `FORWARD`, keyed by op class, so a backward registry can mirror it
op for op. `run` executes a network and returns its results; `run_all` keeps
every intermediate activation as well.

Arrays are float32 NCHW (NC after `flatten`). The batch dimension of the IR is
nominal: a network built for batch 1 runs on any batch. The forward functions
keep the dtype of their operands, so the backward pass (`tconv.semantics.backward`)
can check its gradients against finite differences in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue

from tconv.ir.loader import TconvError
from tconv.ir.ops import (
    AddOp,
    AvgPool2dOp,
    BatchNormOp,
    ChannelShuffleOp,
    ConcatOp,
    Conv2dOp,
    DenseOp,
    DequantizeOp,
    FlattenOp,
    GlobalAvgPoolOp,
    MaxPool2dOp,
    ParamOp,
    QuantizeOp,
    Relu6Op,
    ReluOp,
    SliceChannelsOp,
    SliceOp,
    quant_range,
    shape_of,
)
from tconv.ir.params import bind_params
from tconv.ir.shapes import format_shape, window_output
from tconv.semantics.int8 import dequantize_array, quantize_array

Forward = Callable[..., np.ndarray]
"""`forward(op, *operands) -> result`: the op's result from its operand arrays.
A forward function never writes to its operands."""

FORWARD: dict[type[Operation], Forward] = {}
"""The forward function of every tensor-computing op. `tconv.param` and
`func.return` are not here: the interpreter binds and returns values itself."""

COLUMNS_BUDGET = 1 << 26
"""Most float32 elements one im2col buffer may hold (256 MiB); larger
convolutions run over chunks of the batch."""


def forward(op_type: type[Operation]) -> Callable[[Forward], Forward]:
    """Register the decorated function as the forward function of `op_type`."""

    def register(function: Forward) -> Forward:
        FORWARD[op_type] = function
        return function

    return register


# Sliding windows ------------------------------------------------------------


def pad_spatial(x: np.ndarray, padding: Sequence[int], value: float = 0.0) -> np.ndarray:
    """x NCHW with (top, left, bottom, right) rows and columns of `value` around it."""
    top, left, bottom, right = padding
    if not any(padding):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def window_taps(
    padded: np.ndarray, kernel: Sequence[int], strides: Sequence[int], output: Sequence[int]
) -> list[np.ndarray]:
    """One strided view per kernel position (row-major): tap (i, j) holds, at
    output (p, q), the padded input at (p·stride + i, q·stride + j)."""
    (kh, kw), (sh, sw), (p, q) = kernel, strides, output
    return [
        padded[..., i : i + sh * (p - 1) + 1 : sh, j : j + sw * (q - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]


def im2col(
    x: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int],
    dilations: Sequence[int],
) -> np.ndarray:
    """The convolution's input columns of x NxCxHxW, as a C-contiguous
    C x KH x KW x N x P x Q array: element (c, i, j, n, p, q) is the zero-padded
    input at (n, c, p·stride + i·dilation, q·stride + j·dilation).

    Channels lead so that a group's columns are one contiguous block, and the
    batch sits beside the output positions so one matmul covers the batch."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    top, left, bottom, right = padding
    p = window_output(h, kh, sh, top + bottom, dh)
    q = window_output(w, kw, sw, left + right, dw)
    padded = np.ascontiguousarray(pad_spatial(x, padding))
    sn, sc, sy, sx = padded.strides
    windows = as_strided(
        padded,
        shape=(c, kh, kw, n, p, q),
        strides=(sc, sy * dh, sx * dw, sn, sy * sh, sx * sw),
        writeable=False,
    )
    # Copied in the columns' order: np.ascontiguousarray would walk the windows
    # in the input's memory order and scatter its writes, several times slower
    # (docs/benchmarks.md, Costs of the analyses).
    columns = np.empty(windows.shape, x.dtype)
    np.copyto(columns, windows)
    return columns


# Convolution and dense ------------------------------------------------------


@forward(Conv2dOp)
def conv2d(op: Conv2dOp, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """im2col + one matmul per batch chunk, batched over groups: the weight of
    group g (Og x Cg·KH·KW) times that group's columns (Cg·KH·KW x N·P·Q)."""
    strides = op.strides.get_values()
    padding = op.padding.get_values()
    dilations = op.dilations.get_values()
    groups = op.groups.value.data
    n, c, h, w = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    p = window_output(h, kh, strides[0], padding[0] + padding[2], dilations[0])
    q = window_output(w, kw, strides[1], padding[1] + padding[3], dilations[1])
    group_weight = weight.reshape(groups, out_channels // groups, group_channels * kh * kw)

    out = np.empty((n, out_channels, p, q), np.result_type(x, weight))
    chunk = max(1, COLUMNS_BUDGET // (c * kh * kw * p * q))
    for start in range(0, n, chunk):
        part = x[start : start + chunk]
        columns = im2col(part, (kh, kw), strides, padding, dilations)
        columns = columns.reshape(groups, group_channels * kh * kw, len(part) * p * q)
        product = np.matmul(group_weight, columns)  # G x Og x (n·P·Q)
        out[start : start + chunk] = product.reshape(out_channels, len(part), p, q).transpose(1, 0, 2, 3)
    if bias is not None:
        out += bias.reshape(-1, 1, 1)
    return out


@forward(DenseOp)
def dense(op: DenseOp, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    out = x @ weight.T
    if bias is not None:
        out += bias
    return out


# Normalisation and activations ----------------------------------------------


def per_channel(values: np.ndarray, rank: int) -> np.ndarray:
    """A length-C vector shaped to broadcast over axis 1 of a rank-`rank` tensor."""
    return values.reshape((-1,) + (1,) * (rank - 2))


@forward(BatchNormOp)
def batch_norm(
    op: BatchNormOp,
    x: np.ndarray,
    scale: np.ndarray,
    shift: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
) -> np.ndarray:
    """x·a + b per channel, with a = scale / sqrt(var + epsilon) and
    b = shift - mean·a folded in float64."""
    epsilon = op.epsilon.value.data
    factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + epsilon)
    offset = shift - mean.astype(np.float64) * factor
    return x * per_channel(factor.astype(x.dtype), x.ndim) + per_channel(
        offset.astype(x.dtype), x.ndim
    )


@forward(ReluOp)
def relu(op: ReluOp, x: np.ndarray) -> np.ndarray:
    return np.maximum(x, np.float32(0))


@forward(Relu6Op)
def relu6(op: Relu6Op, x: np.ndarray) -> np.ndarray:
    return np.clip(x, np.float32(0), np.float32(6))


@forward(AddOp)
def add(op: AddOp, lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    return lhs + rhs


# Pooling --------------------------------------------------------------------


def pool_geometry(op: MaxPool2dOp | AvgPool2dOp, x: np.ndarray):
    """The pool's kernel, strides, padding and output height and width on x."""
    kernel = op.kernel.get_values()
    strides = op.strides.get_values()
    padding = op.padding.get_values()
    top, left, bottom, right = padding
    output = (
        window_output(x.shape[2], kernel[0], strides[0], top + bottom),
        window_output(x.shape[3], kernel[1], strides[1], left + right),
    )
    return kernel, strides, padding, output


@forward(MaxPool2dOp)
def max_pool2d(op: MaxPool2dOp, x: np.ndarray) -> np.ndarray:
    """Padding is -inf, so it never wins; the shape rules keep every window
    overlapping the input."""
    kernel, strides, padding, output = pool_geometry(op, x)
    taps = window_taps(pad_spatial(x, padding, -np.inf), kernel, strides, output)
    out = taps[0].copy()
    for tap in taps[1:]:
        np.maximum(out, tap, out=out)
    return out


@forward(AvgPool2dOp)
def avg_pool2d(op: AvgPool2dOp, x: np.ndarray) -> np.ndarray:
    """Window sums over zero padding, divided by the window size, or, unless
    `count_include_pad` is set, by the number of input positions in the window."""
    kernel, strides, padding, output = pool_geometry(op, x)
    total = np.zeros(x.shape[:2] + output, x.dtype)
    for tap in window_taps(pad_spatial(x, padding), kernel, strides, output):
        total += tap
    return total / avg_pool_divisor(op, x)


def avg_pool_divisor(op: AvgPool2dOp, x: np.ndarray) -> np.ndarray:
    """What each window sum of `avg_pool2d` on x is divided by, broadcastable
    to the pooled shape: the window size, or, unless `count_include_pad` is
    set, the number of input positions in each window."""
    kernel, strides, padding, output = pool_geometry(op, x)
    if op.count_include_pad is not None:
        return np.asarray(kernel[0] * kernel[1], x.dtype)
    inside = pad_spatial(np.ones((1, 1) + x.shape[2:], x.dtype), padding)
    return sum(window_taps(inside, kernel, strides, output))


@forward(GlobalAvgPoolOp)
def global_avg_pool(op: GlobalAvgPoolOp, x: np.ndarray) -> np.ndarray:
    return x.mean(axis=(2, 3), keepdims=True, dtype=x.dtype)


# Layout ---------------------------------------------------------------------


@forward(FlattenOp)
def flatten(op: FlattenOp, x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


@forward(ConcatOp)
def concat(op: ConcatOp, *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=op.axis.value.data)


@forward(SliceChannelsOp)
def slice_channels(op: SliceChannelsOp, x: np.ndarray) -> np.ndarray:
    start = op.start.value.data
    return x[:, start : start + op.size.value.data]


def axis_range(op: SliceOp, rank: int) -> tuple[slice, ...]:
    """The index that selects a `tconv.slice`'s range from an array of `rank` axes."""
    axis, start, size = op.bounds
    return tuple(slice(start, start + size) if d == axis else slice(None) for d in range(rank))


@forward(SliceOp)
def slice_(op: SliceOp, x: np.ndarray) -> np.ndarray:
    return x[axis_range(op, x.ndim)]


@forward(ChannelShuffleOp)
def channel_shuffle(op: ChannelShuffleOp, x: np.ndarray) -> np.ndarray:
    """Channel g·(C/G) + i moves to i·G + g."""
    groups = op.groups.value.data
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)


# Quantization ---------------------------------------------------------------


def quant_params(op: QuantizeOp | DequantizeOp, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """The op's scale (float32) and zero point (int32), shaped to broadcast
    over a rank-`rank` tensor: scalars, or vectors along the op's axis."""
    scale = np.asarray(op.scales, np.float32)
    zero_point = np.asarray(op.zero_points, np.int32)
    axis = op.channel_axis
    if axis is None:
        return scale.reshape(()), zero_point.reshape(())
    shape = tuple(-1 if d == axis else 1 for d in range(rank))
    return scale.reshape(shape), zero_point.reshape(shape)


@forward(QuantizeOp)
def quantize(op: QuantizeOp, x: np.ndarray) -> np.ndarray:
    scale, zero_point = quant_params(op, x.ndim)
    low, high = quant_range(op.quantized_type)  # type: ignore[misc]
    return quantize_array(x, scale, zero_point, low, high)


@forward(DequantizeOp)
def dequantize(op: DequantizeOp, q: np.ndarray) -> np.ndarray:
    scale, zero_point = quant_params(op, q.ndim)
    return dequantize_array(q, scale, zero_point)


# The interpreter ------------------------------------------------------------


def single_function(module: ModuleOp) -> func.FuncOp:
    """The one `func.func` of a network module."""
    functions = [op for op in module.ops if isinstance(op, func.FuncOp)]
    if len(functions) != 1:
        raise TconvError(
            f"reference executor: a network module holds exactly one func.func, found {len(functions)}"
        )
    return functions[0]


def check_inputs(function: func.FuncOp, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The inputs as float32 arrays, after checking them against the function's
    arguments: every dimension but the batch must match."""
    arguments = function.body.block.args
    if len(inputs) != len(arguments):
        raise TconvError(
            f"reference executor: '{function.sym_name.data}' takes {len(arguments)} "
            f"input{'s' if len(arguments) != 1 else ''}, got {len(inputs)}"
        )
    checked = []
    for index, (argument, value) in enumerate(zip(arguments, inputs)):
        value = np.asarray(value)
        expected = shape_of(argument)
        if not np.issubdtype(value.dtype, np.floating):
            raise TconvError(f"input {index}: expected float32 values, got {value.dtype}")
        if value.ndim != len(expected) or value.shape[0] < 1 or value.shape[1:] != expected[1:]:
            raise TconvError(
                f"input {index}: expected shape {format_shape(('N',) + expected[1:])} (any batch N), "
                f"got {format_shape(value.shape)}"
            )
        checked.append(np.asarray(value, np.float32))
    return checked


def _interpret(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    inputs: Sequence[np.ndarray],
    keep_all: bool,
) -> tuple[dict[SSAValue, np.ndarray], list[np.ndarray]]:
    """Execute the module's function; return the live values and the results.

    Unless `keep_all`, each value is dropped after its last use, so peak
    memory is that of the widest point of the network, not of all of it."""
    function = single_function(module)
    bound = bind_params(module, params)
    values: dict[SSAValue, np.ndarray] = dict(
        zip(function.body.block.args, check_inputs(function, inputs))
    )
    ops = list(function.body.block.ops)
    # The index of the op after which each value is dead: its last user, or
    # its own op for a result nothing uses.
    last_use: dict[SSAValue, int] = {}
    for index, op in enumerate(ops):
        for value in (*op.operands, *op.results):
            last_use[value] = index

    for index, op in enumerate(ops):
        if isinstance(op, func.ReturnOp):
            return values, [values[operand] for operand in op.operands]
        if isinstance(op, ParamOp):
            values[op.result] = bound[op.param_name]
        else:
            rule = FORWARD.get(type(op))
            if rule is None:
                raise TconvError(f"reference executor: no forward rule for '{op.name}'")
            values[op.results[0]] = rule(op, *(values[operand] for operand in op.operands))
        if not keep_all:
            for value in (*op.operands, *op.results):
                if last_use[value] == index:
                    values.pop(value, None)
    raise TconvError(f"reference executor: '{function.sym_name.data}' has no func.return")


def run(module: ModuleOp, params: Mapping[str, np.ndarray], *inputs: np.ndarray) -> list[np.ndarray]:
    """The results of the module's single function on `inputs`, with each
    `tconv.param` bound to the entry of `params` it names.

    Raises TconvError for a module without exactly one function, a missing or
    mis-shaped parameter, the wrong number of inputs, a non-float input, or an
    input whose non-batch dimensions differ from the function's signature."""
    return _interpret(module, params, inputs, keep_all=False)[1]


def run_all(
    module: ModuleOp, params: Mapping[str, np.ndarray], *inputs: np.ndarray
) -> dict[SSAValue, np.ndarray]:
    """Like `run`, but return the array of every SSA value of the function:
    its arguments, its parameters and every op's result (the activations a
    backward pass or a capacity metric needs)."""
    return _interpret(module, params, inputs, keep_all=True)[0]
