"""Builders and verifiers go through the same shape rule, and say the same thing."""

import pytest
from xdsl.ir import Block

from tconv.ir.loader import TconvError, parse_module, verify_module
from tconv.ir.ops import Conv2dOp, ParamOp, tensor_type
from tconv.ir.shapes import ShapeError

NETWORK = """
func.func @net(%x: tensor<1x30x8x8xf32>) -> tensor<1x8x{h}x8xf32> {{
  %w = tconv.param "w" init kaiming_normal : tensor<8x{cin}x3x3xf32>
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups {groups} : (tensor<1x30x8x8xf32>, tensor<8x{cin}x3x3xf32>) -> tensor<1x8x{h}x8xf32>
  func.return %y : tensor<1x8x{h}x8xf32>
}}
"""


def test_builder_infers_the_result_type():
    block = Block(arg_types=[tensor_type((2, 30, 9, 9))])
    weight = ParamOp("w", (12, 10, 3, 3), "kaiming_normal")
    conv = Conv2dOp(block.args[0], weight.result, strides=2, padding=(1, 0, 1, 0), groups=3)
    assert conv.output.type == tensor_type((2, 12, 5, 4))


def test_builder_and_verifier_report_the_same_rule():
    block = Block(arg_types=[tensor_type((1, 30, 8, 8))])
    weight = ParamOp("w", (8, 7, 3, 3), "kaiming_normal")
    with pytest.raises(ShapeError) as built:
        Conv2dOp(block.args[0], weight.result, padding=1, groups=4)
    module = parse_module(NETWORK.format(cin=7, groups=4, h=8), "net.mlir")
    with pytest.raises(TconvError) as verified:
        verify_module(module)
    assert str(built.value) == "conv2d: input channels 30 not divisible by groups 4"
    assert str(verified.value) == f"net.mlir:4:3: error: {built.value}"


def test_verifier_checks_the_result_type_against_inference():
    module = parse_module(NETWORK.format(cin=30, groups=1, h=7), "net.mlir")
    with pytest.raises(TconvError, match="conv2d: result shape 1x8x7x8 does not match the inferred shape 1x8x8x8"):
        verify_module(module)


def test_param_rules():
    text = 'func.func @f() -> tensor<8xf32> {{\n  %p = tconv.param "b" init {init} : tensor<8xf32>\n  func.return %p : tensor<8xf32>\n}}'
    verify_module(parse_module(text.format(init="zeros")))
    with pytest.raises(TconvError, match="param 'b': unknown init 'uniform' \\(expected one of kaiming_normal, ones, zeros\\)"):
        verify_module(parse_module(text.format(init="uniform")))
    with pytest.raises(TconvError, match="kaiming_normal needs rank >= 2"):
        verify_module(parse_module(text.format(init="kaiming_normal")))
