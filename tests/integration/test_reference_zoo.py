"""Whole zoo networks through the reference executor, against an independent
torch interpreter of the tconv IR (`tconv.semantics.torch_executor`).

The interpreter runs in float32: torch's float64 grouped convolutions are
orders of magnitude slower, and float32 rounding stays far below the bound."""

import numpy as np
import pytest
import torch
from support import relative_error
from xdsl.dialects.builtin import ModuleOp

from tconv.frontends import zoo
from tconv.ir.ops import shape_of
from tconv.ir.params import init_params
from tconv.semantics.reference import run
from tconv.semantics.torch_executor import torch_run


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """torch's thread pool slows down tenfold when the cores are shared (as on CI
    runners and beside other test processes); one thread keeps it predictable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def check(module: ModuleOp, batch: int, seed: int = 0) -> None:
    """The executor and the torch interpreter agree on `batch` random images."""
    function = module.ops.first
    params = init_params(module, seed=seed)
    image = shape_of(function.body.block.args[0])[1:]
    x = np.random.default_rng(seed).standard_normal((batch, *image), dtype=np.float32)
    (actual,) = run(module, params, x)
    (expected,) = torch_run(module, params, x)
    assert actual.dtype == np.float32
    assert actual.shape == (batch, *shape_of(function.function_type.outputs.data[0])[1:])
    assert relative_error(actual, expected) < 1e-4


CASES = [
    pytest.param(name, dataset, id=f"{name}-{dataset}")
    for name in zoo.network_names()
    for dataset in zoo.datasets(name)
]


@pytest.mark.parametrize("name, dataset", CASES)
def test_zoo_network_matches_torch(name, dataset):
    """Built for batch 1, run on batch 2: the IR's batch is nominal."""
    check(zoo.build(name, dataset, batch=1), batch=2)


@pytest.mark.parametrize("batch", [1, 3])
def test_a_batched_network_runs_on_any_batch(batch):
    check(zoo.build("resnet18", "cifar10", batch=3), batch=batch, seed=batch)
