"""The backward pass against torch autograd: the loss, the input gradient and
every parameter gradient of small networks and of a zoo network, with
batch-norm in training mode (torch's `.train()`) and in inference mode.

The executor runs in float32 as it does for capacity metrics; torch runs the
independent interpretation of the IR of `tconv.semantics.torch_executor` (one
torch.nn.functional call per op; batch-norm replaced by its training or
differentiable inference form) in float64, so the measured error is the
executor's own."""

from collections.abc import Mapping

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import relative_error
from xdsl.dialects.builtin import ModuleOp

from tconv.frontends import zoo
from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import BatchNormOp, shape_of
from tconv.ir.params import init_params
from tconv.semantics.backward import forward_backward
from tconv.semantics.reference import single_function
from tconv.semantics.torch_executor import TORCH, interpret


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """torch's thread pool slows down tenfold when the cores are shared; one
    thread keeps it predictable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch_norm_train(op: BatchNormOp, x, scale, shift, mean, var):
    return F.batch_norm(x, None, None, scale, shift, training=True, eps=op.epsilon.value.data)


def _batch_norm_inference(op: BatchNormOp, x, scale, shift, mean, var):
    """Spelled out: torch's batch_norm does not differentiate its running statistics."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    normalized = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + op.epsilon.value.data)
    return normalized * scale.reshape(shape) + shift.reshape(shape)


def torch_gradients(
    module: ModuleOp, params: Mapping[str, np.ndarray], x, labels, training: bool, dtype=np.float64
):
    """Loss, input gradient and parameter gradients by torch autograd, in float64 (or `dtype`)."""
    rules = {**TORCH, BatchNormOp: _batch_norm_train if training else _batch_norm_inference}
    leaves = {
        name: torch.tensor(np.asarray(value, dtype), requires_grad=True) for name, value in params.items()
    }
    inputs = torch.tensor(np.asarray(x, dtype), requires_grad=True)
    (logits,) = interpret(single_function(module), leaves, [inputs], rules)
    loss = F.cross_entropy(logits, torch.from_numpy(labels))
    loss.backward()
    grads = {name: (leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)).numpy()
             for name, leaf in leaves.items()}
    return loss.item(), inputs.grad.numpy(), grads


def check(module: ModuleOp, batch: int, batch_norm: str = "train", seed: int = 0) -> None:
    params = init_params(module, seed=seed)
    rng = np.random.default_rng(seed)
    # Batch-norm shifts and running statistics away from their initial 0 and 1.
    for name, value in params.items():
        if name.endswith(("running_mean", "bias")):
            params[name] = (0.1 * rng.standard_normal(value.shape)).astype(np.float32)
        elif name.endswith("running_var"):
            params[name] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
    function = single_function(module)
    x = rng.standard_normal((batch, *shape_of(function.args[0])[1:]), dtype=np.float32)
    labels = rng.integers(0, shape_of(function.function_type.outputs.data[0])[1], batch)

    result = forward_backward(module, params, [x], labels, batch_norm=batch_norm)
    training = batch_norm == "train"
    loss, grad_x, grads = torch_gradients(module, params, x, labels, training)
    # What float32 itself allows: torch's own float32 gradients against its
    # float64 ones. Training-mode batch-norm over few values per channel can
    # cancel (a bias gradient sums terms of both signs), and then float32 loses
    # more than 1e-4 whoever computes it (2e-3 for torch on an AVX-512 Xeon).
    _, grad_x32, grads32 = torch_gradients(module, params, x, labels, training, np.float32)

    def bound(float32_error: float) -> float:
        return max(1e-4, 2 * float32_error)

    assert result.loss == pytest.approx(loss, rel=1e-5)
    assert relative_error(result.grads[function.args[0]], grad_x) < bound(relative_error(grad_x32, grad_x))
    assert result.param_grads.keys() == grads.keys()
    excess = {
        name: relative_error(result.param_grads[name], expected) / bound(relative_error(grads32[name], expected))
        for name, expected in grads.items()
        if np.any(expected)  # the running statistics in training mode
    }
    worst = max(excess, key=excess.get)
    assert excess[worst] < 1, f"{worst}: relative error {excess[worst]:.2f} of float32's bound"
    if batch_norm == "train":
        silent = [name for name in grads if name.endswith(("running_mean", "running_var"))]
        assert all(not result.param_grads[name].any() for name in silent)


def mixed_network():
    """Every op, with strides, dilation, groups, padding and biases."""
    b = NetworkBuilder("mixed", (1, 3, 12, 12))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 8, 3, stride=2, padding=(1, 0, 2, 1), name="stem"), name="bn0"))
    left = b.relu6(b.conv2d(x, 8, 3, dilation=2, groups=2, bias=True, name="dilated"))
    right = b.max_pool2d(x, 3, stride=1, padding=1)
    x = b.channel_shuffle(b.concat([left, right]), 4)
    x = b.slice_channels(x, 2, 12)
    x = b.batch_norm(b.conv2d(x, 12, 1, groups=3, name="pointwise"), name="bn1")
    x = b.relu(b.add(x, b.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)))
    x = b.avg_pool2d(x, 3, stride=2, padding=1)
    x = b.concat([b.slice(x, 2, 0, 2), b.slice(x, 2, 1, 2)], axis=2)  # overlapping row strips
    x = b.concat([b.global_avg_pool(x), b.global_avg_pool(b.relu(x))], axis=1)
    return b.finish(b.dense(b.flatten(x), 7, name="fc"))


def depthwise_network():
    """A MobileNet-style stack: depthwise 3×3 (stride 2) and pointwise 1×1 with relu6."""
    b = NetworkBuilder("depthwise", (1, 3, 16, 16))
    x = b.relu6(b.batch_norm(b.conv2d(b.input, 16, 3, stride=2, name="conv0"), name="bn0"))
    for index, (channels, stride) in enumerate([(24, 1), (32, 2)]):
        with b.scope(index):
            x = b.relu6(b.batch_norm(b.conv2d(x, shape_of(x)[1], 3, stride=stride, groups=shape_of(x)[1],
                                              name="dw"), name="bn_dw"))
            x = b.relu6(b.batch_norm(b.conv2d(x, channels, 1, name="pw"), name="bn_pw"))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="classifier"))


@pytest.mark.parametrize("batch_norm", ["train", "inference"])
@pytest.mark.parametrize("network", [mixed_network, depthwise_network], ids=lambda f: f.__name__)
def test_small_network_matches_torch_autograd(network, batch_norm):
    check(network(), batch=3, batch_norm=batch_norm)


def test_resnet18_cifar10_matches_torch_autograd_in_training_mode():
    check(zoo.build("resnet18", "cifar10"), batch=4)
