"""The pieces of the TVM lowering that need no compiled kernel: batch-norm
folding, weight packing, kernel grouping, the call list, the blocking
choice and the targets."""

import numpy as np
import pytest

from tconv.frontends import zoo
from tconv.ir.builder import NetworkBuilder
from tconv.ir.params import init_params
from tconv.kernels.blocking import (
    ConvBlocking,
    accumulator_budget,
    conv2d_blocking,
    depthwise_blocking,
    native_width,
    packed_channel_blocks,
    pointwise_blocking,
    runs_rows_first,
    skews_planes,
    tiles_positions,
)
from tconv.kernels.folding import batch_norm_affine, fold_batch_norm
from tconv.kernels.fusion import kernel_groups
from tconv.kernels.packing import pack_conv2d_weight, pack_dense_weight, pack_depthwise_weight
from tconv.kernels.program import KernelProgram, Recipe, Tensor, derive
from tconv.lowering.tvm.target import VectorUnit, cpu_target, cuda_target, make_target, vector_unit
from tconv.semantics.reference import run, single_function


def random_params(module, seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    for name, value in init_params(module).items():
        low = 0.5 if name.endswith("running_var") else -1.0
        params[name] = rng.uniform(low, 2.0, value.shape).astype(np.float32)
    return params


# Folding ---------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("groups", [1, 3])
def test_folded_conv_equals_conv_then_batch_norm(bias, groups):
    """conv → bn through the reference executor equals one conv whose weight
    and bias come from fold_batch_norm."""
    b = NetworkBuilder("conv_bn", (2, 6, 9, 8))
    x = b.batch_norm(b.conv2d(b.input, 9, 3, groups=groups, bias=bias, name="conv"), name="bn", epsilon=1e-3)
    module = b.finish(x)
    params = random_params(module)
    image = np.random.default_rng(1).standard_normal((2, 6, 9, 8)).astype(np.float32)

    weight, folded_bias = fold_batch_norm(
        params["conv.weight"], params.get("conv.bias"), params["bn.weight"], params["bn.bias"],
        params["bn.running_mean"], params["bn.running_var"], 1e-3,
    )
    plain = NetworkBuilder("conv", (2, 6, 9, 8))
    folded = plain.finish(plain.conv2d(plain.input, 9, 3, groups=groups, bias=True, name="conv"))
    (expected,) = run(module, params, image)
    (actual,) = run(folded, {"conv.weight": weight, "conv.bias": folded_bias}, image)
    assert np.linalg.norm(actual - expected) / np.linalg.norm(expected) < 1e-6


def test_batch_norm_affine():
    rng = np.random.default_rng(0)
    scale, shift, mean = rng.standard_normal((3, 5)).astype(np.float32)
    var = rng.uniform(0.1, 2, 5).astype(np.float32)
    factor, offset = batch_norm_affine(scale, shift, mean, var, 1e-5)
    x = rng.standard_normal(5)
    np.testing.assert_allclose(x * factor + offset, (x - mean) / np.sqrt(var + 1e-5) * scale + shift, rtol=1e-5)
    assert factor.dtype == offset.dtype == np.float32


# Packing ---------------------------------------------------------------------------


@pytest.mark.parametrize(("out_channels", "groups", "block"), [(16, 1, 8), (20, 1, 8), (12, 3, 4), (6, 6, 1)])
def test_pack_conv2d_weight_layout(out_channels, groups, block):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((out_channels, 2, 3, 1)).astype(np.float32)
    packed = pack_conv2d_weight(weight, groups, block)
    out_group = out_channels // groups
    assert packed.shape == (groups, -(-out_group // block), 2, 3, 1, block)
    for g, ob, c, y, x, i in np.ndindex(packed.shape):
        channel = ob * block + i
        expected = weight[g * out_group + channel, c, y, x] if channel < out_group else 0.0
        assert packed[g, ob, c, y, x, i] == expected


def test_pack_depthwise_weight_layout():
    weight = np.arange(5 * 3 * 3, dtype=np.float32).reshape(5, 1, 3, 3) + 1
    packed = pack_depthwise_weight(weight, 4)
    assert packed.shape == (2, 3, 3, 4)
    assert packed[1, 2, 0, 0] == weight[4, 0, 2, 0]
    assert packed[0, 1, 2, 3] == weight[3, 0, 1, 2]
    assert not packed[1, :, :, 1:].any()


def test_pack_dense_weight_layout():
    weight = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    packed = pack_dense_weight(weight, 4)
    assert packed.shape == (2, 3, 4)
    assert packed[0, 2, 1] == weight[1, 2]
    assert packed[1, 0, 0] == weight[4, 0]
    assert not packed[1, :, 1:].any()


# Kernel groups -----------------------------------------------------------------------


def test_resnet_block_fuses_into_conv_kernels():
    module = zoo.build("resnet18", "cifar10")
    groups = list(kernel_groups(single_function(module)))
    names = ["+".join(op.name.removeprefix("tconv.") for op in g.ops) for g in groups]
    assert names[:3] == ["conv2d+batch_norm+relu", "conv2d+batch_norm+relu", "conv2d+batch_norm+add+relu"]
    # Every op but the params and the return is in exactly one kernel.
    ops = [op for op in single_function(module).body.block.ops if op.name not in ("tconv.param", "func.return")]
    assert sorted(id(op) for g in groups for op in g.ops) == sorted(id(op) for op in ops)


def test_an_add_of_two_chains_joins_one_and_runs_after_both():
    b = NetworkBuilder("two", (1, 4, 6, 6))
    left = b.batch_norm(b.conv2d(b.input, 4, 3, name="left"), name="bn")
    right = b.conv2d(b.input, 4, 1, name="right")
    module = b.finish(b.relu(b.add(left, right)))
    groups = list(kernel_groups(single_function(module)))
    assert ["+".join(op.name.removeprefix("tconv.") for op in g.ops) for g in groups] == [
        "conv2d", "conv2d+batch_norm+add+relu",
    ]
    assert groups[1].residual is groups[0].result


def test_a_value_with_two_users_is_not_absorbed():
    b = NetworkBuilder("shared", (1, 4, 6, 6))
    x = b.conv2d(b.input, 4, 3, name="conv")
    module = b.finish(b.add(b.relu(x), x))
    groups = list(kernel_groups(single_function(module)))
    assert [len(g.ops) for g in groups] == [1, 1, 1]


# Program -----------------------------------------------------------------------------


def test_program_materializes_params_and_derived_tensors():
    params = {"w": np.ones((4, 2, 1, 1), np.float32), "b": np.arange(4, dtype=np.float32)}
    program = KernelProgram(
        tensors=[
            Tensor(0, "param", (4,), "b"),
            Tensor(1, "derived", (1, 1, 2, 1, 1, 4), "w:packed", recipe=Recipe(
                "conv2d_weight", (("weight", "w"),), (("block", 4), ("groups", 1)))),
        ]
    )
    arrays = program.materialize(params)
    np.testing.assert_array_equal(arrays[0], params["b"])
    assert arrays[1].shape == (1, 1, 2, 1, 1, 4)


def test_unknown_transform_is_an_error():
    with pytest.raises(ValueError, match="unknown parameter transform 'nope'"):
        derive(Recipe("nope", ()), {})


# Blocking and targets --------------------------------------------------------------------

AVX2 = VectorUnit(8, 16)
AVX512 = VectorUnit(16, 32)


@pytest.mark.parametrize("unit", [AVX2, AVX512])
@pytest.mark.parametrize(
    ("groups", "out_group", "width"),
    [(1, 64, 56), (1, 512, 7), (1, 20, 5), (8, 8, 56), (4, 12, 9), (2, 3, 1), (1, 1000, 1)],
)
def test_conv2d_blocking_is_legal(unit, groups, out_group, width):
    blocking = conv2d_blocking(groups, out_group, width, unit)
    assert isinstance(blocking, ConvBlocking)
    if groups > 1:
        assert out_group % blocking.block == 0
    if blocking.vector == "ow":  # GSPC: a vector of columns per channel and row of the register tile
        accumulators = blocking.block * blocking.rows * -(-blocking.width_tile // unit.lanes)
        assert accumulators <= accumulator_budget(unit)
    else:
        vectors = -(-blocking.block // unit.lanes)
        assert vectors * blocking.width_tile <= unit.registers
    assert 1 <= blocking.width_tile <= width


def test_conv2d_blocking_prefers_full_tiles():
    """7 columns: one vector of channels by all 7 columns, not 4 + 4 with a padded column."""
    assert conv2d_blocking(1, 512, 7, AVX2) == ConvBlocking(8, 7)
    assert conv2d_blocking(1, 64, 56, AVX2) == ConvBlocking(16, 4)


def test_one_group_narrower_than_a_vector_is_blocked_in_a_power_of_two_width():
    """Fewer output channels than lanes: a block of the narrowest native
    vector that holds them (DenseNet's 12 in 16 on AVX-512), never 12 or 6
    lanes; a grouped convolution keeps blocks that divide its groups."""
    assert conv2d_blocking(1, 12, 32, AVX512).block == 16
    assert conv2d_blocking(1, 8, 32, AVX512).block == 8
    assert conv2d_blocking(1, 6, 32, AVX2).block == 8
    assert conv2d_blocking(1, 3, 32, AVX512).block == 4
    assert [native_width(c, 16) for c in (1, 2, 3, 5, 9, 16, 40)] == [1, 2, 4, 8, 16, 16, 16]


def test_channel_blocks_stored_in_vectors_may_span_three_vectors():
    """Output stored in blocks of 8 on AVX2: MobileNetV2's 1×1 layers take
    24 channels by 4 columns where 24 divides their channels (144→24 at 56²
    ran 2× faster than 8 × 12), and keep one or two vectors where it does
    not; without a layout the channels would be padded, and stay in one or
    two vectors."""
    for out_channels, width in [(24, 56), (96, 112), (144, 56), (192, 28)]:
        assert conv2d_blocking(1, out_channels, width, AVX2, kernel=(1, 1), layout_block=8).block == 24
    assert conv2d_blocking(1, 32, 28, AVX2, kernel=(1, 1), layout_block=8).block in (8, 16)
    assert conv2d_blocking(1, 24, 56, AVX2, kernel=(1, 1)).block in (8, 16)
    assert packed_channel_blocks(48, 8, 8) == [8, 16, 24]
    assert packed_channel_blocks(48, 16, 16) == [16, 48]


def test_depthwise_blocking_vectorises_columns_unless_the_image_is_narrow():
    """GSPC (a vector of output columns, several rows) on images at least a vector
    wide; one vector of channels by all columns on narrower ones."""
    assert depthwise_blocking(96, 56, AVX2) == ConvBlocking(1, 8, vector="ow", rows=4)
    assert depthwise_blocking(3, 10, AVX2) == ConvBlocking(1, 10, vector="ow", rows=2)
    assert depthwise_blocking(96, 7, AVX512) == ConvBlocking(16, 7)


def test_pointwise_convolutions_tile_positions_on_small_images_only():
    assert tiles_positions(1, 1280, 7, 7, AVX2)
    assert not tiles_positions(1, 96, 112, 112, AVX2)


def test_the_pointwise_kernel_keeps_more_accumulators_than_the_fma_latency_needs():
    """256 channels at 14²: 16 × 6 positions (12 accumulators, a tail of 2
    positions), not the 16 × 4 that just covers the FMA latency."""
    assert pointwise_blocking(1, 256, 196, AVX2) == ConvBlocking(16, 6)
    assert conv2d_blocking(1, 256, 196, AVX2) == ConvBlocking(16, 4)
    assert pointwise_blocking(1, 512, 49, AVX2) == ConvBlocking(16, 5)


def test_a_pointwise_convolution_that_reduces_needs_accumulators_for_the_fma_latency_only():
    """At least as many inputs as outputs: 512→512 and 1024→256 at 14² take 16 × 4
    positions (no tail), three vectors where they divide the channels (576→96);
    an expansion (256→1024) keeps 16 × 6, 7² keeps 16 × 5, and AVX-512 its
    32 × 14 either way."""
    assert pointwise_blocking(1, 512, 196, AVX2, 8, in_group=512) == ConvBlocking(16, 4)
    assert pointwise_blocking(1, 256, 196, AVX2, 8, in_group=1024) == ConvBlocking(16, 4)
    assert pointwise_blocking(1, 96, 196, AVX2, 8, in_group=576) == ConvBlocking(24, 4)
    assert pointwise_blocking(1, 1024, 196, AVX2, 8, in_group=256) == ConvBlocking(16, 6)
    assert pointwise_blocking(1, 1024, 49, AVX2, 8, in_group=1024) == ConvBlocking(16, 5)
    assert pointwise_blocking(1, 512, 196, AVX512, 16, in_group=512) == ConvBlocking(32, 14)
    # A 1×1 whose rows the direct template tiles, told its input channels, likewise.
    reducing = conv2d_blocking(1, 64, 56, AVX2, out_height=56, kernel=(1, 1), layout_block=8, in_shape=(256, 56, 56))
    expanding = conv2d_blocking(1, 256, 56, AVX2, out_height=56, kernel=(1, 1), layout_block=8, in_shape=(64, 56, 56))
    assert (reducing.block, reducing.width_tile, expanding.block, expanding.width_tile) == (16, 4, 16, 6)


def test_rows_run_first_where_the_input_outgrows_l2_and_the_weights_do_not():
    """64 channels at 56² (800 KB in, 147 KB of weights) and the stride-2
    64→128 layer after it: rows first. 128 channels at 28² (400 KB in),
    256 at 14² (2.4 MB of weights), CIFAR's 64 at 32²: channel blocks first."""
    assert runs_rows_first((64, 56, 56), 64, 56, (3, 3), 16)
    assert runs_rows_first((64, 56, 56), 128, 28, (3, 3), 16)
    for shape, out_channels, out_height in [((128, 28, 28), 128, 28), ((256, 14, 14), 256, 14), ((64, 32, 32), 64, 32)]:
        assert not runs_rows_first(shape, out_channels, out_height, (3, 3), 16)
    assert conv2d_blocking(1, 64, 56, AVX2, in_shape=(64, 56, 56)) == ConvBlocking(16, 4, rows_first=True)
    assert conv2d_blocking(1, 64, 56, AVX2) == ConvBlocking(16, 4)  # no input shape, no guess
    assert not conv2d_blocking(2, 32, 56, AVX2, in_shape=(64, 56, 56)).rows_first  # one group only


def test_inputs_with_planes_a_whole_number_of_l1_ways_apart_are_skewed():
    assert skews_planes(32, 32, (0, 0, 0, 0))
    assert not skews_planes(32, 32, (1, 1, 1, 1))
    assert not skews_planes(56, 56, (0, 0, 0, 0))


def test_targets():
    cpu = cpu_target("znver3", 2)
    assert cpu.kind.name == "llvm" and vector_unit(cpu) == VectorUnit(8, 16, int8_dot="vpmaddwd")
    assert vector_unit(cpu_target("skylake-avx512", 2)) == VectorUnit(16, 32, int8_dot="vpmaddwd")
    assert vector_unit(cpu_target("cascadelake", 2)) == VectorUnit(16, 32, int8_dot="vpdpbusd")
    cuda = cuda_target("sm_90")
    assert cuda.kind.name == "cuda" and cuda.host.kind.name == "cuda_host"
    assert make_target("cpu").kind.name == "llvm"
    with pytest.raises(ValueError, match="unknown target 'tpu'"):
        make_target("tpu")
    with pytest.raises(ValueError, match="sm_90"):
        cuda_target("90")
