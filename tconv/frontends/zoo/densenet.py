"""Densely connected networks (Huang et al., 2017): DenseNet-BC for CIFAR-10 and
DenseNet-121 for ImageNet, both named as torchvision's `DenseNet` names its
state dict (`features.denseblock1.denselayer1.conv1.weight`).

A dense layer is the bottleneck BN → ReLU → 1×1 conv (bn_size · k channels)
→ BN → ReLU → 3×3 conv (k channels); its output is concatenated after its
input, so a block of L layers adds L · k channels. A transition is BN → ReLU
→ 1×1 conv (channels · compression) → 2×2 average pool of stride 2. The head is
BN → ReLU → global average pooling → dense with bias. Convolutions have no bias.

- DenseNet-BC-100, k = 12: a 3×3 stem conv (3→2k), three blocks of 16 layers,
  compression 0.5, no batch-norm before the first block (as the paper).
- DenseNet-121, k = 32: a 7×7 stride-2 stem conv (3→64), BN, ReLU and a 3×3
  stride-2 max-pool with padding 1, then blocks of 6, 12, 24 and 16 layers.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import shape_of

_BN_SIZE = 4


def _dense_layer(b: NetworkBuilder, x: SSAValue, growth_rate: int) -> SSAValue:
    """The k new channels of one layer (without its input)."""
    out = b.conv2d(b.relu(b.batch_norm(x, name="norm1")), _BN_SIZE * growth_rate, 1, name="conv1")
    return b.conv2d(b.relu(b.batch_norm(out, name="norm2")), growth_rate, 3, name="conv2")


def _dense_block(b: NetworkBuilder, x: SSAValue, layers: int, growth_rate: int) -> SSAValue:
    for index in range(layers):
        with b.scope(f"denselayer{index + 1}"):
            x = b.concat([x, _dense_layer(b, x, growth_rate)])
    return x


def _transition(b: NetworkBuilder, x: SSAValue, compression: float) -> SSAValue:
    out_channels = int(shape_of(x)[1] * compression)
    x = b.conv2d(b.relu(b.batch_norm(x, name="norm")), out_channels, 1, name="conv")
    return b.avg_pool2d(x, 2, stride=2)


def _dense_stages(
    b: NetworkBuilder, x: SSAValue, block_layers: Sequence[int], growth_rate: int, compression: float
) -> SSAValue:
    """The dense blocks with transitions between them, and the final BN → ReLU."""
    for index, layers in enumerate(block_layers):
        with b.scope(f"denseblock{index + 1}"):
            x = _dense_block(b, x, layers, growth_rate)
        if index + 1 < len(block_layers):
            with b.scope(f"transition{index + 1}"):
                x = _transition(b, x, compression)
    # torchvision's `norm5` follows its four blocks; a three-block network's is `norm4`.
    return b.relu(b.batch_norm(x, name=f"norm{len(block_layers) + 1}"))


def _head(b: NetworkBuilder, x: SSAValue, classes: int) -> ModuleOp:
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), classes, name="classifier"))


def densenet_bc(depth: int = 100, growth_rate: int = 12, batch: int = 1, name: str | None = None) -> ModuleOp:
    """DenseNet-BC-`depth` with growth rate `growth_rate` on `batch` CIFAR-10
    images, as a module holding one function `name` (default `densenet_bc<depth>`).
    depth must be 6n + 4 (three blocks of n bottleneck layers)."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"densenet_bc: depth must be 6n + 4 with n >= 1, got {depth}")
    layers = (depth - 4) // 6
    b = NetworkBuilder(name or f"densenet_bc{depth}", (batch, 3, 32, 32))
    with b.scope("features"):
        x = b.conv2d(b.input, 2 * growth_rate, 3, name="conv0")
        x = _dense_stages(b, x, (layers,) * 3, growth_rate, compression=0.5)
    return _head(b, x, 10)


def densenet121(batch: int = 1, name: str = "densenet121") -> ModuleOp:
    """torchvision's DenseNet-121 on `batch` 224×224 ImageNet images."""
    b = NetworkBuilder(name, (batch, 3, 224, 224))
    with b.scope("features"):
        x = b.conv2d(b.input, 64, 7, stride=2, name="conv0")
        x = b.max_pool2d(b.relu(b.batch_norm(x, name="norm0")), 3, stride=2, padding=1)
        x = _dense_stages(b, x, (6, 12, 24, 16), growth_rate=32, compression=0.5)
    return _head(b, x, 1000)
