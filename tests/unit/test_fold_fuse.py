"""tconv-fold-bn and tconv-fuse at the value level: folding computes what the
network computed (reference executor, trained-like parameters), on a zoo
network and on hypothesis-generated convolutions; fusion marks decide the
TVM lowering's kernels without changing a number, and marks that cannot be
honoured are located errors."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import assert_user_error, relative_error, tconv, trained_like_params
from xdsl.passes import PassPipeline
from xdsl.utils.exceptions import PassFailedException

from tconv.cli.files import write_network
from tconv.cli.opt import main as opt_main
from tconv.frontends import zoo
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import load_module, make_context, module_text, parse_module, verify_module
from tconv.ir.ops import BatchNormOp, Conv2dOp, DenseOp, ParamOp
from tconv.ir.params import load_store, store_path_for
from tconv.kernels.folding import fold_batch_norm
from tconv.kernels.fusion import FUSION_MARK, FusionError, FusionRules, fused_groups, kernel_groups
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.registry import PASSES
from tconv.semantics.reference import run, single_function


def apply(module, spec: str, store: ParamStore | None = None) -> ParamStore:
    store = store if store is not None else ParamStore()
    with using_store(store):
        PassPipeline.parse_spec(PASSES, spec).apply(make_context(), module)
    verify_module(module)
    return store


def image(module, seed: int = 1) -> np.ndarray:
    shape = single_function(module).function_type.inputs.data[0].get_shape()
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def ops_of(module, kind) -> list:
    return [op for op in module.walk() if isinstance(op, kind)]


def residual_block(batch: int = 1):
    """conv → bn → relu, then conv → bn → add (the relu) → relu, a pool and a
    classifier: every fusion the lowering knows, on tiny shapes."""
    b = NetworkBuilder("block", (batch, 4, 6, 6))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 8, 3, name="conv1"), name="bn1"))
    y = b.batch_norm(b.conv2d(x, 8, 3, name="conv2"), name="bn2")
    x = b.relu(b.add(y, x))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 5, name="fc"))


# tconv-fold-bn ------------------------------------------------------------------


def test_folding_resnet18_keeps_its_outputs():
    module = zoo.build("resnet18", "cifar10")
    params = trained_like_params(module)
    x = image(module)
    (expected,) = run(module, params, x)
    batch_norms, convs = len(ops_of(module, BatchNormOp)), len(ops_of(module, Conv2dOp))
    store = apply(module, "tconv-fold-bn", ParamStore(dict(params)))
    assert batch_norms == convs and not ops_of(module, BatchNormOp)
    assert all(conv.bias is not None for conv in ops_of(module, Conv2dOp))
    names = {op.param_name for op in ops_of(module, ParamOp)}
    assert "layer1.0.conv1_bn.weight" in names and not any("bn1" in name for name in names)
    (actual,) = run(module, store.values_for(module), x)
    assert relative_error(actual, expected) < 1e-5


@settings(max_examples=25, deadline=None)
@given(
    groups=st.sampled_from([1, 2, 3]),
    in_per_group=st.integers(1, 3),
    out_per_group=st.integers(1, 3),
    kernel=st.sampled_from([1, 2, 3]),
    stride=st.sampled_from([1, 2]),
    bias=st.booleans(),
    epsilon=st.sampled_from([1e-5, 1e-3]),
    size=st.integers(4, 7),
)
def test_folding_random_convolutions_is_exact(groups, in_per_group, out_per_group, kernel, stride, bias, epsilon, size):
    """Grouped, depthwise (one channel per group), strided, with and without bias."""
    b = NetworkBuilder("conv_bn", (2, groups * in_per_group, size, size + 1))
    y = b.conv2d(b.input, groups * out_per_group, kernel, stride=stride, groups=groups, bias=bias, name="conv")
    module = b.finish(b.relu(b.batch_norm(y, name="bn", epsilon=epsilon)))
    params = trained_like_params(module, seed=groups + kernel)
    x = image(module, seed=size)
    (expected,) = run(module, params, x)
    store = apply(module, "tconv-fold-bn", ParamStore(dict(params)))
    (conv,) = ops_of(module, Conv2dOp)
    assert not ops_of(module, BatchNormOp) and conv.groups.value.data == groups
    assert conv.bias is not None and conv.bias.owner.param_name == "conv_bn.bias"
    (actual,) = run(module, store.values_for(module), x)
    assert relative_error(actual, expected) < 1e-5


def test_folding_a_dense_layer_writes_the_folded_parameters():
    b = NetworkBuilder("head", (3, 6))
    module = b.finish(b.batch_norm(b.dense(b.input, 4, bias=False, name="fc"), name="bn"))
    params = trained_like_params(module)
    x = image(module)
    (expected,) = run(module, params, x)
    store = apply(module, 'tconv-fold-bn{layers="fc"}', ParamStore(dict(params)))
    (dense,) = ops_of(module, DenseOp)
    assert [op.param_name for op in ops_of(module, ParamOp)] == ["fc_bn.weight", "fc_bn.bias"]
    weight, bias = fold_batch_norm(
        params["fc.weight"], None, params["bn.weight"], params["bn.bias"],
        params["bn.running_mean"], params["bn.running_var"], 1e-5,
    )
    np.testing.assert_array_equal(store.arrays["fc_bn.weight"], weight)
    np.testing.assert_array_equal(store.arrays["fc_bn.bias"], bias)
    assert relative_error(run(module, store.values_for(module), x)[0], expected) < 1e-5


def shared_and_unanchored():
    """bn_shared normalises a conv whose result is also added; bn_sum
    normalises an add; bn_ok can fold."""
    b = NetworkBuilder("odd", (1, 4, 5, 5))
    shared = b.conv2d(b.input, 4, 3, name="shared")
    x = b.add(b.batch_norm(shared, name="bn_shared"), shared)
    x = b.batch_norm(x, name="bn_sum")
    return b.finish(b.batch_norm(b.conv2d(x, 4, 1, name="ok"), name="bn_ok"))


def test_batch_norms_that_cannot_fold_stay_with_a_remark(capsys):
    module = shared_and_unanchored()
    params = trained_like_params(module)
    x = image(module)
    (expected,) = run(module, params, x)
    store = apply(module, "tconv-fold-bn", ParamStore(dict(params)))
    assert [batch_norm.scale.owner.param_name for batch_norm in ops_of(module, BatchNormOp)] == [
        "bn_shared.weight", "bn_sum.weight",
    ]
    err = capsys.readouterr().err
    assert "remark: tconv-fold-bn: left bn_shared alone: shared's result has other users" in err
    assert "remark: tconv-fold-bn: left bn_sum alone: its input is not a convolution or dense layer" in err
    assert relative_error(run(module, store.values_for(module), x)[0], expected) < 1e-5


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ("ok,shared", "cannot fold bn_shared into shared: shared's result has other users"),
        ("ok,fc", "unknown layer 'fc'"),
        ("nothing*", "no convolution or dense layer matches layers='nothing*'"),
    ],
)
def test_explicit_layers_that_cannot_fold_are_refused(layers, message):
    module = shared_and_unanchored()
    before = module_text(module)
    with pytest.raises(PassFailedException, match=re.escape(message)):
        apply(module, f'tconv-fold-bn{{layers="{layers}"}}')
    assert module_text(module) == before  # not even ok, which could fold, was rewritten


def test_tconv_opt_writes_the_folded_store(tmp_path):
    module = residual_block()
    params = trained_like_params(module)
    source, out = tmp_path / "net.mlir", tmp_path / "out.mlir"
    write_network(source, module, params)
    assert opt_main([str(source), "-p", "tconv-fold-bn", "-o", str(out)]) == 0
    folded = load_module(out)
    store = load_store(store_path_for(out))
    assert set(store) == {op.param_name for op in ops_of(folded, ParamOp)}
    x = image(module)
    assert relative_error(run(folded, store, x)[0], run(module, params, x)[0]) < 1e-5


# tconv-fuse and the lowering ------------------------------------------------------


def partition(groups) -> list[list[str]]:
    """Kernel groups as lists of op names, comparable across copies of a module."""
    return [[op.name.removeprefix("tconv.") for op in group.ops] for group in groups]


def test_plain_fuse_marks_what_the_lowering_fuses_by_itself():
    module = zoo.build("resnet18", "cifar10")
    default = partition(kernel_groups(single_function(module)))
    apply(module, "tconv-fuse")
    function = single_function(module)
    marked = list(kernel_groups(function))
    assert partition(marked) == default
    # The marks are the kernels' positions in execution order.
    for index, group in enumerate(marked):
        assert {op.attributes[FUSION_MARK].value.data for op in group.ops} == {index}


@pytest.mark.parametrize(
    ("options", "rules"),
    [
        ("residual=false", FusionRules(residual=False)),
        ("activation=false batch_norm=false", FusionRules(batch_norm=False, activation=False)),
    ],
)
def test_options_keep_ops_out_of_kernels(options, rules):
    module = zoo.build("resnet18", "cifar10")
    default = len(list(kernel_groups(single_function(module))))
    apply(module, f"tconv-fuse{{{options}}}")
    function = single_function(module)
    marked = list(kernel_groups(function))
    assert partition(marked) == partition(fused_groups(function, rules))
    assert len(marked) > default
    if not rules.residual:
        assert all(group.add is None for group in marked)
    if not rules.activation:
        assert all(group.activation is None and group.batch_norm is None for group in marked)


def test_tvm_follows_the_marks():
    """residual=false: more kernels, the same numbers; plain tconv-fuse: the
    kernels the lowering chooses by itself."""
    from tconv.lowering.tvm.build import TvmNetwork, lower_kernels

    module = residual_block(batch=2)
    params = trained_like_params(module)
    x = image(module)
    (expected,) = run(module, params, x)
    default_calls = lower_kernels(module)[1].calls

    fused = module.clone()
    apply(fused, "tconv-fuse")
    assert [call.ops for call in lower_kernels(fused)[1].calls] == [call.ops for call in default_calls]

    unfused = module.clone()
    apply(unfused, "tconv-fuse{residual=false}")
    network = TvmNetwork(unfused)
    assert len(network.program.calls) == len(default_calls) + 1
    assert ("add", "relu") in [call.ops for call in network.program.calls]
    network.load_params(params)
    (actual,) = network.run(x)
    assert relative_error(actual, expected) < 1e-5


MARKED = """func.func @net(%x: tensor<1x4x6x6xf32>) -> tensor<1x4x3x3xf32> {{
  %w = tconv.param "conv.weight" init kaiming_normal : tensor<4x4x3x3xf32>
  %c = tconv.conv2d %x, %w strides [1, 1] padding [1, 1, 1, 1] dilations [1, 1] groups 1 {{tconv.kernel = 0 : i64}} : (tensor<1x4x6x6xf32>, tensor<4x4x3x3xf32>) -> tensor<1x4x6x6xf32>
  {body}
}}
"""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (  # the activation closes a kernel: nothing follows it
            """%r = tconv.relu %c {tconv.kernel = 0 : i64} : tensor<1x4x6x6xf32>
  %a = tconv.add %r, %x {tconv.kernel = 0 : i64} : tensor<1x4x6x6xf32>
  %p = tconv.max_pool2d %a kernel [2, 2] strides [2, 2] padding [0, 0, 0, 0] : (tensor<1x4x6x6xf32>) -> tensor<1x4x3x3xf32>
  func.return %p : tensor<1x4x3x3xf32>""",
            "net.mlir:5:3: error: fusion mark tconv.kernel = 0: a kernel anchored at conv2d absorbs "
            "[batch_norm] [add] [relu | relu6], in that order; add cannot follow relu",
        ),
        (  # the conv's result is also read by the add: it must exist
            """%r = tconv.relu %c {tconv.kernel = 0 : i64} : tensor<1x4x6x6xf32>
  %a = tconv.add %r, %c : tensor<1x4x6x6xf32>
  %p = tconv.max_pool2d %a kernel [2, 2] strides [2, 2] padding [0, 0, 0, 0] : (tensor<1x4x6x6xf32>) -> tensor<1x4x3x3xf32>
  func.return %p : tensor<1x4x3x3xf32>""",
            "net.mlir:3:3: error: fusion mark tconv.kernel = 0: the result of conv2d is used 2 times",
        ),
        (  # the relu reads the input, not the conv
            """%r = tconv.relu %x {tconv.kernel = 0 : i64} : tensor<1x4x6x6xf32>
  %a = tconv.add %r, %c : tensor<1x4x6x6xf32>
  %p = tconv.max_pool2d %a kernel [2, 2] strides [2, 2] padding [0, 0, 0, 0] : (tensor<1x4x6x6xf32>) -> tensor<1x4x3x3xf32>
  func.return %p : tensor<1x4x3x3xf32>""",
            "net.mlir:4:3: error: fusion mark tconv.kernel = 0: relu does not read the result of conv2d",
        ),
        (  # a pooling kernel absorbs nothing
            """%p = tconv.max_pool2d %c kernel [2, 2] strides [2, 2] padding [0, 0, 0, 0] {tconv.kernel = 1 : i64} : (tensor<1x4x6x6xf32>) -> tensor<1x4x3x3xf32>
  %r = tconv.relu %p {tconv.kernel = 1 : i64} : tensor<1x4x3x3xf32>
  func.return %r : tensor<1x4x3x3xf32>""",
            "net.mlir:5:3: error: fusion mark tconv.kernel = 1: a kernel anchored at max_pool2d absorbs nothing; "
            "relu cannot follow max_pool2d",
        ),
        (
            """%p = tconv.max_pool2d %c kernel [2, 2] strides [2, 2] padding [0, 0, 0, 0] {tconv.kernel = "next"} : (tensor<1x4x6x6xf32>) -> tensor<1x4x3x3xf32>
  func.return %p : tensor<1x4x3x3xf32>""",
            'net.mlir:4:3: error: fusion mark tconv.kernel must be an integer, got "next"',
        ),
    ],
)
def test_marks_that_cannot_be_honoured_are_located_errors(body, message):
    module = parse_module(MARKED.format(body=body), "net.mlir", make_context())
    with pytest.raises(FusionError) as error:
        list(kernel_groups(single_function(module)))
    assert str(error.value).startswith(message), str(error.value)


def test_tconv_compile_reports_marks_it_cannot_honour(tmp_path, capsys):
    module = residual_block()
    apply(module, "tconv-fuse")
    (add,) = [op for op in module.walk() if op.name == "tconv.add"]
    add.attributes.pop(FUSION_MARK)  # the add now runs alone: the relu after it cannot join conv2's kernel
    source = tmp_path / "net.mlir"
    write_network(source, module, trained_like_params(module))
    result = tconv(capsys, "compile", source, "-o", tmp_path / "out")
    assert_user_error(result, f"{source}:", "fusion mark tconv.kernel = 1: relu does not read the result of batch_norm")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("pipeline", ["tconv-fold-bn,tconv-fuse", "tconv-fuse,tconv-fold-bn"])
def test_folding_and_fusing_in_either_order_keep_one_kernel_per_block(pipeline):
    """Folding moves the batch-norm into the weights; the kernels stay, marked or not."""
    module = residual_block()
    default = partition(kernel_groups(single_function(module)))
    apply(module, pipeline)
    function = single_function(module)
    kernel_ops = [op for op in function.body.block.ops if op.name not in ("tconv.param", "func.return")]
    assert all(FUSION_MARK in op.attributes for op in kernel_ops)
    folded = partition(kernel_groups(function))
    assert folded == [[name for name in group if name != "batch_norm"] for group in default]
