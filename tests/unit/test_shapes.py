"""The shape rules: results, and messages that name the rule and the numbers."""

import re

import pytest

from tconv.ir import shapes
from tconv.ir.shapes import ShapeError


def test_conv2d_output_shape_with_stride_padding_dilation():
    # P = (H + top + bottom - d*(K-1) - 1) // s + 1 = (32 + 1 + 2 - 4 - 1) // 2 + 1 = 16
    assert shapes.conv2d((2, 6, 32, 30), (8, 3, 3, 3), (8,), (2, 1), (1, 0, 2, 0), (2, 1), 2) == (2, 8, 16, 28)


def test_conv2d_depthwise():
    assert shapes.conv2d((1, 32, 7, 7), (32, 1, 3, 3), None, (1, 1), (1, 1, 1, 1), (1, 1), 32) == (1, 32, 7, 7)


@pytest.mark.parametrize(
    "args, message",
    [
        (((1, 30, 8, 8), (8, 7, 3, 3), None, (1, 1), (0,) * 4, (1, 1), 4),
         "conv2d: input channels 30 not divisible by groups 4"),
        (((1, 32, 8, 8), (30, 8, 3, 3), None, (1, 1), (0,) * 4, (1, 1), 4),
         "conv2d: output channels 30 not divisible by groups 4"),
        (((1, 32, 8, 8), (32, 4, 3, 3), None, (1, 1), (0,) * 4, (1, 1), 4),
         "conv2d: weight has 4 input channels per group, expected 32 / groups 4 = 8"),
        (((1, 8, 8, 8), (16, 8, 3, 3), (8,), (1, 1), (0,) * 4, (1, 1), 1),
         "conv2d: bias shape 8 must be 16 (output channels)"),
        (((1, 8, 4, 4), (16, 8, 7, 7), None, (1, 1), (1, 1, 1, 1), (1, 1), 1),
         "conv2d: height window 7 (kernel 7, dilation 1) exceeds padded input height 6 (4 + padding 1+1)"),
        (((1, 8, 8, 8), (16, 8, 3, 3), None, (0, 1), (0,) * 4, (1, 1), 1),
         "conv2d: strides must be positive, got [0, 1]"),
        (((1, 8, 8, 8), (16, 8, 3, 3), None, (1, 1), (0, -1, 0, 0), (1, 1), 1),
         "conv2d: padding must be non-negative, got [0, -1, 0, 0]"),
        (((1, 8, 8), (16, 8, 3, 3), None, (1, 1), (0,) * 4, (1, 1), 1),
         "conv2d: input must have rank 4 (NCHW), got rank 3 (1x8x8)"),
        (((1, 8, 8, 8), (16, 8, 3, 3), None, (1, 1), (0, 0), (1, 1), 1),
         "conv2d: padding needs 4 values, got 2 ([0, 0])"),
    ],
)
def test_conv2d_errors_name_rule_and_numbers(args, message):
    with pytest.raises(ShapeError) as err:
        shapes.conv2d(*args)
    assert str(err.value) == message


def test_pool_padding_must_be_smaller_than_kernel():
    assert shapes.pool2d("max_pool2d", (1, 64, 112, 112), (3, 3), (2, 2), (1, 1, 1, 1)) == (1, 64, 56, 56)
    with pytest.raises(ShapeError, match="max_pool2d: height padding 2 must be smaller than kernel 2"):
        shapes.pool2d("max_pool2d", (1, 4, 8, 8), (2, 2), (2, 2), (2, 0, 0, 0))


def test_other_rules():
    assert shapes.batch_norm((2, 4, 3, 3), (4,), (4,), (4,), (4,)) == (2, 4, 3, 3)
    with pytest.raises(ShapeError, match="batch_norm: var shape 5 must be 4"):
        shapes.batch_norm((2, 4, 3, 3), (4,), (4,), (4,), (5,))
    with pytest.raises(ShapeError, match="add: operand shapes differ: 1x2x3x3 and 1x2x3x4"):
        shapes.add((1, 2, 3, 3), (1, 2, 3, 4))
    assert shapes.dense((3, 20), (10, 20), (10,)) == (3, 10)
    with pytest.raises(ShapeError, match="dense: weight has 21 input features, input has 20"):
        shapes.dense((3, 20), (10, 21), None)
    assert shapes.concat([(1, 2, 4, 4), (1, 3, 4, 4)], 1) == (1, 5, 4, 4)
    assert shapes.concat([(1, 2, 4, 4), (1, 2, 5, 4)], 2) == (1, 2, 9, 4)
    with pytest.raises(ShapeError, match=r"concat: input 1 shape 1x3x5x4 differs from input 0 shape 1x2x4x4 in dimension 2"):
        shapes.concat([(1, 2, 4, 4), (1, 3, 5, 4)], 1)
    assert shapes.slice_channels((1, 8, 2, 2), 3, 5) == (1, 5, 2, 2)
    with pytest.raises(ShapeError, match=r"slice_channels: channels \[4, 9\) out of range for 8 input channels"):
        shapes.slice_channels((1, 8, 2, 2), 4, 5)
    assert shapes.slice_((2, 8, 6, 5), 2, 1, 4) == (2, 8, 4, 5)
    assert shapes.slice_((2, 8, 6, 5), 3, 4, 1) == (2, 8, 6, 1)
    assert shapes.slice_((2, 10), 1, 3, 7) == (2, 7)
    for args, message in [
        (((2, 8, 6, 5), 4, 0, 1), "slice: axis 4 out of range for rank 4 (axes 1 to 3 may be sliced)"),
        (((2, 8, 6, 5), 0, 0, 1), "slice: axis 0 is the batch, which may not be sliced"),
        (((2, 8, 6, 5), 2, 4, 3), "slice: [4, 7) out of range for extent 6 of axis 2 (input 2x8x6x5)"),
        (((2, 8, 6, 5), 2, -1, 2), "slice: start must be non-negative, got -1"),
        (((2, 8, 6, 5), 2, 0, 0), "slice: size must be positive, got 0"),
        (((2, 8, 6), 2, 0, 1), "slice: input must have rank 4 (NCHW) or 2 (NC), got rank 3"),
    ]:
        with pytest.raises(ShapeError, match=re.escape(message)):
            shapes.slice_(*args)
    with pytest.raises(ShapeError, match="channel_shuffle: channels 10 not divisible by groups 4"):
        shapes.channel_shuffle((1, 10, 2, 2), 4)
    assert shapes.flatten((2, 3, 4, 5)) == (2, 60)
    assert shapes.global_avg_pool((2, 3, 4, 5)) == (2, 3, 1, 1)
