"""tconv-blockswap on ResNet-34 (CIFAR-10) at a quarter of its parameters:
the chosen network verifies, runs at batch 2 in the reference executor, has
its parameter count within 2.5% of the budget and fewer FLOPs, and keeps
the stem, the projection shortcuts and the classifier."""

import contextlib
import io
import re

import numpy as np
from xdsl.passes import PassPipeline

from tconv.frontends import zoo
from tconv.ir.loader import make_context, verify_module
from tconv.ir.ops import Conv2dOp
from tconv.passes.analyses.capacity import minibatch
from tconv.passes.analyses.summary import summarize
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.registry import PASSES
from tconv.semantics.reference import run


def test_blockswap_meets_a_quarter_budget():
    module = zoo.build("resnet34", "cifar10")
    before = summarize(module)
    store = ParamStore()
    stderr = io.StringIO()
    with using_store(store), contextlib.redirect_stderr(stderr):
        PassPipeline.parse_spec(PASSES, "tconv-blockswap{budget=0.25 samples=2 batch=4}").apply(make_context(), module)
    verify_module(module)
    after = summarize(module)
    budget = 0.25 * before.parameters
    assert abs(after.parameters - budget) <= 0.025 * budget
    assert after.flops < before.flops
    (remark,) = [line for line in stderr.getvalue().splitlines() if line.startswith("remark: tconv-blockswap:")]
    chosen = re.findall(r"(layer\d\.\d\.conv1)=(\w+)", remark)
    assert len(chosen) == 16  # 3 + 4 + 6 + 3 basic blocks
    weights = {op.weight.owner.param_name for op in module.walk() if isinstance(op, Conv2dOp)}
    assert {"conv1.weight", "layer2.0.shortcut.0.weight", "layer3.0.shortcut.0.weight", "layer4.0.shortcut.0.weight"} <= weights
    for block, block_type in chosen:
        assert (f"{block}.weight" in weights) == (block_type == "keep")
    x = minibatch(module, 2, 0)[0]
    (logits,) = run(module, store.values_for(module), x)
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
