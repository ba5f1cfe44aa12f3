"""ResNet-18, -34 and -50 (He et al., 2016) with a CIFAR-10 or an ImageNet stem.

- `cifar10`: the kuangliu/pytorch-cifar definition. A 3×3 stride-1 stem at
  32×32 and no max-pool; shortcuts are named `shortcut.0`/`shortcut.1`, the
  classifier `linear`.
- `imagenet`: torchvision's definition. A 7×7 stride-2 stem and a 3×3 stride-2
  max-pool at 224×224; shortcuts are named `downsample.0`/`downsample.1`, the
  classifier `fc`. The bottleneck strides on its 3×3 convolution ("v1.5").

Both heads are global average pooling, flatten and a dense layer with bias
(kuangliu's `avg_pool2d(out, 4)` is the same at CIFAR sizes).
"""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import shape_of

DEPTHS = (18, 34, 50)
DATASETS = ("cifar10", "imagenet")

_STAGE_WIDTHS = (64, 128, 256, 512)
_STAGE_STRIDES = (1, 2, 2, 2)

# depth → (bottleneck blocks?, blocks per stage)
_LAYOUT = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
}

_BOTTLENECK_EXPANSION = 4


def _shortcut(b: NetworkBuilder, x: SSAValue, out_channels: int, stride: int, name: str) -> SSAValue:
    """The identity, or a strided 1×1 projection with batch-norm where the shape changes."""
    if stride == 1 and shape_of(x)[1] == out_channels:
        return x
    with b.scope(name):
        return b.batch_norm(b.conv2d(x, out_channels, 1, stride=stride, name="0"), name="1")


def _basic_block(b: NetworkBuilder, x: SSAValue, planes: int, stride: int, shortcut: str) -> SSAValue:
    out = b.relu(b.batch_norm(b.conv2d(x, planes, 3, stride=stride, name="conv1"), name="bn1"))
    out = b.batch_norm(b.conv2d(out, planes, 3, name="conv2"), name="bn2")
    return b.relu(b.add(out, _shortcut(b, x, planes, stride, shortcut)))


def _bottleneck_block(b: NetworkBuilder, x: SSAValue, planes: int, stride: int, shortcut: str) -> SSAValue:
    out_channels = planes * _BOTTLENECK_EXPANSION
    out = b.relu(b.batch_norm(b.conv2d(x, planes, 1, name="conv1"), name="bn1"))
    out = b.relu(b.batch_norm(b.conv2d(out, planes, 3, stride=stride, name="conv2"), name="bn2"))
    out = b.batch_norm(b.conv2d(out, out_channels, 1, name="conv3"), name="bn3")
    return b.relu(b.add(out, _shortcut(b, x, out_channels, stride, shortcut)))


def resnet(depth: int, dataset: str = "cifar10", batch: int = 1, name: str | None = None) -> ModuleOp:
    """ResNet-`depth` (one of DEPTHS) for `dataset` (one of DATASETS) on `batch`
    images, as a module holding one function `name` (default `resnet<depth>`)."""
    if depth not in _LAYOUT:
        raise ValueError(f"resnet: depth must be one of {DEPTHS}, got {depth}")
    if dataset not in DATASETS:
        raise ValueError(f"resnet: dataset must be one of {DATASETS}, got '{dataset}'")
    bottleneck, blocks_per_stage = _LAYOUT[depth]
    block = _bottleneck_block if bottleneck else _basic_block
    cifar = dataset == "cifar10"
    size, classes = (32, 10) if cifar else (224, 1000)
    shortcut, classifier = ("shortcut", "linear") if cifar else ("downsample", "fc")

    b = NetworkBuilder(name or f"resnet{depth}", (batch, 3, size, size))
    if cifar:
        x = b.conv2d(b.input, 64, 3, name="conv1")
    else:
        x = b.conv2d(b.input, 64, 7, stride=2, name="conv1")
    x = b.relu(b.batch_norm(x, name="bn1"))
    if not cifar:
        x = b.max_pool2d(x, 3, stride=2, padding=1)
    for stage, (planes, stride, blocks) in enumerate(zip(_STAGE_WIDTHS, _STAGE_STRIDES, blocks_per_stage)):
        with b.scope(f"layer{stage + 1}"):
            for index in range(blocks):
                with b.scope(index):
                    x = block(b, x, planes, stride if index == 0 else 1, shortcut)
    x = b.flatten(b.global_avg_pool(x))
    return b.finish(b.dense(x, classes, name=classifier))
