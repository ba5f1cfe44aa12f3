"""`tconv import` and `tconv export`: the files they write, and a clean
message, status 1 and no output file for every bad input."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support import assert_user_error, tconv

from tconv.cli.files import write_network
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import load_module, module_text
from tconv.ir.params import init_params, load_store, store_path_for
from tconv.semantics import reference


def small_network():
    b = NetworkBuilder("small", (2, 3, 8, 8))
    x = b.relu6(b.batch_norm(b.conv2d(b.input, 8, 3, name="conv1"), name="bn1"))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


@pytest.fixture
def network(tmp_path: Path) -> Path:
    path = tmp_path / "small.mlir"
    module = small_network()
    write_network(path, module, init_params(module, seed=1))
    return path


def save_model(path: Path, nodes, input_shape, initializers=None) -> Path:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value, name) for name, value in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(onnx.shape_inference.infer_shapes(model), path)
    return path


def test_export_then_import_gives_back_the_network(capsys, tmp_path, network):
    model_path = tmp_path / "small.onnx"
    status, out, err = tconv(capsys, "export", network, "-o", model_path)
    assert status == 0, err
    assert out.startswith(f"wrote {model_path} (ONNX opset 17, 6 nodes, ")
    onnx.checker.check_model(str(model_path), full_check=True)

    imported = tmp_path / "back.mlir"
    status, out, err = tconv(capsys, "import", model_path, "-o", imported, "--batch", "2")
    assert status == 0, err
    assert f"wrote {imported} (small, input 2x3x8x8, 6 ops, 322 parameters, verified)" in out
    assert f"wrote {store_path_for(imported)}" in out
    assert module_text(load_module(imported)) == module_text(load_module(network))
    original, back = load_store(store_path_for(network)), load_store(store_path_for(imported))
    assert original.keys() == back.keys()
    for name in original:
        np.testing.assert_array_equal(back[name], original[name])


def test_export_has_a_symbolic_batch_that_onnx_runtime_runs_at_any_batch(capsys, tmp_path, network):
    ort = pytest.importorskip("onnxruntime")
    model_path = tmp_path / "small.onnx"
    assert tconv(capsys, "export", network, "-o", model_path)[0] == 0
    model = onnx.load(model_path)
    for info in (*model.graph.input, *model.graph.output):
        assert info.type.tensor_type.shape.dim[0].dim_param == "N"
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    module, params = load_module(network), load_store(store_path_for(network))
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 8, 8), dtype=np.float32)
        (y,) = session.run(None, {session.get_inputs()[0].name: x})
        from tconv.compile import rebatched

        (expected,) = reference.run(rebatched(module, batch), params, x)
        assert y.shape == (batch, 10)
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_export_static_batch_keeps_the_irs(capsys, tmp_path, network):
    model_path = tmp_path / "small.onnx"
    assert tconv(capsys, "export", network, "-o", model_path, "--static-batch")[0] == 0
    assert onnx.load(model_path).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    status, out, err = tconv(capsys, "import", model_path, "-o", tmp_path / "back.mlir")
    assert status == 0 and "input 2x3x8x8" in out and "symbolic" not in err


def test_import_of_a_symbolic_batch_takes_batch_1_or_batch(capsys, tmp_path, network):
    model_path = tmp_path / "small.onnx"
    assert tconv(capsys, "export", network, "-o", model_path)[0] == 0
    status, out, err = tconv(capsys, "import", model_path, "-o", tmp_path / "one.mlir")
    assert status == 0, err
    assert "input 1x3x8x8" in out
    assert "batch dimension is symbolic ('N'): imported at batch 1; --batch N imports at another" in err
    status, out, err = tconv(capsys, "import", model_path, "-o", tmp_path / "four.mlir", "--batch", "4")
    assert status == 0 and "input 4x3x8x8" in out and "symbolic" not in err


def test_export_without_store_is_an_error_unless_asked_to_initialise(capsys, tmp_path, network):
    store_path_for(network).unlink()
    model_path = tmp_path / "small.onnx"
    assert_user_error(tconv(capsys, "export", network, "-o", model_path), "parameter store not found", "--init-params")
    assert not model_path.exists()

    status, out, err = tconv(capsys, "export", network, "-o", model_path, "--init-params", "--seed", "4")
    assert status == 0
    assert "freshly initialised parameters (seed 4)" in err
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(model_path).graph.initializer}
    expected = init_params(load_module(network), seed=4)
    np.testing.assert_array_equal(weights["conv1.weight"], expected["conv1.weight"])


def test_export_to_a_missing_directory(capsys, tmp_path, network):
    assert_user_error(tconv(capsys, "export", network, "-o", tmp_path / "no" / "m.onnx"), "cannot write")


def test_import_of_unsupported_op_names_the_node_and_writes_nothing(capsys, tmp_path):
    model = save_model(
        tmp_path / "m.onnx",
        [helper.make_node("Relu", ["x"], ["r"], name="act"), helper.make_node("Softmax", ["r"], ["y"], name="probs")],
        (1, 3, 4, 4),
    )
    output = tmp_path / "m.mlir"
    assert_user_error(
        tconv(capsys, "import", model, "-o", output),
        f"{model}: error: node 'probs' (Softmax): unsupported op 'Softmax'",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "file not found"),
        (b"", "not an ONNX model (no graph)"),
        (b"hello, I am not a model\n", "not an ONNX model"),
        (np.random.default_rng(0).bytes(4096), "not an ONNX model"),
    ],
    ids=["missing", "empty", "text", "random-bytes"],
)
def test_import_of_a_file_that_is_not_onnx(capsys, tmp_path, content, message):
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    output = tmp_path / "m.mlir"
    assert_user_error(tconv(capsys, "import", path, "-o", output), f"{path}: error: {message}")
    assert not output.exists() and not store_path_for(output).exists()


def test_import_of_an_invalid_onnx_model(capsys, tmp_path):
    """A model the ONNX checker rejects (a node reads an undefined value)."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["nowhere"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert_user_error(tconv(capsys, "import", path, "-o", tmp_path / "m.mlir"), "not a valid ONNX model")


def test_import_of_a_dynamic_batch_binds_it(capsys, tmp_path):
    weights = {"w": np.random.default_rng(0).standard_normal((4, 3, 3, 3), dtype=np.float32)}
    model = save_model(tmp_path / "m.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])], ("N", 3, 6, 6), weights)
    output = tmp_path / "m.mlir"
    status, _, err = tconv(capsys, "import", model, "-o", output)
    assert status == 0, err
    assert "tensor<1x3x6x6xf32>" in output.read_text()

    status, _, err = tconv(capsys, "import", model, "-o", output, "--batch", "5")
    assert status == 0, err
    module = load_module(output)
    assert "tensor<5x3x6x6xf32>" in module_text(module)
    x = np.random.default_rng(1).standard_normal((5, 3, 6, 6), dtype=np.float32)
    (y,) = reference.run(module, load_store(store_path_for(output)), x)
    assert y.shape == (5, 4, 4, 4)


def test_import_needs_an_output_file(capsys, tmp_path):
    status, _, err = tconv(capsys, "import", tmp_path / "m.onnx")
    assert status == 2
    assert "-o/--output" in err


def test_outputs_may_not_overwrite_inputs(capsys, tmp_path, network):
    model_path = tmp_path / "small.onnx"
    assert_user_error(tconv(capsys, "export", network, "-o", network), "is an input of this command")
    assert_user_error(tconv(capsys, "export", network, "-o", store_path_for(network)), "is an input of this command")
    assert load_module(network) is not None
    assert tconv(capsys, "export", network, "-o", model_path)[0] == 0
    # The IR of small.onnx would be written to small.onnx, its store to small.npz.
    assert_user_error(tconv(capsys, "import", model_path, "-o", model_path), "is an input of this command")
    assert onnx.load(model_path).graph.node


def test_export_notes_that_schedules_are_left_out(capsys, tmp_path, network):
    text = network.read_text().replace("groups 1 :", 'groups 1 schedule {tile = {ow = [4]}} :', 1)
    assert "schedule" in text
    network.write_text(text)
    status, _, err = tconv(capsys, "export", network, "-o", tmp_path / "small.onnx")
    assert status == 0, err
    assert "convolution schedules (how to run, not what to compute) are not exported" in err


def test_import_of_a_model_with_external_data(capsys, tmp_path, network):
    """Weights in a file beside the model (as ONNX stores models over 2 GB)
    are read; a missing weights file is a clean error."""
    model_path = tmp_path / "small.onnx"
    assert tconv(capsys, "export", network, "-o", model_path)[0] == 0
    onnx.save_model(
        onnx.load(model_path), tmp_path / "ext.onnx",
        save_as_external_data=True, location="ext.weights", size_threshold=0,
    )
    status, _, err = tconv(capsys, "import", tmp_path / "ext.onnx", "-o", tmp_path / "ext.mlir")
    assert status == 0, err
    np.testing.assert_array_equal(
        load_store(tmp_path / "ext.npz")["conv1.weight"], load_store(store_path_for(network))["conv1.weight"]
    )
    (tmp_path / "ext.weights").unlink()
    assert_user_error(tconv(capsys, "import", tmp_path / "ext.onnx", "-o", tmp_path / "again.mlir"), "ext.weights")
    assert not (tmp_path / "again.mlir").exists()
