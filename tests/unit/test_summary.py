"""The summary analysis, on small networks whose counts are worked out by hand."""

from tconv.frontends import zoo
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import parse_module
from tconv.ir.params import parameter_count
from tconv.ir.syntax import int_attr
from tconv.passes.analyses.summary import FLOPS_CONVENTION, format_summary, summarize


def mixed_network():
    """Every counting rule once, at batch 2."""
    b = NetworkBuilder("mixed", (2, 8, 10, 10))
    # 12x2x3x3 weight + 12 bias; output 2x12x5x5 = 600 elements.
    c1 = b.conv2d(b.input, 12, 3, stride=2, padding=1, groups=4, bias=True, name="block.c1")
    x = b.relu(b.batch_norm(c1, name="block.bn"))
    x = b.add(x, c1)
    x = b.avg_pool2d(x, 3, stride=1, padding=1)  # 2x12x5x5, 9 taps each
    x = b.max_pool2d(x, 2)  # 2x12x2x2 = 96 elements, 4 taps each
    x = b.relu(x)
    x = b.flatten(b.global_avg_pool(x))  # 2x12x1x1, 4 taps each
    return b.finish(b.dense(x, 5, name="fc"))


def test_rows_of_a_mixed_network():
    summary = summarize(mixed_network())
    rows = [(l.name, l.kind, l.output_shape, l.parameters, l.macs, l.flops, l.activation_bytes) for l in summary.layers]
    assert rows == [
        # MACs = N·O·P·Q·(C/G)·KH·KW = 2·12·5·5·2·3·3; FLOPs = 2·MACs + 600 bias adds.
        ("block.c1", "conv2d", (2, 12, 5, 5), 12 * 2 * 9 + 12, 10_800, 22_200, 2_400),
        ("block.bn", "batch_norm", (2, 12, 5, 5), 24, 0, 1_200, 2_400),
        ("relu_0", "relu", (2, 12, 5, 5), 0, 0, 600, 2_400),
        ("add_0", "add", (2, 12, 5, 5), 0, 0, 600, 2_400),
        ("avg_pool2d_0", "avg_pool2d", (2, 12, 5, 5), 0, 0, 5_400, 2_400),
        ("max_pool2d_0", "max_pool2d", (2, 12, 2, 2), 0, 0, 384, 384),
        ("relu_1", "relu", (2, 12, 2, 2), 0, 0, 96, 384),
        ("global_avg_pool_0", "global_avg_pool", (2, 12, 1, 1), 0, 0, 96, 96),
        ("flatten_0", "flatten", (2, 12), 0, 0, 0, 96),
        # MACs = N·M·K = 2·5·12; FLOPs = 2·MACs + 10 bias adds.
        ("fc", "dense", (2, 5), 5 * 12 + 5, 120, 250, 40),
    ]


def test_totals_of_a_mixed_network():
    module = mixed_network()
    summary = summarize(module)
    assert summary.name == "mixed"
    assert summary.input_shapes == ((2, 8, 10, 10),)
    assert summary.parameters == 228 + 24 + 65 == parameter_count(module)
    assert summary.statistics == 24
    assert summary.macs == 10_920
    assert summary.flops == 30_826
    assert summary.activation_bytes == 13_000
    assert summary.largest_activation is summary.layers[0]


def test_convolution_without_bias_and_dense_without_bias():
    b = NetworkBuilder("plain", (1, 3, 4, 4))
    x = b.conv2d(b.input, 4, 1, name="pointwise")
    module = b.finish(b.dense(b.flatten(x), 7, bias=False, name="head"))
    conv, _, dense = summarize(module).layers
    assert (conv.parameters, conv.macs, conv.flops) == (12, 1 * 4 * 4 * 4 * 3, 2 * 192)
    assert (dense.parameters, dense.macs, dense.flops) == (7 * 64, 7 * 64, 2 * 7 * 64)


def test_a_shared_parameter_counts_once():
    module = parse_module(
        """
        func.func @shared(%x: tensor<1x4x6x6xf32>) -> tensor<1x4x6x6xf32> {
          %w = tconv.param "shared.weight" init kaiming_normal : tensor<4x4x1x1xf32>
          %a = tconv.conv2d %x, %w strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1
                 : (tensor<1x4x6x6xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x6x6xf32>
          %b = tconv.conv2d %a, %w strides [1, 1] padding [0, 0, 0, 0] dilations [1, 1] groups 1
                 : (tensor<1x4x6x6xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x6x6xf32>
          func.return %b : tensor<1x4x6x6xf32>
        }
        """
    )
    first, second = summarize(module).layers
    assert (first.name, second.name) == ("shared", "shared")
    assert (first.parameters, second.parameters) == (16, 0)
    assert summarize(module).parameters == parameter_count(module) == 16


def test_zoo_network_total_matches_parameter_count():
    module = zoo.build("resnet18", "cifar10")
    summary = summarize(module)
    assert summary.parameters == parameter_count(module) == 11_173_962
    # ResNet-18 on 32x32 inputs: the well-known 0.56 GMAC.
    assert round(summary.macs / 1e9, 2) == 0.56


def test_format_summary_is_an_aligned_table_with_totals():
    text = format_summary(summarize(mixed_network()))
    lines = text.splitlines()
    assert lines[0] == "network mixed: input 2x8x10x10 f32, 10 layers"
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    assert len(rules) == 2
    table = lines[rules[0] - 1 : rules[1] + 2]  # header, rule, rows, rule, total
    assert len({len(line) for line in table}) == 1, "right-aligned columns end together"
    assert table[0].split() == ["layer", "op", "output", "params", "MACs", "FLOPs", "act.", "bytes"]
    assert lines[rules[0] + 1].split() == ["block.c1", "conv2d", "2x12x5x5", "228", "10,800", "22,200", "2,400"]
    assert lines[rules[1] + 1].split() == ["total", "317", "10,920", "30,826", "13,000"]
    assert "317 learnable" in text and "24 batch-norm statistics" in text
    assert "0.000 GMAC" in text and "0.000 GFLOP" in text
    assert "largest 0.00 MB (block.c1, 2x12x5x5)" in text
    assert "batch 2" in text
    assert FLOPS_CONVENTION in " ".join(text.split())


def test_a_weight_read_through_quantize_is_stored_as_one_byte_per_entry():
    b = NetworkBuilder("q", (1, 3, 4, 4))
    x = b.conv2d(b.input, 4, 3, padding=0, bias=True, weight_scales=[0.1] * 4, name="c")
    module = b.finish(b.dense(b.flatten(x), 7, name="head"))
    summary = summarize(module)
    # int8 conv weight 4x3x3x3; f32 conv bias 4, dense weight 7x16 and bias 7.
    assert summary.parameters == 108 + 4 + 112 + 7
    assert summary.parameter_bytes == 108 + 4 * (4 + 112 + 7)


def test_a_sparse_convolution_stores_its_kept_weights_and_offsets():
    b = NetworkBuilder("s", (1, 8, 4, 4))
    module = b.finish(b.conv2d(b.input, 16, 3, bias=True, name="c"))
    conv = next(op for op in module.walk() if op.name == "tconv.conv2d")
    conv.properties["nonzeros"] = int_attr(7)
    # 16 channels x 7 kept weights x (f32 value + int32 offset), the f32 bias as it is.
    assert summarize(module).parameter_bytes == 16 * 7 * 8 + 16 * 4
    conv.properties["nonzeros"] = int_attr(72)  # dense: the sparse form would be larger
    assert summarize(module).parameter_bytes == (16 * 72 + 16) * 4
