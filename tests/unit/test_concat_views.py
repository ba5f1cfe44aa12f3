"""Concatenations without copies (`kernels.concat_views`): which
concatenations an artifact drops, where their parts then live, and that
the artifacts (TVM and LLVM) still compute what the reference does."""

import numpy as np
import pytest
from support import relative_error, trained_like_params

from tconv.ir.builder import NetworkBuilder
from tconv.kernels.artifact import plan_program
from tconv.kernels.concat_views import concat_views
from tconv.lowering.tvm.build import lower_kernels
from tconv.runtime.driver import Runtime
from tconv.semantics.reference import run


def dense_block(batch: int = 1, growth: int = 16, size: int = 8):
    """A stem and three DenseNet layers (batch-norm, ReLU, 3×3 convolution
    of `growth` channels, concatenated onto the block), then a transition."""
    b = NetworkBuilder("dense", (batch, 3, size, size))
    x = b.conv2d(b.input, 16, 3, padding=1, name="stem")
    for layer in range(3):
        y = b.conv2d(b.relu(b.batch_norm(x, name=f"norm{layer}")), growth, 3, padding=1, name=f"conv{layer}")
        x = b.concat([x, y])
    return b.finish(b.avg_pool2d(b.conv2d(x, 8, 1, name="transition"), 2))


def program_of(module):
    return lower_kernels(module)[1]


def test_every_concatenation_of_a_dense_block_is_a_view_of_the_last():
    program = program_of(dense_block())
    concats = [i for i, call in enumerate(program.calls) if call.ops == ("concat",)]
    views = concat_views(program)
    assert views.dropped == frozenset(concats) and len(concats) == 3
    last = program.calls[concats[-1]].writes
    layer_bytes = 16 * 8 * 8 * 4
    # The stem's output, then each layer's channels, at their place in the last concatenation.
    stem = program.calls[concats[0]].reads[0]
    assert views.resolve(stem) == (last, 0)
    for layer, index in enumerate(concats):
        new = program.calls[index].reads[1]
        assert views.resolve(new) == (last, (layer + 1) * layer_bytes)
        # and each concatenation is a prefix of the last
        assert views.resolve(program.calls[index].writes) == (last, 0)


def test_at_a_batch_above_one_the_parts_are_not_slices_and_are_copied():
    assert concat_views(program_of(dense_block(batch=2))).dropped == frozenset()


def test_a_part_that_would_start_unaligned_keeps_its_concatenation():
    # 16 x 5 x 5 floats (1600 bytes) end aligned, 16 + 3 channels (1900 bytes) do not.
    program = program_of(dense_block(growth=3, size=5))
    concats = [i for i, call in enumerate(program.calls) if call.ops == ("concat",)]
    assert concat_views(program).dropped == frozenset(concats[:1])


def test_a_part_of_two_concatenations_is_a_view_in_the_first_only():
    b = NetworkBuilder("twice", (1, 16, 4, 4))
    x = b.relu(b.input)
    left = b.concat([x, b.conv2d(x, 16, 1, name="a")])
    right = b.concat([x, b.conv2d(x, 16, 1, name="b")])
    program = program_of(b.finish(b.add(left, right)))
    views = concat_views(program)
    assert len(views.dropped) == 1
    relu = program.calls[0].writes
    assert views.resolve(relu)[0] == program.calls[sorted(views.dropped)[0]].writes


def test_a_network_input_is_never_a_view():
    b = NetworkBuilder("input", (1, 16, 4, 4))
    program = program_of(b.finish(b.concat([b.input, b.conv2d(b.input, 16, 1, name="a")])))
    assert concat_views(program).dropped == frozenset()


def test_the_plan_drops_the_copies_and_places_parts_inside_their_concatenation():
    module = dense_block()
    program = program_of(module)
    plan, _ = plan_program(program, trained_like_params(module))
    assert len(plan.calls) == len(program.calls) - 3
    views = concat_views(program)
    for tensor_id, (base, offset) in views.base.items():
        assert plan.tensors[tensor_id].offset == plan.tensors[base].offset + offset


@pytest.mark.parametrize("backend", ["tvm", "llvm"])
def test_artifacts_with_views_compute_what_the_reference_does(tmp_path, backend):
    from tconv.compile import compile_network

    module = dense_block()
    params = trained_like_params(module)
    compiled = compile_network(module, params, tmp_path / "net", backend=backend)
    assert compiled.report.calls == len(program_of(module).calls) - 3
    image = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with Runtime(tmp_path / "net", threads=2) as runtime:
        (actual,) = runtime.run(image)
    (expected,) = run(module, params, image)
    assert relative_error(actual, expected) < 1e-5
