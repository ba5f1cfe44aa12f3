"""A tconv network as a trainable `torch.nn.Module`, and back into its store.

The module is the IR interpreted op by op (`tconv.semantics.torch_executor`),
so what is trained is exactly what `tconv compile` and `tconv run` execute.
Every `tconv.param` becomes an `nn.Parameter`, except the running mean and
variance of batch-norm, which are buffers: in training mode batch-norm
normalises by the minibatch's statistics and updates them (momentum 0.1,
PyTorch's rule), in evaluation mode it uses them, as the compiled network
does. `arrays()` gives every entry back as float32 numpy, for the store.
A convolution that declares `nonzeros` (`tconv-sparsify`) keeps its zero
weights at zero through training (`hold_zeros`, after every step), so the
trained network still fits its declaration and its sparse kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from tconv.ir.ops import BatchNormOp, Conv2dOp, ParamOp
from tconv.ir.params import bind_params
from tconv.semantics.reference import single_function
from tconv.semantics.torch_executor import TORCH, interpret

BATCH_NORM_MOMENTUM = 0.1


def running_statistics(module: ModuleOp) -> set[str]:
    """The names of batch-norm's running mean and variance parameters: state, not weights."""
    return {
        operand.owner.param_name
        for op in module.walk()
        if isinstance(op, BatchNormOp)
        for operand in (op.mean, op.var)
        if isinstance(operand.owner, ParamOp)
    }


def sparse_weights(module: ModuleOp) -> set[str]:
    """The weights of convolutions that declare `nonzeros`: their zeros are held."""
    return {
        op.weight.owner.param_name
        for op in module.walk()
        if isinstance(op, Conv2dOp) and op.weight_nonzeros is not None and isinstance(op.weight.owner, ParamOp)
    }


class TrainableNetwork(nn.Module):
    """The network of `module` with the values of `params`, trainable by torch.

    Parameter names of the IR (`layer1.0.conv1.weight`) hold dots, which torch
    reserves for submodules: they are registered by position (`p0`, `p1`, ...)."""

    def __init__(self, module: ModuleOp, params: Mapping[str, np.ndarray]) -> None:
        super().__init__()
        self.function = single_function(module)
        bound = bind_params(module, params)
        statistics = running_statistics(module)
        self.names = list(bound)
        self._attributes = {name: f"p{index}" for index, name in enumerate(self.names)}
        for name, value in bound.items():
            tensor = torch.from_numpy(np.array(value, np.float32))
            if name in statistics:
                self.register_buffer(self._attributes[name], tensor)
            else:
                self.register_parameter(self._attributes[name], nn.Parameter(tensor))
        self.rules = {**TORCH, BatchNormOp: self._batch_norm}
        self.batch_norm_momentum = BATCH_NORM_MOMENTUM
        self._masks = {}
        for index, name in enumerate(sorted(sparse_weights(module))):
            self._masks[name] = f"mask{index}"
            self.register_buffer(f"mask{index}", torch.from_numpy(np.asarray(bound[name]) != 0), persistent=False)

    @torch.no_grad()
    def hold_zeros(self) -> None:
        """Set back to zero the weights a sparse convolution had at zero."""
        for name, mask in self._masks.items():
            self.value(name).mul_(getattr(self, mask))

    def value(self, name: str) -> torch.Tensor:
        """The tensor of the IR parameter `name`."""
        return getattr(self, self._attributes[name])

    def _batch_norm(self, op: BatchNormOp, x, scale, shift, mean, var) -> torch.Tensor:
        return F.batch_norm(
            x, mean, var, scale, shift, training=self.training,
            momentum=self.batch_norm_momentum, eps=op.epsilon.value.data,
        )

    def forward(
        self, x: torch.Tensor, observe: Callable[[Operation, torch.Tensor], None] | None = None
    ) -> torch.Tensor:
        """The logits (the function's first result); `observe` sees every op's result."""
        params = {name: self.value(name) for name in self.names}
        return interpret(self.function, params, (x,), self.rules, observe)[0]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every IR parameter, running statistics included, as float32 numpy arrays."""
        return {name: self.value(name).detach().cpu().numpy().astype(np.float32) for name in self.names}


@torch.no_grad()
def recalibrate_batch_norm(network: TrainableNetwork, images: np.ndarray, batch: int = 64) -> None:
    """Re-estimate every batch-norm's running mean and variance as their
    average over the minibatches of `images` (momentum 1/(k+1) at the k-th).

    A rewrite changes the activations its batch-norms see, so the running
    statistics it inherited describe another network: evaluated with them,
    a rewrite that fine-tuning repairs in one epoch can score at chance."""
    was_training = network.training
    network.train()
    device = next(network.parameters()).device
    for index, start in enumerate(range(0, len(images), batch)):
        network.batch_norm_momentum = 1.0 / (index + 1)
        network(torch.from_numpy(np.ascontiguousarray(images[start : start + batch])).to(device))
    network.batch_norm_momentum = BATCH_NORM_MOMENTUM
    network.train(was_training)

