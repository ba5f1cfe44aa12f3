"""Fuzzing `tconv import` with damaged ONNX models.

A small exported model (convolution with bias, batch norm, ReLU, max pool,
global average pool, flatten, Gemm) has its protobuf fields changed:
initializer dims, data types and raw bytes, attribute values (integers,
floats, strings that are not UTF-8), graph input dimensions, op types; or its
serialized bytes flipped, truncated or extended. Every run of
`tconv import MODEL.onnx -o OUT.mlir` (in process) must either succeed or
fail with exit status 1 or 2 and one message, never an internal error.

`TCONV_FUZZ_CASES` replaces the case count (`make fuzz` runs the long profile).
"""

from __future__ import annotations

import contextlib
import io
import random
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from test_fuzz import fuzz_settings, time_limit

from tconv.cli.main import main

CASE_SECONDS = 20

INTS = (-(2**63), -(2**31), -1, 0, 1, 2, 3, 4, 7, 2**31 - 1, 2**31, 2**62)
FLOATS = (float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e-30, 1e30, 0.5)
STRINGS = (b"", b"NOTSET", b"SAME_UPPER", b"\xff\xfe", b"co\x80nv", b"x" * 300)


def seed_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)

    def tensor(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "t", "m", "v"], ["n"], name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2], auto_pad="NOTSET"),
        helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1, alpha=1.0),
    ]
    variance = numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "v")
    graph = helper.make_graph(
        nodes,
        "fuzz",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
        [tensor("w", 4, 3, 3, 3), tensor("b", 4), tensor("s", 4), tensor("t", 4), tensor("m", 4), variance,
         tensor("fw", 5, 4), tensor("fb", 5)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


SEED = seed_model()


def mutate_dims(model: onnx.ModelProto, rng: random.Random) -> None:
    tensor = rng.choice(model.graph.initializer)
    tensor.dims[:] = [rng.choice(INTS[2:]) for _ in range(rng.randrange(0, 5))]


def mutate_data_type(model: onnx.ModelProto, rng: random.Random) -> None:
    tensor = rng.choice(model.graph.initializer)
    tensor.data_type = rng.choice([*range(26), 99, 1000, -1])


def mutate_raw_data(model: onnx.ModelProto, rng: random.Random) -> None:
    tensor = rng.choice(model.graph.initializer)
    data = bytearray(tensor.raw_data)
    action = rng.randrange(4)
    if action == 0:
        del data[rng.randrange(len(data) + 1):]
    elif action == 1:
        data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    elif action == 2 and data:
        for _ in range(rng.randrange(1, 5)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    else:
        tensor.ClearField("raw_data")
        tensor.float_data[:] = [rng.choice(FLOATS) for _ in range(rng.randrange(0, 40))]
        return
    tensor.raw_data = bytes(data)


def mutate_attribute(model: onnx.ModelProto, rng: random.Random) -> None:
    nodes = [node for node in model.graph.node if node.attribute]
    attribute = rng.choice(rng.choice(nodes).attribute)
    kind = rng.randrange(5)
    if kind == 0:
        attribute.ClearField("ints")
        attribute.ints.extend(rng.choice(INTS) for _ in range(rng.randrange(0, 6)))
        attribute.type = onnx.AttributeProto.INTS
    elif kind == 1:
        attribute.i = rng.choice(INTS)
        attribute.type = onnx.AttributeProto.INT
    elif kind == 2:
        attribute.f = rng.choice(FLOATS)
        attribute.type = onnx.AttributeProto.FLOAT
    elif kind == 3:
        attribute.s = rng.choice(STRINGS)
        attribute.type = onnx.AttributeProto.STRING
    else:
        attribute.type = rng.choice(onnx.AttributeProto.AttributeType.values())


def mutate_input(model: onnx.ModelProto, rng: random.Random) -> None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dim = rng.choice(dims)
    if rng.randrange(3) == 0:
        dim.dim_param = rng.choice(["n", "", "\u00e9"])
    else:
        dim.dim_value = rng.choice(INTS[2:])


def mutate_node(model: onnx.ModelProto, rng: random.Random) -> None:
    node = rng.choice(model.graph.node)
    if rng.randrange(2):
        node.op_type = rng.choice(["Conv", "Relu", "Gemm", "Add", "Reshape", "Concat", "Unknown"])
    elif node.input:
        names = [*{name for n in model.graph.node for name in n.input}, "", "missing"]
        node.input[rng.randrange(len(node.input))] = rng.choice(names)


MUTATIONS: list[Callable[[onnx.ModelProto, random.Random], None]] = [
    mutate_dims, mutate_data_type, mutate_raw_data, mutate_attribute, mutate_input, mutate_node,
]


def damage_bytes(data: bytes, rng: random.Random) -> bytes:
    damaged = bytearray(data)
    action = rng.randrange(3)
    if action == 0:
        del damaged[rng.randrange(len(damaged)):]
    elif action == 1:
        for _ in range(rng.randrange(1, 6)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
    else:
        at = rng.randrange(len(damaged))
        damaged[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
    return bytes(damaged)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_onnx")


def import_outcome(workdir: Path, data: bytes) -> tuple[int, str]:
    model = workdir / "case.onnx"
    output = workdir / "out.mlir"
    model.write_bytes(data)
    output.unlink(missing_ok=True)
    output.with_suffix(".npz").unlink(missing_ok=True)
    stdout, stderr = io.StringIO(), io.StringIO()
    with time_limit(CASE_SECONDS), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["import", str(model), "-o", str(output)])
    message = stderr.getvalue()
    assert status in (0, 1, 2), f"status {status}\n{message}"
    assert "Traceback" not in message and "internal error" not in message, message
    if status == 0:
        assert output.exists()
    else:
        errors = [line for line in message.splitlines() if re.search(r"(^|: )error: \S", line)]
        assert len(errors) == 1, message
        assert not output.exists(), "a failed import wrote its output"
    return status, message


def test_the_seed_model_imports(workdir: Path):
    assert import_outcome(workdir, SEED.SerializeToString())[0] == 0


@fuzz_settings(50)
@given(seed=st.integers(0, 2**32 - 1), mutations=st.integers(1, 3), raw=st.booleans())
def test_damaged_models_fail_cleanly(workdir: Path, seed: int, mutations: int, raw: bool):
    rng = random.Random(seed)
    model = onnx.ModelProto()
    model.CopyFrom(SEED)
    for _ in range(mutations):
        rng.choice(MUTATIONS)(model, rng)
    data = model.SerializeToString()
    if raw:
        data = damage_bytes(data, rng)
    import_outcome(workdir, data)
