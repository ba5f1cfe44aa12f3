"""The backward pass of the reference executor: gradients of a softmax
cross-entropy loss with respect to every activation and every parameter.

Each op's gradient is one backward function in `BACKWARD`, keyed by op class
like `FORWARD` in `tconv.semantics.reference`, whose forward functions it
differentiates:

    @backward(Conv2dOp)
    def conv2d(op, grad_out, x, weight, bias=None, *, needs=ALL) -> (grad_x, grad_weight, grad_bias)

A backward function gets the op, the gradient of the loss with respect to the
op's result and the op's operands (the forward values), and returns one
gradient per operand. `needs[i]` says whether operand i's gradient is wanted;
a function may skip one that is not and return None in its place (the
convolution does, to save its most expensive products). Backward functions
never write to their arguments, and what they return may alias them.

Batch-norm comes in two modes. `"inference"` is the op's own meaning (the
stored running mean and variance). `"train"` normalises with the statistics
of the batch instead, ignoring the running-statistics operands, as PyTorch
does in `.train()` mode; its forward and backward functions are in
`TRAINING_FORWARD` and `TRAINING_BACKWARD`, which the driver lays over the
inference registries. Capacity metrics measure the network in training mode.

`forward_backward` runs a network forward, takes the softmax cross-entropy of
its logits against integer labels (the mean over the batch, as PyTorch's
`cross_entropy`), and runs it backward. Everything runs in one dtype: float32
normally, float64 where tests compare against finite differences.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue

from tconv.ir.loader import TconvError
from tconv.ir.ops import (
    QUANT_OPS,
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
)
from tconv.ir.params import bind_params
from tconv.ir.shapes import format_shape
from tconv.semantics.reference import (
    COLUMNS_BUDGET,
    FORWARD,
    avg_pool_divisor,
    axis_range,
    check_inputs,
    im2col,
    pad_spatial,
    per_channel,
    pool_geometry,
    single_function,
    window_taps,
)

Gradients = tuple[np.ndarray | None, ...]

Backward = Callable[..., Gradients]
"""`backward(op, grad_out, *operands, needs=...) -> one gradient per operand`
(None where `needs` says it is not wanted)."""

BACKWARD: dict[type[Operation], Backward] = {}
"""The backward function of every op in `FORWARD`."""

BATCH_NORM_MODES = ("train", "inference")


class _AllNeeded:
    """`needs` when every operand's gradient is wanted."""

    def __getitem__(self, index: int) -> bool:
        return True


ALL = _AllNeeded()


def backward(op_type: type[Operation]) -> Callable[[Backward], Backward]:
    """Register the decorated function as the backward function of `op_type`."""

    def register(function: Backward) -> Backward:
        BACKWARD[op_type] = function
        return function

    return register


def _no_quantized_backward(op: Operation, grad_out: np.ndarray, *operands: np.ndarray, needs=ALL) -> Gradients:
    """Quantization has no gradient here: a network is trained in f32 and
    quantised afterwards (`tconv-quantize`), not trained through its QDQ pairs."""
    raise TconvError(
        f"cannot train through '{op.name}': train the f32 network, then quantise it (tconv-quantize)"
    )


for _quant_op in QUANT_OPS:
    BACKWARD[_quant_op] = _no_quantized_backward


# Sliding windows ------------------------------------------------------------


def _window_slices(offset: int, stride: int, count: int) -> slice:
    """The positions `offset + k·stride`, k < count, as a slice."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def col2im(
    columns: np.ndarray,
    spatial: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int],
    dilations: Sequence[int],
) -> np.ndarray:
    """The adjoint of `im2col`: columns C x KH x KW x N x P x Q summed back into
    an N x C x H x W input (H, W = `spatial`), one strided add per kernel tap;
    what falls on the padding is dropped. The result is a view of a new array."""
    c, kh, kw, n, p, q = columns.shape
    h, w = spatial
    (sh, sw), (dh, dw) = strides, dilations
    top, left, bottom, right = padding
    # Channel-major like the columns, so each tap adds one contiguous block.
    padded = np.zeros((c, n, h + top + bottom, w + left + right), columns.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _window_slices(i * dh, sh, p), _window_slices(j * dw, sw, q)
            padded[:, :, rows, cols] += columns[:, i, j]
    return padded[:, :, top : top + h, left : left + w].transpose(1, 0, 2, 3)


def _scatter_taps(
    grads: Sequence[np.ndarray], x: np.ndarray, kernel, strides, padding, output
) -> np.ndarray:
    """The gradient of x from one gradient per pooling tap (as `window_taps`
    orders them), each added where its tap reads the padded input."""
    top, left, bottom, right = padding
    n, c, h, w = x.shape
    padded = np.zeros((n, c, h + top + bottom, w + left + right), x.dtype)
    for view, grad in zip(window_taps(padded, kernel, strides, output), grads):
        view += grad
    return padded[:, :, top : top + h, left : left + w]


# Convolution and dense ------------------------------------------------------


@backward(Conv2dOp)
def conv2d(op: Conv2dOp, grad_out, x, weight, bias=None, *, needs=ALL) -> Gradients:
    """Per batch chunk and group, with G the output gradient as Og x (n·P·Q)
    and X the input columns: grad_weight += G·Xᵀ, and the input gradient is
    col2im(Wᵀ·G)."""
    strides = op.strides.get_values()
    padding = op.padding.get_values()
    dilations = op.dilations.get_values()
    groups = op.groups.value.data
    n, c, h, w = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    p, q = grad_out.shape[2:]
    group_weight = weight.reshape(groups, out_channels // groups, group_channels * kh * kw)

    grad_x = np.empty_like(x) if needs[0] else None
    grad_weight = np.zeros(group_weight.shape, grad_out.dtype) if needs[1] else None
    chunk = max(1, COLUMNS_BUDGET // (c * kh * kw * p * q))
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        size = len(x[part])
        # The layout of the forward's product: G x Og x (n·P·Q).
        grad_product = np.ascontiguousarray(grad_out[part].transpose(1, 0, 2, 3)).reshape(
            groups, out_channels // groups, size * p * q
        )
        if grad_weight is not None:
            columns = im2col(x[part], (kh, kw), strides, padding, dilations)
            columns = columns.reshape(groups, group_channels * kh * kw, size * p * q)
            grad_weight += np.matmul(grad_product, columns.transpose(0, 2, 1))
            del columns
        if grad_x is not None:
            grad_columns = np.matmul(group_weight.transpose(0, 2, 1), grad_product)
            grad_x[part] = col2im(
                grad_columns.reshape(c, kh, kw, size, p, q), (h, w), strides, padding, dilations
            )
    grads = (grad_x, None if grad_weight is None else grad_weight.reshape(weight.shape))
    if bias is None:
        return grads
    return grads + (grad_out.sum(axis=(0, 2, 3)) if needs[2] else None,)


@backward(DenseOp)
def dense(op: DenseOp, grad_out, x, weight, bias=None, *, needs=ALL) -> Gradients:
    grads = (grad_out @ weight if needs[0] else None, grad_out.T @ x if needs[1] else None)
    if bias is None:
        return grads
    return grads + (grad_out.sum(axis=0) if needs[2] else None,)


# Normalisation and activations ----------------------------------------------


def _channel_sum(values: np.ndarray) -> np.ndarray:
    """Per-channel sums of an N x C x ... tensor."""
    return values.sum(axis=(0, *range(2, values.ndim)))


@backward(BatchNormOp)
def batch_norm(op: BatchNormOp, grad_out, x, scale, shift, mean, var, *, needs=ALL) -> Gradients:
    """Inference mode: y = (x - mean)·scale/sqrt(var + epsilon) + shift."""
    epsilon = op.epsilon.value.data
    inv_std = 1.0 / np.sqrt(var.astype(np.float64) + epsilon)
    factor = scale * inv_std
    centered = x - per_channel(mean, x.ndim)
    grad_centered_sum = _channel_sum(grad_out * centered).astype(np.float64)
    grad_sum = _channel_sum(grad_out).astype(np.float64)
    dtype = x.dtype
    return (
        grad_out * per_channel(factor.astype(dtype), x.ndim),
        (grad_centered_sum * inv_std).astype(dtype),
        grad_sum.astype(dtype),
        (-grad_sum * factor).astype(dtype),
        (-0.5 * grad_centered_sum * scale * inv_std**3).astype(dtype),
    )


def _batch_statistics(op: BatchNormOp, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x normalised with its own per-channel mean and (biased) variance, and
    1/sqrt(variance + epsilon); the statistics accumulate in float64."""
    axes = (0, *range(2, x.ndim))
    mean = x.mean(axis=axes, dtype=np.float64)
    centered = x - per_channel(mean.astype(x.dtype), x.ndim)
    variance = np.mean(np.square(centered), axis=axes, dtype=np.float64)
    inv_std = 1.0 / np.sqrt(variance + op.epsilon.value.data)
    return centered * per_channel(inv_std.astype(x.dtype), x.ndim), inv_std


def batch_norm_train(op: BatchNormOp, x, scale, shift, mean, var) -> np.ndarray:
    """Training mode: (x - batch mean)/sqrt(batch variance + epsilon)·scale + shift,
    with the statistics over batch, height and width; `mean` and `var` are unused."""
    normalized, _ = _batch_statistics(op, x)
    return normalized * per_channel(scale, x.ndim) + per_channel(shift, x.ndim)


def batch_norm_train_backward(
    op: BatchNormOp, grad_out, x, scale, shift, mean, var, *, needs=ALL
) -> Gradients:
    """With x̂ the normalised input and M the count per channel:
    grad_x = scale/σ · (g - Σg/M - x̂·Σ(g·x̂)/M); the running statistics get none."""
    normalized, inv_std = _batch_statistics(op, x)
    count = x.size // x.shape[1]
    grad_sum = _channel_sum(grad_out).astype(np.float64)
    grad_scale = _channel_sum(grad_out * normalized).astype(np.float64)
    dtype = x.dtype
    grad_x = None
    if needs[0]:
        grad_mean = per_channel((grad_sum / count).astype(dtype), x.ndim)
        grad_projection = per_channel((grad_scale / count).astype(dtype), x.ndim)
        grad_x = grad_out - grad_mean - normalized * grad_projection
        grad_x *= per_channel((scale * inv_std).astype(dtype), x.ndim)
    return grad_x, grad_scale.astype(dtype), grad_sum.astype(dtype), None, None


TRAINING_FORWARD: dict[type[Operation], Callable[..., np.ndarray]] = {BatchNormOp: batch_norm_train}
TRAINING_BACKWARD: dict[type[Operation], Backward] = {BatchNormOp: batch_norm_train_backward}
"""What changes in training mode: batch-norm with batch statistics."""


@backward(ReluOp)
def relu(op: ReluOp, grad_out, x, *, needs=ALL) -> Gradients:
    return (np.where(x > 0, grad_out, 0),)


@backward(Relu6Op)
def relu6(op: Relu6Op, grad_out, x, *, needs=ALL) -> Gradients:
    """Zero where the clip is active, x <= 0 or x >= 6 (as PyTorch's hardtanh)."""
    return (np.where((x > 0) & (x < 6), grad_out, 0),)


@backward(AddOp)
def add(op: AddOp, grad_out, lhs, rhs, *, needs=ALL) -> Gradients:
    return grad_out, grad_out


# Pooling --------------------------------------------------------------------


@backward(MaxPool2dOp)
def max_pool2d(op: MaxPool2dOp, grad_out, x, *, needs=ALL) -> Gradients:
    """Each window's gradient goes to its maximum; on a tie, to the first in
    row-major order (as PyTorch)."""
    kernel, strides, padding, output = pool_geometry(op, x)
    taps = window_taps(pad_spatial(x, padding, -np.inf), kernel, strides, output)
    pooled = FORWARD[MaxPool2dOp](op, x)
    unclaimed = np.ones(pooled.shape, bool)
    grads = []
    for tap in taps:
        wins = unclaimed & (tap == pooled)
        unclaimed &= ~wins
        grads.append(np.where(wins, grad_out, 0))
    return (_scatter_taps(grads, x, kernel, strides, padding, output),)


@backward(AvgPool2dOp)
def avg_pool2d(op: AvgPool2dOp, grad_out, x, *, needs=ALL) -> Gradients:
    kernel, strides, padding, output = pool_geometry(op, x)
    share = grad_out / avg_pool_divisor(op, x)
    return (_scatter_taps([share] * (kernel[0] * kernel[1]), x, kernel, strides, padding, output),)


@backward(GlobalAvgPoolOp)
def global_avg_pool(op: GlobalAvgPoolOp, grad_out, x, *, needs=ALL) -> Gradients:
    share = grad_out / np.asarray(x.shape[2] * x.shape[3], grad_out.dtype)
    return (np.broadcast_to(share, x.shape).copy(),)


# Layout ---------------------------------------------------------------------


@backward(FlattenOp)
def flatten(op: FlattenOp, grad_out, x, *, needs=ALL) -> Gradients:
    return (grad_out.reshape(x.shape),)


@backward(ConcatOp)
def concat(op: ConcatOp, grad_out, *xs, needs=ALL) -> Gradients:
    axis = op.axis.value.data
    bounds = np.cumsum([x.shape[axis] for x in xs])[:-1]
    return tuple(np.split(grad_out, bounds, axis=axis))


@backward(SliceChannelsOp)
def slice_channels(op: SliceChannelsOp, grad_out, x, *, needs=ALL) -> Gradients:
    start = op.start.value.data
    grad_x = np.zeros(x.shape, grad_out.dtype)
    grad_x[:, start : start + op.size.value.data] = grad_out
    return (grad_x,)


@backward(SliceOp)
def slice_(op: SliceOp, grad_out, x, *, needs=ALL) -> Gradients:
    """The gradient in the range, zeros outside it."""
    grad_x = np.zeros(x.shape, grad_out.dtype)
    grad_x[axis_range(op, x.ndim)] = grad_out
    return (grad_x,)


@backward(ChannelShuffleOp)
def channel_shuffle(op: ChannelShuffleOp, grad_out, x, *, needs=ALL) -> Gradients:
    """The inverse permutation: channel i·G + g goes back to g·(C/G) + i."""
    groups = op.groups.value.data
    n, c, h, w = x.shape
    return (grad_out.reshape(n, c // groups, groups, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w),)


# The loss -------------------------------------------------------------------


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """The mean over the batch of -log softmax(logits)[label], and its gradient
    (softmax - one_hot(label)) / N with respect to the N x K logits."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    loss = -log_softmax[rows, labels].mean()
    grad = np.exp(log_softmax)
    grad[rows, labels] -= 1.0
    return float(loss), (grad / len(labels)).astype(logits.dtype)


def check_labels(labels: np.ndarray, batch: int, classes: int) -> np.ndarray:
    """The labels as int64, after checking that they are `batch` integers in [0, classes)."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TconvError(f"labels: expected integer class indices, got {labels.dtype}")
    if labels.shape != (batch,):
        raise TconvError(
            f"labels: expected shape {batch} (one per sample), got {format_shape(labels.shape) or 'scalar'}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise TconvError(
            f"labels: expected classes in [0, {classes}), got values from {labels.min()} to {labels.max()}"
        )
    return labels.astype(np.int64)


# The driver -----------------------------------------------------------------


@dataclass(frozen=True)
class ForwardBackward:
    """One forward and backward pass over a batch."""

    loss: float
    """Softmax cross-entropy, averaged over the batch."""
    logits: np.ndarray
    values: dict[SSAValue, np.ndarray]
    """Forward value of the function's arguments, parameters and op results
    (those kept; see `forward_backward`)."""
    grads: dict[SSAValue, np.ndarray]
    """Gradient of the loss with respect to each value in `values`."""
    param_grads: dict[str, np.ndarray]
    """Gradient of the loss with respect to each parameter, by store name
    (zero for the batch-norm running statistics in training mode)."""


def _rules(batch_norm: str) -> tuple[Mapping, Mapping]:
    if batch_norm not in BATCH_NORM_MODES:
        raise TconvError(
            f"batch_norm must be one of {', '.join(BATCH_NORM_MODES)}, got {batch_norm!r}"
        )
    if batch_norm == "train":
        return FORWARD | TRAINING_FORWARD, BACKWARD | TRAINING_BACKWARD
    return FORWARD, BACKWARD


def _bound(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    inputs: Sequence[np.ndarray],
    dtype: np.dtype,
) -> tuple[func.FuncOp, dict[SSAValue, np.ndarray]]:
    """The network's function and its arguments and parameters in `dtype`,
    after the executor's checks of their shapes."""
    function = single_function(module)
    check_inputs(function, inputs)
    bind_params(module, params)
    values: dict[SSAValue, np.ndarray] = {
        argument: np.asarray(value, dtype) for argument, value in zip(function.body.block.args, inputs)
    }
    for op in function.body.block.ops:
        if isinstance(op, ParamOp):
            values[op.result] = np.asarray(params[op.param_name], dtype)
    return function, values


def _forward(
    function: func.FuncOp, values: dict[SSAValue, np.ndarray], forward_rules: Mapping
) -> list[np.ndarray]:
    """Run the function's ops, adding every result to `values`; return its results."""
    for op in function.body.block.ops:
        if isinstance(op, func.ReturnOp):
            return [values[operand] for operand in op.operands]
        if isinstance(op, ParamOp):
            continue
        rule = forward_rules.get(type(op))
        if rule is None:
            raise TconvError(f"reference executor: no forward rule for '{op.name}'")
        values[op.results[0]] = rule(op, *(values[operand] for operand in op.operands))
    raise TconvError(f"reference executor: '{function.sym_name.data}' has no func.return")


def forward_values(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    inputs: Sequence[np.ndarray],
    *,
    batch_norm: str = "train",
    dtype: type = np.float32,
) -> dict[SSAValue, np.ndarray]:
    """Every value of the network's function on `inputs` (as
    `reference.run_all`), with batch-norm in the given mode."""
    forward_rules, _ = _rules(batch_norm)
    function, values = _bound(module, params, inputs, np.dtype(dtype))
    _forward(function, values, forward_rules)
    return values


def _backward(
    ops: Sequence[Operation],
    values: dict[SSAValue, np.ndarray],
    grads: dict[SSAValue, np.ndarray],
    backward_rules: Mapping,
    keep: Container[SSAValue] | None,
    param_grads: bool,
) -> dict[SSAValue, np.ndarray]:
    """Propagate `grads` (the gradient of the function's result) back through
    `ops` in reverse; return the gradient of every value in `values`. Results
    not in `keep` leave `values` once their gradient has been propagated."""

    def wanted(value: SSAValue) -> bool:
        return param_grads or not isinstance(value.owner, ParamOp)

    for op in reversed(ops):
        if isinstance(op, func.ReturnOp | ParamOp):
            continue
        result = op.results[0]
        grad_out = grads.get(result)
        if grad_out is not None:
            rule = backward_rules.get(type(op))
            if rule is None:
                raise TconvError(f"backward pass: no backward rule for '{op.name}'")
            needs = [wanted(operand) for operand in op.operands]
            operand_grads = rule(op, grad_out, *(values[o] for o in op.operands), needs=needs)
            for operand, grad, need in zip(op.operands, operand_grads, needs):
                if grad is None or not need:
                    continue
                # Never in place: a rule may return views of its arguments.
                previous = grads.get(operand)
                grads[operand] = grad if previous is None else previous + grad
        if keep is not None and result not in keep:
            # Every user of the result came later, so the backward pass is done with it.
            values.pop(result, None)
            grads.pop(result, None)

    # Values the loss does not depend on have zero gradient.
    for value, array in values.items():
        if value not in grads and wanted(value):
            grads[value] = np.zeros_like(array)
    return grads


def forward_backward(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    inputs: Sequence[np.ndarray],
    labels: np.ndarray,
    *,
    batch_norm: str = "train",
    dtype: type = np.float32,
    keep: Container[SSAValue] | None = None,
    param_grads: bool = True,
) -> ForwardBackward:
    """Run the network on `inputs`, take the softmax cross-entropy of its single
    N x K result against `labels` (N integers in [0, K)), and run it backward.

    `keep` limits the values (and gradients) the result holds to those in it,
    dropping the others as soon as the backward pass is done with them (the
    function's arguments and parameters are always kept). Without
    `param_grads`, parameter gradients are neither computed nor returned, which
    saves a third of the convolution work.

    Raises TconvError for what `reference.run` rejects, for a network whose
    result is not N x K logits, and for bad labels."""
    dtype = np.dtype(dtype)
    forward_rules, backward_rules = _rules(batch_norm)
    function, values = _bound(module, params, inputs, dtype)
    results = _forward(function, values, forward_rules)
    if len(results) != 1 or results[0].ndim != 2:
        shapes = ", ".join(format_shape(r.shape) for r in results) or "none"
        raise TconvError(
            f"backward pass: the network must return one N x classes tensor of logits, got {shapes}"
        )
    logits = results[0]
    labels = check_labels(labels, logits.shape[0], logits.shape[1])
    loss, grad_logits = softmax_cross_entropy(logits, labels)

    ops = list(function.body.block.ops)
    (returned,) = ops[-1].operands
    grads = _backward(ops, values, {returned: grad_logits}, backward_rules, keep, param_grads)
    names = {op.result: op.param_name for op in ops if isinstance(op, ParamOp)}
    return ForwardBackward(
        loss=loss,
        logits=logits,
        values=values,
        grads=grads,
        param_grads={names[v]: g for v, g in grads.items() if v in names} if param_grads else {},
    )


def parameter_gradients(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    inputs: Sequence[np.ndarray],
    output_grad: Callable[[np.ndarray], np.ndarray],
    *,
    batch_norm: str = "train",
    dtype: type = np.float32,
) -> dict[str, np.ndarray]:
    """The gradient of a scalar function R of the network's single result with
    respect to every parameter, by store name; `output_grad(result)` gives
    ∂R/∂result. For objectives other than the cross-entropy (SynFlow's sum of
    the outputs, for one)."""
    dtype = np.dtype(dtype)
    forward_rules, backward_rules = _rules(batch_norm)
    function, values = _bound(module, params, inputs, dtype)
    results = _forward(function, values, forward_rules)
    if len(results) != 1:
        raise TconvError(f"backward pass: the network must return one result, it returns {len(results)}")
    ops = list(function.body.block.ops)
    (returned,) = ops[-1].operands
    seed = np.asarray(output_grad(results[0]), dtype)
    grads = _backward(ops, values, {returned: seed}, backward_rules, keep=set(), param_grads=True)
    return {op.param_name: grads[op.result] for op in ops if isinstance(op, ParamOp)}
