"""`tconv compile`'s choice of activation layouts (`compile.plan_layouts`,
`--layout auto|nchw`): which convolutions it packs, which it leaves NCHW
for their algorithm, what it leaves alone, and that the artifact computes
what the reference executor does."""

import numpy as np
import pytest
from support import assert_usage_error, relative_error, tconv, trained_like_params

from tconv.cli.files import write_network
from tconv.compile import LayoutPlan, compile_network, keeps_own_layouts, plan_layouts, schedule_network
from tconv.errors import TconvError
from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import Conv2dOp
from tconv.ir.schedule import WINOGRAD, ConvSchedule, conv_layouts, parse_schedule
from tconv.kernels.algorithm import conv_shape, default_algorithm
from tconv.kernels.target import VectorUnit
from tconv.runtime.driver import Runtime
from tconv.semantics.reference import run

AVX512 = VectorUnit(16, 32)
AVX2 = VectorUnit(8, 16)


def mobile_and_dense():
    """A stem, an inverted residual (1×1 expansion, depthwise, 1×1
    projection with its residual), then a dense 3×3 layer that runs as
    Winograd by default, and pooling."""
    b = NetworkBuilder("mixed", (1, 3, 32, 32))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 32, 3, padding=1, name="stem"), name="stem_bn"))
    y = b.relu6(b.batch_norm(b.conv2d(x, 64, 1, name="expand"), name="expand_bn"))
    y = b.relu6(b.batch_norm(b.conv2d(y, 64, 3, padding=1, groups=64, name="dw"), name="dw_bn"))
    x = b.add(b.batch_norm(b.conv2d(y, 32, 1, name="project"), name="project_bn"), x)
    x = b.relu(b.conv2d(x, 64, 3, padding=1, name="dense3x3"))
    return b.finish(b.flatten(b.global_avg_pool(x)))


def convs(module) -> dict[str, Conv2dOp]:
    return {op.weight.owner.param_name.removesuffix(".weight"): op for op in module.walk() if isinstance(op, Conv2dOp)}


def layouts(module) -> dict[str, tuple[str, str]]:
    return {name: (conv_layouts(op.schedule).input, conv_layouts(op.schedule).output)
            for name, op in convs(module).items()}


@pytest.mark.parametrize(("unit", "block"), [(AVX512, 16), (AVX2, 8)])
def test_direct_and_depthwise_convolutions_are_packed_in_one_vector(unit, block):
    module = mobile_and_dense()
    assert default_algorithm(conv_shape(convs(module)["dense3x3"]), unit) == WINOGRAD
    assert plan_layouts(module, unit) == LayoutPlan(packed=3)
    packed = f"NCHW{block}c"
    assert layouts(module) == {
        # Its result is also the residual of project's kernel, which writes NCHW for the Winograd layer.
        "stem": ("NCHW", "NCHW"),
        "expand": ("NCHW", packed),
        "dw": (packed, packed),
        "project": (packed, "NCHW"),  # the Winograd layer reads NCHW
        "dense3x3": ("NCHW", "NCHW"),
    }
    # The Winograd layer keeps its algorithm, written down so that packing leaves it alone.
    assert parse_schedule(convs(module)["dense3x3"].schedule) == ConvSchedule(algorithm=WINOGRAD)


def test_networks_with_layouts_or_quantised_ops_keep_their_own():
    from xdsl.passes import PassPipeline

    from tconv.ir.loader import make_context, module_text
    from tconv.passes.registry import PASSES

    module = mobile_and_dense()
    assert not keeps_own_layouts(module)
    PassPipeline.parse_spec(dict(PASSES), "tconv-pack{block=4}").apply(make_context(), module)
    text = module_text(module)
    assert keeps_own_layouts(module) and schedule_network(module, None) == (0, None)
    assert module_text(module) == text

    quantised = mobile_and_dense()
    params = trained_like_params(quantised)
    examples = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    from tconv.passes.quant.quantize import QuantizePass

    QuantizePass().quantize(quantised, params, examples)
    text = module_text(quantised)
    assert keeps_own_layouts(quantised) and schedule_network(quantised, None) == (0, None)
    assert module_text(quantised) == text


def test_nothing_to_pack_leaves_every_activation_nchw():
    b = NetworkBuilder("odd", (1, 3, 9, 9))
    module = b.finish(b.conv2d(b.input, 5, 3, padding=1, name="conv"))  # 5 channels: no block divides them
    assert plan_layouts(module, AVX512) == LayoutPlan()
    assert layouts(module) == {"conv": ("NCHW", "NCHW")}


@pytest.mark.parametrize("layout", ["auto", "nchw"])
def test_the_compiled_network_computes_what_the_reference_does(tmp_path, layout):
    module = mobile_and_dense()
    params = trained_like_params(module)
    compiled = compile_network(module, params, tmp_path / "net", layout=layout)
    assert compiled.layouts == (LayoutPlan(packed=3) if layout == "auto" else None)
    assert layouts(module)["dw"] == ("NCHW", "NCHW")  # the caller's module is left as it was
    image = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with Runtime(tmp_path / "net", threads=2) as runtime:
        (actual,) = runtime.run(image)
    (expected,) = run(module, params, image)
    assert relative_error(actual, expected) < 1e-5


def test_an_unknown_layout_is_refused():
    with pytest.raises(TconvError, match="unknown layout 'nhwc' .*auto, nchw"):
        compile_network(mobile_and_dense(), {}, "unused", layout="nhwc")


def test_tconv_compile_says_how_many_convolutions_it_packed(tmp_path, capsys):
    module = mobile_and_dense()
    write_network(tmp_path / "net.mlir", module, trained_like_params(module))
    status, out, err = tconv(capsys, "compile", tmp_path / "net.mlir", "--no-tuning", "-o", tmp_path / "auto")
    assert status == 0, err
    assert "3 convolution(s) read or write activations in channel blocks" in err
    status, out, err = tconv(capsys, "compile", tmp_path / "net.mlir", "--no-tuning", "--layout", "nchw",
                             "-o", tmp_path / "nchw")
    assert status == 0 and "channel blocks" not in err
    assert_usage_error(tconv(capsys, "compile", tmp_path / "net.mlir", "--layout", "nhwc", "-o", tmp_path / "x"),
                       "--layout")


def test_tconv_compile_says_when_tuned_knobs_are_for_nchw_only(tmp_path, capsys):
    from tconv.search.tuning import Knobs, TuningDatabase, default_threads, target_key, workload_of

    module = mobile_and_dense()
    write_network(tmp_path / "net.mlir", module, trained_like_params(module))
    database = TuningDatabase(tmp_path / "db.jsonl")
    knobs = Knobs(channels=16, columns=8)
    database.add(workload_of(convs(module)["project"]), target_key(default_threads()), knobs, 1e-3)
    status, out, err = tconv(capsys, "compile", tmp_path / "net.mlir", "--tuning", tmp_path / "db.jsonl",
                             "-o", tmp_path / "art")
    assert status == 0, err
    assert "1 convolution(s) have tuned knobs for NCHW kernels only" in err and "3 convolution(s) read or write" in err
    assert "applied tuned" not in err
    status, out, err = tconv(capsys, "compile", tmp_path / "net.mlir", "--tuning", tmp_path / "db.jsonl",
                             "--layout", "nchw", "-o", tmp_path / "nchw")
    assert status == 0 and "applied tuned schedules to 1 convolution(s)" in err and "NCHW kernels only" not in err


def test_convolutions_with_loop_knobs_stay_nchw():
    """Tuned knobs were measured on NCHW kernels: such a convolution, and
    so its neighbours' tensors, stay NCHW; the others are still packed."""
    module = mobile_and_dense()
    convs(module)["project"].properties["schedule"] = ConvSchedule(tiles={"oc": (16,), "ow": (8,)}).to_attr()
    assert plan_layouts(module, AVX512) == LayoutPlan(packed=2, kept_tuned=1)
    found = layouts(module)
    assert found["project"] == ("NCHW", "NCHW")
    assert found["expand"] == ("NCHW", "NCHW16c") and found["dw"] == ("NCHW16c", "NCHW")


def test_convolutions_tuned_in_blocks_are_packed_with_their_knobs(tmp_path):
    """With `--layout auto` the database's knobs are those measured in
    channel blocks (`tconv tune --layout auto`'s target): a convolution
    whose fastest are for blocks is packed with them (also in place of its
    default Winograd), one whose fastest is Winograd runs it in NCHW, one
    with knobs for NCHW only runs its defaults in blocks (and is counted);
    the network computes what the reference executor does. `--layout nchw`
    applies the NCHW knobs."""
    from tconv.search.tuning import (
        WINOGRAD_KNOBS,
        TuningDatabase,
        cpu_unit,
        default_threads,
        direct,
        target_key,
        workload_of,
    )

    lanes = cpu_unit().lanes
    module = mobile_and_dense()
    named = convs(module)
    database = TuningDatabase(tmp_path / "db.jsonl")
    nchw, blocks = target_key(default_threads()), target_key(default_threads(), lanes)
    database.add(workload_of(named["expand"]), blocks, direct(2 * lanes, 4, layout=lanes), 1e-4)
    database.add(workload_of(named["project"]), nchw, direct(lanes, 8), 1e-4)
    dense = workload_of(named["dense3x3"])
    database.add(dense, blocks, direct(2 * lanes, 4, layout=lanes), 1e-4)
    database.add(dense, blocks, WINOGRAD_KNOBS, 2e-4)
    params = trained_like_params(module)
    compiled = compile_network(module, params, tmp_path / "net", database=database)
    assert compiled.tuned == 2 and compiled.layouts == LayoutPlan(packed=5, nchw_tuned=1)

    scheduled = module.clone()
    assert schedule_network(scheduled, database) == (2, LayoutPlan(packed=5, nchw_tuned=1))
    packed = f"NCHW{lanes}c"
    # Untuned, dense3x3 ran Winograd in NCHW, and so stem and project wrote NCHW for it.
    assert layouts(scheduled) == {
        "stem": ("NCHW", packed),
        "expand": (packed, packed),
        "dw": (packed, packed),
        "project": (packed, packed),  # its defaults in blocks
        "dense3x3": (packed, "NCHW"),  # the pooling reads NCHW
    }
    found = {name: parse_schedule(op.schedule) for name, op in convs(scheduled).items() if op.schedule is not None}
    assert (found["expand"].factor("oc"), found["expand"].factor("ow")) == (2 * lanes, 4)
    assert found["project"].factor("oc") is None
    assert found["dense3x3"].algorithm is None and found["dense3x3"].factor("oc") == 2 * lanes  # not Winograd
    winograd = module.clone()
    database.add(dense, blocks, WINOGRAD_KNOBS, 0.5e-4)
    schedule_network(winograd, database)
    assert parse_schedule(convs(winograd)["dense3x3"].schedule) == ConvSchedule(algorithm=WINOGRAD)

    image = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with Runtime(tmp_path / "net", threads=2) as runtime:
        (actual,) = runtime.run(image)
    (expected,) = run(module, params, image)
    assert relative_error(actual, expected) < 1e-5

    nchw_module = module.clone()
    assert schedule_network(nchw_module, database, layout="nchw") == (1, None)
    assert [name for name, op in convs(nchw_module).items() if op.schedule is not None] == ["project"]
