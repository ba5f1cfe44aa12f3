"""The LLVM backend: the loop-nest IR and its schedules, each op compiled and
run by the C runtime against the reference executor, the kernel ABI, the
schedule diagnostics, the agreement with the TVM backend on one scheduled IR
file, and `tconv compile --backend llvm` + `tconv run`."""

import ctypes
import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from support import assert_user_error, relative_error, tconv, trained_like_params

from tconv.cli.files import write_network
from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import Conv2dOp, shape_of, tensor_type
from tconv.ir.schedule import ConvSchedule
from tconv.kernels.target import VectorUnit
from tconv.lowering.llvm.artifact import compile_artifact, run_llvm
from tconv.lowering.llvm.build import LoweringError, llvm_ir, lower_program
from tconv.lowering.llvm.loops import Affine, Load, Loop, Nest, NestSchedule, UnsupportedSchedule, schedule_nest
from tconv.lowering.llvm.schedules import TEMPLATE_ORDER, TEMPLATE_PARALLEL, TEMPLATE_UNROLL, conv2d_blocking
from tconv.runtime.driver import Runtime, load_runtime
from tconv.semantics.reference import run, single_function

# The loop-nest IR -------------------------------------------------------------------


def copy_nest(extents=(5, 7)) -> Nest:
    loops = tuple(Loop(name, extent) for name, extent in zip(("i", "j"), extents))
    index = (Affine.of("i"), Affine.of("j"))
    return Nest(loops, Load(0, index), Load(1, index))


def test_affine_arithmetic_and_bounds():
    index = Affine.of("oh") * 2 + Affine.of("kh") - 1
    assert index.coefficient("oh") == 2 and index.constant == -1
    assert index.bounds({"oh": 4, "kh": 3}) == (-1, 7)
    tiled = index.substitute({"oh": Affine.of("oh.0") * 3 + "oh.1"})
    assert tiled.coefficient("oh.0") == 6 and tiled.coefficient("oh.1") == 2


def test_tiling_with_a_tail_adds_a_domain_check():
    scheduled = schedule_nest(copy_nest(), NestSchedule({"j": (2, 3)}))
    assert [(loop.name, loop.extent) for loop in scheduled.loops] == [("i", 5), ("j.0", 2), ("j.1", 2), ("j.2", 3)]
    assert scheduled.origin["j"] == Affine.of("j.0") * 6 + Affine.of("j.1") * 3 + "j.2"
    (check,) = scheduled.checks
    assert check.index == scheduled.origin["j"] and check.extent == 7 and not check.reduction
    assert not schedule_nest(copy_nest((5, 6)), NestSchedule({"j": (2, 3)})).checks


def test_order_vectorize_unroll_parallel_set_the_loop_kinds():
    scheduled = schedule_nest(
        copy_nest(), NestSchedule({"j": (4,)}, ("j.0", "i", "j.1"), "j.1", frozenset({"i"}), ("j.0",))
    )
    assert [(loop.name, loop.kind) for loop in scheduled.loops] == [
        ("j.0", "parallel"), ("i", "unroll"), ("j.1", "vector")
    ]
    assert scheduled.vector is not None and scheduled.vector.extent == 4


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (NestSchedule(vectorize="i"), "vectorize: 'i' must be the innermost loop (the order ends with 'j')"),
        (NestSchedule({"j": (100,)}, vectorize="j.1"), "vectorize: 'j.1' has 100 iterations, more than the 64 lanes"),
        (NestSchedule(unroll=frozenset({"j"}), vectorize="j"), "vectorize: 'j' cannot be both unrolled and vectorized"),
        (NestSchedule(parallel=("j",)), "parallel: the parallel loops must be the outermost ones"),
        (NestSchedule(order=("i",)), "order: must name every loop once (i, j)"),
        (NestSchedule({"k": (2,)}), "tile: unknown loop 'k' (loops: i, j)"),
    ],
)
def test_nest_schedules_outside_the_rules_are_refused(schedule, message):
    with pytest.raises(UnsupportedSchedule, match=re.escape(message)):
        schedule_nest(copy_nest(), schedule)


def test_too_wide_vectors_and_too_many_unrolled_copies_are_refused():
    wide = copy_nest((2, 65))
    with pytest.raises(UnsupportedSchedule, match="vectorize: 'j' has 65 iterations, more than the 64 lanes"):
        schedule_nest(wide, NestSchedule(vectorize="j"))
    big = copy_nest((100, 100))
    with pytest.raises(UnsupportedSchedule, match="unroll: unrolling i, j makes more than 1024 copies"):
        schedule_nest(big, NestSchedule(unroll=frozenset({"i", "j"})))
    reduction = Nest((Loop("i", 3), Loop("k", 4, True)), Load(0, (Affine.of("i"), Affine.of("k"))),
                     Load(1, (Affine.of("i"),)), "sum")
    with pytest.raises(UnsupportedSchedule, match="parallel: 'k' is a reduction loop"):
        schedule_nest(reduction, NestSchedule(order=("k", "i"), parallel=("k",)))


@pytest.mark.parametrize(
    ("out_group", "width", "blocking"),
    [(64, 56, (16, 4)), (8, 56, (8, 8)), (256, 14, (16, 4)), (3, 5, (3, 5)), (10, 4, (8, 4))],
)
def test_conv2d_blocking_fills_half_the_registers_with_accumulators(out_group, width, blocking):
    """8-lane vectors, 16 registers: at most 8 accumulators; 56 columns in
    tiles of 4 (no tail), a 3-channel group as one 3-lane vector."""
    block, tile = conv2d_blocking(out_group, width, VectorUnit(8, 16))
    assert (block, tile) == blocking
    assert -(-block // 8) * tile <= 8


# Kernels against the reference ------------------------------------------------------


def second_input(b: NetworkBuilder, shape):
    return b.block.insert_arg(tensor_type(shape), len(b.block.args))


def assert_matches_reference(module, threads=2):
    params = trained_like_params(module)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal(shape_of(a)).astype(np.float32) for a in single_function(module).body.block.args]
    (actual,) = run_llvm(module, params, *inputs, threads=threads)
    (expected,) = run(module, params, *inputs)
    assert actual.shape == expected.shape
    assert relative_error(actual, expected) < 1e-5
    return actual


def network(kind: str):
    if kind == "conv_bn_add_relu6":
        b = NetworkBuilder("n", (2, 6, 11, 9))
        x = b.conv2d(b.input, 10, 3, stride=2, padding=(1, 0, 2, 1), dilation=(2, 1), groups=2, bias=True, name="conv")
        return b.finish(b.relu6(b.add(b.batch_norm(x, name="bn"), second_input(b, shape_of(x)))))
    if kind == "depthwise":
        b = NetworkBuilder("n", (1, 11, 13, 13))
        return b.finish(b.relu(b.conv2d(b.input, 11, 3, padding=1, groups=11, stride=2, name="dw")))
    if kind == "conv7x7":
        b = NetworkBuilder("n", (1, 3, 20, 20))
        return b.finish(b.conv2d(b.input, 20, 7, stride=2, padding=3, name="stem"))
    b = NetworkBuilder("n", (2, 9, 11, 10))
    if kind == "dense":
        return b.finish(b.relu(b.dense(b.flatten(b.global_avg_pool(b.input)), 21, name="fc")))
    if kind == "pools":
        x = b.max_pool2d(b.input, 3, stride=2, padding=1)
        return b.finish(b.add(x, b.avg_pool2d(b.input, 3, stride=2, padding=1)))
    if kind == "batch_norm":
        return b.finish(b.relu(b.batch_norm(b.input, name="bn")))
    if kind == "layout":
        x = b.channel_shuffle(b.slice_channels(b.input, 1, 8), 4)
        return b.finish(b.concat([x, second_input(b, (2, 3, 11, 10))], axis=1))
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["conv_bn_add_relu6", "depthwise", "conv7x7", "dense", "pools", "batch_norm", "layout"])
def test_kernel_matches_reference(kind):
    assert_matches_reference(network(kind))


def test_results_do_not_depend_on_the_thread_count():
    """Parallel loops split data-parallel iterations only: bit-identical results."""
    module = network("conv_bn_add_relu6")
    np.testing.assert_array_equal(assert_matches_reference(module, threads=1), assert_matches_reference(module, threads=2))


def test_default_convolution_is_vectorized_and_parallel():
    b = NetworkBuilder("n", (1, 32, 16, 16))
    kernels, program = lower_program(b.finish(b.conv2d(b.input, 32, 3, padding=1, name="conv")), VectorUnit(8, 16))
    text = llvm_ir(kernels)
    assert '@"llvm.fmuladd.v16f32"' in text  # a block of two 8-lane vectors
    assert '@"__TVMBackendParallelLaunch"' in text and "call i32 %" in text
    (weight,) = [t for t in program.tensors if t.kind == "derived"]
    assert weight.shape == (1, 2, 32, 3, 3, 16)


def test_kernel_abi_argument_count_check_and_pool_pointer(tmp_path):
    load_runtime()  # exports the error hook the kernel library binds to
    module = network("conv_bn_add_relu6")
    compile_artifact(module, trained_like_params(module), tmp_path / "a")
    library = ctypes.CDLL(str(tmp_path / "a" / "kernels.so"))
    kernel = library["__tvm_ffi_k0_conv2d"]
    kernel.restype = ctypes.c_int32
    kernel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p]
    assert kernel(None, None, 1, None) == -1
    # The pool's entry point the runtime installs: a null function pointer until then.
    assert ctypes.c_void_p.in_dll(library, "__TVMBackendParallelLaunch").value is None


def test_the_llvm_backend_does_not_import_tvm(tmp_path):
    script = (
        "import sys\n"
        "from tconv.ir.builder import NetworkBuilder\n"
        "from tconv.ir.params import init_params\n"
        "from tconv.lowering.llvm.artifact import compile_artifact\n"
        "b = NetworkBuilder('n', (1, 4, 6, 6))\n"
        "m = b.finish(b.relu(b.conv2d(b.input, 8, 3, name='c')))\n"
        f"compile_artifact(m, init_params(m), {str(tmp_path / 'a')!r})\n"
        "print(sorted(name for name in sys.modules if name == 'tvm' or name.startswith('tvm.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# Schedules from the IR --------------------------------------------------------------


def scheduled_conv(schedule: ConvSchedule, out_channels=16):
    b = NetworkBuilder("conv", (1, 8, 9, 9))
    module = b.finish(b.conv2d(b.input, out_channels, 3, padding=1, groups=2, name="conv"))
    (conv,) = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    conv.properties["schedule"] = schedule.to_attr()
    module.verify()
    return module


def test_a_schedule_the_backend_cannot_honour_is_refused_with_a_diagnostic():
    order = ("n", "g", "oh", "ow", "ic", "kh", "kw", "oc")
    module = scheduled_conv(ConvSchedule(order=order, vectorize="oc"), out_channels=160)
    with pytest.raises(LoweringError, match=re.escape(
        "llvm backend: cannot honour this schedule: vectorize: 'oc' has 80 iterations, more than the 64 lanes"
    )):
        lower_program(module)


def test_the_weight_is_packed_in_blocks_of_the_oc_tile():
    module = scheduled_conv(ConvSchedule({"oc": (2, 3)}))
    _, program = lower_program(module)
    (weight,) = [t for t in program.tensors if t.kind == "derived"]
    assert weight.shape == (2, 3, 4, 3, 3, 3) and weight.name.endswith("GxOBxCxKHxKWx3")
    assert_matches_reference(module)


@pytest.mark.parametrize("vectorize", [None, "ow.1"])
def test_a_reduction_outside_every_data_parallel_loop_accumulates_in_the_output(vectorize):
    """Reduction loops outermost: the accumulator tile is the whole output
    (more than the register tile limit), accumulated in place; with a
    vectorized column tile whose tail needs masked loads and stores."""
    from tconv.lowering.llvm.codegen import REGISTER_TILE_LIMIT

    order = ("ic", "kh", "kw", "n", "g", "oc", "oh", "ow.0", "ow.1")
    module = scheduled_conv(ConvSchedule({"ow": (4,)}, order, vectorize), out_channels=64)
    assert 64 * 9 * 9 > REGISTER_TILE_LIMIT
    assert_matches_reference(module)


def test_one_scheduled_ir_compiles_with_either_backend_to_the_same_numbers():
    from tconv.lowering.tvm.build import run_tvm

    schedule = ConvSchedule({"oc": (4,), "ow": (3,)}, TEMPLATE_ORDER, "oc.1", TEMPLATE_UNROLL, TEMPLATE_PARALLEL)
    module = scheduled_conv(schedule)
    params = trained_like_params(module)
    image = np.random.default_rng(2).standard_normal((1, 8, 9, 9)).astype(np.float32)
    (llvm,) = run_llvm(module, params, image)
    (tvm,) = run_tvm(module, params, image)
    assert relative_error(llvm, tvm) < 1e-6


# The command line -------------------------------------------------------------------


def test_cli_compile_with_the_llvm_backend_then_run(tmp_path, capsys):
    module = network("conv_bn_add_relu6")
    params = trained_like_params(module)
    write_network(tmp_path / "net.mlir", module, params)
    status, out, _ = tconv(capsys, "compile", tmp_path / "net.mlir", "--backend", "llvm", "-o", tmp_path / "net.art")
    assert status == 0 and "wrote" in out
    shapes = [shape_of(a) for a in single_function(module).body.block.args]
    with Runtime(tmp_path / "net.art") as runtime:
        assert [i.shape for i in runtime.inputs] == shapes
    rng = np.random.default_rng(5)
    x, residual = (rng.standard_normal(shape).astype(np.float32) for shape in shapes)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "r.npy", residual)
    status, out, err = tconv(capsys, "run", tmp_path / "net.art", "--input", tmp_path / "x.npy",
                             "--input", tmp_path / "r.npy", "--output", tmp_path / "y.npy")
    assert status == 0, err
    (expected,) = run(module, params, x, residual)
    assert relative_error(np.load(tmp_path / "y.npy"), expected) < 1e-5


def test_cli_reports_an_unhonourable_schedule_as_a_user_error(tmp_path, capsys):
    module = scheduled_conv(ConvSchedule({"oh": (3,)}, unroll=frozenset({"n", "g", "oc", "oh.0", "ow", "ic"})))
    write_network(tmp_path / "net.mlir", module, trained_like_params(module))
    assert_user_error(
        tconv(capsys, "compile", tmp_path / "net.mlir", "--backend", "llvm", "-o", tmp_path / "net.art"),
        "llvm backend: cannot honour this schedule: unroll:",
    )
    assert not (tmp_path / "net.art").exists()


def test_cli_llvm_backend_compiles_cuda_for_sm_80_and_sm_90_only(tmp_path, capsys):
    module = network("batch_norm")
    write_network(tmp_path / "net.mlir", module, trained_like_params(module))
    assert_user_error(
        tconv(capsys, "compile", tmp_path / "net.mlir", "--backend", "llvm", "--target", "cuda", "--arch", "sm_86",
              "-o", tmp_path / "net.art"),
        "the llvm backend compiles cuda for sm_80, sm_90, not 'sm_86'",
    )
    assert not (tmp_path / "net.art").exists()


# NVPTX ------------------------------------------------------------------------------


def test_the_gpu_schedule_computes_the_reference_numbers(tmp_path):
    """The GPU nests (a thread per data-parallel point, reductions serial),
    compiled for this CPU: the loop structure the PTX kernels run."""
    from tconv.ir.params import bind_params
    from tconv.kernels.artifact import write_program_artifact
    from tconv.lowering.llvm.build import compile_library
    from tconv.lowering.llvm.nvptx import gpu_nest

    module = network("conv_bn_add_relu6")
    params = trained_like_params(module)
    kernels, program = lower_program(module)
    gpu_kernels = [replace(k, nests=tuple(gpu_nest(n) for n in k.nests)) for k in kernels]
    assert all(loop.kind in ("parallel", "serial") for k in gpu_kernels for n in k.nests for loop in n.loops)
    write_program_artifact(program, bind_params(module, params), tmp_path / "a", lambda p, _: compile_library(gpu_kernels, p))
    shapes = [shape_of(a) for a in single_function(module).body.block.args]
    inputs = [np.random.default_rng(3).standard_normal(s).astype(np.float32) for s in shapes]
    with Runtime(tmp_path / "a", threads=2) as runtime:
        (actual,) = runtime.run(*inputs)
    (expected,) = run(module, params, *inputs)
    assert relative_error(actual, expected) < 1e-5


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_conv_and_elementwise_kernels_become_ptx_that_ptxas_assembles(arch):
    from tconv.lowering.llvm.nvptx import assemble, emit_ptx, nvptx_ir, ptxas

    b = NetworkBuilder("n", (1, 16, 10, 10))
    x = b.add(b.relu(b.batch_norm(b.input, name="bn")), b.input)
    module = b.finish(b.relu(b.batch_norm(b.conv2d(x, 24, 3, padding=1, name="conv"), name="conv_bn")))
    kernels, _ = lower_program(module)
    _, functions = nvptx_ir(kernels)
    ptx = emit_ptx(kernels, arch)
    assert f".target {arch}" in ptx
    assert sorted(re.findall(r"\.entry (\w+)\(", ptx)) == sorted(name for name, _ in functions)
    assert {k.symbol.split("_", 1)[1] for k in kernels} == {"batch_norm", "add", "conv2d"}
    if ptxas() is None:
        pytest.skip("ptxas is not installed")
    assert assemble(ptx, arch)[:4] == b"\x7fELF"


def test_gpu_nests_keep_only_the_tiles_of_the_packed_layouts():
    """A thread per output element: the elementwise nest loses its vector
    tile, the convolution keeps its oc block (its weight's layout)."""
    from tconv.lowering.llvm.nvptx import gpu_nest, threads

    b = NetworkBuilder("n", (1, 16, 10, 10))
    x = b.add(b.relu(b.batch_norm(b.input, name="bn")), b.input)
    module = b.finish(b.conv2d(x, 24, 3, padding=1, name="conv"))
    kernels, _ = lower_program(module, VectorUnit(8, 16))
    nests = {k.symbol.split("_", 1)[1]: gpu_nest(k.nests[0]) for k in kernels}
    assert threads(nests["batch_norm"]) == 16 * 10 * 10
    assert [loop.name for loop in nests["conv2d"].loops] == ["n", "g", "oc.0", "oc.1", "oh", "ow", "ic", "kh", "kw"]
    assert threads(nests["conv2d"]) == 2 * 16 * 10 * 10  # 24 channels in two blocks of 16


def test_the_bundle_launches_each_nest_of_a_kernel_in_order_and_reads_back():
    """A concat kernel has a nest per input: two launches, each with the
    blocks its own nest's points need; the bundle file parses back equal."""
    from tconv.lowering.llvm.nvptx import BLOCK, kernel_bundle
    from tconv.runtime.cuda_driver import parse_bundle

    b = NetworkBuilder("n", (1, 16, 10, 10))
    module = b.finish(b.concat([b.input, b.slice_channels(b.input, 0, 4)]))
    kernels, program = lower_program(module)
    bundle = kernel_bundle(kernels, "sm_80")
    (concat,) = [k for k in bundle.kernels if k.symbol.endswith("_concat")]
    assert [(l.function, l.grid, l.block) for l in concat.launches] == [
        (f"{concat.symbol}_0", -(-16 * 100 // BLOCK), BLOCK), (f"{concat.symbol}_1", -(-4 * 100 // BLOCK), BLOCK),
    ]
    assert concat.args == 3
    assert parse_bundle(bundle.to_bytes(), "bundle") == bundle
    assert {k.symbol for k in bundle.kernels} == set(program.symbols)
