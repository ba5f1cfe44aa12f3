"""Whole zoo networks through the reference executor, against an independent
torch interpreter of the tconv IR (one torch.nn.functional call per op).

The interpreter runs in float32: torch's float64 grouped convolutions are
orders of magnitude slower, and float32 rounding stays far below the bound."""

from collections.abc import Mapping

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from tconv.frontends import zoo
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
    shape_of,
)
from tconv.ir.params import init_params
from tconv.runtime.reference import run

@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """torch's thread pool slows down tenfold when the cores are shared (as on CI
    runners and beside other test processes); one thread keeps it predictable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pad(x: torch.Tensor, padding, value: float = 0.0) -> torch.Tensor:
    top, left, bottom, right = padding
    return F.pad(x, (left, right, top, bottom), value=value)


def _avg_pool2d(op: AvgPool2dOp, x: torch.Tensor) -> torch.Tensor:
    top, left, bottom, right = op.padding.get_values()
    assert (top, left) == (bottom, right), "the torch interpreter pools with symmetric padding only"
    return F.avg_pool2d(
        x,
        op.kernel.get_values(),
        op.strides.get_values(),
        (top, left),
        count_include_pad=op.count_include_pad is not None,
    )


TORCH = {
    Conv2dOp: lambda op, x, w, b=None: F.conv2d(
        _pad(x, op.padding.get_values()),
        w,
        b,
        stride=op.strides.get_values(),
        dilation=op.dilations.get_values(),
        groups=op.groups.value.data,
    ),
    BatchNormOp: lambda op, x, scale, shift, mean, var: F.batch_norm(
        x, mean, var, scale, shift, training=False, eps=op.epsilon.value.data
    ),
    ReluOp: lambda op, x: F.relu(x),
    Relu6Op: lambda op, x: F.relu6(x),
    AddOp: lambda op, a, b: a + b,
    MaxPool2dOp: lambda op, x: F.max_pool2d(
        _pad(x, op.padding.get_values(), -np.inf), op.kernel.get_values(), op.strides.get_values()
    ),
    AvgPool2dOp: _avg_pool2d,
    GlobalAvgPoolOp: lambda op, x: F.adaptive_avg_pool2d(x, 1),
    FlattenOp: lambda op, x: torch.flatten(x, 1),
    DenseOp: lambda op, x, w, b=None: F.linear(x, w, b),
    ConcatOp: lambda op, *xs: torch.cat(xs, dim=op.axis.value.data),
    SliceChannelsOp: lambda op, x: x[:, op.start.value.data : op.start.value.data + op.size.value.data],
    ChannelShuffleOp: lambda op, x: F.channel_shuffle(x, op.groups.value.data),
}


@torch.no_grad()
def torch_run(module: ModuleOp, params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The module's single function, interpreted op by op with torch."""
    (function,) = [op for op in module.ops if isinstance(op, func.FuncOp)]
    block = function.body.block
    values = {block.args[0]: torch.from_numpy(x)}
    for op in block.ops:
        if isinstance(op, func.ReturnOp):
            return values[op.operands[0]].numpy()
        if isinstance(op, ParamOp):
            values[op.result] = torch.from_numpy(params[op.param_name])
        else:
            values[op.results[0]] = TORCH[type(op)](op, *(values[v] for v in op.operands))
    raise AssertionError("no func.return")


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def check(module: ModuleOp, batch: int, seed: int = 0) -> None:
    """The executor and the torch interpreter agree on `batch` random images."""
    function = module.ops.first
    params = init_params(module, seed=seed)
    image = shape_of(function.body.block.args[0])[1:]
    x = np.random.default_rng(seed).standard_normal((batch, *image), dtype=np.float32)
    (actual,) = run(module, params, x)
    expected = torch_run(module, params, x)
    assert actual.dtype == np.float32
    assert actual.shape == (batch, *shape_of(function.function_type.outputs.data[0])[1:])
    assert relative_error(actual, expected) < 1e-4


CASES = [
    pytest.param(name, dataset, id=f"{name}-{dataset}")
    for name in zoo.network_names()
    for dataset in zoo.datasets(name)
]


@pytest.mark.parametrize("name, dataset", CASES)
def test_zoo_network_matches_torch(name, dataset):
    """Built for batch 1, run on batch 2: the IR's batch is nominal."""
    check(zoo.build(name, dataset, batch=1), batch=2)


@pytest.mark.parametrize("batch", [1, 3])
def test_a_batched_network_runs_on_any_batch(batch):
    check(zoo.build("resnet18", "cifar10", batch=3), batch=batch, seed=batch)
