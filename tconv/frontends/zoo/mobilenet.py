"""MobileNetV1 (Howard et al., 2017) and MobileNetV2 (Sandler et al., 2018) for
ImageNet at 224×224, width multiplier 1.0.

- V1: the common PyTorch definition (marvis/pytorch-mobilenet): a 3×3 stride-2
  conv (3→32), then 13 depthwise-separable blocks, each a depthwise 3×3 conv →
  BN → ReLU → pointwise 1×1 conv → BN → ReLU; global pooling and a dense
  layer. Its state dict names `model.<i>.0` (conv), `model.<i>.1` (BN) and, in
  the separable blocks, `model.<i>.3`/`model.<i>.4` for the pointwise pair; `fc`.
- V2: torchvision's `mobilenet_v2`: inverted residual blocks (1×1 expand →
  depthwise 3×3 → 1×1 linear projection, ReLU6), a residual add where the
  stride is 1 and the width is kept, a final 1×1 conv to 1280 channels, and
  the classifier `classifier.1`.
"""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import shape_of

_CLASSES = 1000

# V1: (output channels, stride) of each depthwise-separable block.
_V1_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)

# V2: (expansion t, output channels c, blocks n, first stride s), the paper's Table 2.
_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_V2_LAST_CHANNELS = 1280


def mobilenet_v1(batch: int = 1, name: str = "mobilenet_v1") -> ModuleOp:
    """MobileNetV1 on `batch` ImageNet images."""
    b = NetworkBuilder(name, (batch, 3, 224, 224))
    with b.scope("model"), b.scope(0):
        x = b.relu(b.batch_norm(b.conv2d(b.input, 32, 3, stride=2, name="0"), name="1"))
    for index, (out_channels, stride) in enumerate(_V1_BLOCKS, start=1):
        with b.scope("model"), b.scope(index):
            channels = shape_of(x)[1]
            x = b.conv2d(x, channels, 3, stride=stride, groups=channels, name="0")
            x = b.relu(b.batch_norm(x, name="1"))
            x = b.relu(b.batch_norm(b.conv2d(x, out_channels, 1, name="3"), name="4"))
    x = b.flatten(b.global_avg_pool(x))
    return b.finish(b.dense(x, _CLASSES, name="fc"))


def _conv_bn_relu6(b: NetworkBuilder, x: SSAValue, out_channels: int, kernel: int, stride: int = 1,
                   groups: int = 1) -> SSAValue:
    """torchvision's `Conv2dNormActivation`: conv `0`, batch-norm `1`, ReLU6."""
    x = b.conv2d(x, out_channels, kernel, stride=stride, groups=groups, name="0")
    return b.relu6(b.batch_norm(x, name="1"))


def _inverted_residual(b: NetworkBuilder, x: SSAValue, expansion: int, out_channels: int,
                       stride: int) -> SSAValue:
    """One block, its layers numbered as torchvision's `InvertedResidual.conv`."""
    in_channels = shape_of(x)[1]
    hidden = in_channels * expansion
    layer = 0
    out = x
    with b.scope("conv"):
        if expansion != 1:
            with b.scope(layer):
                out = _conv_bn_relu6(b, out, hidden, 1)
            layer += 1
        with b.scope(layer):
            out = _conv_bn_relu6(b, out, hidden, 3, stride=stride, groups=hidden)
        # The projection is linear: no activation after its batch-norm.
        out = b.conv2d(out, out_channels, 1, name=str(layer + 1))
        out = b.batch_norm(out, name=str(layer + 2))
    if stride == 1 and in_channels == out_channels:
        return b.add(x, out)
    return out


def mobilenet_v2(batch: int = 1, name: str = "mobilenet_v2") -> ModuleOp:
    """torchvision's MobileNetV2 on `batch` ImageNet images."""
    b = NetworkBuilder(name, (batch, 3, 224, 224))
    with b.scope("features"):
        with b.scope(0):
            x = _conv_bn_relu6(b, b.input, 32, 3, stride=2)
        index = 1
        for expansion, out_channels, blocks, first_stride in _V2_STAGES:
            for block in range(blocks):
                with b.scope(index):
                    x = _inverted_residual(b, x, expansion, out_channels, first_stride if block == 0 else 1)
                index += 1
        with b.scope(index):
            x = _conv_bn_relu6(b, x, _V2_LAST_CHANNELS, 1)
    x = b.flatten(b.global_avg_pool(x))
    with b.scope("classifier"):
        # Index 0 is the dropout, a no-op at inference.
        return b.finish(b.dense(x, _CLASSES, name="1"))
