"""ResNeXt-29 for CIFAR-10 (Xie et al., 2017), as in the authors' CIFAR code
(prlz77/ResNeXt.pytorch, whose state-dict names this follows).

A 3×3 stem (3→64) with batch-norm and ReLU, then three stages of three
bottleneck blocks with output widths 256, 512 and 1024 at strides 1, 2, 2.
A block of output width `out` has inner width D = cardinality · base_width ·
out / 256 and computes

    1×1 reduce → BN → ReLU → 3×3 grouped (groups = cardinality, strided) → BN → ReLU
    → 1×1 expand → BN, plus the shortcut, then ReLU;

the shortcut is a strided 1×1 convolution with batch-norm where the width
changes (the first block of every stage), the identity elsewhere. The head is
global average pooling and a dense layer 1024→10 with bias.
"""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import shape_of

_STAGE_WIDTHS = (256, 512, 1024)
_STAGE_STRIDES = (1, 2, 2)
_BLOCKS_PER_STAGE = 3  # (depth 29 - 2) / 9
_CLASSES = 10


def inner_width(out_channels: int, cardinality: int, base_width: int) -> int:
    """D, the width of a block's grouped 3×3 convolution."""
    return cardinality * (base_width * out_channels // 256)


def _bottleneck(
    b: NetworkBuilder, x: SSAValue, out_channels: int, stride: int, cardinality: int, base_width: int
) -> SSAValue:
    width = inner_width(out_channels, cardinality, base_width)
    out = b.relu(b.batch_norm(b.conv2d(x, width, 1, name="conv_reduce"), name="bn_reduce"))
    out = b.conv2d(out, width, 3, stride=stride, groups=cardinality, name="conv_conv")
    out = b.relu(b.batch_norm(out, name="bn"))
    out = b.batch_norm(b.conv2d(out, out_channels, 1, name="conv_expand"), name="bn_expand")
    shortcut = x
    if shape_of(x)[1] != out_channels:
        with b.scope("shortcut"):
            shortcut = b.conv2d(x, out_channels, 1, stride=stride, name="shortcut_conv")
            shortcut = b.batch_norm(shortcut, name="shortcut_bn")
    return b.relu(b.add(shortcut, out))


def resnext29(cardinality: int, base_width: int = 64, batch: int = 1, name: str | None = None) -> ModuleOp:
    """ResNeXt-29 (`cardinality`×`base_width`d) on `batch` CIFAR-10 images, as a
    module holding one function `name` (default `resnext29_<c>x<w>d`)."""
    b = NetworkBuilder(name or f"resnext29_{cardinality}x{base_width}d", (batch, 3, 32, 32))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 64, 3, name="conv_1_3x3"), name="bn_1"))
    for stage, (out_channels, stride) in enumerate(zip(_STAGE_WIDTHS, _STAGE_STRIDES)):
        stage_name = f"stage_{stage + 1}"
        with b.scope(stage_name):
            for index in range(_BLOCKS_PER_STAGE):
                with b.scope(f"{stage_name}_bottleneck_{index}"):
                    x = _bottleneck(b, x, out_channels, stride if index == 0 else 1, cardinality, base_width)
    x = b.flatten(b.global_avg_pool(x))
    return b.finish(b.dense(x, _CLASSES, name="classifier"))
