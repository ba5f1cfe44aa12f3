"""The arena planner: live buffers never share bytes, offsets are aligned, and
the arena is no smaller than the bytes live at any one step."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tconv.runtime.memory_plan import (
    ALIGNMENT,
    Buffer,
    align_up,
    buffers_for_steps,
    max_live_bytes,
    plan_arena,
)


@st.composite
def buffer_lists(draw) -> list[Buffer]:
    count = draw(st.integers(0, 30))
    buffers = []
    for _ in range(count):
        first = draw(st.integers(0, 20))
        length = draw(st.integers(0, 8))
        size = draw(st.one_of(st.integers(0, 300), st.integers(1, 100_000)))
        buffers.append(Buffer(size, first, first + length))
    return buffers


@settings(max_examples=200, deadline=None)
@given(buffer_lists(), st.sampled_from([1, 16, 64, 256]))
def test_live_buffers_never_share_bytes(buffers, alignment):
    plan = plan_arena(buffers, alignment)
    assert len(plan.offsets) == len(buffers)
    for i, (a, offset_a) in enumerate(zip(buffers, plan.offsets)):
        assert offset_a % alignment == 0
        assert offset_a + a.size <= plan.peak_bytes
        for b, offset_b in zip(buffers[i + 1 :], plan.offsets[i + 1 :]):
            if a.overlaps(b) and a.size and b.size:
                assert offset_a + a.size <= offset_b or offset_b + b.size <= offset_a
    assert plan.peak_bytes % alignment == 0
    assert plan.peak_bytes >= max_live_bytes(buffers)
    assert plan.peak_bytes <= sum(align_up(b.size, alignment) for b in buffers)
    assert plan.total_bytes == sum(b.size for b in buffers)


def test_a_chain_reuses_two_slots():
    """x -> a -> b -> c -> d: each step reads one buffer and writes the next."""
    size = 1000
    steps = [[0, 1], [1, 2], [2, 3], [3, 4]]
    buffers = buffers_for_steps([size] * 5, steps, inputs=[0], outputs=[4])
    plan = plan_arena(buffers)
    assert plan.peak_bytes == 2 * align_up(size)
    assert plan.total_bytes == 5 * size


def test_inputs_and_outputs_are_kept():
    """An output written early lives to the end; an input read late lives from the start."""
    buffers = buffers_for_steps([64] * 4, [[0, 1], [1, 2], [2, 3]], inputs=[0], outputs=[1])
    assert buffers[0] == Buffer(64, 0, 0)
    assert buffers[1] == Buffer(64, 0, 2)
    late = buffers_for_steps([64] * 3, [[1, 2], [0, 2]], inputs=[0], outputs=[2])
    assert late[0] == Buffer(64, 0, 1)
    assert late[2] == Buffer(64, 0, 1)


def test_disjoint_lifetimes_share_offset_zero():
    plan = plan_arena([Buffer(100, 0, 1), Buffer(200, 2, 3), Buffer(50, 4, 4)])
    assert plan.offsets == (0, 0, 0)
    assert plan.peak_bytes == ALIGNMENT * 4


def test_the_largest_buffer_goes_first():
    plan = plan_arena([Buffer(10, 0, 0), Buffer(1000, 0, 0)])
    assert plan.offsets == (1024, 0)


def test_empty_plan():
    plan = plan_arena([])
    assert plan.offsets == () and plan.peak_bytes == 0 and plan.total_bytes == 0


def test_bad_buffers_are_rejected():
    with pytest.raises(ValueError, match="negative"):
        Buffer(-1, 0, 0)
    with pytest.raises(ValueError, match="lifetime"):
        Buffer(1, 3, 2)
    with pytest.raises(ValueError, match="power of two"):
        plan_arena([], alignment=48)
    with pytest.raises(ValueError, match="activation 1 is never used"):
        buffers_for_steps([4, 4], [[0]])
    with pytest.raises(ValueError, match="step 0 uses activation 5"):
        buffers_for_steps([4], [[5]])
