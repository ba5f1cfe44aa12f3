"""VGG-16 (Simonyan & Zisserman, 2015, configuration D) for ImageNet, as
torchvision's `vgg16` without batch-norm.

Thirteen 3×3 convolutions with bias and ReLU in five stages, each closed by a
2×2 max-pool, then three dense layers (25088→4096→4096→1000) with ReLU between
them. Layers carry torchvision's indices (`features.0`, `classifier.6`). At
224×224 the features are 7×7, so torchvision's adaptive 7×7 average pool is
the identity and is omitted, as are the dropouts (no-ops at inference).
"""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp

from tconv.ir.builder import NetworkBuilder

_POOL = "M"

# Output channels of each 3×3 conv, _POOL for a 2×2 max-pool: configuration D.
_VGG16 = (64, 64, _POOL, 128, 128, _POOL, 256, 256, 256, _POOL, 512, 512, 512, _POOL, 512, 512, 512, _POOL)

_HIDDEN = 4096
_CLASSES = 1000


def vgg16(batch: int = 1, name: str = "vgg16") -> ModuleOp:
    """VGG-16 on `batch` 224×224 ImageNet images."""
    b = NetworkBuilder(name, (batch, 3, 224, 224))
    x = b.input
    # torchvision's index counts every module: a conv and its ReLU take two, a pool one.
    index = 0
    with b.scope("features"):
        for layer in _VGG16:
            if layer == _POOL:
                x = b.max_pool2d(x, 2, stride=2)
                index += 1
            else:
                x = b.relu(b.conv2d(x, layer, 3, bias=True, name=str(index)))
                index += 2
    x = b.flatten(x)
    with b.scope("classifier"):
        # Linear, ReLU, Dropout: dense layers at indices 0, 3 and 6.
        x = b.relu(b.dense(x, _HIDDEN, name="0"))
        x = b.relu(b.dense(x, _HIDDEN, name="3"))
        return b.finish(b.dense(x, _CLASSES, name="6"))
