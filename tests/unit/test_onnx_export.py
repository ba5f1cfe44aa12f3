"""ONNX export: every tconv op becomes a valid ONNX graph that onnxruntime runs
to the reference executor's result, and that imports back to the same IR."""

import numpy as np
import onnx
import onnxruntime
import pytest
from support import relative_error, trained_like_params

from tconv.frontends.onnx import export_model, import_model
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import module_text
from tconv.ir.params import ParamError
from tconv.semantics import reference


def every_op_network(batch: int = 2):
    """One network that uses each tconv op, with the attribute forms that are
    easy to get wrong: asymmetric padding, dilation, groups, both average
    divisors, a height concat, row and column slices."""
    b = NetworkBuilder("every_op", (batch, 4, 12, 12))
    x = b.conv2d(b.input, 8, 3, padding=(0, 1, 2, 1), dilation=(1, 2), bias=True, name="conv1")
    x = b.relu6(b.batch_norm(x, name="bn1"))
    y = b.conv2d(x, 8, 3, groups=4, name="conv2")
    x = b.relu(b.add(x, y))
    x = b.channel_shuffle(x, 2)
    x = b.concat([b.slice_channels(x, 3, 5), b.slice_channels(x, 0, 3)])
    x = b.max_pool2d(x, 3, stride=2, padding=1)
    included = b.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)
    excluded = b.avg_pool2d(x, 2, stride=1, padding=(0, 0, 1, 1))
    x = b.concat([included, excluded], axis=2)
    x = b.slice(b.slice(x, 2, 1, 9), 3, 1, 3)
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


def run_onnxruntime(model: onnx.ModelProto, *inputs: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})


def test_every_op_exports_runs_and_imports_back():
    module = every_op_network()
    params = trained_like_params(module)
    model = export_model(module, params)
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(1).standard_normal((2, 4, 12, 12), dtype=np.float32)
    (expected,) = reference.run(module, params, x)
    (actual,) = run_onnxruntime(model, x)
    assert relative_error(actual, expected) < 1e-5

    imported, imported_params = import_model(model)
    assert module_text(imported) == module_text(module)
    assert imported_params.keys() == params.keys()
    for name, value in params.items():
        np.testing.assert_array_equal(imported_params[name], value)


def test_exported_node_types():
    model = export_model(every_op_network(), trained_like_params(every_op_network()))
    assert [node.op_type for node in model.graph.node] == [
        "Conv", "BatchNormalization", "Clip", "Conv", "Add", "Relu",
        "Reshape", "Transpose", "Reshape",
        "Slice", "Slice", "Concat", "MaxPool", "AveragePool", "AveragePool", "Concat",
        "Slice", "Slice", "GlobalAveragePool", "Flatten", "Gemm",
    ]
    pools = [node for node in model.graph.node if node.op_type == "AveragePool"]
    count_include_pad = [
        next(a.i for a in node.attribute if a.name == "count_include_pad") for node in pools
    ]
    assert count_include_pad == [1, 0]
    assert [o.name for o in model.graph.output] == ["output"]
    assert model.opset_import[0].version == 17


def test_parameters_keep_their_names_and_values():
    module = every_op_network()
    params = trained_like_params(module, seed=3)
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in export_model(module, params).graph.initializer}
    for name, value in params.items():
        np.testing.assert_array_equal(initializers[name], value)


def test_exported_types_keep_the_ir_batch_and_shuffles_copy_it():
    """The model keeps the IR's batch in its types; the shuffle's Reshape
    shapes copy the batch (0), so the nodes themselves hold for any batch."""
    model = export_model(every_op_network(batch=3), trained_like_params(every_op_network(batch=3)))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [3, 4, 12, 12]
    shapes = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    reshapes = [node for node in model.graph.node if node.op_type == "Reshape"]
    assert [shapes[node.input[1]][0] for node in reshapes] == [0, 0]


def test_returned_input_and_repeated_outputs_pass_through_identity():
    b = NetworkBuilder("outputs", (1, 2, 3, 3))
    r = b.relu(b.input)
    module = b.finish(r, b.input, r)
    model = export_model(module, {})
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["output", "output_1", "output_2"]
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3), dtype=np.float32)
    for actual, expected in zip(run_onnxruntime(model, x), [np.maximum(x, 0), x, np.maximum(x, 0)]):
        np.testing.assert_array_equal(actual, expected)
    imported, _ = import_model(model)
    assert module_text(imported) == module_text(module)


def test_parameter_names_that_look_like_value_names_do_not_collide():
    b = NetworkBuilder("names", (1, 2, 4, 4))
    x = b.conv2d(b.input, 2, 1, name="input")
    x = b.conv2d(x, 2, 1, name="output")
    module = b.finish(b.relu(b.conv2d(x, 2, 1, name="conv2d")))
    params = trained_like_params(module)
    model = export_model(module, params)
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4), dtype=np.float32)
    (expected,) = reference.run(module, params, x)
    (actual,) = run_onnxruntime(model, x)
    assert relative_error(actual, expected) < 1e-5


def test_missing_parameter_is_an_error():
    module = every_op_network()
    params = trained_like_params(module)
    del params["bn1.running_var"]
    with pytest.raises(ParamError, match="parameter 'bn1.running_var' is missing"):
        export_model(module, params)
