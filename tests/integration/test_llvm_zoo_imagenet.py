"""The ImageNet networks of the zoo compiled whole by the LLVM backend,
against the reference executor (the checks of test_llvm_zoo.py, in a
file of their own so that `--dist loadfile` can run the two halves on two
workers).

ResNet-34, ResNet-50 and DenseNet-121 at ImageNet size repeat blocks that
their CIFAR-10 versions and ResNet-18's ImageNet stem already test here
(and the TVM backend tests them whole, tests/integration/test_tvm_zoo.py):
they take 26–35 s each, so they run only with `TCONV_ZOO_ALL=1`, which
keeps `make test` within its budget."""

import os

import pytest
from test_llvm_zoo import check_zoo_artifact, zoo_cases

COVERED_ELSEWHERE = {("resnet34", "imagenet"), ("resnet50", "imagenet"), ("densenet121", "imagenet")}


@pytest.mark.parametrize(("name", "dataset"), zoo_cases(imagenet=True))
def test_zoo_network_artifact_matches_reference(name, dataset, tmp_path):
    if (name, dataset) in COVERED_ELSEWHERE and not os.environ.get("TCONV_ZOO_ALL"):
        pytest.skip("its blocks are tested at CIFAR size; TCONV_ZOO_ALL=1 runs it")
    check_zoo_artifact(name, dataset, tmp_path)
