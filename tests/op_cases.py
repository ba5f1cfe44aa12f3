"""Hypothesis cases shared by the backends' property tests
(tests/property/test_tvm_ops.py, test_llvm_ops.py): one convolution with any
of the epilogues a conv kernel absorbs, and pooling windows. Importable as
`op_cases` because tests/conftest.py puts this folder on sys.path."""

from __future__ import annotations

from hypothesis import strategies as st
from xdsl.dialects.builtin import ModuleOp

from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import shape_of, tensor_type


def with_second_input(b: NetworkBuilder, shape) -> object:
    """A second function argument of `shape` (the residual of an add)."""
    return b.block.insert_arg(tensor_type(shape), len(b.block.args))


EPILOGUES = st.sampled_from(["none", "relu", "bn", "bn_relu", "bn_add_relu", "bn_relu6", "add_relu6"])


def epilogue(b: NetworkBuilder, x, kind: str):
    """`x` followed by the ops the conv kernel absorbs, as named by `kind`."""
    if "bn" in kind:
        x = b.batch_norm(x, name="bn")
    if "add" in kind:
        x = b.add(x, with_second_input(b, shape_of(x)))
    if kind.endswith("relu6"):
        x = b.relu6(x)
    elif kind.endswith("relu"):
        x = b.relu(x)
    return x


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 1, 2, 3, 4]))
    in_group = draw(st.integers(1, 6))
    out_group = draw(st.integers(1, 40 if groups == 1 else 12))
    kernel = draw(st.sampled_from([(1, 1), (3, 3), (7, 7), (1, 3), (3, 1), (2, 2)]))
    strides = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, k // 2 + 1)) for k in (kernel[0], kernel[1], kernel[0], kernel[1]))
    # Inputs at least as large as the dilated window, whatever the padding.
    height = draw(st.integers(dilations[0] * (kernel[0] - 1) + 1, 14))
    width = draw(st.integers(dilations[1] * (kernel[1] - 1) + 1, 14))
    return dict(
        batch=draw(st.integers(1, 2)),
        channels=groups * in_group,
        out_channels=groups * out_group,
        kernel=kernel,
        strides=strides,
        padding=padding,
        dilations=dilations,
        groups=groups,
        size=(height, width),
        bias=draw(st.booleans()),
        epilogue=draw(EPILOGUES),
        seed=draw(st.integers(0, 2**16)),
    )


def conv_network(case) -> ModuleOp:
    b = NetworkBuilder("conv", (case["batch"], case["channels"], *case["size"]))
    x = b.conv2d(
        b.input, case["out_channels"], case["kernel"], stride=case["strides"], padding=case["padding"],
        dilation=case["dilations"], groups=case["groups"], bias=case["bias"], name="conv",
    )
    return b.finish(epilogue(b, x, case["epilogue"]))


@st.composite
def slice_cases(draw):
    """A `tconv.slice` of an NCHW (or NC) tensor along any axis but the batch."""
    rank = draw(st.sampled_from([4, 4, 4, 2]))
    shape = tuple(draw(st.integers(1, 2)) if d == 0 else draw(st.integers(1, 7)) for d in range(rank))
    axis = draw(st.integers(1, rank - 1))
    start = draw(st.integers(0, shape[axis] - 1))
    return dict(
        shape=shape, axis=axis, start=start, size=draw(st.integers(1, shape[axis] - start)),
        seed=draw(st.integers(0, 2**16)),
    )


def slice_network(case) -> ModuleOp:
    """The slice of `case`, then a relu (so the slice's kernel feeds another)."""
    b = NetworkBuilder("slice", case["shape"])
    return b.finish(b.relu(b.slice(b.input, case["axis"], case["start"], case["size"])))


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k - 1)) for k in (kernel[0], kernel[1], kernel[0], kernel[1]))
    return dict(
        shape=(draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(3, 12)), draw(st.integers(3, 12))),
        kernel=kernel,
        strides=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=padding,
        kind=draw(st.sampled_from(["max", "avg", "avg_include_pad"])),
        seed=draw(st.integers(0, 2**16)),
    )
