"""The ImageNet networks of the zoo compiled whole by the LLVM backend,
against the reference executor (the checks of test_llvm_zoo.py, in a
file of their own so that `--dist loadfile` can run the two halves on two
workers)."""

import pytest
from test_llvm_zoo import check_zoo_artifact, zoo_cases


@pytest.mark.parametrize(("name", "dataset"), zoo_cases(imagenet=True))
def test_zoo_network_artifact_matches_reference(name, dataset, tmp_path):
    check_zoo_artifact(name, dataset, tmp_path)
