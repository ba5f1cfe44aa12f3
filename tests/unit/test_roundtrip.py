"""Every tconv op survives custom → generic → custom printing unchanged.

`CASES` holds, for each op class, functions that use it in its variants; a new
op without a case fails `test_every_op_has_a_case`. Hypothesis then varies the
attributes of conv2d and the pools over their legal ranges.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import module_text, parse_module, verify_module
from tconv.ir.ops import (
    TCONV_OPS,
    AddOp,
    AvgPool2dOp,
    BatchNormOp,
    ChannelShuffleOp,
    ConcatOp,
    Conv2dOp,
    DenseOp,
    DequantizeOp,
    FlattenOp,
    GlobalAvgPoolOp,
    MaxPool2dOp,
    ParamOp,
    QuantizeOp,
    Relu6Op,
    ReluOp,
    SliceChannelsOp,
    SliceOp,
)

CASES: dict[type, list[str]] = {
    ParamOp: [
        """
func.func @f() -> (tensor<8x3x3x3xf32>, tensor<8xf32>, tensor<8xf32>) {
  %w = tconv.param "conv.weight" init kaiming_normal : tensor<8x3x3x3xf32>
  %b = tconv.param "conv.bias" init zeros : tensor<8xf32>
  %s = tconv.param "bn.weight" init ones {note = "extra attribute"} : tensor<8xf32>
  func.return %w, %b, %s : tensor<8x3x3x3xf32>, tensor<8xf32>, tensor<8xf32>
}
""",
    ],
    Conv2dOp: [
        """
func.func @f(%x: tensor<1x8x16x16xf32>) -> tensor<1x8x16x16xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<8x8x3x3xf32>
  %y = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 : (tensor<1x8x16x16xf32>, tensor<8x8x3x3xf32>) -> tensor<1x8x16x16xf32>
  func.return %y : tensor<1x8x16x16xf32>
}
""",
        """
func.func @f(%x: tensor<2x8x15x9xf32>) -> tensor<2x12x7x10xf32> {
  %w = tconv.param "w" init kaiming_normal : tensor<12x2x3x2xf32>
  %b = tconv.param "b" init zeros : tensor<12xf32>
  %y = tconv.conv2d %x, %w, %b strides [2, 1] padding [0, 1, 2, 1] dilations [2, 1] groups 4 schedule {tile = {oc = [3 : i64], ow = [8 : i64]}, parallel = ["n", "g"]} : (tensor<2x8x15x9xf32>, tensor<12x2x3x2xf32>, tensor<12xf32>) -> tensor<2x12x7x10xf32>
  func.return %y : tensor<2x12x7x10xf32>
}
""",
    ],
    BatchNormOp: [
        """
func.func @f(%x: tensor<1x4x2x2xf32>, %v: tensor<3x4xf32>, %c: tensor<4xf32>) -> (tensor<1x4x2x2xf32>, tensor<3x4xf32>) {
  %y = tconv.batch_norm %x, %c, %c, %c, %c epsilon 1.000000e-05 : (tensor<1x4x2x2xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<1x4x2x2xf32>
  %z = tconv.batch_norm %v, %c, %c, %c, %c epsilon 1.250000e-01 : (tensor<3x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<3x4xf32>
  func.return %y, %z : tensor<1x4x2x2xf32>, tensor<3x4xf32>
}
""",
    ],
    ReluOp: [
        """
func.func @f(%x: tensor<1x4x2x2xf32>) -> tensor<1x4x2x2xf32> {
  %y = tconv.relu %x : tensor<1x4x2x2xf32>
  func.return %y : tensor<1x4x2x2xf32>
}
""",
    ],
    Relu6Op: [
        """
func.func @f(%x: tensor<3x5xf32>) -> tensor<3x5xf32> {
  %y = tconv.relu6 %x : tensor<3x5xf32>
  func.return %y : tensor<3x5xf32>
}
""",
    ],
    AddOp: [
        """
func.func @f(%a: tensor<1x4x2x2xf32>, %b: tensor<1x4x2x2xf32>) -> tensor<1x4x2x2xf32> {
  %y = tconv.add %a, %b : tensor<1x4x2x2xf32>
  func.return %y : tensor<1x4x2x2xf32>
}
""",
    ],
    MaxPool2dOp: [
        """
func.func @f(%x: tensor<1x4x9x9xf32>) -> tensor<1x4x5x4xf32> {
  %y = tconv.max_pool2d %x kernel [3, 2] strides [2, 2] padding [1, 0, 1, 0] : (tensor<1x4x9x9xf32>) -> tensor<1x4x5x4xf32>
  func.return %y : tensor<1x4x5x4xf32>
}
""",
    ],
    AvgPool2dOp: [
        """
func.func @f(%x: tensor<1x4x8x8xf32>) -> (tensor<1x4x4x4xf32>, tensor<1x4x8x8xf32>) {
  %y = tconv.avg_pool2d %x kernel [2, 2] strides [2, 2] padding [0, 0, 0, 0] : (tensor<1x4x8x8xf32>) -> tensor<1x4x4x4xf32>
  %z = tconv.avg_pool2d %x kernel [3, 3] strides [1, 1] padding [1, 1, 1, 1] count_include_pad : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
  func.return %y, %z : tensor<1x4x4x4xf32>, tensor<1x4x8x8xf32>
}
""",
    ],
    GlobalAvgPoolOp: [
        """
func.func @f(%x: tensor<2x4x7x3xf32>) -> tensor<2x4x1x1xf32> {
  %y = tconv.global_avg_pool %x : (tensor<2x4x7x3xf32>) -> tensor<2x4x1x1xf32>
  func.return %y : tensor<2x4x1x1xf32>
}
""",
    ],
    FlattenOp: [
        """
func.func @f(%x: tensor<2x4x3x3xf32>) -> tensor<2x36xf32> {
  %y = tconv.flatten %x : (tensor<2x4x3x3xf32>) -> tensor<2x36xf32>
  func.return %y : tensor<2x36xf32>
}
""",
    ],
    DenseOp: [
        """
func.func @f(%x: tensor<2x36xf32>) -> (tensor<2x10xf32>, tensor<2x5xf32>) {
  %w = tconv.param "fc.weight" init kaiming_normal : tensor<10x36xf32>
  %b = tconv.param "fc.bias" init zeros : tensor<10xf32>
  %y = tconv.dense %x, %w, %b : (tensor<2x36xf32>, tensor<10x36xf32>, tensor<10xf32>) -> tensor<2x10xf32>
  %w2 = tconv.param "fc2.weight" init kaiming_normal : tensor<5x36xf32>
  %z = tconv.dense %x, %w2 : (tensor<2x36xf32>, tensor<5x36xf32>) -> tensor<2x5xf32>
  func.return %y, %z : tensor<2x10xf32>, tensor<2x5xf32>
}
""",
    ],
    ConcatOp: [
        """
func.func @f(%a: tensor<1x4x2x2xf32>, %b: tensor<1x2x2x2xf32>) -> (tensor<1x6x2x2xf32>, tensor<1x4x4x2xf32>, tensor<1x4x2x2xf32>) {
  %y = tconv.concat %a, %b axis 1 : (tensor<1x4x2x2xf32>, tensor<1x2x2x2xf32>) -> tensor<1x6x2x2xf32>
  %z = tconv.concat %a, %a axis 2 : (tensor<1x4x2x2xf32>, tensor<1x4x2x2xf32>) -> tensor<1x4x4x2xf32>
  %one = tconv.concat %a axis 1 : (tensor<1x4x2x2xf32>) -> tensor<1x4x2x2xf32>
  func.return %y, %z, %one : tensor<1x6x2x2xf32>, tensor<1x4x4x2xf32>, tensor<1x4x2x2xf32>
}
""",
    ],
    SliceChannelsOp: [
        """
func.func @f(%x: tensor<1x8x2x2xf32>) -> tensor<1x3x2x2xf32> {
  %y = tconv.slice_channels %x start 5 size 3 : (tensor<1x8x2x2xf32>) -> tensor<1x3x2x2xf32>
  func.return %y : tensor<1x3x2x2xf32>
}
""",
    ],
    SliceOp: [
        """
func.func @f(%x: tensor<1x8x6x5xf32>, %v: tensor<2x10xf32>) -> (tensor<1x8x3x5xf32>, tensor<1x8x6x1xf32>, tensor<2x4xf32>) {
  %rows = tconv.slice %x axis 2 start 2 size 3 : (tensor<1x8x6x5xf32>) -> tensor<1x8x3x5xf32>
  %col = tconv.slice %x axis 3 start 4 size 1 : (tensor<1x8x6x5xf32>) -> tensor<1x8x6x1xf32>
  %feat = tconv.slice %v axis 1 start 6 size 4 : (tensor<2x10xf32>) -> tensor<2x4xf32>
  func.return %rows, %col, %feat : tensor<1x8x3x5xf32>, tensor<1x8x6x1xf32>, tensor<2x4xf32>
}
""",
    ],
    ChannelShuffleOp: [
        """
func.func @f(%x: tensor<1x8x2x2xf32>) -> tensor<1x8x2x2xf32> {
  %y = tconv.channel_shuffle %x groups 4 : tensor<1x8x2x2xf32>
  func.return %y : tensor<1x8x2x2xf32>
}
""",
    ],
    QuantizeOp: [
        """
func.func @f(%x: tensor<1x3x2x2xf32>) -> (tensor<1x3x2x2xui8>, tensor<1x3x2x2xi8>) {
  %q = tconv.quantize %x scale [0.003921568859368563] zero_point [128] : (tensor<1x3x2x2xf32>) -> tensor<1x3x2x2xui8>
  %p = tconv.quantize %x scale [0.5, 1.0e-05, 3.0] zero_point [0, -128, 127] axis 1 : (tensor<1x3x2x2xf32>) -> tensor<1x3x2x2xi8>
  func.return %q, %p : tensor<1x3x2x2xui8>, tensor<1x3x2x2xi8>
}
""",
    ],
    DequantizeOp: [
        """
func.func @f(%q: tensor<4x3x1x1xi8>) -> tensor<4x3x1x1xf32> {
  %y = tconv.dequantize %q scale [0.1, 0.2, 0.3, 0.4] zero_point [0, 0, 0, 0] axis 0 : (tensor<4x3x1x1xi8>) -> tensor<4x3x1x1xf32>
  func.return %y : tensor<4x3x1x1xf32>
}
""",
    ],
}


def assert_roundtrip(text: str) -> str:
    """Parse and verify `text`; check that its custom print survives a trip
    through the generic syntax, and reparses to itself. Returns the custom print."""
    module = parse_module(text, "case.mlir")
    verify_module(module)
    custom = module_text(module)
    generic = module_text(module, generic=True)

    from_generic = parse_module(generic, "generic.mlir")
    verify_module(from_generic)
    assert module_text(from_generic) == custom
    assert module_text(from_generic, generic=True) == generic

    from_custom = parse_module(custom, "custom.mlir")
    assert module_text(from_custom) == custom
    return custom


def test_every_op_has_a_case():
    assert set(CASES) == set(TCONV_OPS)


def test_every_case_uses_its_op():
    for op_class, texts in CASES.items():
        for text in texts:
            module = parse_module(text, "case.mlir")
            assert any(isinstance(op, op_class) for op in module.walk()), op_class.name


@pytest.mark.parametrize(
    "text",
    [pytest.param(text, id=f"{op.name}-{i}") for op, texts in CASES.items() for i, text in enumerate(texts)],
)
def test_roundtrip(text: str):
    custom = assert_roundtrip(text)
    # The cases are written the way the printer prints, up to the module wrapper.
    body = [line.strip() for line in text.strip().splitlines()]
    printed = [line.strip() for line in custom.strip().splitlines()[1:-1]]
    assert printed == body


@st.composite
def conv2d_networks(draw: st.DrawFn) -> str:
    groups = draw(st.integers(1, 4))
    in_channels = groups * draw(st.integers(1, 3))
    out_channels = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, 3)) for _ in range(4))
    top, left, bottom, right = padding
    # Big enough for one window: dilation * (kernel - 1) + 1 <= size + padding.
    height = max(1, dilations[0] * (kernel[0] - 1) + 1 - top - bottom) + draw(st.integers(0, 4))
    width = max(1, dilations[1] * (kernel[1] - 1) + 1 - left - right) + draw(st.integers(0, 4))
    builder = NetworkBuilder("conv", (draw(st.integers(1, 3)), in_channels, height, width))
    y = builder.conv2d(
        builder.input,
        out_channels,
        kernel,
        stride=strides,
        padding=padding,
        dilation=dilations,
        groups=groups,
        bias=draw(st.booleans()),
    )
    return module_text(builder.finish(y))


@st.composite
def pool_networks(draw: st.DrawFn) -> str:
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    top, bottom = (draw(st.integers(0, kernel[0] - 1)) for _ in range(2))
    left, right = (draw(st.integers(0, kernel[1] - 1)) for _ in range(2))
    height = max(1, kernel[0] - top - bottom) + draw(st.integers(0, 4))
    width = max(1, kernel[1] - left - right) + draw(st.integers(0, 4))
    builder = NetworkBuilder("pool", (1, draw(st.integers(1, 4)), height, width))
    padding = (top, left, bottom, right)
    if draw(st.booleans()):
        y = builder.max_pool2d(builder.input, kernel, stride=strides, padding=padding)
    else:
        y = builder.avg_pool2d(
            builder.input, kernel, stride=strides, padding=padding, count_include_pad=draw(st.booleans())
        )
    return module_text(builder.finish(y))


@settings(max_examples=60, deadline=None)
@given(conv2d_networks())
def test_conv2d_attributes_roundtrip(text: str):
    assert assert_roundtrip(text) == text


@settings(max_examples=60, deadline=None)
@given(pool_networks())
def test_pool_attributes_roundtrip(text: str):
    assert assert_roundtrip(text) == text
