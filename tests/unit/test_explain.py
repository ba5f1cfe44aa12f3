"""The loop view: a convolution's nest, and how rewrites change it."""

from xdsl.passes import PassPipeline

from tconv.cli.main import main
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import make_context, module_text
from tconv.ir.ops import Conv2dOp
from tconv.ir.schedule import ConvSchedule
from tconv.passes.analyses.loops import loop_nest
from tconv.passes.registry import PASSES


def network():
    b = NetworkBuilder("net", (2, 8, 9, 9))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 16, 3, stride=2, padding=2, dilation=2, name="conv1"), name="bn1"))
    return b.finish(b.conv2d(x, 16, 1, name="conv2"))


def convs(module):
    return [op for op in module.walk() if isinstance(op, Conv2dOp)]


def loops_of(nest: str) -> dict[str, int]:
    """Loop name → extent, from the `for` lines of a nest."""
    found = {}
    for line in nest.splitlines():
        words = line.split()
        if words and words[0] == "for":
            found[words[1]] = int(words[3].removeprefix("range(").removesuffix("):"))
    return found


def test_the_nest_of_a_strided_dilated_conv():
    nest = loop_nest(convs(network())[0])
    assert loops_of(nest) == dict(n=2, g=1, oc=16, oh=5, ow=5, ic=8, kh=3, kw=3)
    assert nest.splitlines()[-1].strip() == (
        "y[n, oc, oh, ow] += x[n, ic, 2·oh + 2·kh − 2, 2·ow + 2·kw − 2] · w[oc, ic, kh, kw]"
    )


def test_grouping_restricts_the_input_channel_loop_and_bottlenecking_shrinks_the_output_one():
    module = network()
    PassPipeline.parse_spec(PASSES, 'tconv-group{groups=4 layers="conv1"}').apply(make_context(), module)
    grouped = loop_nest(convs(module)[0])
    assert loops_of(grouped) == dict(n=2, g=4, oc=4, oh=5, ow=5, ic=2, kh=3, kw=3)
    assert "x[n, 2·g + ic," in grouped and "w[4·g + oc, ic, kh, kw]" in grouped
    module = network()
    PassPipeline.parse_spec(PASSES, 'tconv-bottleneck{factor=4 layers="conv1"}').apply(make_context(), module)
    assert loops_of(loop_nest(convs(module)[0]))["oc"] == 4
    assert loops_of(loop_nest(convs(module)[1]))["ic"] == 4  # the consumer follows


def test_a_schedule_shows_as_tiled_annotated_loops():
    conv = convs(network())[1]
    conv.properties["schedule"] = ConvSchedule(
        {"oc": (8,), "ow": (2,)}, ("n", "g", "oc.0", "oh", "ow.0", "ic", "kh", "kw", "ow.1", "oc.1"),
        "oc.1", frozenset({"ow.1"}), ("n", "g"),
    ).to_attr()
    nest = loop_nest(conv)
    assert loops_of(nest) == {"n": 2, "g": 1, "oc.0": 2, "oh": 5, "ow.0": 3, "ic": 16, "kh": 1, "kw": 1,
                              "ow.1": 2, "oc.1": 8}
    lines = nest.splitlines()
    assert lines[0].endswith("# parallel") and lines[8].endswith("# unrolled") and lines[9].endswith("# vectorized")
    assert "y[n, (8·oc.0 + oc.1), oh, (2·ow.0 + ow.1)]" in lines[-1]


def test_tconv_explain(tmp_path, capsys):
    path = tmp_path / "net.mlir"
    path.write_text(module_text(network()))
    assert main(["explain", str(path), "--layers", "conv2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# conv2: x 2x16x5x5, w 16x16x1x1 -> y 2x16x5x5\nfor n in range(2):")
    assert main(["explain", str(path), "--layers", "conv9"]) == 1
    assert "unknown layer 'conv9'" in capsys.readouterr().err
