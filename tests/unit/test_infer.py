"""Re-inferring result types after a weight or argument changed shape, and the
`tconv-set-batch` pass built on it."""

from __future__ import annotations

import pytest
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import PassPipeline
from xdsl.rewriter import Rewriter
from xdsl.utils.exceptions import PassFailedException

from tconv.ir.builder import NetworkBuilder
from tconv.ir.infer import refresh_result_types
from tconv.ir.loader import verify_module
from tconv.ir.ops import ParamOp, shape_of, tensor_type
from tconv.ir.shapes import ShapeError
from tconv.passes.registry import PASSES


def small_network() -> ModuleOp:
    b = NetworkBuilder("net", (1, 3, 8, 8))
    x = b.relu(b.conv2d(b.input, 8, 3, name="conv1"))
    x = b.conv2d(x, 8, 3, stride=2, name="conv2")
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


def function(module: ModuleOp) -> func.FuncOp:
    return next(op for op in module.walk() if isinstance(op, func.FuncOp))


def reshape_param(module: ModuleOp, name: str, shape: tuple[int, ...]) -> None:
    param = next(op for op in module.walk() if isinstance(op, ParamOp) and op.param_name == name)
    Rewriter.replace_value_with_new_type(param.result, tensor_type(shape))


def result_shapes(module: ModuleOp) -> dict[str, tuple[int, ...]]:
    return {
        op.results[0].name_hint or op.name: shape_of(op.results[0])
        for op in function(module).body.ops
        if op.results and not isinstance(op, ParamOp)
    }


def test_nothing_to_change():
    module = small_network()
    assert not refresh_result_types(function(module))
    verify_module(module)


def test_wider_layer_propagates_to_its_consumers():
    module = small_network()
    reshape_param(module, "conv1.weight", (16, 3, 3, 3))
    reshape_param(module, "conv2.weight", (8, 16, 3, 3))
    assert refresh_result_types(function(module))
    verify_module(module)
    relu = next(op for op in function(module).body.ops if op.name == "tconv.relu")
    assert shape_of(relu.results[0]) == (1, 16, 8, 8)
    assert function(module).function_type.outputs.data[0] == tensor_type((1, 10))


def test_new_output_size_reaches_the_signature():
    module = small_network()
    reshape_param(module, "fc.weight", (5, 8))
    reshape_param(module, "fc.bias", (5,))
    refresh_result_types(function(module))
    verify_module(module)
    assert list(function(module).function_type.outputs.data) == [tensor_type((1, 5))]


def test_inconsistent_shapes_raise_the_shape_rule():
    module = small_network()
    reshape_param(module, "conv1.weight", (16, 3, 3, 3))
    with pytest.raises(ShapeError, match="weight has 8 input channels per group, expected 16"):
        refresh_result_types(function(module))


def apply(module: ModuleOp, pipeline: str) -> None:
    PassPipeline.parse_spec(dict(PASSES), pipeline).apply(Context(), module)


def test_set_batch():
    module = small_network()
    apply(module, "tconv-set-batch{batch=4}")
    verify_module(module)
    assert function(module).function_type.inputs.data[0] == tensor_type((4, 3, 8, 8))
    assert function(module).function_type.outputs.data[0] == tensor_type((4, 10))
    assert all(shape[0] == 4 for shape in result_shapes(module).values())


@pytest.mark.parametrize("batch", [0, -1])
def test_set_batch_rejects_non_positive(batch: int):
    with pytest.raises(PassFailedException, match=f"batch must be a positive integer, got {batch}"):
        apply(small_network(), f"tconv-set-batch{{batch={batch}}}")
