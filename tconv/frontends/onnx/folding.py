"""Evaluating ONNX nodes whose inputs are all constants, at import time.

Exporters compute shapes (Shape, Gather, Concat, ...), split sizes and the
like with small subgraphs of constants; tconv shapes are static, so these
subgraphs have fixed values. They are evaluated with ONNX's own reference
implementation, so every op and opset has its official meaning.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from onnx.reference import ReferenceEvaluator

from tconv.frontends.onnx.node import NodeContext

NONDETERMINISTIC = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
"""Ops whose value is not a constant even when their inputs are."""


def foldable(ctx: NodeContext) -> bool:
    """Every input present is a constant, and so is the result."""
    if ctx.op_type in NONDETERMINISTIC:
        return False
    return all(
        isinstance(ctx.value(index), np.ndarray)
        for index in range(ctx.input_count)
        if ctx.has_input(index)
    )


def fold(ctx: NodeContext) -> list[np.ndarray]:
    """The node's outputs, computed from its constant inputs."""
    node = ctx.node
    inputs = [name for name in node.input if name]
    # The evaluator picks each op's version from a model's opset; given a bare
    # node it takes the newest, whose Unsqueeze or Split read other inputs.
    graph = helper.make_graph(
        [node], "fold",
        [helper.make_empty_tensor_value_info(name) for name in dict.fromkeys(inputs)],
        [helper.make_empty_tensor_value_info(name) for name in node.output if name],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ctx.opset)])
    try:
        results = ReferenceEvaluator(model).run(None, {name: ctx.graph.values[name] for name in inputs})
    except Exception as err:  # the reference implementation raises whatever numpy raises
        ctx.fail(f"cannot evaluate on its constant inputs ({type(err).__name__}: {err})")
    return [np.asarray(result) for result in results]
