"""Does the default capacity metric discriminate? On ResNet-34 (CIFAR-10
stem, 32×32 inputs) at initialisation, rewrites that remove most of the
network's capacity must be refused at min-capacity 1.0 and a mild one
accepted, by the legality verdict (`legality.Comparison`, as `compare` builds
it) over three seeds on the default minibatch (scikit-learn's digits). The
baseline is measured once and shared by the three comparisons.

The variants are built by `resnet34_variant`, which mirrors the zoo's
`resnet.py` (same stages, widths, strides, shortcuts and parameter names) and
applies one rewrite to every basic block:

- depthwise: both 3×3 convolutions of every block become depthwise (groups =
  input channels), with no pointwise convolution to mix channels;
- bottleneck32: every block's first convolution keeps 1/32 of its output
  channels (as `tconv-bottleneck{factor=32}` does);
- groups2: both 3×3 convolutions of every block get groups 2.

The minibatch is the default, 64 digits; the test takes about 25 s on two
idle cores. The baseline must equal the zoo network so the mirror cannot
drift.
"""

import pytest

from tconv.frontends.zoo.resnet import resnet
from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import shape_of
from tconv.passes.analyses.capacity import DEFAULT_METRIC, DEFAULT_SEEDS, SeededCapacity, measure_seeds
from tconv.passes.analyses.legality import Comparison

pytestmark = pytest.mark.slow

BATCH = 64  # the default of `compare` and `tconv capacity`
STAGES = ((64, 1, 3), (128, 2, 4), (256, 2, 6), (512, 2, 3))  # planes, stride, blocks


def _block(b: NetworkBuilder, x, planes: int, stride: int, rewrite: str):
    in_channels = shape_of(x)[1]
    first_out = planes // int(rewrite.removeprefix("bottleneck")) if rewrite.startswith("bottleneck") else planes

    def groups_for(channels: int) -> int:
        if rewrite == "depthwise":
            return channels
        return int(rewrite.removeprefix("groups")) if rewrite.startswith("groups") else 1

    out = b.conv2d(x, first_out, 3, stride=stride, groups=groups_for(in_channels), name="conv1")
    out = b.relu(b.batch_norm(out, name="bn1"))
    out = b.batch_norm(b.conv2d(out, planes, 3, groups=groups_for(shape_of(out)[1]), name="conv2"), name="bn2")
    shortcut = x
    if stride != 1 or in_channels != planes:
        with b.scope("shortcut"):
            shortcut = b.batch_norm(b.conv2d(x, planes, 1, stride=stride, name="0"), name="1")
    return b.relu(b.add(out, shortcut))


def resnet34_variant(rewrite: str):
    """ResNet-34 CIFAR with `rewrite` in every block: "none", "depthwise",
    "bottleneck<factor>" or "groups<count>"."""
    b = NetworkBuilder("resnet34", (1, 3, 32, 32))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 64, 3, name="conv1"), name="bn1"))
    for stage, (planes, stride, blocks) in enumerate(STAGES):
        with b.scope(f"layer{stage + 1}"):
            for index in range(blocks):
                with b.scope(index):
                    x = _block(b, x, planes, stride if index == 0 else 1, rewrite)
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="linear"))


def test_mirror_matches_the_zoo():
    assert str(resnet34_variant("none")) == str(resnet(34, "cifar10"))


@pytest.fixture(scope="module")
def baseline() -> SeededCapacity:
    """The baseline measured once, as `compare` measures it, for every rewrite below."""
    return measure_seeds(resnet34_variant("none"), DEFAULT_METRIC, seeds=DEFAULT_SEEDS, batch=BATCH)


def compared_with(baseline: SeededCapacity, rewrite: str) -> Comparison:
    after = measure_seeds(resnet34_variant(rewrite), DEFAULT_METRIC, seeds=DEFAULT_SEEDS, batch=BATCH)
    return Comparison(before=baseline, after=after, min_capacity=1.0)


@pytest.mark.parametrize("rewrite", ["depthwise", "bottleneck32"])
def test_harmful_rewrites_are_refused(baseline, rewrite):
    result = compared_with(baseline, rewrite)
    assert result.verdict == "illegal", result.describe()


def test_grouping_in_two_is_accepted(baseline):
    result = compared_with(baseline, "groups2")
    assert result.accepted, result.describe()
