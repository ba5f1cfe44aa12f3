"""Schedule passes at the value level: a scheduled network computes what the
unscheduled one does (TVM against the reference executor), and the backend
runs the schedule it was given or refuses it."""

import re

import numpy as np
import pytest
from xdsl.passes import PassPipeline

from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError, make_context
from tconv.ir.ops import Conv2dOp
from tconv.ir.params import init_params
from tconv.ir.schedule import parse_schedule
from tconv.lowering.tvm.build import lower_kernels, run_tvm
from tconv.passes.registry import PASSES
from tconv.semantics.reference import run


def network():
    b = NetworkBuilder("net", (2, 12, 9, 11))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 24, 3, padding=1, name="conv1"), name="bn1"))
    return b.finish(b.conv2d(x, 24, 3, stride=2, padding=1, groups=3, name="conv2"))


def apply(module, pipeline: str):
    passes = {name: load for name, load in PASSES.items()}
    PassPipeline.parse_spec(passes, pipeline).apply(make_context(), module)
    return module


TEMPLATE = (
    'tconv-tile{loop=oc factors=4},tconv-tile{loop=ow factors=3},'
    'tconv-reorder{order="n,g,oc.0,oh,ow.0,ic,kh,kw,ow.1,oc.1"},tconv-vectorize{loop="oc.1"},'
    'tconv-unroll{loops="kh,kw,ow.1"},tconv-parallel{loops="n,g,oc.0,oh"}'
)


@pytest.mark.parametrize("pipeline", ["tconv-tile{loop=oc factors=8 layers=conv1}", TEMPLATE])
def test_scheduled_network_computes_the_same(pipeline):
    module = apply(network(), pipeline)
    convs = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    assert convs[0].schedule is not None and parse_schedule(convs[0].schedule).factor("oc") in (4, 8)
    params = init_params(module, seed=3)
    x = np.random.default_rng(0).standard_normal((2, 12, 9, 11), dtype=np.float32)
    (got,) = run_tvm(module, params, x)
    (want,) = run(module, params, x)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
    _, program = lower_kernels(module)
    block = parse_schedule(convs[0].schedule).factor("oc")
    assert any(re.search(rf"conv1.weight:packed_GxOBxCxKHxKWx{block}\b", t.name) for t in program.tensors)


def test_backend_refuses_what_it_cannot_honour():
    module = apply(network(), 'tconv-unroll{loops="kh" layers=conv2}')
    with pytest.raises(TconvError, match="tvm backend: cannot honour this schedule: it unrolls kh, kw, ow.1"):
        run_tvm(module, init_params(module), np.zeros((2, 12, 9, 11), np.float32))
