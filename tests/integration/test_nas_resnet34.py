"""Every NAS pass on ResNet-34 (CIFAR-10) at one setting: the rewritten
network verifies, runs at batch 2 in the reference executor, and its
parameters and FLOPs change by the amounts computed by hand from the
original convolutions' shapes."""

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import pytest
from xdsl.passes import PassPipeline

from tconv.frontends import zoo
from tconv.ir.loader import make_context, verify_module
from tconv.ir.ops import Conv2dOp, shape_of
from tconv.passes.analyses.capacity import minibatch
from tconv.passes.analyses.summary import summarize
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.registry import PASSES
from tconv.semantics.reference import run


@dataclass(frozen=True)
class Conv:
    """A convolution of the original network, by its shapes."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int  # KH·KW
    in_area: int  # H·W of its input
    out_area: int  # P·Q of its output

    @property
    def weights(self) -> int:
        return self.out_channels * self.in_channels * self.kernel


@pytest.fixture(scope="module")
def resnet34():
    return zoo.build("resnet34", "cifar10")


@pytest.fixture(scope="module")
def convs(resnet34) -> list[Conv]:
    found = []
    for op in resnet34.walk():
        if isinstance(op, Conv2dOp):
            _, c, h, w = shape_of(op.input)
            o, _, kh, kw = shape_of(op.weight)
            _, _, p, q = shape_of(op.output)
            found.append(Conv(op.weight.owner.param_name.removesuffix(".weight"), c, o, kh * kw, h * w, p * q))
    assert len(found) == 36  # stem, 16 blocks of two, 3 projection shortcuts
    return found


def rewritten(module, spec: str):
    """The module after `spec`, verified, with the store the pass wrote."""
    module = module.clone()
    store = ParamStore()
    with using_store(store), contextlib.redirect_stderr(io.StringIO()):
        PassPipeline.parse_spec(PASSES, spec).apply(make_context(), module)
    verify_module(module)
    x = minibatch(module, 2, 0)[0]
    (logits,) = run(module, store.values_for(module), x)
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
    return module


def change(before, after) -> tuple[int, int]:
    """(parameters, FLOPs) of `after` minus those of `before`."""
    a, b = summarize(before), summarize(after)
    return b.parameters - a.parameters, b.flops - a.flops


def narrowing(convs: list[Conv], kept_ratio: int) -> tuple[int, int]:
    """The change from narrowing every block's conv1 to O/kept_ratio channels:
    its rows, bn1's scale and shift (2 FLOPs/element) and relu (1), and
    conv2's input channels (conv2 has conv1's output shape)."""
    params = flops = 0
    for conv in convs:
        if not conv.name.endswith(".conv1") or conv.name == "conv1":
            continue
        removed = conv.out_channels - conv.out_channels // kept_ratio
        conv2_removed = conv.out_channels * removed * 9
        params -= removed * conv.in_channels * conv.kernel + 2 * removed + conv2_removed
        flops -= conv.out_area * (2 * removed * conv.in_channels * conv.kernel + 3 * removed + 2 * conv2_removed)
    return params, flops


def test_group(resnet34, convs):
    after = rewritten(resnet34, "tconv-group{groups=2}")
    grouped = [c for c in convs if c.in_channels % 2 == 0]  # all but the stem (3 channels)
    assert len(grouped) == 35
    assert change(resnet34, after) == (
        -sum(c.weights // 2 for c in grouped),
        -sum(2 * c.out_area * (c.weights // 2) for c in grouped),
    )


def test_bottleneck(resnet34, convs):
    after = rewritten(resnet34, "tconv-bottleneck{factor=2}")
    assert change(resnet34, after) == narrowing(convs, 2)


def test_prune_channels(resnet34, convs):
    # Pruning half the channels removes what a bottleneck of 2 does.
    after = rewritten(resnet34, "tconv-prune-channels{keep=0.5 batch=2}")
    assert change(resnet34, after) == narrowing(convs, 2)


def test_depthwise_separable(resnet34, convs):
    after = rewritten(resnet34, "tconv-depthwise-separable")
    factored = [c for c in convs if c.kernel == 9]
    assert len(factored) == 33  # the 1x1 shortcuts stay
    depthwise = [c.in_channels * 9 for c in factored]
    pointwise = [c.out_channels * c.in_channels for c in factored]
    assert change(resnet34, after) == (
        sum(d + p - c.weights for c, d, p in zip(factored, depthwise, pointwise)),
        sum(2 * c.out_area * (d + p - c.weights) for c, d, p in zip(factored, depthwise, pointwise)),
    )


def test_split_output_keeps_the_work(resnet34, convs):
    after = rewritten(resnet34, "tconv-split-output{splits=2}")
    assert change(resnet34, after) == (0, 0)
    assert sum(isinstance(op, Conv2dOp) for op in after.walk()) == 2 * len(convs)


def test_unroll_conv(resnet34, convs):
    after = rewritten(resnet34, "tconv-unroll-conv{dense=16 groups=4}")
    unrolled = [c for c in convs if c.in_channels % 4 == 0]
    new = [16 * c.in_channels * c.kernel + (c.out_channels - 16) * (c.in_channels // 4) * c.kernel for c in unrolled]
    assert change(resnet34, after) == (
        sum(n - c.weights for c, n in zip(unrolled, new)),
        sum(2 * c.out_area * (n - c.weights) for c, n in zip(unrolled, new)),
    )


def test_bottleneck_block(resnet34, convs):
    after = rewritten(resnet34, "tconv-bottleneck-block{factor=4}")
    params = flops = 0
    for c in convs:
        if c.kernel != 9:
            continue
        width = c.out_channels // 4
        down, mid, up = width * c.in_channels, width * width * 9, c.out_channels * width
        params += down + mid + up - c.weights
        # The 1x1 down runs at the input's resolution, before the stride.
        flops += 2 * (c.in_area * down + c.out_area * (mid + up - c.weights))
    assert change(resnet34, after) == (params, flops)
