"""Wide residual networks WRN-d-k for CIFAR-10 (Zagoruyko & Komodakis, 2016),
as the authors' pre-activation PyTorch definition (szagoruyko/wide-residual-networks).

A 3×3 stem (3→16), then three groups of n = (d - 4) / 6 blocks at widths
16k, 32k, 64k and strides 1, 2, 2. A block computes

    o = ReLU(BN(x)); y = conv3×3(o, strided); y = conv3×3(ReLU(BN(y)))

and adds x, or a strided 1×1 convolution of o where the width changes (the
first block of every group). The head is BN, ReLU, global average pooling and
a dense layer with bias. Convolutions have no bias.

The reference keeps its weights in a flat dictionary (`group0.block0.conv0`);
here they carry PyTorch's `.weight` suffix (`group0.block0.conv0.weight`).
"""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import shape_of

_BASE_WIDTHS = (16, 32, 64)
_GROUP_STRIDES = (1, 2, 2)
_CLASSES = 10


def _block(b: NetworkBuilder, x: SSAValue, width: int, stride: int) -> SSAValue:
    activated = b.relu(b.batch_norm(x, name="bn0"))
    y = b.conv2d(activated, width, 3, stride=stride, name="conv0")
    y = b.conv2d(b.relu(b.batch_norm(y, name="bn1")), width, 3, name="conv1")
    if shape_of(x)[1] == width:
        return b.add(y, x)
    return b.add(y, b.conv2d(activated, width, 1, stride=stride, name="convdim"))


def wrn(depth: int = 40, widen_factor: int = 2, batch: int = 1, name: str | None = None) -> ModuleOp:
    """WRN-`depth`-`widen_factor` on `batch` CIFAR-10 images, as a module holding
    one function `name` (default `wrn<depth>_<widen_factor>`). depth must be 6n + 4."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"wrn: depth must be 6n + 4 with n >= 1, got {depth}")
    blocks_per_group = (depth - 4) // 6
    b = NetworkBuilder(name or f"wrn{depth}_{widen_factor}", (batch, 3, 32, 32))
    x = b.conv2d(b.input, 16, 3, name="conv0")
    for group, (base_width, stride) in enumerate(zip(_BASE_WIDTHS, _GROUP_STRIDES)):
        with b.scope(f"group{group}"):
            for index in range(blocks_per_group):
                with b.scope(f"block{index}"):
                    x = _block(b, x, base_width * widen_factor, stride if index == 0 else 1)
    x = b.relu(b.batch_norm(x, name="bn"))
    x = b.flatten(b.global_avg_pool(x))
    return b.finish(b.dense(x, _CLASSES, name="fc"))
