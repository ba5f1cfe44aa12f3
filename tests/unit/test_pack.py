"""`tconv-pack` and packed activation layouts (NCHW[b]c): the schedule's
`layout` entry, the pass's decisions, the TVM lowering's kernels against the
reference executor, and the diagnostics of layouts that cannot be honoured."""

import re

import numpy as np
import pytest
from support import relative_error, trained_like_params
from xdsl.dialects.builtin import DictionaryAttr, StringAttr
from xdsl.passes import PassPipeline
from xdsl.utils.exceptions import PassFailedException

from tconv.frontends import zoo
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError, make_context, module_text, parse_module, verify_module
from tconv.ir.ops import Conv2dOp
from tconv.ir.schedule import ActivationLayouts, ConvSchedule, ScheduleError, conv_layouts, layout_block, parse_schedule
from tconv.kernels.packing import pack_conv2d_weight
from tconv.lowering.tvm.build import TvmNetwork, lower_kernels, run_tvm
from tconv.passes.registry import PASSES
from tconv.semantics.reference import run


def apply(module, pipeline: str):
    PassPipeline.parse_spec(dict(PASSES), pipeline).apply(make_context(), module)
    return module


def layouts(module) -> dict[str, tuple[str, str]]:
    """(input, output) layout of every convolution, by its weight's name."""
    result = {}
    for op in module.walk():
        if isinstance(op, Conv2dOp):
            found = conv_layouts(op.schedule)
            result[op.weight.owner.param_name.removesuffix(".weight")] = (found.input, found.output)
    return result


def kernel_script(module, layer: str) -> str:
    """The TVM script of the one kernel that computes convolution `layer`."""
    kernels, program = lower_kernels(module)
    (call,) = [c for c in program.calls if any(program.tensors[i].name.startswith(f"{layer}.weight") for i in c.args)]
    return kernels[call.symbol].script()


def odd_network():
    """Batch 2, 16 and 24 channels, an odd image, a strided convolution, a
    residual block, a strided 1×1 projection and a pointwise convolution."""
    b = NetworkBuilder("odd", (2, 16, 9, 11))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 24, 3, padding=1, name="conv1"), name="bn1"))
    y = b.relu(b.batch_norm(b.conv2d(x, 24, 3, padding=1, name="conv2"), name="bn2"))
    y = b.batch_norm(b.conv2d(y, 24, 3, padding=1, name="conv3"), name="bn3")
    x = b.relu(b.add(y, x))
    shortcut = b.batch_norm(b.conv2d(x, 16, 1, stride=2, name="down"), name="bn_down")
    y = b.relu(b.conv2d(x, 16, 3, stride=2, padding=1, name="conv4"))
    x = b.relu(b.add(b.conv2d(y, 16, 3, padding=1, name="conv5"), shortcut))
    x = b.relu(b.conv2d(x, 32, 1, name="pointwise"))
    return b.finish(b.max_pool2d(x, 2))


def check_against_reference(module, seed=0):
    params = trained_like_params(module, seed)
    shape = [int(d) for d in module.body.block.ops.first.function_type.inputs.data[0].get_shape()]
    image = np.random.default_rng(seed + 1).standard_normal(shape).astype(np.float32)
    (actual,) = run_tvm(module, params, image)
    (expected,) = run(module, params, image)
    assert relative_error(actual, expected) < 1e-5


# The schedule's `layout` entry -------------------------------------------------------


def test_layout_entry_round_trips():
    schedule = ConvSchedule(tiles={"oc": (16,)}, layout=ActivationLayouts("NCHW", "NCHW8c"))
    parsed = parse_schedule(schedule.to_attr())
    assert parsed == schedule
    assert (parsed.layouts.input_block, parsed.layouts.output_block) == (None, 8)
    assert parsed.transforms_loops and not ConvSchedule(layout=ActivationLayouts()).transforms_loops
    # No entry and a missing key are NCHW.
    assert parse_schedule(DictionaryAttr({})).layouts == ActivationLayouts()
    partial = parse_schedule(DictionaryAttr({"layout": DictionaryAttr({"output": StringAttr("NCHW16c")})}))
    assert partial.layouts == ActivationLayouts("NCHW", "NCHW16c")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"input": StringAttr("NHWC")}, "layout 'NHWC' is neither NCHW nor NCHW<block>c"),
        ({"input": StringAttr("NCHW0c")}, "layout 'NCHW0c' is neither"),
        ({"output": StringAttr("nchw8c")}, "layout 'nchw8c' is neither"),
        ({"weights": StringAttr("NCHW")}, "`layout` has unknown key 'weights'"),
    ],
)
def test_malformed_layouts_are_schedule_errors(entry, message):
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(DictionaryAttr({"layout": DictionaryAttr(entry)}))
    with pytest.raises(ScheduleError, match="must be a dictionary"):
        parse_schedule(DictionaryAttr({"layout": StringAttr("NCHW8c")}))
    assert layout_block("NCHW") is None and layout_block("NCHW16c") == 16


def test_layout_block_must_divide_the_channels():
    ActivationLayouts("NCHW8c", "NCHW8c").check_channels(16, 24)
    with pytest.raises(ScheduleError, match="output layout NCHW16c needs channels divisible by 16, the output has 24"):
        ActivationLayouts("NCHW8c", "NCHW16c").check_channels(16, 24)


def test_verifier_reports_a_malformed_layout_at_the_op():
    text = module_text(odd_network()).replace(
        "groups 1 :", 'groups 1 schedule {layout = {input = "NCHW", output = "NCHW_8c"}} :', 1
    )
    module = parse_module(text, "net.mlir")
    with pytest.raises(TconvError, match=r"net.mlir:\d+:\d+: error: conv2d: schedule: layout 'NCHW_8c' is neither"):
        verify_module(module)


def test_verifier_reports_a_block_that_does_not_divide_the_channels():
    # conv1 has 16 input and 24 output channels.
    text = _text_with({"conv1": '{layout = {input = "NCHW8c", output = "NCHW16c"}}'})
    with pytest.raises(TconvError, match=r"net.mlir:\d+:\d+: error: conv2d: schedule: the output layout NCHW16c "
                       r"needs channels divisible by 16, the output has 24"):
        verify_module(parse_module(text, "net.mlir"))


# The pass ---------------------------------------------------------------------------


def test_pass_keeps_packed_tensors_between_packed_convolutions():
    module = apply(odd_network(), "tconv-pack")
    assert layouts(module) == {
        "conv1": ("NCHW", "NCHW8c"),  # the network's input is NCHW
        "conv2": ("NCHW8c", "NCHW8c"),
        "conv3": ("NCHW8c", "NCHW8c"),  # its fused residual (conv1's result) is packed too
        "down": ("NCHW8c", "NCHW8c"),
        "conv4": ("NCHW8c", "NCHW8c"),
        "conv5": ("NCHW8c", "NCHW8c"),
        "pointwise": ("NCHW8c", "NCHW"),  # pooling reads NCHW
    }


def test_pass_skips_what_it_cannot_pack_and_refuses_named_layers(capsys):
    b = NetworkBuilder("net", (1, 12, 8, 8))
    x = b.conv2d(b.input, 16, 3, padding=1, name="stem")  # 12 input channels: reads NCHW, writes packed
    x = b.conv2d(x, 16, 3, padding=1, groups=2, name="grouped")
    module = b.finish(b.conv2d(x, 16, 3, padding=1, name="last"))
    apply(module, "tconv-pack")
    assert "remark: tconv-pack: left grouped in NCHW: it is grouped (groups 2); packed layouts are for ungrouped " \
        "and depthwise convolutions" in capsys.readouterr().err
    assert layouts(module)["stem"] == ("NCHW", "NCHW")  # a grouped convolution reads its result
    with pytest.raises(PassFailedException, match="cannot pack grouped: it is grouped"):
        apply(module, "tconv-pack{layers=grouped}")
    with pytest.raises(PassFailedException, match="block 5 fits no convolution"):
        apply(module, "tconv-pack{block=5}")


def test_pass_respects_a_schedule_channel_block():
    """A schedule whose channel block is a multiple of the layout block
    dividing the channels keeps its block and its packed output; another
    one keeps the output NCHW."""
    module = odd_network()
    apply(module, "tconv-tile{loop=oc factors=16 layers=conv4},tconv-tile{loop=oc factors=12 layers=conv5}")
    apply(module, "tconv-pack")
    found = layouts(module)
    assert found["conv4"] == ("NCHW8c", "NCHW8c")
    assert found["conv5"] == ("NCHW8c", "NCHW")
    conv4 = next(
        op for op in module.walk() if isinstance(op, Conv2dOp) and op.weight.owner.param_name == "conv4.weight"
    )
    assert parse_schedule(conv4.schedule).factor("oc") == 16
    check_against_reference(module)
    _, program = lower_kernels(module)
    assert any("conv4.weight:packed_1xOBxCBxKHxKWx8x16" in t.name for t in program.tensors)


def inverted_residuals(channels: int = 24):
    """Two MobileNetV2 blocks: 1×1 expansion, 3×3 depthwise (stride 2, then
    1), 1×1 projection, the second with its residual; then a 1×1 head and
    pooling."""
    b = NetworkBuilder("mobile", (1, 8, 10, 10))
    x = b.relu6(b.batch_norm(b.conv2d(b.input, channels, 1, name="expand1"), name="bn_e1"))
    x = b.relu6(b.batch_norm(b.conv2d(x, channels, 3, stride=2, padding=1, groups=channels, name="dw1"), name="bn_d1"))
    x = b.batch_norm(b.conv2d(x, 16, 1, name="project1"), name="bn_p1")
    y = b.relu6(b.conv2d(x, 2 * channels, 1, name="expand2"))
    y = b.relu6(b.conv2d(y, 2 * channels, 3, padding=1, groups=2 * channels, name="dw2"))
    y = b.add(b.batch_norm(b.conv2d(y, 16, 1, name="project2"), name="bn_p2"), x)
    return b.finish(b.avg_pool2d(b.relu6(b.conv2d(y, 32, 1, name="head")), 5))


def test_depthwise_convolutions_read_and_write_channel_blocks():
    module = apply(inverted_residuals(), "tconv-pack")
    assert layouts(module) == {
        "expand1": ("NCHW", "NCHW8c"),
        "dw1": ("NCHW8c", "NCHW8c"),
        "project1": ("NCHW8c", "NCHW8c"),  # read by expand2 and, as its residual, by project2's kernel
        "expand2": ("NCHW8c", "NCHW8c"),
        "dw2": ("NCHW8c", "NCHW8c"),
        "project2": ("NCHW8c", "NCHW8c"),
        "head": ("NCHW8c", "NCHW"),  # pooling reads NCHW
    }
    check_against_reference(module)
    _, program = lower_kernels(module)
    # The depthwise kernels take their channel vector from the layout.
    assert any("dw1.weight:packed_CBxKHxKWx8" in t.name for t in program.tensors)


def test_depthwise_convolutions_a_block_does_not_divide_stay_nchw(capsys):
    # 24 and 48 channels: blocks of 16 fit dw2 (48) but not dw1 (24).
    module = apply(inverted_residuals(), "tconv-pack{block=16}")
    assert "left dw1 in NCHW: its 24 channels are not divisible by 16" in capsys.readouterr().err
    found = layouts(module)
    assert found["dw2"] == ("NCHW16c", "NCHW16c") and found["dw1"] == ("NCHW", "NCHW")
    check_against_reference(module)


def test_a_depthwise_schedule_with_another_vector_is_not_packed(capsys):
    module = apply(inverted_residuals(), "tconv-tile{loop=g factors=4 layers=dw2},tconv-pack")
    assert "left dw2 in NCHW: its schedule's vector of channels (tile g = [4]) is not the block 8" in \
        capsys.readouterr().err
    assert layouts(module)["expand2"] == ("NCHW8c", "NCHW")
    check_against_reference(module)


# Values -------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [8, 16])
def test_packed_network_matches_reference(block):
    module = apply(odd_network(), f"tconv-pack{{block={block}}}")
    check_against_reference(module)
    _, program = lower_kernels(module)
    # Packed activations are stored N x C/b x H x W x b; the network's ends stay NCHW.
    assert any(t.kind == "activation" and t.shape[-1] == block and len(t.shape) == 5 for t in program.tensors)
    assert all(len(program.tensors[i].shape) == 4 for i in program.outputs)
    assert len(program.inputs[0].shape) == 4


def test_a_packed_pointwise_layer_takes_three_vectors_of_channels_where_they_divide_it():
    """Three vectors of output channels (24 on AVX2, 48 on AVX-512) in
    blocks of one vector: the default tile holds all three (fewer loads per
    FMA than one or two vectors by more columns), and computes the same
    values; 12² keeps every column tile whole."""
    from tconv.kernels.target import host_vector_unit

    lanes = host_vector_unit().lanes
    b = NetworkBuilder("three", (1, 16, 12, 12))
    x = b.relu6(b.batch_norm(b.conv2d(b.input, 3 * lanes, 1, name="expand"), name="bn_e"))
    y = b.batch_norm(b.conv2d(x, 16, 1, name="project"), name="bn_p")
    module = apply(b.finish(b.avg_pool2d(y, 2)), f"tconv-pack{{block={lanes}}}")
    assert layouts(module)["expand"] == ("NCHW", f"NCHW{lanes}c")
    check_against_reference(module)
    _, program = lower_kernels(module)
    (weight,) = [t.name for t in program.tensors if t.name.startswith("expand.weight:packed")]
    assert f"KWx{3 * lanes}" in weight, weight


@pytest.mark.parametrize(
    ("kernel", "stride", "pack"), [(1, 1, True), (1, 2, True), (3, 1, True), (1, 1, False), (3, 2, False)]
)
def test_an_unpadded_convolution_reads_its_tiles_tail_in_place(kernel, stride, pack):
    """No padding, and a column tile that does not divide the output width:
    the tile's extra columns read the input's last column and are dropped,
    where the kernel used to copy the whole input a tile wider first (half
    the time of MobileNetV2's 192→32 1×1 layer). Same values, no copy."""
    b = NetworkBuilder("tail", (1, 16, 9, 13))
    x = b.relu(b.conv2d(b.input, 16, 3, padding=1, name="stem"))
    x = b.relu(b.batch_norm(b.conv2d(x, 16, kernel, stride=stride, padding=0, name="conv"), name="bn"))
    module = b.finish(b.conv2d(x, 8, 3, padding=1, name="head"))
    pipeline = "tconv-tile{loop=oc factors=8 layers=conv},tconv-tile{loop=ow factors=5 layers=conv}"
    module = apply(module, pipeline + (",tconv-pack" if pack else ""))
    assert layouts(module)["conv"] == (("NCHW8c",) * 2 if pack else ("NCHW",) * 2)
    check_against_reference(module)
    assert 'T.sblock("pad")' not in kernel_script(module, "conv")


def test_a_packed_input_is_read_a_channel_at_a_time_around_the_unrolled_taps():
    """An input in channel blocks: the block's channels loop outside the
    unrolled taps, as an NCHW input's channels do. Inside them, LLVM unrolled
    the channels as well (8 × 9 taps × the tile in one body) and spilled
    accumulators on AVX2. Same values either way."""
    b = NetworkBuilder("blocks", (1, 16, 9, 13))
    x = b.relu(b.conv2d(b.input, 16, 3, padding=1, name="stem"))
    x = b.relu(b.conv2d(x, 16, 3, padding=1, name="conv"))
    module = apply(b.finish(b.conv2d(x, 8, 3, padding=1, name="head")), "tconv-pack")
    assert layouts(module)["conv"] == ("NCHW8c", "NCHW8c")
    check_against_reference(module)
    lines = kernel_script(module, "conv").splitlines()
    taps = next(index for index, line in enumerate(lines) if "T.unroll(3)" in line)
    assert any(re.search(r"T\.grid\(\d+, 8\)|in range\(8\)", line) for line in lines[:taps])


def test_packed_and_unpacked_networks_compute_the_same():
    params = trained_like_params(odd_network())
    image = np.random.default_rng(3).standard_normal((2, 16, 9, 11)).astype(np.float32)
    (plain,) = run_tvm(odd_network(), params, image)
    (packed,) = run_tvm(apply(odd_network(), "tconv-pack"), params, image)
    assert relative_error(packed, plain) < 1e-5


def test_weights_for_packed_inputs_are_oihw_blocked():
    weight = np.random.default_rng(0).standard_normal((16, 24, 3, 1)).astype(np.float32)
    packed = pack_conv2d_weight(weight, 1, 8, in_block=4)
    assert packed.shape == (1, 2, 6, 3, 1, 4, 8)
    # element (0, ob, cb, y, x, j, i) is weight[ob·8 + i, cb·4 + j, y, x]
    assert packed[0, 1, 5, 2, 0, 3, 6] == weight[14, 23, 2, 0]
    with pytest.raises(ValueError, match="input blocks of 5"):
        pack_conv2d_weight(weight, 1, 8, in_block=5)


def test_resnet18_cifar_packed_end_to_end():
    module = apply(zoo.build("resnet18", "cifar10"), "tconv-pack")
    found = layouts(module)
    assert found["conv1"] == ("NCHW", "NCHW8c")
    # Global pooling reads the last block's result NCHW; its kernel reads its
    # fused residual in its output's layout, so layer4.0 writes NCHW too.
    assert found["layer4.1.conv2"] == ("NCHW8c", "NCHW")
    assert found["layer4.1.conv1"] == ("NCHW", "NCHW8c")
    assert found["layer4.0.conv2"] == found["layer4.0.shortcut.0"] == ("NCHW8c", "NCHW")
    assert sum(entry == ("NCHW8c", "NCHW8c") for entry in found.values()) == len(found) - 5
    params = trained_like_params(module)
    network = TvmNetwork(module)
    network.load_params(params)
    image = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    (actual,) = network.run(image)
    (expected,) = run(module, params, image)
    assert relative_error(actual, expected) < 1e-4


def test_packed_artifact_runs_in_the_c_runtime(tmp_path):
    from tconv.lowering.tvm.artifact import compile_artifact
    from tconv.runtime.driver import Runtime

    module = apply(odd_network(), "tconv-pack")
    params = trained_like_params(module)
    compile_artifact(module, params, tmp_path / "packed")
    image = np.random.default_rng(2).standard_normal((2, 16, 9, 11)).astype(np.float32)
    with Runtime(tmp_path / "packed") as runtime:
        (actual,) = runtime.run(image)
    (expected,) = run(module, params, image)
    assert relative_error(actual, expected) < 1e-5


# Diagnostics of the lowering ------------------------------------------------------------


def _text_with(layout_of: dict[str, str]) -> str:
    """The odd network's text with the schedule `layout_of[name]` on convolution `name`."""
    lines = module_text(odd_network()).splitlines()
    weights = {}
    for line in lines:
        for name in layout_of:
            if f'tconv.param "{name}.weight"' in line:
                weights[line.split("=")[0].strip()] = name
    for index, line in enumerate(lines):
        if "tconv.conv2d" in line:
            weight = line.split("tconv.conv2d", 1)[1].split(",")[1].split()[0]
            if weight in weights:
                head, tail = line.split(" : ", 1)
                lines[index] = f"{head} schedule {layout_of[weights[weight]]} : {tail}"
    return "\n".join(lines)


def lower_text(text: str):
    module = parse_module(text, "net.mlir")
    verify_module(module)
    return lower_kernels(module)


def test_a_reader_that_disagrees_with_the_writer_is_located():
    # conv1 writes packed, but its readers (bn-less conv2, the residual add) expect NCHW.
    text = _text_with({"conv1": '{layout = {input = "NCHW", output = "NCHW8c"}}'})
    with pytest.raises(TconvError, match=(
        r"net.mlir:\d+:\d+: error: tvm lowering: reads its input in layout NCHW, but the kernel of "
        r"tconv.conv2d at net.mlir:\d+:\d+ writes it in NCHW8c"
    )):
        lower_text(text)


def test_a_packed_result_of_the_network_is_refused():
    b = NetworkBuilder("net", (1, 16, 8, 8))
    module = b.finish(b.relu(b.conv2d(b.input, 16, 3, padding=1, name="last")))
    conv = next(op for op in module.walk() if isinstance(op, Conv2dOp))
    conv.properties["schedule"] = ConvSchedule(layout=ActivationLayouts("NCHW", "NCHW8c")).to_attr()
    with pytest.raises(TconvError, match=(
        r"error: tvm lowering: reads a result of the network in layout NCHW, but the kernel of tconv.conv2d "
        r"writes it in NCHW8c .*\(in func.return\)"
    )):
        lower_kernels(module)


def test_fusion_changed_after_packing_is_located():
    module = apply(odd_network(), "tconv-pack,tconv-fuse{residual=false}")
    with pytest.raises(TconvError, match="tvm lowering: reads an operand in layout NCHW, but the kernel of tconv.conv2d"):  # noqa: E501
        lower_kernels(module)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ('{tile = {oc = [16]}, layout = {input = "NCHW", output = "NCHW8c"}}', "tiles oc by 16"),
        ('{tile = {ow = [4]}, vectorize = "ow.1", order = ["n", "g", "oc", "oh", "ow.0", "ic", "kh", "kw", "ow.1"], '
         'layout = {input = "NCHW", output = "NCHW8c"}}', "not GSPC"),
    ],
)
def test_layouts_a_convolution_cannot_honour_are_located(schedule, message):
    with pytest.raises(TconvError, match=rf"net.mlir:\d+:\d+: error: tvm backend: .*{message}"):
        lower_text(_text_with({"conv1": schedule}))


def test_grouped_convolution_with_a_packed_layout_is_refused():
    b = NetworkBuilder("net", (1, 16, 8, 8))
    module = b.finish(b.conv2d(b.input, 16, 3, padding=1, groups=2, name="grouped"))
    conv = next(op for op in module.walk() if isinstance(op, Conv2dOp))
    conv.properties["schedule"] = ConvSchedule(layout=ActivationLayouts("NCHW", "NCHW8c")).to_attr()
    with pytest.raises(TconvError, match="packed layouts are honoured for ungrouped and depthwise convolutions only"):
        lower_kernels(module)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ('{layout = {input = "NCHW8c", output = "NCHW4c"}}', "reads and writes channel blocks of one size"),
        ('{tile = {g = [4]}, layout = {input = "NCHW8c", output = "NCHW8c"}}', "a depthwise vector of 8 channels"),
    ],
)
def test_depthwise_layouts_it_cannot_honour_are_located(layout, message):
    b = NetworkBuilder("net", (1, 16, 8, 8))
    module = b.finish(b.conv2d(b.input, 16, 3, padding=1, groups=16, name="dw"))
    text = module_text(module).replace("groups 16 :", f"groups 16 schedule {layout} :")
    with pytest.raises(TconvError, match=rf"net.mlir:\d+:\d+: error: tvm backend: .*{message}"):
        lower_text(text)


def test_llvm_backend_refuses_packed_layouts():
    from tconv.lowering.llvm.build import lower_program

    module = parse_module(module_text(apply(odd_network(), "tconv-pack")), "net.mlir")
    with pytest.raises(TconvError, match=r"net.mlir:\d+:\d+: error: the llvm backend does not honour packed layouts yet"):
        lower_program(module)


# Tuning after packing -------------------------------------------------------------


def test_tuned_schedules_keep_the_layout_where_they_can(tmp_path):
    from tconv.search.tuning import Knobs, TuningDatabase, apply_tuning, target_key, workload_of

    module = apply(odd_network(), "tconv-pack")
    convs = {op.weight.owner.param_name.removesuffix(".weight"): op for op in module.walk() if isinstance(op, Conv2dOp)}
    database = TuningDatabase(tmp_path / "db.jsonl")
    # conv2 and conv3 (one workload, 24 -> 24): a channel block of 8 keeps
    # NCHW8c; conv5's tuned block of 4 cannot write it, so conv5 keeps its schedule.
    database.add(workload_of(convs["conv2"]), target_key(2), Knobs(channels=8, columns=4), 1e-3)
    database.add(workload_of(convs["conv5"]), target_key(2), Knobs(channels=4, columns=4), 1e-3)
    before = convs["conv5"].schedule
    assert apply_tuning(module, database, 2) == 2
    conv2 = parse_schedule(convs["conv2"].schedule)
    assert conv2.factor("oc") == 8 and conv2.layouts == ActivationLayouts("NCHW8c", "NCHW8c")
    assert convs["conv5"].schedule == before
    check_against_reference(module)
