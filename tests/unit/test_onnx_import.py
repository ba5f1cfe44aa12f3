"""ONNX import of graphs written with onnx.helper: each supported op and
attribute form, imported and run with the reference executor, against
onnxruntime on the same input; and a message naming the node for each thing
tconv cannot represent."""

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from support import relative_error

from tconv.frontends.onnx import OnnxImportError, import_model
from tconv.frontends.onnx.importer import symbolic_batch
from tconv.ir.loader import module_text, parse_module, verify_module
from tconv.semantics import reference

INT64_MAX = np.iinfo(np.int64).max


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[int | str]],
    outputs: Sequence[str] | Mapping[str, Sequence[int | str]],
    initializers: Mapping[str, np.ndarray] = {},
    opset: int = 17,
) -> onnx.ModelProto:
    """A checked model of `nodes`: float inputs of the given shapes (a str is a
    symbolic dimension), outputs typed by shape inference unless given a shape,
    and `initializers`."""
    output_shapes = outputs if isinstance(outputs, Mapping) else dict.fromkeys(outputs)
    graph = helper.make_graph(
        list(nodes),
        "test_graph",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in output_shapes.items()],
        [numpy_helper.from_array(np.asarray(array), name) for name, array in initializers.items()],
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    if model.ir_version < 4:
        # Before IR version 4 every initializer is also a graph input.
        graph.input.extend(
            helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in graph.initializer
        )
        model.graph.CopyFrom(graph)
    # Shape inference gives the outputs the types the checker requires.
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def random(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def check_against_onnxruntime(
    model: onnx.ModelProto, *inputs: np.ndarray, batch: int | None = None, oracle: str = "onnxruntime"
):
    """Import `model`, run it with the reference executor and with
    onnxruntime (or, where onnxruntime lacks a feature, with ONNX's own
    reference implementation); the results agree. Return the module."""
    module, params = import_model(model, batch=batch)
    # The IR text reads back as the same, verified module.
    reparsed = parse_module(module_text(module))
    verify_module(reparsed)
    assert module_text(reparsed) == module_text(module)
    actual = reference.run(module, params, *inputs)
    if oracle == "onnxruntime":
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    else:
        session = ReferenceEvaluator(model)
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    expected = session.run(None, dict(zip(names, inputs)))
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        assert relative_error(a, e) < 1e-5
    return module


def op_names(module) -> list[str]:
    return [op.name for op in module.walk() if op.name.startswith("tconv.") and op.name != "tconv.param"]


def one_node(op_type: str, inputs: Sequence[str], **attributes) -> onnx.NodeProto:
    return helper.make_node(op_type, list(inputs), ["y"], name=f"the_{op_type.lower()}", **attributes)


# Convolution -------------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes",
    [
        pytest.param(dict(pads=[0, 1, 2, 1], strides=[2, 1], dilations=[1, 2], group=2), id="asymmetric-pads"),
        pytest.param(dict(auto_pad="SAME_UPPER", strides=[2, 2]), id="same-upper"),
        pytest.param(dict(auto_pad="SAME_LOWER", strides=[2, 3]), id="same-lower"),
        # onnxruntime refuses SAME padding with dilations: checked against onnx.reference.
        pytest.param(dict(auto_pad="SAME_UPPER", dilations=[2, 2]), id="same-upper-dilated"),
        pytest.param(dict(auto_pad="SAME_LOWER", dilations=[2, 3], strides=[2, 1]), id="same-lower-dilated"),
        pytest.param(dict(auto_pad="VALID", strides=[2, 2]), id="valid"),
        pytest.param(dict(auto_pad="NOTSET", pads=[1, 1, 1, 1], kernel_shape=[4, 4]), id="notset"),
    ],
)
def test_conv_padding_forms(attributes):
    """A 4x4 kernel on 9x10 makes SAME padding odd, so UPPER and LOWER differ."""
    groups = attributes.get("group", 1)
    model = make_model(
        [one_node("Conv", ["x", "w", "b"], **attributes)],
        {"x": (2, 4, 9, 10)},
        ["y"],
        {"w": random(6, 4 // groups, 4, 4, seed=1), "b": random(6, seed=2)},
    )
    oracle = "onnx.reference" if "dilations" in attributes and "auto_pad" in attributes else "onnxruntime"
    module = check_against_onnxruntime(model, random(2, 4, 9, 10), oracle=oracle)
    assert op_names(module) == ["tconv.conv2d"]


def test_conv_keeps_initializer_names_as_parameter_names():
    model = make_model(
        [one_node("Conv", ["x", "layer1.weight", "a bias"], pads=[1, 1, 1, 1])],
        {"x": (1, 3, 5, 5)},
        ["y"],
        {"layer1.weight": random(4, 3, 3, 3), "a bias": random(4)},
    )
    _, params = import_model(model)
    assert sorted(params) == ["a_bias", "layer1.weight"]
    np.testing.assert_array_equal(params["layer1.weight"], random(4, 3, 3, 3))


def test_batch_norm_relu_and_residual_add():
    c = 5
    nodes = [
        helper.make_node("BatchNormalization", ["x", "scale", "shift", "mean", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("Add", ["r", "x"], ["y"]),
    ]
    stats = {
        "scale": random(c, seed=1), "shift": random(c, seed=2), "mean": random(c, seed=3),
        "var": np.abs(random(c, seed=4)) + 0.5,
    }
    module = check_against_onnxruntime(make_model(nodes, {"x": (2, c, 4, 4)}, ["y"], stats), random(2, c, 4, 4))
    assert op_names(module) == ["tconv.batch_norm", "tconv.relu", "tconv.add"]


def test_batch_norm_of_opset_7_with_spatial_attribute():
    c = 3
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], spatial=1)
    stats = {"s": random(c, seed=1), "b": random(c, seed=2), "m": random(c, seed=3), "v": np.ones(c, np.float32)}
    check_against_onnxruntime(make_model([node], {"x": (1, c, 3, 3)}, ["y"], stats, opset=7), random(1, c, 3, 3))


def test_conv_followed_by_a_constant_add_gets_that_bias():
    nodes = [one_node("Conv", ["x", "w"]), helper.make_node("Add", ["bias", "y"], ["z"])]
    model = make_model(
        nodes, {"x": (1, 3, 6, 6)}, ["z"], {"w": random(4, 3, 3, 3), "bias": random(1, 4, 1, 1, seed=1)}
    )
    module = check_against_onnxruntime(model, random(1, 3, 6, 6))
    assert op_names(module) == ["tconv.conv2d"]


# Activations -------------------------------------------------------------------


@pytest.mark.parametrize(
    "opset, inputs, attributes, op",
    [
        pytest.param(13, ["x", "zero", "six"], {}, "tconv.relu6", id="inputs-relu6"),
        pytest.param(13, ["x", "zero"], {}, "tconv.relu", id="inputs-relu"),
        pytest.param(13, ["x", "zero", ""], {}, "tconv.relu", id="inputs-absent-max"),
        pytest.param(10, ["x"], dict(min=0.0, max=6.0), "tconv.relu6", id="attributes-relu6"),
        pytest.param(10, ["x"], dict(min=0.0), "tconv.relu", id="attributes-relu"),
    ],
)
def test_clip_forms(opset, inputs, attributes, op):
    bounds = {"zero": np.array(0, np.float32), "six": np.array(6, np.float32)}
    used = {name: value for name, value in bounds.items() if name in inputs}
    model = make_model([one_node("Clip", inputs, **attributes)], {"x": (1, 2, 4, 4)}, ["y"], used, opset=opset)
    module = check_against_onnxruntime(model, 5 * random(1, 2, 4, 4))
    assert op_names(module) == [op]


def test_clip_bounds_from_constant_nodes():
    nodes = [
        helper.make_node("Constant", [], ["low"], value=numpy_helper.from_array(np.array(0, np.float32))),
        helper.make_node("Constant", [], ["high"], value_float=6.0),
        one_node("Clip", ["x", "low", "high"]),
    ]
    module = check_against_onnxruntime(make_model(nodes, {"x": (1, 2, 3, 3)}, ["y"]), 5 * random(1, 2, 3, 3))
    assert op_names(module) == ["tconv.relu6"]


# Pooling -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "op_type, attributes",
    [
        pytest.param("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), id="max"),
        pytest.param("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), id="max-ceil"),
        pytest.param(
            "MaxPool",
            dict(kernel_shape=[2, 3], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1),
            id="max-ceil-pads",
        ),
        pytest.param("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"), id="max-same"),
        # The last window would start in the end padding: dropped, as in onnxruntime.
        pytest.param(
            "MaxPool",
            dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
            id="max-ceil-last-window",
        ),
        pytest.param(
            "AveragePool",
            dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
            id="avg-include-pad",
        ),
        pytest.param("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 2, 1]), id="avg-exclude-pad"),
        pytest.param(
            "AveragePool",
            dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
            id="avg-ceil",
        ),
        pytest.param(
            "AveragePool",
            dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 1, 0, 1], ceil_mode=1),
            id="avg-ceil-last-window",
        ),
        pytest.param(
            "AveragePool",
            dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_LOWER", count_include_pad=1),
            id="avg-same-lower",
        ),
    ],
)
def test_pooling_forms(op_type, attributes):
    """On 8x9 input, so that ceil mode and SAME padding round differently per axis."""
    model = make_model([one_node(op_type, ["x"], **attributes)], {"x": (2, 3, 8, 9)}, ["y"])
    module = check_against_onnxruntime(model, random(2, 3, 8, 9))
    assert op_names(module) == ["tconv.max_pool2d" if op_type == "MaxPool" else "tconv.avg_pool2d"]


@pytest.mark.parametrize("head", ["GlobalAveragePool", "ReduceMean", "ReduceMean-18", "ReduceMean-keepdims"])
def test_global_pooling_flatten_and_dense(head):
    """The spellings of a classifier head: GlobalAveragePool + Flatten, and
    PyTorch's x.mean([2, 3]), whose axes are an attribute before opset 18 and
    an input since."""
    opset, initializers = 17, {"w": random(4, 6), "b": random(4, seed=1)}
    if head == "GlobalAveragePool":
        nodes = [
            helper.make_node("GlobalAveragePool", ["x"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"], axis=-3),
        ]
    elif head == "ReduceMean":
        nodes = [helper.make_node("ReduceMean", ["x"], ["f"], axes=[-2, -1], keepdims=0)]
    elif head == "ReduceMean-18":
        opset, initializers["axes"] = 18, np.array([2, 3])
        nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["f"], keepdims=0)]
    else:
        nodes = [
            helper.make_node("ReduceMean", ["x"], ["p"], axes=[2, 3]),
            helper.make_node("Squeeze", ["p"], ["f"], axes=[3, 2]),
        ]
        opset = 12
    nodes.append(helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1))
    model = make_model(nodes, {"x": (2, 6, 5, 5)}, ["y"], initializers, opset=opset)
    module = check_against_onnxruntime(model, random(2, 6, 5, 5))
    assert op_names(module) == ["tconv.global_avg_pool", "tconv.flatten", "tconv.dense"]


# Dense ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes, bias_shape",
    [
        pytest.param(dict(), (1, 4), id="transB0-row-bias"),
        pytest.param(dict(transB=1, alpha=0.5, beta=2.0), (4,), id="alpha-beta"),
        pytest.param(dict(transA=0, transB=0, alpha=3.0), (), id="scalar-bias"),
        pytest.param(dict(transB=1), None, id="no-bias"),
    ],
)
def test_gemm_forms(attributes, bias_shape):
    weight = random(4, 6) if attributes.get("transB") else random(6, 4)
    initializers = {"w": weight}
    inputs = ["x", "w"]
    if bias_shape is not None:
        initializers["c"] = random(*bias_shape, seed=1) if bias_shape else np.array(0.25, np.float32)
        inputs.append("c")
    model = make_model([one_node("Gemm", inputs, **attributes)], {"x": (3, 6)}, ["y"], initializers)
    module = check_against_onnxruntime(model, random(3, 6))
    assert op_names(module) == ["tconv.dense"]


@pytest.mark.parametrize("with_bias", [True, False])
def test_matmul_with_and_without_add(with_bias):
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["m"])]
    initializers = {"w": random(12, 5)}
    if with_bias:
        nodes.append(helper.make_node("Add", ["m", "b"], ["y"]))
        initializers["b"] = random(5, seed=1)
    else:
        nodes.append(helper.make_node("Identity", ["m"], ["y"]))
    module = check_against_onnxruntime(make_model(nodes, {"x": (2, 3, 2, 2)}, ["y"], initializers), random(2, 3, 2, 2))
    assert op_names(module) == ["tconv.flatten", "tconv.dense"]
    (dense,) = [op for op in module.walk() if op.name == "tconv.dense"]
    assert (dense.bias is not None) == with_bias


@pytest.mark.parametrize("through_identity", [False, True])
def test_matmul_read_twice_keeps_its_add_separate_and_fails(through_identity):
    """The bias of a MatMul is folded only when the Add is its one reader,
    under any name: Identity gives a value a second one."""
    add_input = "m2" if through_identity else "m"
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Identity", ["m"], ["m2"]),
        helper.make_node("Add", [add_input, "b"], ["y"], name="bias_add"),
        helper.make_node("Relu", ["m"], ["z"]),
    ]
    model = make_model(nodes, {"x": (2, 3)}, ["y", "z"], {"w": random(3, 4), "b": random(4)})
    with pytest.raises(OnnxImportError, match=r"node 'bias_add' \(Add\): adds a constant"):
        import_model(model)


# Channels: concat, split, slice, shuffle -----------------------------------------


@pytest.mark.parametrize(
    "opset, node, initializers",
    [
        pytest.param(
            13,
            helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
            {"sizes": np.array([2, 6])},
            id="input-sizes",
        ),
        pytest.param(11, helper.make_node("Split", ["x"], ["a", "b"], axis=1, split=[5, 3]), {}, id="attribute-sizes"),
        pytest.param(13, helper.make_node("Split", ["x"], ["a", "b"], axis=-3), {}, id="equal"),
        pytest.param(
            18,
            helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3),
            {},
            id="num-outputs",
        ),
    ],
)
def test_split_on_channels(opset, node, initializers):
    outputs = list(node.output)
    nodes = [node, helper.make_node("Concat", list(reversed(outputs)), ["y"], axis=1)]
    model = make_model(nodes, {"x": (2, 8, 3, 3)}, ["y", outputs[0]], initializers, opset=opset)
    module = check_against_onnxruntime(model, random(2, 8, 3, 3))
    assert op_names(module).count("tconv.slice_channels") == len(outputs)


@pytest.mark.parametrize(
    "opset, inputs, attributes, initializers",
    [
        pytest.param(
            13,
            ["x", "s", "e", "a"],
            {},
            dict(s=np.array([-6]), e=np.array([INT64_MAX]), a=np.array([1])),
            id="negative-start",
        ),
        pytest.param(
            13,
            ["x", "s", "e", "a", "st"],
            {},
            dict(s=np.array([0, 2]), e=np.array([INT64_MAX, 5]), a=np.array([0, -3]), st=np.array([1, 1])),
            id="whole-batch",
        ),
        pytest.param(13, ["x", "s", "e"], {}, dict(s=np.array([0, 1]), e=np.array([9, 4])), id="default-axes"),
        pytest.param(9, ["x"], dict(starts=[3], ends=[100], axes=[1]), {}, id="attributes"),
    ],
)
def test_slice_on_channels(opset, inputs, attributes, initializers):
    model = make_model([one_node("Slice", inputs, **attributes)], {"x": (2, 8, 3, 3)}, ["y"], initializers, opset=opset)
    module = check_against_onnxruntime(model, random(2, 8, 3, 3))
    assert op_names(module) == ["tconv.slice_channels"]


@pytest.mark.parametrize(
    "opset, inputs, attributes, initializers, expected",
    [
        pytest.param(
            13, ["x", "s", "e", "a"], {}, dict(s=np.array([1]), e=np.array([4]), a=np.array([2])),
            ["tconv.slice"], id="rows",
        ),
        pytest.param(
            13, ["x", "s", "e", "a", "st"], {},
            dict(s=np.array([-2, 0, 2]), e=np.array([INT64_MAX, 2, 7]), a=np.array([-1, 2, 1]), st=np.array([1, 1, 1])),
            ["tconv.slice_channels", "tconv.slice", "tconv.slice"], id="three-axes",
        ),
        pytest.param(9, ["x"], dict(starts=[0, 1], ends=[100, 3], axes=[1, 3]), {}, ["tconv.slice"], id="attributes"),
    ],
)
def test_slice_on_any_axis_but_the_batch(opset, inputs, attributes, initializers, expected):
    """One slice per cut axis, in axis order: channels as `slice_channels`, the rest as `slice`."""
    model = make_model([one_node("Slice", inputs, **attributes)], {"x": (2, 8, 5, 6)}, ["y"], initializers, opset=opset)
    module = check_against_onnxruntime(model, random(2, 8, 5, 6))
    assert op_names(module) == expected


def test_channel_shuffle_pattern():
    nodes = [
        helper.make_node("Reshape", ["x", "grouped"], ["g"]),
        helper.make_node("Transpose", ["g"], ["t"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "whole"], ["y"]),
    ]
    initializers = {"grouped": np.array([0, 3, 4, 5, 5]), "whole": np.array([2, -1, 5, 5])}
    model = make_model(nodes, {"x": (2, 12, 5, 5)}, ["y"], initializers)
    module = check_against_onnxruntime(model, random(2, 12, 5, 5))
    assert op_names(module) == ["tconv.channel_shuffle"]
    (shuffle,) = [op for op in module.walk() if op.name == "tconv.channel_shuffle"]
    assert shuffle.groups.value.data == 3


@pytest.mark.parametrize("opset", [11, 13])
def test_reshape_shape_computed_from_a_symbolic_batch(opset):
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape, as exporters write a
    batch-agnostic flatten; --batch binds the batch, the rest is constant.
    Unsqueeze takes its axes as an attribute before opset 13, as an input since."""
    if opset < 13:
        unsqueeze = helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0])
    else:
        unsqueeze = helper.make_node("Unsqueeze", ["n", "axes"], ["n1"])
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        unsqueeze,
        helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Reshape", ["r", "target"], ["y"]),
    ]
    initializers = {"zero": np.array(0), "minus_one": np.array([-1])}
    if opset >= 13:
        initializers["axes"] = np.array([0])
    # Shape inference cannot follow the shape computation before opset 14.
    model = make_model(nodes, {"x": ("batch", 3, 4, 4)}, {"y": ("batch", 48)}, initializers, opset=opset)
    module = check_against_onnxruntime(model, random(3, 3, 4, 4), batch=3)
    assert op_names(module) == ["tconv.relu", "tconv.flatten"]
    assert "tensor<3x3x4x4xf32>" in module_text(module)


def test_identity_dropout_squeeze_and_dead_nodes():
    """Identity and inference Dropout pass through; a node no output needs is
    skipped, even one tconv could not import."""
    nodes = [
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("Dropout", ["i", "ratio"], ["d", "mask"]),
        helper.make_node("GlobalAveragePool", ["d"], ["p"]),
        helper.make_node("Squeeze", ["p", "axes"], ["y"]),
        helper.make_node("Sigmoid", ["x"], ["unused"]),
    ]
    initializers = {"ratio": np.array(0.5, np.float32), "axes": np.array([2, 3])}
    model = make_model(nodes, {"x": (2, 3, 4, 4)}, ["y"], initializers)
    module = check_against_onnxruntime(model, random(2, 3, 4, 4))
    assert op_names(module) == ["tconv.global_avg_pool", "tconv.flatten"]


def test_weights_computed_from_initializers_are_constants():
    """A weight transposed by a node (as some exporters store them) is folded."""
    nodes = [
        helper.make_node("Transpose", ["w_t"], ["w"], perm=[1, 0, 2, 3]),
        helper.make_node("Mul", ["w", "two"], ["w2"]),
        helper.make_node("Conv", ["x", "w2"], ["y"]),
    ]
    initializers = {"w_t": random(3, 4, 1, 1), "two": np.array(2, np.float32)}
    module = check_against_onnxruntime(make_model(nodes, {"x": (1, 3, 2, 2)}, ["y"], initializers), random(1, 3, 2, 2))
    assert op_names(module) == ["tconv.conv2d"]


def test_shared_initializer_becomes_one_parameter_per_use():
    """PyTorch shares equal initializers between layers; each layer gets its own."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"]),
        helper.make_node("Conv", ["a", "w"], ["y"]),
    ]
    model = make_model(nodes, {"x": (1, 2, 4, 4)}, ["y"], {"w": random(2, 2, 1, 1)})
    module = check_against_onnxruntime(model, random(1, 2, 4, 4))
    _, params = import_model(model)
    assert sorted(params) == ["w", "w_1"]
    assert module_text(module).count("tconv.param") == 2


def test_two_inputs_and_two_outputs():
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["r"])]
    model = make_model(nodes, {"a": (1, 2, 3, 3), "b": (1, 2, 3, 3)}, ["r", "s"])
    check_against_onnxruntime(model, random(1, 2, 3, 3), random(1, 2, 3, 3, seed=1))


# What tconv cannot represent ---------------------------------------------------


def import_error(model: onnx.ModelProto, batch: int | None = None) -> str:
    with pytest.raises(OnnxImportError) as info:
        import_model(model, batch=batch, source="m.onnx")
    message = str(info.value)
    assert message.startswith("m.onnx: error: ")
    return message


X = {"x": (1, 4, 6, 6)}


@pytest.mark.parametrize(
    "node, initializers, fragment",
    [
        pytest.param(one_node("Sigmoid", ["x"]), {}, "unsupported op 'Sigmoid'", id="op"),
        pytest.param(
            one_node("Clip", ["x", "lo", "hi"]),
            dict(lo=np.float32(-1), hi=np.float32(1)),
            "Clip with min -1.0 and max 1.0",
            id="clip-bounds",
        ),
        pytest.param(
            one_node("MaxPool", ["x"], kernel_shape=[2, 2], dilations=[2, 2]),
            {},
            "dilations [2, 2]",
            id="pool-dilations",
        ),
        pytest.param(
            one_node(
                "AveragePool", ["x"],
                kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1,
            ),
            {},
            "ceil_mode=1 with count_include_pad=1",
            id="avg-ceil-include-pad",
        ),
        pytest.param(one_node("Concat", ["x", "x"], axis=0), {}, "batch axis", id="concat-batch"),
        pytest.param(
            one_node("Slice", ["x", "s", "e", "a", "st"]),
            dict(s=np.array([0]), e=np.array([4]), a=np.array([1]), st=np.array([2])),
            "step 2 on axis 1",
            id="slice-step",
        ),
        pytest.param(
            one_node("Slice", ["x", "s", "e", "a"]),
            dict(s=np.array([1]), e=np.array([3]), a=np.array([0])),
            "the batch axis cannot be sliced",
            id="slice-batch",
        ),
        pytest.param(
            one_node("Slice", ["x", "s", "e", "a"]),
            dict(s=np.array([3]), e=np.array([1]), a=np.array([-1])),
            "the range [3, 1) of axis 3 is empty",
            id="slice-empty",
        ),
        pytest.param(
            helper.make_node("Split", ["x"], ["y", "z"], name="the_split", axis=2),
            {},
            "only channel splits",
            id="split-height",
        ),
        pytest.param(
            one_node("Reshape", ["x", "s"]),
            dict(s=np.array([1, 4, 36])),
            "reshapes 1x4x6x6 to 1x4x36",
            id="reshape",
        ),
        pytest.param(
            one_node("Transpose", ["x"], perm=[0, 2, 3, 1]),
            {},
            "transposes axes [0, 2, 3, 1]",
            id="transpose",
        ),
        pytest.param(
            one_node("Add", ["x", "c"]),
            dict(c=np.ones((1, 4, 6, 6), np.float32)),
            "adds a constant",
            id="add-constant",
        ),
        pytest.param(
            one_node("Conv", ["x", "x"]),
            {},
            "weight 'x' is computed by the network",
            id="conv-computed-weight",
        ),
        pytest.param(
            helper.make_node(
                "BatchNormalization", ["x", "s", "s", "s", "s"], ["y", "mean", "var"], name="bn", training_mode=1
            ),
            dict(s=np.ones(4, np.float32)),
            "training_mode=1",
            id="bn-training",
        ),
        pytest.param(one_node("Flatten", ["x"], axis=2), {}, "Flatten of 1x4x6x6 at axis 2", id="flatten-axis"),
        pytest.param(one_node("LpPool", ["x"], kernel_shape=[2, 2]), {}, "unsupported op 'LpPool'", id="pool-kind"),
    ],
)
def test_unsupported_node_is_named(node, initializers, fragment):
    message = import_error(make_model([node], X, [node.output[0]], initializers))
    assert f"node '{node.name}' ({node.op_type})" in message
    assert fragment in message


def test_gemm_with_transposed_computed_input():
    model = make_model([one_node("Gemm", ["x", "w"], transA=1)], {"x": (6, 3)}, ["y"], {"w": random(6, 4)})
    assert "transA=1" in import_error(model)


def test_add_with_broadcasting():
    model = make_model([one_node("Add", ["a", "b"])], {"a": (1, 4, 6, 6), "b": (1, 1, 6, 6)}, ["y"])
    assert "adds 1x4x6x6 and 1x1x6x6" in import_error(model)


def test_unnamed_node_is_known_by_position_and_output():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Tanh", ["r"], ["y"])]
    assert "node #1 (Tanh, output 'y'): unsupported op 'Tanh'" in import_error(make_model(nodes, X, ["y"]))


def test_node_of_another_domain():
    node = helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft")
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    assert "node 'fused' (FusedConv): op 'FusedConv' of domain 'com.microsoft' is not supported" in import_error(model)


def test_symbolic_batch_is_1_unless_bound():
    model = make_model([one_node("Relu", ["x"])], {"x": ("N", 4, 6, 6)}, ["y"])
    assert symbolic_batch(model) == "N"
    module, _ = import_model(model)
    assert "tensor<1x4x6x6xf32>" in module_text(module)
    module, _ = import_model(model, batch=5)
    assert "tensor<5x4x6x6xf32>" in module_text(module)


def test_other_dynamic_dimensions_are_errors():
    model = make_model([one_node("Relu", ["x"])], {"x": (1, 4, "height", 6)}, ["y"])
    assert "dynamic dimension 2 ('height')" in import_error(model, batch=1)


def test_batch_binds_only_a_symbolic_batch():
    model = make_model([one_node("Relu", ["x"])], X, ["y"])
    assert "static batch size 1; --batch 4 binds only a symbolic one" in import_error(model, batch=4)


def test_non_float_input():
    graph = helper.make_graph(
        [one_node("Relu", ["x"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.INT32, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert "graph input 'x' holds INT32" in import_error(model)


def test_old_opset():
    model = make_model([one_node("Relu", ["x"])], X, ["y"], opset=6)
    assert "opset 6 is older than tconv imports" in import_error(model)


def test_constant_output():
    model = make_model([one_node("Relu", ["c"])], X, ["y"], {"c": np.ones(3, np.float32)})
    assert "graph output 'y' is a constant" in import_error(model)


def test_attribute_the_converter_does_not_know():
    """An attribute no converter reads would be silently ignored: an error."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="act", alpha=0.1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert "node 'act' (Relu): unsupported attribute 'alpha'" in import_error(model)


# Damaged initializers and strings ------------------------------------------------


def conv_model() -> onnx.ModelProto:
    return make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        X, ["y"], {"w": random(4, 4, 3, 3)},
    )


def test_initializer_whose_data_does_not_match_its_dims():
    model = conv_model()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.dims[:] = [2]
    weight.float_data[:] = [1, 2, 3, 4, 5]
    assert "initializer 'w': dims [2] (2 elements of FLOAT) but 5 values in float_data" in import_error(model)
    weight.ClearField("float_data")
    weight.raw_data = np.ones(5, np.float32).tobytes()
    assert "initializer 'w': dims [2] (2 elements of FLOAT) need 8 bytes of raw data, it has 20" in import_error(model)


def test_initializer_of_an_unknown_data_type():
    model = conv_model()
    model.graph.initializer[0].data_type = 99
    assert "initializer 'w': unknown data type 99" in import_error(model)


def test_string_field_that_is_not_utf8(tmp_path):
    data = conv_model().SerializeToString()
    damaged = tmp_path / "m.onnx"
    damaged.write_bytes(data.replace(b"\x1a\x04conv", b"\x1a\x04co\xffv", 1))  # the node's name
    model = onnx.load(damaged)
    assert "node #0: field name is not UTF-8 text (b'co\\xffv')" in import_error(model)
    from tconv.frontends.onnx.importer import read_model

    with pytest.raises(OnnxImportError, match="node #0: field name is not UTF-8 text"):
        read_model(damaged)
