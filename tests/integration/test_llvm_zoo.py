"""Zoo networks compiled whole by the LLVM backend into artifacts and run by
the C runtime, against the reference executor on random inputs and
trained-like parameters (so that batch-norm folding is exercised): every
network of the zoo built for CIFAR-10 here, the ImageNet ones in
test_llvm_zoo_imagenet.py (two files, so that `--dist loadfile` can run
them on two workers); all but four marked slow (`-m "not slow"` runs those
four in under a minute); and the program's shape against the TVM
backend's."""

import numpy as np
import pytest
from support import relative_error, trained_like_params

from tconv.frontends import zoo
from tconv.lowering.llvm.artifact import compile_artifact
from tconv.lowering.llvm.build import lower_program
from tconv.runtime.driver import Runtime
from tconv.semantics.reference import run

FAST = {("resnet18", "cifar10"), ("resnext29_2x64d", "cifar10"), ("mobilenet_v2", "imagenet"), ("densenet_bc100", "cifar10")}
"""Residual, grouped, depthwise and concatenating networks: the fast set (under a minute)."""


def zoo_cases(imagenet: bool) -> list:
    """Every zoo network and dataset, ImageNet's or the others, the fast set unmarked."""
    return [
        pytest.param(name, dataset, id=f"{name}-{dataset}",
                     marks=[] if (name, dataset) in FAST else [pytest.mark.slow])
        for name in zoo.network_names()
        for dataset in zoo.datasets(name)
        if (dataset == "imagenet") == imagenet
    ]


@pytest.mark.parametrize(("name", "dataset"), zoo_cases(imagenet=False))
def test_zoo_network_artifact_matches_reference(name, dataset, tmp_path):
    check_zoo_artifact(name, dataset, tmp_path)


def check_zoo_artifact(name: str, dataset: str, tmp_path) -> None:
    module = zoo.build(name, dataset)
    params = trained_like_params(module)
    report = compile_artifact(module, params, tmp_path / name)
    assert report.arena_bytes < report.activation_bytes
    with Runtime(tmp_path / name, threads=2) as runtime:
        image = np.random.default_rng(1).standard_normal(runtime.inputs[0].shape).astype(np.float32)
        (actual,) = runtime.run(image)
        (again,) = runtime.run(image)
    (expected,) = run(module, params, image)
    assert relative_error(actual, expected) < 1e-4
    # Running again on the same arena gives the same result (no state left behind).
    np.testing.assert_array_equal(again, actual)


def test_program_has_the_tvm_backends_shape():
    """The same kernel groups in the same order over the same tensors: only
    the weight blocks (and so the derived tensors' shapes) may differ. (The
    TVM backend's Winograd convolutions are three calls: left out.)"""
    from tconv.lowering.tvm.build import lower_kernels

    module = zoo.build("resnet18", "cifar10")
    _, llvm = lower_program(module)
    _, tvm = lower_kernels(module, winograd=False)
    assert [c.ops for c in llvm.calls] == [c.ops for c in tvm.calls]
    assert [c.args for c in llvm.calls] == [c.args for c in tvm.calls]
    assert [(t.kind, t.name.split(":")[0]) for t in llvm.tensors] == [(t.kind, t.name.split(":")[0]) for t in tvm.tensors]
    assert llvm.outputs == tvm.outputs
