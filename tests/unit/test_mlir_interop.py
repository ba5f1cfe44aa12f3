"""MLIR interop without running networks: the forms' helpers, one located
error per kind of MLIR the importer refuses, and `tconv export-mlir` /
`tconv import-mlir` (their files, status 1 and no output for bad input)."""

import re
from pathlib import Path

import numpy as np
import pytest
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, StringAttr
from xdsl.ir.affine import AffineExpr, AffineMap

from tconv.cli.files import write_network
from tconv.frontends.mlir import LinalgImportError, from_linalg, linalg_text, parse_linalg, to_linalg
from tconv.frontends.mlir.exporter import EXPORTERS
from tconv.frontends.mlir.forms import linear_form
from tconv.frontends.mlir.importer import shortest_f32
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError, load_module, module_text
from tconv.ir.ops import TCONV_OPS, Conv2dOp, ParamOp
from tconv.ir.params import init_params, load_store, save_store, store_path_for


from support import assert_user_error, tconv
def test_every_tconv_op_has_an_upstream_form():
    assert set(EXPORTERS) == set(TCONV_OPS) - {ParamOp}


def test_linear_form_reads_any_spelling_of_an_affine_map():
    d = [AffineExpr.dimension(i) for i in range(6)]
    map = AffineMap(6, 0, (d[0], d[1], d[4] + d[2] * 2, d[3] * 3 + d[5] * 1))
    assert linear_form(map) == (
        ((1, 0, 0, 0, 0, 0), 0),
        ((0, 1, 0, 0, 0, 0), 0),
        ((0, 0, 2, 0, 1, 0), 0),
        ((0, 0, 0, 3, 0, 1), 0),
    )
    assert linear_form(AffineMap(2, 0, (d[0], AffineExpr.constant(0)))) == (((1, 0), 0), ((0, 0), 0))


@pytest.mark.parametrize(
    "non_linear",
    [lambda d: d // 2, lambda d: d % 3, lambda d: d.ceil_div(2)],
    ids=["floordiv", "mod", "ceildiv"],
)
def test_linear_form_refuses_non_linear_maps(non_linear):
    assert linear_form(AffineMap(1, 0, (non_linear(AffineExpr.dimension(0)),))) is None


def test_epsilon_reads_back_from_f32_as_written():
    assert shortest_f32(float(np.float32(1e-5))) == 1e-5
    assert shortest_f32(float(np.float32(1e-3))) == 1e-3


# Located errors of the importer ----------------------------------------------

X = "tensor<1x4x6x6xf32>"


def function(body: str, args: str = f"%x: {X}", result: str = X) -> str:
    return f"func.func @net({args}) -> {result} {{\n{body}\n}}\n"


ZERO = "  %zero = arith.constant 0.000000e+00 : f32\n"
CONV_ARGS = f"%x: {X}, %w: tensor<4x4x3x3xf32> {{tconv.param = \"w\"}}"


def conv(init: str, input: str = "%x", input_type: str = X) -> str:
    return (
        f"  %c = linalg.conv_2d_nchw_fchw ins({input}, %w : {input_type}, tensor<4x4x3x3xf32>) "
        f"outs({init} : tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>\n"
        "  func.return %c : tensor<1x4x4x4xf32>"
    )


def filled(name: str, value: str, shape: str) -> str:
    return (
        f"  %{name}_empty = tensor.empty() : {shape}\n"
        f"  %{name} = linalg.fill ins({value} : f32) outs(%{name}_empty : {shape}) -> {shape}\n"
    )


def padded(value: str, low: str = "[0, 0, 1, 1]", high: str = "[0, 0, 1, 1]", result: str = "tensor<1x4x8x8xf32>") -> str:
    return (
        f"  %p = tensor.pad %x low{low} high{high} {{\n"
        "  ^bb0(%i: index, %j: index, %k: index, %l: index):\n"
        f"    tensor.yield {value} : f32\n"
        f"  }} : {X} to {result}\n"
    )


def window_sum(input: str = "%x", input_type: str = X) -> str:
    return (
        "  %win = tensor.empty() : tensor<3x3xf32>\n"
        + filled("acc", "%zero", "tensor<1x4x4x4xf32>")
        + "  %s = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2 + d4, d3 + d5)>, "
        "affine_map<(d0, d1, d2, d3, d4, d5) -> (d4, d5)>, affine_map<(d0, d1, d2, d3, d4, d5) -> (d0, d1, d2, d3)>], "
        'iterator_types = ["parallel", "parallel", "parallel", "parallel", "reduction", "reduction"]} '
        f"ins({input}, %win : {input_type}, tensor<3x3xf32>) outs(%acc : tensor<1x4x4x4xf32>) {{\n"
        "  ^bb0(%in: f32, %w: f32, %out: f32):\n"
        "    %t = arith.addf %in, %out : f32\n"
        "    linalg.yield %t : f32\n"
        "  } -> tensor<1x4x4x4xf32>\n"
    )


def divided(sums: str, divisor: str, shape: str, divisor_shape: str) -> str:
    return (
        f"  %d = arith.constant {divisor} : {divisor_shape}\n"
        f"  %de = tensor.empty() : {shape}\n"
        "  %q = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, "
        "affine_map<(d0, d1, d2, d3) -> (d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], "
        'iterator_types = ["parallel", "parallel", "parallel", "parallel"]} '
        f"ins({sums}, %d : {shape}, {divisor_shape}) outs(%de : {shape}) {{\n"
        "  ^bb0(%a: f32, %b: f32, %o: f32):\n"
        "    %r = arith.divf %a, %b : f32\n"
        "    linalg.yield %r : f32\n"
        f"  }} -> {shape}\n"
        f"  func.return %q : {shape}"
    )


ERROR_CASES = {
    "conv-accumulator": (
        function(ZERO + filled("ones", "%one", "tensor<1x4x4x4xf32>").replace(
            "  %ones_empty", "  %one = arith.constant 1.0 : f32\n  %ones_empty") + conv("%ones"),
            CONV_ARGS, "tensor<1x4x4x4xf32>"),
        "linalg.conv_2d_nchw_fchw: the accumulator must be zeros or a bias broadcast along dimensions [0, 2, 3], found a constant-filled tensor",
    ),
    "conv-padding-value": (
        function(ZERO + "  %one = arith.constant 1.0 : f32\n" + padded("%one") + filled("acc", "%zero", "tensor<1x4x6x6xf32>")
                 + conv("%acc", "%p", "tensor<1x4x8x8xf32>").replace("4x4xf32", "6x6xf32"),
                 CONV_ARGS, "tensor<1x4x6x6xf32>"),
        "linalg.conv_2d_nchw_fchw: the input must be padded with zeros, got 1.0",
    ),
    "conv-result-shape": (
        function(ZERO + filled("acc", "%zero", "tensor<1x4x2x2xf32>")
                 + conv("%acc").replace("4x4xf32", "2x2xf32"), CONV_ARGS, "tensor<1x4x2x2xf32>"),
        "linalg.conv_2d_nchw_fchw: result type has shape 1x4x2x2, but the tconv.conv2d it forms computes 1x4x4x4",
    ),
    "pad-channels": (
        function(ZERO + padded("%zero", "[0, 1, 0, 0]", "[0, 1, 0, 0]", "tensor<1x6x6x6xf32>")
                 + "  func.return %p : tensor<1x6x6x6xf32>", result="tensor<1x6x6x6xf32>"),
        "tensor.pad: tconv pads the height and width of NCHW tensors only, got low [0, 1, 0, 0] high [0, 1, 0, 0]",
    ),
    "padded-result": (
        function(ZERO + padded("%zero") + "  func.return %p : tensor<1x4x8x8xf32>", result="tensor<1x4x8x8xf32>"),
        "func.return: result 0 must be a tensor of the network, found a padded tensor",
    ),
    "avg-pool-divisor": (
        function(ZERO + window_sum() + divided("%s", "dense<5.0>", "tensor<1x4x4x4xf32>", "tensor<4x4xf32>"),
                 result="tensor<1x4x4x4xf32>"),
        "linalg.generic: the divisor of an average pool must be the window size everywhere",
    ),
    "undivided-window-sum": (
        function(ZERO + window_sum() + "  func.return %s : tensor<1x4x4x4xf32>", result="tensor<1x4x4x4xf32>"),
        "func.return: result 0 must be a tensor of the network, found window sums",
    ),
    "matmul-weight": (
        function(ZERO + filled("acc", "%zero", "tensor<1x3xf32>")
                 + "  %y = linalg.matmul ins(%x, %w : tensor<1x8xf32>, tensor<8x3xf32>) outs(%acc : tensor<1x3xf32>) -> tensor<1x3xf32>\n"
                 "  func.return %y : tensor<1x3xf32>",
                 '%x: tensor<1x8xf32>, %w: tensor<8x3xf32> {tconv.param = "w"}', "tensor<1x3xf32>"),
        "linalg.matmul: the right-hand side must be a linalg.transpose [1, 0] of an MxK weight",
    ),
    "max-pool-start": (
        function(ZERO + "  %win = tensor.empty() : tensor<2x2xf32>\n" + filled("acc", "%zero", "tensor<1x4x3x3xf32>")
                 + f"  %y = linalg.pooling_nchw_max {{strides = dense<2> : tensor<2xi64>}} ins(%x, %win : {X}, tensor<2x2xf32>) "
                 "outs(%acc : tensor<1x4x3x3xf32>) -> tensor<1x4x3x3xf32>\n  func.return %y : tensor<1x4x3x3xf32>",
                 result="tensor<1x4x3x3xf32>"),
        "linalg.pooling_nchw_max: the output must start as -inf (a linalg.fill)",
    ),
    "grouped-filter": (
        function(ZERO + filled("acc", "%zero", "tensor<1x2x2x4x4xf32>")
                 + f"  %xg = tensor.expand_shape %x [[0], [1, 2], [3], [4]] output_shape [1, 2, 2, 6, 6] : {X} into tensor<1x2x2x6x6xf32>\n"
                 "  %y = linalg.conv_2d_ngchw_gfchw ins(%xg, %w : tensor<1x2x2x6x6xf32>, tensor<2x2x2x3x3xf32>) "
                 "outs(%acc : tensor<1x2x2x4x4xf32>) -> tensor<1x2x2x4x4xf32>\n  func.return %y : tensor<1x2x2x4x4xf32>",
                 f'%x: {X}, %w: tensor<2x2x2x3x3xf32> {{tconv.param = "w"}}', "tensor<1x2x2x4x4xf32>"),
        "linalg.conv_2d_ngchw_gfchw: the filter must be a tensor.expand_shape [[0, 1], [2], [3], [4]] of an OxCxKHxKW weight",
    ),
    "min-without-relu": (
        function("  %six = arith.constant 6.0 : f32\n" + filled("sixes", "%six", X)
                 + f"  %e = tensor.empty() : {X}\n  %y = linalg.min ins(%x, %sixes : {X}, {X}) outs(%e : {X}) -> {X}\n"
                 f"  func.return %y : {X}"),
        "linalg.min: tconv imports it only as relu6, the min of a relu with a tensor filled with 6",
    ),
    "slice-two-axes": (
        function(f"  %y = tensor.extract_slice %x[0, 0, 1, 1] [1, 4, 4, 4] [1, 1, 1, 1] : {X} to tensor<1x4x4x4xf32>\n"
                 "  func.return %y : tensor<1x4x4x4xf32>", result="tensor<1x4x4x4xf32>"),
        "tensor.extract_slice: tconv imports a slice of one axis (not the batch), every other axis whole; "
        "this one cuts axes [2, 3]",
    ),
    "slice-stride": (
        function(f"  %y = tensor.extract_slice %x[0, 0, 0, 0] [1, 4, 3, 6] [1, 1, 2, 1] : {X} to tensor<1x4x3x6xf32>\n"
                 "  func.return %y : tensor<1x4x3x6xf32>", result="tensor<1x4x3x6xf32>"),
        "tensor.extract_slice: tconv imports unit-stride, rank-preserving slices only",
    ),
    "collapse-shape": (
        function(f"  %y = tensor.collapse_shape %x [[0, 1], [2], [3]] : {X} into tensor<4x6x6xf32>\n"
                 "  func.return %y : tensor<4x6x6xf32>", result="tensor<4x6x6xf32>"),
        "tensor.collapse_shape: tconv imports a flatten [[0], [1, 2, 3]] of an NCHW tensor",
    ),
    "tensor-arithmetic": (
        function(f"  %y = arith.addf %x, %x : {X}\n  func.return %y : {X}"),
        "arith.addf: not an op tconv imports",
    ),
    "integer-constant": (
        function(f"  %n = arith.constant 3 : i32\n  func.return %x : {X}"),
        "arith.constant: tconv imports f32 scalars and f32 tensors, got 3 : i32",
    ),
    "dynamic-shape": (
        function("  func.return %x : tensor<?x4xf32>", "%x: tensor<?x4xf32>", "tensor<?x4xf32>"),
        "func.func: dynamic shapes are not supported, got tensor<?x4xf32>",
    ),
    "f16": (
        function("  func.return %x : tensor<1x4xf16>", "%x: tensor<1x4xf16>", "tensor<1x4xf16>"),
        "func.func: tconv networks compute f32 tensors (i8 where quantized), got tensor<1x4xf16>",
    ),
    "init-not-a-string": (
        function(f"  func.return %x : {X}", f'%x: {X}, %w: tensor<4xf32> {{tconv.param = "w", tconv.init = 1 : i64}}'),
        "argument 1: tconv.init must be a string, got 1 : i64",
    ),
    "unknown-init": (
        function(f"  %y = linalg.add ins(%x, %w : {X}, {X}) outs(%x : {X}) -> {X}\n  func.return %y : {X}",
                 f'%x: {X}, %w: {X} {{tconv.param = "w", tconv.init = "uniform"}}'),
        "param 'w': unknown init 'uniform' (expected one of kaiming_normal, ones, zeros)",
    ),
    "two-functions": (
        function(f"  func.return %x : {X}") + function(f"  func.return %x : {X}").replace("@net", "@other"),
        "expected one func.func with a body, found 2 functions",
    ),
}


@pytest.mark.parametrize("text, message", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_importer_refuses_with_a_located_message(text, message):
    with pytest.raises(TconvError) as failure:
        from_linalg(parse_linalg(text, "case.mlir"))
    assert re.match(r"case\.mlir:\d+:\d+: error: ", str(failure.value)), str(failure.value)
    assert message in str(failure.value)


def test_importer_errors_point_at_the_op():
    text = ERROR_CASES["tensor-arithmetic"][0]
    with pytest.raises(LinalgImportError, match=r"^case\.mlir:2:3: error: arith\.addf"):
        from_linalg(parse_linalg(text, "case.mlir"))


def test_a_bias_added_to_a_convolution_used_twice_is_not_folded_into_it():
    body = (
        ZERO + filled("acc", "%zero", "tensor<1x4x4x4xf32>")
        + f"  %c = linalg.conv_2d_nchw_fchw ins(%x, %w : {X}, tensor<4x4x3x3xf32>) outs(%acc : tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>\n"
        "  %e = tensor.empty() : tensor<1x4x4x4xf32>\n"
        "  %bias = linalg.broadcast ins(%b : tensor<4xf32>) outs(%e : tensor<1x4x4x4xf32>) dimensions = [0, 2, 3]\n"
        "  %y = linalg.add ins(%c, %bias : tensor<1x4x4x4xf32>, tensor<1x4x4x4xf32>) outs(%e : tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>\n"
        "  %z = linalg.add ins(%y, %c : tensor<1x4x4x4xf32>, tensor<1x4x4x4xf32>) outs(%e : tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>\n"
        "  func.return %z : tensor<1x4x4x4xf32>"
    )
    args = CONV_ARGS + ', %b: tensor<4xf32> {tconv.param = "b"}'
    with pytest.raises(LinalgImportError, match="operand 1 must be a tensor of the network, found a broadcast tensor"):
        from_linalg(parse_linalg(function(body, args, "tensor<1x4x4x4xf32>"), "case.mlir"))


# The command line ----------------------------------------------------------------


def small_network():
    b = NetworkBuilder("small", (1, 3, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 8, 3, groups=1, bias=True, name="conv1"), name="bn1"))
    x = b.conv2d(x, 8, 3, groups=8, name="dw")
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 4, name="fc"))


@pytest.fixture
def network(tmp_path: Path) -> Path:
    path = tmp_path / "small.mlir"
    module = small_network()
    write_network(path, module, init_params(module, seed=1))
    return path


def test_export_prints_mlir_that_imports_back(network, capsys, tmp_path):
    status, out, err = tconv(capsys, "export-mlir", network)
    assert status == 0, err
    assert "linalg.conv_2d_nchw_fchw" in out and "linalg.conv_2d_ngchw_gfchw" in out
    exported = tmp_path / "exported.mlir"
    exported.write_text(out)
    status, _, err = tconv(capsys, "import-mlir", exported, "-o", tmp_path / "back.mlir")
    assert status == 0, err
    assert module_text(load_module(tmp_path / "back.mlir")) == module_text(load_module(network))


def test_import_takes_the_values_of_a_store(network, capsys, tmp_path):
    exported = tmp_path / "exported.mlir"
    assert tconv(capsys, "export-mlir", network, "-o", exported)[0] == 0
    status, out, _ = tconv(capsys, "import-mlir", exported, "-o", tmp_path / "back.mlir",
                           "--params", store_path_for(network))
    assert status == 0
    assert f"from {store_path_for(network)}" in out
    original, imported = load_store(store_path_for(network)), load_store(tmp_path / "back.npz")
    assert original.keys() == imported.keys()
    for key, value in original.items():
        np.testing.assert_array_equal(imported[key], value, err_msg=key)


def test_import_initialises_parameters_from_the_seed(network, capsys, tmp_path):
    exported = tmp_path / "exported.mlir"
    tconv(capsys, "export-mlir", network, "-o", exported)
    tconv(capsys, "import-mlir", exported, "-o", tmp_path / "a.mlir", "--seed", "3")
    tconv(capsys, "import-mlir", exported, "-o", tmp_path / "b.mlir", "--seed", "4")
    a, b = load_store(tmp_path / "a.npz"), load_store(tmp_path / "b.npz")
    expected = init_params(load_module(tmp_path / "a.mlir"), seed=3)
    for key in expected:
        np.testing.assert_array_equal(a[key], expected[key], err_msg=key)
    assert not np.array_equal(a["conv1.weight"], b["conv1.weight"])


def test_import_with_a_store_that_lacks_a_parameter_writes_nothing(network, capsys, tmp_path):
    exported = tmp_path / "exported.mlir"
    tconv(capsys, "export-mlir", network, "-o", exported)
    partial = tmp_path / "partial.npz"
    store = load_store(store_path_for(network))
    del store["fc.bias"]
    save_store(partial, store)
    result = tconv(capsys, "import-mlir", exported, "-o", tmp_path / "back.mlir", "--params", partial)
    assert_user_error(result, "parameter 'fc.bias' is missing from", "partial.npz")
    assert not (tmp_path / "back.mlir").exists() and not (tmp_path / "back.npz").exists()


def test_import_of_unsupported_mlir_exits_1_and_writes_nothing(capsys, tmp_path):
    source = tmp_path / "bad.mlir"
    source.write_text(ERROR_CASES["conv-accumulator"][0])
    result = tconv(capsys, "import-mlir", source, "-o", tmp_path / "out.mlir")
    assert_user_error(result, f"{source}:", "error: linalg.conv_2d_nchw_fchw: the accumulator")
    assert list(tmp_path.iterdir()) == [source]


def test_import_of_a_missing_file_is_a_user_error(capsys, tmp_path):
    assert_user_error(tconv(capsys, "import-mlir", tmp_path / "none.mlir", "-o", tmp_path / "out.mlir"),
                      "none.mlir: error: cannot read")


def test_import_takes_params_or_seed_not_both(capsys, tmp_path):
    status, _, err = tconv(capsys, "import-mlir", "a.mlir", "-o", tmp_path / "b.mlir", "--params", "s.npz",
                           "--seed", "1")
    assert status == 2
    assert "not allowed with argument" in err


def test_export_refuses_to_overwrite_its_input(network, capsys):
    before = network.read_text()
    assert_user_error(tconv(capsys, "export-mlir", network, "-o", network), "is an input of this command")
    assert network.read_text() == before


def test_export_notes_the_schedules_it_leaves_out(capsys, tmp_path):
    module = small_network()
    conv = next(op for op in module.walk() if isinstance(op, Conv2dOp))
    conv.properties["schedule"] = DictionaryAttr({"unroll": ArrayAttr([StringAttr("kw")])})
    path = tmp_path / "scheduled.mlir"
    write_network(path, module, init_params(module))
    status, out, err = tconv(capsys, "export-mlir", path)
    assert status == 0
    assert "1 convolution schedule(s)" in err
    assert "schedule" not in out


def test_exported_text_names_no_tconv_op(network):
    text = linalg_text(to_linalg(load_module(network)))
    assert "tconv." not in text.replace("tconv.param", "").replace("tconv.init", "")


def test_slices_of_any_axis_round_trip_through_extract_slice():
    """A slice of rows, of columns, of channels (`slice_channels`) and of flat
    features each export as one tensor.extract_slice and import back as they were."""
    b = NetworkBuilder("slices", (1, 4, 6, 6))
    rows = b.slice(b.input, 2, 1, 4)
    columns = b.slice(rows, 3, 2, 3)
    channels = b.slice_channels(columns, 1, 2)
    module = b.finish(b.slice(b.flatten(channels), 1, 5, 7))
    exported = linalg_text(to_linalg(module))
    assert exported.count("tensor.extract_slice") == 4
    assert module_text(from_linalg(parse_linalg(exported))) == module_text(module)
