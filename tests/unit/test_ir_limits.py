"""What tconv refuses rather than crashing on: text nested or numbers written
beyond what the parser handles, sizes beyond the resource limits, values used
before they are defined; and inputs large enough to catch a quadratic step
(a long chain of ops through the parser, the verifier and a NAS pass)."""

import re

import pytest
from xdsl.passes import PassPipeline

from tconv.frontends.mlir import parse_linalg
from tconv.ir.builder import NetworkBuilder
from tconv.ir.limits import DEFAULT_MAX_PARAMS, MAX_PARAMS_ENV, MAX_TENSOR_ELEMENTS_ENV
from tconv.ir.loader import TconvError, make_context, parse_module, verify_module
from tconv.ir.ops import Conv2dOp, shape_of
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.registry import PASSES

T = "tensor<1x8x4x4xf32>"


def function(body: str, argument: str = T, result: str = T) -> str:
    return f"func.func @f(%x: {argument}) -> {result} {{\n{body}\n}}\n"


def error_of(text: str) -> str:
    with pytest.raises(TconvError) as failure:
        verify_module(parse_module(text, "f.mlir"))
    message = str(failure.value)
    assert re.match(r"f\.mlir:\d+:\d+: error: \S", message), message
    return message.splitlines()[0]


def test_deeply_nested_types():
    text = function(f"  func.return %x : {T}", argument="tensor<" * 1000 + "f32" + ">" * 1000)
    assert "nest too deeply" in error_of(text)


def test_deeply_nested_parentheses():
    text = function(f"  %y = tconv.relu %x : {'(' * 100_000}\n  func.return %y : {T}")
    assert error_of(text).startswith("f.mlir:2:")


def test_integer_literal_too_long_to_convert():
    text = function(f"  %y = tconv.channel_shuffle %x groups {'9' * 100_000} : {T}\n  func.return %y : {T}")
    assert error_of(text) == (
        "f.mlir:2:40: error: integer literal of 100000 characters is longer than the limit of 400"
    )


def test_a_block_named_by_a_number():
    """MLIR allows `^2`; xDSL cannot name a block so (it raised a bare ValueError)."""
    text = function(f"  func.return %x : {T}\n^2:\n  func.return %x : {T}")
    assert error_of(text) == (
        "f.mlir:3:1: error: block name '^2' is not supported: a block name must start with a letter, "
        "'_', '$', '.' or '-' (for example ^bb2)"
    )


@pytest.mark.parametrize("attribute", ["array<i0: 0>", "array<i0>", "array<i128: 1>", "dense<1> : tensor<1xi128>"])
def test_array_elements_xdsl_cannot_store(attribute):
    """Widths 0 and above 64 (a ZeroDivisionError and a NotImplementedError in xDSL)."""
    text = f"func.func @f(%x: {T}) -> {T} attributes {{a = {attribute}}} {{\n  func.return %x : {T}\n}}\n"
    assert "array and dense attributes hold elements of 1 to 64 bits" in error_of(text)


@pytest.mark.parametrize("extent", [2**31, 2**63 - 1, 2**64])
def test_dimensions_beyond_the_limit(extent):
    typ = f"tensor<1x{extent}xf32>"
    text = function(f"  %y = tconv.relu %x : {typ}\n  func.return %y : {typ}", typ, typ)
    assert error_of(text) == (
        f"f.mlir:1:1: error: argument 0 ({typ}): dimension {extent} exceeds the limit of 2147483647"
    )


def test_the_limits_follow_the_environment(monkeypatch):
    text = function(f'  %w = tconv.param "w" init zeros : tensor<64x64xf32>\n  func.return %x : {T}')
    verify_module(parse_module(text))
    monkeypatch.setenv(MAX_PARAMS_ENV, "4000")
    assert "the parameters total 4096 elements, over the limit of 4000" in error_of(text)
    monkeypatch.setenv(MAX_PARAMS_ENV, str(DEFAULT_MAX_PARAMS))
    monkeypatch.setenv(MAX_TENSOR_ELEMENTS_ENV, "100")
    assert "argument 0 (tensor<1x8x4x4xf32>): 128 elements exceed the limit of 100 per tensor" in error_of(
        function(f"  %y = tconv.relu %x : {T}\n  func.return %y : {T}")
    )
    monkeypatch.setenv(MAX_TENSOR_ELEMENTS_ENV, "lots")
    with pytest.raises(TconvError, match="TCONV_MAX_TENSOR_ELEMENTS must be a positive integer, got 'lots'"):
        verify_module(parse_module(text))


def test_value_used_before_its_definition():
    text = function(f"  %a = tconv.relu %b : {T}\n  %b = tconv.relu %x : {T}\n  func.return %a : {T}")
    assert error_of(text) == "f.mlir:2:3: error: operand 0 (%b) is used before its definition at f.mlir:3:3"


def test_redefined_function():
    text = function(f"  func.return %x : {T}") + function(f"  func.return %x : {T}")
    assert error_of(text) == "f.mlir:4:1: error: redefinition of symbol '@f' (first defined at f.mlir:1:1)"


def test_linalg_convolution_with_missing_operands():
    text = (
        "func.func @net(%x: tensor<1x4x6x6xf32>, %acc: tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32> {\n"
        "  %c = linalg.conv_2d_nchw_fchw ins(%x : tensor<1x4x6x6xf32>) outs(%acc : tensor<1x4x4x4xf32>)"
        " -> tensor<1x4x4x4xf32>\n"
        "  func.return %c : tensor<1x4x4x4xf32>\n}\n"
    )
    with pytest.raises(TconvError, match=r"^case\.mlir:2:3: error: linalg\.conv_2d_nchw_fchw: malformed operation"):
        parse_linalg(text, "case.mlir")


def test_a_long_chain_parses_and_verifies():
    """20,000 ops: seconds when each step is linear, minutes if one is quadratic."""
    lines = [f"  %v0 = tconv.relu %x : {T}"]
    lines += [f"  %v{i} = tconv.relu %v{i - 1} : {T}" for i in range(1, 20_000)]
    module = parse_module(function("\n".join(lines) + f"\n  func.return %v19999 : {T}"))
    verify_module(module)
    assert sum(1 for _ in module.walk()) == 20_003


def test_bottleneck_follows_a_long_chain_of_relus():
    builder = NetworkBuilder("chain", (1, 4, 8, 8))
    x = builder.conv2d(builder.input, 8, 3, name="conv1")
    for _ in range(1_000):
        x = builder.relu(x)
    module = builder.finish(builder.conv2d(x, 4, 3, name="conv2"))
    with using_store(ParamStore()):
        PassPipeline.parse_spec(PASSES, "tconv-bottleneck{factor=2}").apply(make_context(), module)
    verify_module(module)
    conv1, conv2 = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    assert shape_of(conv1.output)[1] == 4 and shape_of(conv2.weight)[1] == 4
