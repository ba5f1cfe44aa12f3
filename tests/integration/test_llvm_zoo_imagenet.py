"""The ImageNet networks of the zoo compiled whole by the LLVM backend,
against the reference executor (the checks of test_llvm_zoo.py, in a
file of their own so that `--dist loadfile` can run the two halves on two
workers).

ResNet-34, ResNet-50 and DenseNet-121 at ImageNet size repeat blocks that
their CIFAR-10 versions and ResNet-18's ImageNet stem already test here
(`support.ZOO_REPEATS`); VGG-16's layers (3×3 convolutions, max-pools,
dense layers) are other networks' too, and its 138 million parameters
took 22 s (the TVM backend compiles it whole, test_tvm_zoo.py). They run
only with `TCONV_ZOO_ALL=1`, which keeps `make test` within its budget."""

import pytest
from support import ZOO_REPEATS, skip_zoo_repeat
from test_llvm_zoo import check_zoo_artifact, zoo_cases


@pytest.mark.parametrize(("name", "dataset"), zoo_cases(imagenet=True))
def test_zoo_network_artifact_matches_reference(name, dataset, tmp_path):
    skip_zoo_repeat(name, dataset, ZOO_REPEATS | {("vgg16", "imagenet")})
    check_zoo_artifact(name, dataset, tmp_path)
