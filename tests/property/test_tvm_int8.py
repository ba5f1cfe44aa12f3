"""The int8 convolution kernel (`tconv.lowering.tvm.int8_conv`) on this CPU,
against what it must compute (`tconv.semantics.int8`, bit for bit) and
against the reference executor running the same convolution in QDQ form
(within one quantisation step), on hypothesis-generated shapes: channels
that fill no 4 or 16, odd images, strides, dilations, asymmetric padding,
every zero point; with each dot-product instruction this CPU has
(`vpmaddwd` on AVX2, `vpdpbusd` with AVX-512 VNNI) and with none."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tconv.ir.builder import NetworkBuilder
from tconv.ir.shapes import ShapeError
from tconv.kernels.packing import INT8_LANES, pack_int8_conv2d_weight, pack_int8_depthwise_weight
from tconv.kernels.target import VPDPBUSD, VPMADDWD
from tconv.lowering.tvm.int8_conv import Int8Conv, build_int8_conv2d
from tconv.lowering.tvm.target import cpu_target, vector_unit
from tconv.semantics.int8 import Requantization, int8_accumulator_bound, int8_conv2d_accumulate
from tconv.semantics.reference import run

TARGET = cpu_target()
DOTS = [None, *{VPMADDWD: [VPMADDWD], VPDPBUSD: [VPMADDWD, VPDPBUSD]}.get(vector_unit(TARGET).int8_dot, [])]
"""The dot products this CPU runs: none, and `vpmaddwd` on any AVX2 CPU
(those with AVX-512 VNNI included), and `vpdpbusd`."""


@st.composite
def int8_cases(draw):
    kh, kw = draw(st.sampled_from([(1, 1), (3, 3), (1, 3), (5, 5)]))
    padding = tuple(draw(st.integers(0, k - 1)) if k > 1 else 0 for k in (kh, kw, kh, kw))
    dilations = (1, draw(st.integers(1, 2))) if kw > 1 else (1, 1)
    out_quantized = draw(st.booleans())
    kind = draw(st.sampled_from(["dense", "dense", "grouped", "depthwise"]))
    if kind == "dense":
        groups, channels, out_channels = 1, draw(st.integers(1, 21)), draw(st.integers(1, 40))
    elif kind == "grouped":
        groups = draw(st.integers(2, 3))
        channels, out_channels = groups * 4 * draw(st.integers(1, 3)), groups * 16 * draw(st.integers(1, 2))
    else:
        groups = channels = out_channels = draw(st.integers(2, 40))
    return {
        "batch": draw(st.integers(1, 2)),
        "groups": groups,
        "channels": channels,
        "out_channels": out_channels,
        "height": draw(st.integers(max(1, kh - padding[0] - padding[2]), 11)),
        "width": draw(st.integers(max(1, dilations[1] * (kw - 1) + 1 - padding[1] - padding[3]), 11)),
        "kernel": (kh, kw),
        "strides": (draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        "padding": (padding[0], padding[1], padding[2], padding[3]),
        "dilations": dilations,
        "zero_point": draw(st.integers(0, 255)),
        "activation": draw(st.sampled_from([None, "relu", "relu6"])),
        "out_scale": draw(st.sampled_from([0.01, 0.05, 0.3])) if out_quantized else None,
        "out_zero_point": draw(st.integers(0, 255)) if out_quantized else 0,
        "column_tile": draw(st.sampled_from([1, 3, 4, 6])),
        "seed": draw(st.integers(0, 2**16)),
    }


def operands(case):
    """Random uint8 input (NCHW), int8 weight (OIHW, in [-127, 127]) and the
    float parameters of the case."""
    rng = np.random.default_rng(case["seed"])
    x_q = rng.integers(0, 256, (case["batch"], case["channels"], case["height"], case["width"]), dtype=np.uint8)
    group_channels = case["channels"] // case["groups"]
    w_q = rng.integers(-127, 128, (case["out_channels"], group_channels, *case["kernel"]), dtype=np.int8)
    x_scale = np.float32(rng.uniform(0.005, 0.05))
    w_scale = rng.uniform(0.001, 0.02, case["out_channels"]).astype(np.float32)
    bias = rng.normal(0, 0.5, case["out_channels"]).astype(np.float32)
    return x_q, w_q, x_scale, w_scale, bias


def run_kernel(case, dot):
    """The kernel's output in NCHW over the real output channels."""
    x_q, w_q, *_ = operands(case)
    depthwise = case["groups"] == case["out_channels"] > 1
    # Stored channels: a multiple of 4 (groups: already), of 16 for a depthwise input.
    c4 = -(-case["channels"] // 16) * 16 if depthwise else -(-case["channels"] // 4) * 4
    requantization = requantization_of(case)
    shape = {k: v for k, v in case.items() if k not in ("seed", "channels", "out_scale", "out_zero_point")}
    conv = Int8Conv(channels=c4, out_zero_point=requantization.out_zero_point, low=requantization.low,
                    high=requantization.high, dot=dot, **shape)
    kernel = build_int8_conv2d(conv, TARGET)
    o16 = conv.out_channels_stored
    data = np.zeros((case["batch"], case["height"], case["width"], c4), np.uint8)
    data[..., : case["channels"]] = x_q.transpose(0, 2, 3, 1)
    requantization = requantization_of(case)
    offset = np.zeros(o16, np.int32)
    offset[: case["out_channels"]] = requantization.offset
    scale = np.zeros(o16, np.float32)
    scale[: case["out_channels"]] = requantization.scale
    p, q = conv.output_size
    out = np.empty((case["batch"], p, q, o16), np.dtype(conv.output_dtype))
    import tvm

    packed = (pack_int8_depthwise_weight(w_q) if depthwise
              else pack_int8_conv2d_weight(w_q, c4, case["groups"], pairs=conv.partials > 1))
    arrays = [tvm.runtime.tensor(a) for a in (data, packed, offset, scale, out)]
    kernel(*arrays)
    return arrays[-1].numpy().transpose(0, 3, 1, 2)[:, : case["out_channels"]]


def requantization_of(case) -> Requantization:
    _, w_q, x_scale, w_scale, bias = operands(case)
    return Requantization.of(x_scale, case["zero_point"], w_q, w_scale, bias, case["activation"], case["out_scale"],
                             case["out_zero_point"])


def expected(case):
    x_q, w_q, *_ = operands(case)
    acc = int8_conv2d_accumulate(x_q, case["zero_point"], w_q, case["strides"], case["padding"], case["dilations"],
                                 case["groups"])
    return requantization_of(case).apply(acc, channel_axis=1)


@pytest.mark.parametrize("dot", DOTS, ids=lambda d: d or "plain")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=int8_cases())
def test_the_kernel_computes_its_semantics_bit_for_bit(dot, case):
    np.testing.assert_array_equal(run_kernel(case, dot), expected(case))


def qdq_network(case, x_scale, w_q, w_scale, bias):
    """The case as a tconv network in QDQ form, as `tconv-quantize` writes it
    (the weight's QDQ pair left out: its dequantised values are the stored
    float32 weight, w_q · w_scale, exactly)."""
    b = NetworkBuilder("int8", (case["batch"], case["channels"], case["height"], case["width"]))
    x = b.dequantize(b.quantize(b.input, [float(x_scale)], [case["zero_point"]]), [float(x_scale)],
                     [case["zero_point"]])
    y = b.conv2d(x, case["out_channels"], case["kernel"], stride=case["strides"], padding=case["padding"],
                 dilation=case["dilations"], groups=case["groups"], bias=True, name="conv")
    if case["activation"] is not None:
        y = b.relu(y) if case["activation"] == "relu" else b.relu6(y)
    if case["out_scale"] is not None:
        y = b.dequantize(b.quantize(y, [case["out_scale"]], [case["out_zero_point"]]),
                         [case["out_scale"]], [case["out_zero_point"]])
    module = b.finish(y)
    params = {"conv.weight": (w_q.astype(np.float32) * w_scale[:, None, None, None]), "conv.bias": bias}
    return module, params


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=int8_cases())
def test_the_kernel_is_the_qdq_network_within_one_step(case):
    """The reference executor runs the QDQ form in float32 (a float32
    convolution of the dequantised values): the kernel agrees with it to
    float rounding, i.e. within one quantisation step where it quantises."""
    x_q, w_q, x_scale, w_scale, bias = operands(case)
    module, params = qdq_network(case, x_scale, w_q, w_scale, bias)
    x = (x_q.astype(np.float32) - case["zero_point"]) * x_scale
    (reference,) = run(module, params, x)
    actual = run_kernel(case, DOTS[-1])
    if case["out_scale"] is None:
        # Float rounding, and the bias rounded to the accumulator's step (half a step).
        step = (x_scale * w_scale)[None, :, None, None]
        bound = 0.5 * step + 1e-4 * max(1.0, np.abs(reference).max())
        assert np.all(np.abs(actual - reference) <= bound), np.abs(actual - reference).max()
    else:
        steps = np.abs(actual.astype(np.float32) - (reference / case["out_scale"] + case["out_zero_point"]))
        assert steps.max() <= 1.0 + 1e-3


def test_the_weight_layout():
    w = np.arange(2 * 5 * 3 * 3, dtype=np.int64).reshape(2, 5, 3, 3).astype(np.int8)
    packed = pack_int8_conv2d_weight(w, 8)
    assert packed.shape == (1, 2, 3, 3, INT8_LANES, 4)
    assert packed[0, 1, 2, 0, 1, 0] == w[1, 4, 2, 0]
    assert packed[0, 1, 2, 0, 1, 1] == 0  # input channel 5: padding
    assert not packed[0, :, :, :, 2:].any()  # output channels 2..15: padding
    with pytest.raises(ValueError, match="in fours"):
        pack_int8_conv2d_weight(w, 6)
    grouped = np.arange(32 * 4 * 1 * 1).reshape(32, 4, 1, 1).astype(np.int8)
    packed = pack_int8_conv2d_weight(grouped, 8, groups=2)
    assert packed.shape == (2, 1, 1, 1, INT8_LANES, 4)
    assert packed[1, 0, 0, 0, 3, 2] == grouped[16 + 3, 2, 0, 0]
    with pytest.raises(ValueError, match="not a multiple of 16"):
        pack_int8_conv2d_weight(grouped[:24], 8, groups=2)
    # Pair by pair (vpmaddwd): (..., h, i, k) is input channel 2h + k of output channel i.
    pairs = pack_int8_conv2d_weight(w, 8, pairs=True)
    assert pairs.shape == (1, 2, 3, 3, 2, INT8_LANES, 2)
    assert pairs[0, 1, 2, 0, 0, 1, 0] == w[1, 4, 2, 0] and pairs[0, 0, 2, 0, 1, 1, 1] == w[1, 3, 2, 0]
    np.testing.assert_array_equal(pairs[0, 0, 1, 2, :, 0, :].reshape(-1), w[0, :4, 1, 2])


def test_groups_that_do_not_fit_the_blocks_are_refused():
    with pytest.raises(ShapeError, match="multiple of 4 and its output channels of 16"):
        Int8Conv(1, 4, 4, 12, 24, (3, 3), groups=3)
    with pytest.raises(ShapeError, match=r"depthwise conv2d: the input's stored channels \(20\) must be"):
        Int8Conv(1, 4, 4, 20, 20, (3, 3), groups=20)


def test_the_depthwise_weight_layout():
    w = np.arange(20 * 9).reshape(20, 1, 3, 3).astype(np.int8)
    packed = pack_int8_depthwise_weight(w)
    assert packed.shape == (2, 3, 3, INT8_LANES)
    assert packed[1, 2, 0, 3] == w[19, 0, 2, 0]
    assert not packed[1, :, :, 4:].any()


def test_a_window_larger_than_the_input_is_refused():
    with pytest.raises(ShapeError, match="does not fit"):
        Int8Conv(1, 1, 3, 4, 8, (1, 3), dilations=(1, 2))


def test_the_accumulator_bound():
    assert int8_accumulator_bound(512, (3, 3)) < 2**31
    with pytest.raises(ShapeError, match="could overflow the int32 accumulator"):
        Int8Conv(1, 3, 3, 8192, 16, (3, 3), padding=(1, 1, 1, 1))
    w_q = np.ones((16, 8192, 3, 3), np.int8)
    with pytest.raises(ValueError, match="the int32 accumulator could overflow"):
        Requantization.of(0.01, 0, w_q, np.full(16, 0.01, np.float32), None)


def test_a_bias_beyond_int32_steps_is_refused():
    w_q = np.ones((2, 4, 1, 1), np.int8)
    for bias in ([1e9, 0.0], [np.nan, 0.0]):
        with pytest.raises(ValueError, match="not an int32 number of accumulator steps"):
            Requantization.of(1e-3, 0, w_q, np.full(2, 1e-3, np.float32), np.asarray(bias, np.float32))


def test_the_register_tile():
    """16 accumulators where the shape allows, no padded columns where a
    tile fits the row, rows before blocks; rows and blocks divide the
    height and a group's blocks."""
    from tconv.kernels.blocking import INT8_ACCUMULATORS, INT8_MAX_COLUMNS, Int8Tile, int8_register_tile

    assert int8_register_tile(32, 32, 4) == Int8Tile(2, 8, 1)
    assert int8_register_tile(4, 4, 32) == Int8Tile(4, 4, 1)  # ResNet's last stage: all rows in one tile
    assert int8_register_tile(7, 7, 32) == Int8Tile(1, 7, 2)  # 7 rows: blocks fill the tile
    assert int8_register_tile(3, 5, 1, columns=3).columns == 3
    for height, width, blocks in [(h, w, b) for h in (1, 5, 6, 17) for w in range(1, 60, 7) for b in (1, 3, 8)]:
        tile = int8_register_tile(height, width, blocks)
        assert 1 <= tile.columns <= min(width, INT8_MAX_COLUMNS)
        assert height % tile.rows == 0 and blocks % tile.blocks == 0
        assert tile.rows * tile.columns * tile.blocks <= INT8_ACCUMULATORS

def test_the_register_tile_of_a_vpmaddwd_kernel():
    """An AVX2 accumulator of 16 channels is 4 vector registers: at most 3
    in a tile, and 2 are enough."""
    from tconv.kernels.blocking import PAIRS_ACCUMULATORS, Int8Tile, int8_register_tile

    assert int8_register_tile(14, 14, 16, dot=VPMADDWD) == Int8Tile(1, 2, 1)
    assert int8_register_tile(7, 7, 32, dot=VPMADDWD) == Int8Tile(1, 2, 1)  # a padded column rather than 1 accumulator
    assert int8_register_tile(3, 5, 1, columns=6, dot=VPMADDWD) == Int8Tile(1, 6, 1)  # a column tile asked for
    for height, width, blocks in [(h, w, b) for h in (1, 5, 6, 17) for w in range(1, 60, 7) for b in (1, 3, 8)]:
        tile = int8_register_tile(height, width, blocks, dot=VPMADDWD)
        assert tile.rows * tile.columns * tile.blocks <= PAIRS_ACCUMULATORS


def test_each_cpu_gets_the_dot_product_it_has():
    from tconv.kernels.target import vector_unit_from_features

    def unit(*features):
        return vector_unit_from_features(lambda name: name in features).int8_dot

    assert unit("avx512f", "avx2", "avx", "avx512vnni") == VPDPBUSD
    assert unit("avx512f", "avx2", "avx") == VPMADDWD
    assert unit("avx2", "avx") == VPMADDWD
    assert unit("avx") is None and unit() is None
    with pytest.raises(ShapeError, match="dot product 'vpdpwssd'"):
        Int8Conv(1, 4, 4, 4, 16, (1, 1), dot="vpdpwssd")


@pytest.mark.parametrize("dot", [d for d in DOTS if d], ids=str)
def test_the_dot_product_is_the_instruction(dot):
    """The kernel's products are the instruction's, not LLVM's choice (a
    VPMADDWD kernel's accumulator holds two partial sums per channel)."""
    from tvm import te

    from tconv.lowering.tvm.int8_conv import int8_conv2d, placeholders, schedule_int8_conv2d

    conv = Int8Conv(1, 5, 5, 8, 16, (3, 3), padding=(1, 1, 1, 1), dot=dot)
    tensors = placeholders(conv)
    script = schedule_int8_conv2d(te.create_prim_func([*tensors, int8_conv2d(conv, *tensors)]), conv).script()
    intrinsic = {VPMADDWD: "llvm.x86.avx2.pmadd.wd", VPDPBUSD: "llvm.x86.avx512.vpdpbusd.512"}[dot]
    assert intrinsic in script
    assert ('"int16"' in script) == (dot == VPMADDWD)  # the input widened once, in the padded copy
