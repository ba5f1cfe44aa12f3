"""tconv → upstream MLIR → tconv, checked by value.

Two independent checks of the exported MLIR's meaning:
- every zoo network goes through MLIR text and back to the same tconv module,
  which the reference executor runs to the original's result;
- small networks, one per op and form, are run *as MLIR* by xDSL's own
  interpreter after xDSL's `linalg-generalize-named-ops` pass, and must give
  the reference executor's result on the tconv original. xDSL's interpreter
  lacks the tensor reshaping ops, tensor.pad, linalg.broadcast and
  arith.divf; `LayoutFunctions` below supplies them (with numpy), and nothing
  else.
"""

import functools
from pathlib import Path

import numpy as np
import pytest
from support import relative_error, trained_like_params
from xdsl.dialects import arith, math, tensor
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp, f32
from xdsl.dialects.linalg import ops as linalg
from xdsl.interpreter import Interpreter, InterpreterFunctions, ReturnedValues, impl, impl_terminator, register_impls
from xdsl.interpreters.arith import ArithFunctions
from xdsl.interpreters.builtin import BuiltinFunctions
from xdsl.interpreters.func import FuncFunctions
from xdsl.interpreters.linalg import LinalgFunctions
from xdsl.interpreters.math import MathFunctions
from xdsl.interpreters.shaped_array import ShapedArray
from xdsl.interpreters.tensor import TensorFunctions
from xdsl.interpreters.utils.ptr import TypedPtr
from xdsl.ir import Block, Region
from xdsl.rewriter import Rewriter
from xdsl.transforms.linalg_generalize_named_ops import LinalgGeneralizeNamedOpsPass

from tconv.frontends import zoo
from tconv.frontends.mlir import from_linalg, linalg_text, make_linalg_context, parse_linalg, to_linalg
from tconv.frontends.mlir.forms import PARAM_ATTR
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import module_text, verify_module
from tconv.ir.ops import QUANT_OPS, shape_of
from tconv.ir.syntax import floats_attr
from tconv.ir.params import param_ops
from tconv.semantics import reference

IMPORT_TEST = Path(__file__).parents[1] / "filecheck" / "interop" / "import_linalg.mlir"


def random_params(module: ModuleOp, seed: int = 0) -> dict[str, np.ndarray]:
    """`trained_like_params` with vectors from [-0.5, 0.5] (batch-norm scales
    and variances from [0.5, 1.5]) and random normal weights where their init
    is not Kaiming, so that every bias, shift and mean changes the result."""
    rng = np.random.default_rng(seed + 1)
    params = trained_like_params(module, seed, spread=0.5)
    for op in param_ops(module):
        shape = shape_of(op.result)
        if len(shape) > 1 and op.init.data != "kaiming_normal":
            params[op.param_name] = rng.standard_normal(shape, dtype=np.float32)
    return params


def network_input(module: ModuleOp, seed: int = 1) -> np.ndarray:
    shape = shape_of(reference.single_function(module).args[0])
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


# Every zoo network through MLIR text and back --------------------------------


@functools.cache
def round_trip(name: str, dataset: str) -> tuple[ModuleOp, ModuleOp]:
    """The zoo network, and what comes back from its MLIR text."""
    module = zoo.build(name, dataset, batch=1)
    text = linalg_text(to_linalg(module))
    return module, from_linalg(parse_linalg(text, f"{name}.mlir"))


ZOO_CASES = [
    pytest.param(name, dataset, id=f"{name}-{dataset}", marks=pytest.mark.slow)
    for name in zoo.network_names()
    for dataset in zoo.datasets(name)
]


@pytest.mark.parametrize("name, dataset", ZOO_CASES)
def test_zoo_network_round_trips_through_linalg(name, dataset):
    """The module that comes back prints exactly as the original (parameter
    names, initialisers and SSA names included), so it computes the same."""
    module, back = round_trip(name, dataset)
    assert module_text(back) == module_text(module)


def test_a_quantised_network_round_trips_through_linalg():
    """`tconv-quantize`'s QDQ pairs (uint8 activations, per-channel int8
    weights, a residual's shared pair) come back as they were."""
    from xdsl.context import Context

    from tconv.ir.params import init_params
    from tconv.passes.nas.store import ParamStore, using_store
    from tconv.passes.quant.quantize import QuantizePass

    module = zoo.build("resnet18", "cifar10", batch=1)
    params = init_params(module)
    with using_store(ParamStore(arrays=dict(params))):
        QuantizePass(samples=4).apply(Context(), module)
    back = from_linalg(parse_linalg(linalg_text(to_linalg(module)), "resnet18_int8.mlir"))
    # Scales come back as the shortest decimals of the same f32 values.
    qdq = [[op for op in m.walk() if isinstance(op, QUANT_OPS)] for m in (module, back)]
    assert [np.float32(op.scales).tolist() for op in qdq[0]] == [np.float32(op.scales).tolist() for op in qdq[1]]
    for op in (*qdq[0], *qdq[1]):
        op.properties["scale"] = floats_attr([0.0])
    assert module_text(back) == module_text(module)


VALUE_CASES = ["resnet18-cifar10", "resnet18-imagenet", "resnext29_2x64d-cifar10", "wrn40_2-cifar10",
               "densenet_bc100-cifar10", "mobilenet_v1-imagenet", "mobilenet_v2-imagenet"]
"""One network of each family (and the ImageNet stem), where the reference
executor runs in about a second: the others differ from these only in sizes
and depth, and print the same after the trip, which the test above checks."""


@pytest.mark.parametrize("case", VALUE_CASES)
def test_zoo_network_computes_the_same_after_the_round_trip(case):
    module, back = round_trip(*case.split("-"))
    params = random_params(module)
    x = network_input(module)
    (expected,) = reference.run(module, params, x)
    (actual,) = reference.run(back, params, x)
    assert relative_error(actual, expected) < 1e-6


# The MLIR's own meaning, by xDSL's interpreter --------------------------------


def to_array(value: ShapedArray) -> np.ndarray:
    return np.asarray(value.data, np.float32).reshape(value.shape)


def to_shaped(array: np.ndarray) -> ShapedArray:
    array = np.ascontiguousarray(array, np.float32)
    return ShapedArray(TypedPtr.new_float32(array.ravel().tolist()), list(array.shape))


@register_impls
class LayoutFunctions(InterpreterFunctions):
    """The ops of the exported forms that xDSL 0.74's interpreter lacks."""

    @impl(arith.ConstantOp)
    def run_constant(self, interpreter, op, args):
        if isinstance(op.value, DenseIntOrFPElementsAttr):
            return (to_shaped(np.reshape(op.value.get_values(), op.value.get_shape())),)
        return (op.value.value.data,)

    @impl(arith.DivfOp)
    def run_divf(self, interpreter, op, args):
        return (args[0] / args[1],)

    @impl_terminator(tensor.YieldOp)
    def run_yield(self, interpreter, op, args):
        return ReturnedValues(args), ()

    @impl(tensor.PadOp)
    def run_pad(self, interpreter, op, args):
        rank = len(op.static_low)
        (value,) = interpreter.run_ssacfg_region(op.region, (0,) * rank, "tensor.pad")
        widths = list(zip(op.static_low.get_values(), op.static_high.get_values()))
        return (to_shaped(np.pad(to_array(args[0]), widths, constant_values=value)),)

    @impl(tensor.ExpandShapeOp)
    def run_expand_shape(self, interpreter, op, args):
        return (to_shaped(to_array(args[0]).reshape(op.result.type.get_shape())),)

    @impl(tensor.CollapseShapeOp)
    def run_collapse_shape(self, interpreter, op, args):
        return (to_shaped(to_array(args[0]).reshape(op.result.type.get_shape())),)

    @impl(tensor.ExtractSliceOp)
    def run_extract_slice(self, interpreter, op, args):
        index = tuple(
            slice(offset, offset + size * stride, stride)
            for offset, size, stride in zip(
                op.static_offsets.get_values(), op.static_sizes.get_values(), op.static_strides.get_values()
            )
        )
        return (to_shaped(to_array(args[0])[index]),)

    @impl(tensor.ConcatOp)
    def run_concat(self, interpreter, op, args):
        return (to_shaped(np.concatenate([to_array(a) for a in args], axis=op.dim.value.data)),)

    @impl(math.RoundEvenOp)
    def run_roundeven(self, interpreter, op, args):
        return (float(np.rint(np.float32(args[0]))),)

    @impl(arith.FPToSIOp)
    def run_fptosi(self, interpreter, op, args):
        return (int(args[0]),)

    # The interpreter holds an i8 as a signed byte; uint8 values are the same bytes.
    @impl(arith.FPToUIOp)
    def run_fptoui(self, interpreter, op, args):
        return (int(np.uint8(int(args[0])).view(np.int8)),)

    @impl(arith.SIToFPOp)
    def run_sitofp(self, interpreter, op, args):
        return (float(args[0]),)

    @impl(arith.UIToFPOp)
    def run_uitofp(self, interpreter, op, args):
        return (float(args[0] % 256),)

    @impl(linalg.BroadcastOp)
    def run_broadcast(self, interpreter, op, args):
        added = np.expand_dims(to_array(args[0]), tuple(op.dimensions.get_values()))
        return (to_shaped(np.broadcast_to(added, op.result[0].type.get_shape())),)


def generalize_max_pools(module: ModuleOp) -> None:
    """xDSL 0.74 gives linalg.pooling_nchw_max the body max(input, window
    operand) where upstream's is max(accumulator, input); before xDSL's
    generalization, replace each by a linalg.generic with the op's own maps
    and upstream's body."""
    for op in list(module.walk()):
        if isinstance(op, linalg.PoolingNchwMaxOp):
            body = Block(arg_types=[f32] * 3)
            result = arith.MaximumfOp(body.args[2], body.args[0])
            body.add_ops([result, linalg.YieldOp(result.result)])
            generic = linalg.GenericOp(
                op.inputs, op.outputs, Region(body), op.get_indexing_maps(), op.get_iterator_types(),
                op.result_types,
            )
            Rewriter.replace_op(op, generic)


def interpret(linalg_module: ModuleOp, inputs: list[np.ndarray], params: dict[str, np.ndarray]) -> np.ndarray:
    """Run the module's function with xDSL's interpreter; parameter arguments
    take the store entry their `tconv.param` attribute names."""
    generalize_max_pools(linalg_module)
    LinalgGeneralizeNamedOpsPass().apply(make_linalg_context(), linalg_module)
    function = linalg_module.ops.first
    attrs = function.arg_attrs.data if function.arg_attrs is not None else []
    args = list(inputs)
    for index in range(len(inputs), len(function.args)):
        args.append(params[attrs[index].data[PARAM_ATTR].data])
    interpreter = Interpreter(linalg_module)
    for functions in (ArithFunctions(), LinalgFunctions(), TensorFunctions(), FuncFunctions(),
                      MathFunctions(), BuiltinFunctions()):
        interpreter.register_implementations(functions)
    interpreter.register_implementations(LayoutFunctions(), override=True)
    (result,) = interpreter.call_op(function.sym_name.data, [to_shaped(a) for a in args])
    return to_array(result)


def small(layers, input_shape=(1, 4, 7, 7)) -> ModuleOp:
    b = NetworkBuilder("small", input_shape)
    module = b.finish(layers(b))
    verify_module(module)
    return module


SEMANTICS_CASES = {
    "conv2d": lambda b: b.conv2d(b.input, 6, 3, name="conv"),
    "conv2d-asymmetric-padding-strides-bias": lambda b: b.conv2d(
        b.input, 6, 3, stride=(2, 1), padding=(0, 1, 2, 0), bias=True, name="conv"
    ),
    "conv2d-dilated": lambda b: b.conv2d(b.input, 4, 3, dilation=2, name="conv"),
    "conv2d-grouped-bias": lambda b: b.conv2d(b.input, 8, 3, groups=2, bias=True, name="conv"),
    "conv2d-depthwise-strided": lambda b: b.conv2d(b.input, 4, 3, groups=4, stride=2, name="conv"),
    "batch_norm": lambda b: b.batch_norm(b.input),
    "relu": lambda b: b.relu(b.input),
    "relu6": lambda b: b.relu6(b.conv2d(b.input, 4, 1, name="scale")),
    "add": lambda b: b.add(b.input, b.relu(b.input)),
    "max_pool2d-padded": lambda b: b.max_pool2d(b.input, 3, stride=2, padding=1),
    "avg_pool2d-padded": lambda b: b.avg_pool2d(b.input, 3, stride=2, padding=(1, 0, 1, 1)),
    "avg_pool2d-count_include_pad": lambda b: b.avg_pool2d(b.input, 3, stride=2, padding=1, count_include_pad=True),
    "global_avg_pool": lambda b: b.global_avg_pool(b.input),
    "flatten-dense": lambda b: b.dense(b.flatten(b.input), 5, name="fc"),
    "dense-without-bias": lambda b: b.dense(b.flatten(b.input), 5, bias=False, name="fc"),
    "concat-slice_channels": lambda b: b.concat([b.slice_channels(b.input, 1, 2), b.input]),
    "channel_shuffle": lambda b: b.channel_shuffle(b.input, 2),
    "slice-rows-columns": lambda b: b.concat([b.slice(b.input, 2, 0, 4), b.slice(b.slice(b.input, 2, 2, 5), 3, 0, 7)], axis=2),
    "slice-features": lambda b: b.slice(b.flatten(b.input), 1, 3, 20),
    "quantize-dequantize": lambda b: b.conv2d(
        b.qdq(b.input, [0.02], [131]), 6, 3, bias=True, weight_scales=[0.004, 0.006, 0.01, 0.003, 0.005, 0.02],
        name="conv"),
    "quantize-int8-per-tensor": lambda b: b.qdq(b.relu(b.input), [0.01], [0], element_type="i8"),
}


@pytest.mark.parametrize("layers", SEMANTICS_CASES.values(), ids=SEMANTICS_CASES.keys())
def test_exported_mlir_computes_what_tconv_does(layers):
    module = small(layers)
    params = random_params(module)
    x = network_input(module)
    (expected,) = reference.run(module, params, x)
    exported = parse_linalg(linalg_text(to_linalg(module)))
    assert relative_error(interpret(exported, [x], params), expected) < 1e-5


def test_hand_written_mlir_imports_to_what_it_computes():
    """The importer's variants (see the filecheck test it comes from) mean
    what the MLIR computes: xDSL runs the file, the reference runs its import."""
    text = IMPORT_TEST.read_text()
    imported = from_linalg(parse_linalg(text, str(IMPORT_TEST)))
    params = random_params(imported)
    x = network_input(imported)
    (expected,) = reference.run(imported, params, x)
    # The file's unused argument still needs a value to be called with.
    params["unused"] = np.zeros(5, np.float32)
    assert relative_error(interpret(parse_linalg(text), [x], params), expected) < 1e-5


def test_linalg_text_parses_again_in_custom_and_generic_syntax():
    module = small(lambda b: b.dense(b.flatten(b.global_avg_pool(b.max_pool2d(
        b.relu(b.batch_norm(b.conv2d(b.input, 8, 3, groups=2, bias=True, name="conv"))), 2))), 3))
    exported = to_linalg(module)
    custom = linalg_text(exported)
    generic = linalg_text(exported, generic=True)
    assert custom != generic
    assert linalg_text(parse_linalg(custom)) == custom
    assert linalg_text(parse_linalg(generic)) == custom
