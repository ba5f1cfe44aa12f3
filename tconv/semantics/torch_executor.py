"""The tconv IR interpreted with PyTorch: one torch.nn.functional call per op.

An oracle independent of the numpy reference executor (the tests compare
the two on every zoo network) and the PyTorch peer of the benchmarks: the
same network and weights, run by torch's own kernels on any torch device.

    network = TorchNetwork(module, params, device="cuda")
    logits, = network(torch_image)

It is also the forward pass that `tconv.train` trains (with batch-norm in
training mode). torch comes with the `train` extra; this module imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from tconv.errors import TconvError
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
)
from tconv.semantics.reference import single_function


def _pad(x: torch.Tensor, padding, value: float = 0.0) -> torch.Tensor:
    top, left, bottom, right = padding
    return F.pad(x, (left, right, top, bottom), value=value)


def _conv2d(op: Conv2dOp, x, w, b=None):
    top, left, bottom, right = op.padding.get_values()
    if (top, left) != (bottom, right):
        x, pads = _pad(x, (top, left, bottom, right)), (0, 0)
    else:
        pads = (top, left)  # torch pads inside the kernel: cuDNN's fast path
    return F.conv2d(
        x, w, b, stride=op.strides.get_values(), padding=pads,
        dilation=op.dilations.get_values(), groups=op.groups.value.data,
    )


def _avg_pool2d(op: AvgPool2dOp, x: torch.Tensor) -> torch.Tensor:
    top, left, bottom, right = op.padding.get_values()
    if (top, left) != (bottom, right):
        raise TconvError("the torch interpreter pools with symmetric padding only")
    return F.avg_pool2d(
        x, op.kernel.get_values(), op.strides.get_values(), (top, left),
        count_include_pad=op.count_include_pad is not None,
    )


def _quant_params(op, rank: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32), broadcastable over a rank-`rank` tensor."""
    scale = torch.tensor(op.scales, dtype=torch.float32, device=device)
    zero_point = torch.tensor(op.zero_points, dtype=torch.int32, device=device)
    axis = op.channel_axis
    if axis is None:
        return scale.reshape(()), zero_point.reshape(())
    shape = tuple(-1 if d == axis else 1 for d in range(rank))
    return scale.reshape(shape), zero_point.reshape(shape)


def _quantize(op: QuantizeOp, x: torch.Tensor) -> torch.Tensor:
    """QuantizeLinear in integers, as the reference executor: torch.round
    rounds half to even. No gradient flows through it (quantise after training)."""
    scale, zero_point = _quant_params(op, x.dim(), x.device)
    low, high = quant_range(op.quantized_type)  # type: ignore[misc]
    rounded = torch.round(x.detach().float() / scale).clamp(low - 256, high + 256)
    values = (rounded.to(torch.int32) + zero_point).clamp(low, high)
    return values.to(torch.int8 if low < 0 else torch.uint8)


def _dequantize(op: DequantizeOp, q: torch.Tensor) -> torch.Tensor:
    scale, zero_point = _quant_params(op, q.dim(), q.device)
    return (q.to(torch.int32) - zero_point).to(torch.float32) * scale


TORCH = {
    QuantizeOp: _quantize,
    DequantizeOp: _dequantize,
    Conv2dOp: _conv2d,
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
    SliceOp: lambda op, x: torch.narrow(x, op.axis.value.data, op.start.value.data, op.size.value.data),
    ChannelShuffleOp: lambda op, x: F.channel_shuffle(x, op.groups.value.data),
}
"""What each op computes, in torch."""


Rule = Callable[..., torch.Tensor]


def interpret(
    function: func.FuncOp,
    params: Mapping[str, torch.Tensor],
    inputs: Sequence[torch.Tensor],
    rules: Mapping[type[Operation], Rule] = TORCH,
    observe: Callable[[Operation, torch.Tensor], None] | None = None,
) -> list[torch.Tensor]:
    """The function's results on `inputs`, each op computed by its rule, each
    `tconv.param` bound to `params[name]`. Autograd records it unless the
    caller turns it off; a caller may replace rules (batch-norm in training
    mode) and `observe` each op's result (distillation's intermediate maps)."""
    block = function.body.block
    values = dict(zip(block.args, inputs))
    for op in block.ops:
        if isinstance(op, func.ReturnOp):
            return [values[v] for v in op.operands]
        if isinstance(op, ParamOp):
            values[op.result] = params[op.param_name]
        else:
            values[op.results[0]] = rules[type(op)](op, *(values[v] for v in op.operands))
            if observe is not None:
                observe(op, values[op.results[0]])
    raise TconvError("the network's function has no func.return")


class TorchNetwork:
    """The module's function with its parameters on `device`, callable on torch tensors."""

    def __init__(
        self, module: ModuleOp, params: Mapping[str, np.ndarray], device: str | torch.device = "cpu"
    ) -> None:
        self.function = single_function(module)
        self.device = torch.device(device)
        self.params = {
            op.param_name: torch.from_numpy(np.ascontiguousarray(params[op.param_name])).to(self.device)
            for op in self.function.body.block.ops
            if isinstance(op, ParamOp)
        }

    @torch.no_grad()
    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        return interpret(self.function, self.params, inputs)


def torch_run(module: ModuleOp, params: Mapping[str, np.ndarray], *inputs: np.ndarray) -> list[np.ndarray]:
    """The module's results on `inputs`, computed by torch on the CPU."""
    network = TorchNetwork(module, params)
    return [r.numpy() for r in network(*(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs))]
