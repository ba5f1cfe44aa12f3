"""Tuning in channel blocks (`tconv tune --layout auto`): knobs measured
with the activations stored as `tconv compile --layout auto` stores them,
what they name, which convolutions have them, and that every candidate's
measurement network computes the convolution."""

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from support import relative_error

from tconv.ir.loader import module_text
from tconv.ir.schedule import ActivationLayouts, ConvSchedule
from tconv.search.tuning import (
    UNSCHEDULED,
    WINOGRAD_KNOBS,
    CpuSchedules,
    Knobs,
    Workload,
    candidates,
    conv_network,
    default_blocking,
    describe_knobs,
    direct,
    knobs_of_schedule,
    measured_calls,
    runs_winograd_kernels,
    schedule_of,
    tuned_layouts,
)

LANES = 8
"""An AVX2 CPU's vector (see `avx2_host`)."""

BLOCKS = ActivationLayouts("NCHW8c", "NCHW8c")


@pytest.fixture(autouse=True)
def avx2_host(monkeypatch):
    """Candidates and defaults are those of znver3 (8 lanes), whatever x86 CPU runs the tests."""
    from tconv.lowering.tvm import target

    monkeypatch.setattr(target, "host_cpu", lambda: "znver3")


def workload(channels, out_channels, kernel=3, groups=1, size=10, stride=1) -> Workload:
    pad = kernel // 2
    return Workload((1, channels, size, size), out_channels, (kernel, kernel), (stride, stride), (pad,) * 4, (1, 1),
                    groups)


def test_knobs_for_blocks_name_their_layout_both_ways():
    dense = workload(16, 32)
    knobs = direct(16, 5, layout=LANES)
    schedule = schedule_of(dense, knobs)
    assert schedule.layouts == BLOCKS and schedule.factor("oc") == 16
    assert knobs_of_schedule(dense, schedule) == knobs
    assert knobs.record()["layout"] == LANES and Knobs.from_record(knobs.record()) == knobs
    assert "layout" not in direct(16, 5).record()  # NCHW records read as they did
    assert describe_knobs(knobs) == "16x5 NCHW8c"
    unscheduled = replace(UNSCHEDULED, layout=LANES)  # the backend's default kernel, in blocks
    assert schedule_of(dense, unscheduled) == ConvSchedule(layout=BLOCKS)
    assert knobs_of_schedule(dense, ConvSchedule(layout=BLOCKS)) == unscheduled
    assert Knobs.from_record(unscheduled.record()) == unscheduled
    assert describe_knobs(unscheduled) == "unscheduled NCHW8c"
    for algorithm in ("winograd", "gspc"):
        with pytest.raises(ValueError, match="reads and writes NCHW"):
            Knobs(algorithm, 0, 0, layout=LANES)


def test_which_sides_are_measured_in_blocks():
    assert tuned_layouts(workload(16, 32), LANES) == BLOCKS
    assert tuned_layouts(workload(3, 16), LANES) == ActivationLayouts("NCHW", "NCHW8c")  # a stem
    assert tuned_layouts(workload(16, 12), LANES) == ActivationLayouts("NCHW8c", "NCHW")
    assert tuned_layouts(workload(16, 16, groups=16), LANES) == BLOCKS  # depthwise
    assert tuned_layouts(workload(16, 16, groups=4), LANES) is None  # grouped: NCHW kernels only
    assert tuned_layouts(workload(12, 12), LANES) is None


@pytest.mark.parametrize("shape", [
    dict(channels=16, out_channels=32), dict(channels=3, out_channels=16), dict(channels=16, out_channels=12),
    dict(channels=32, out_channels=64, kernel=1), dict(channels=24, out_channels=24, groups=24),
    dict(channels=16, out_channels=16, kernel=5, groups=16, stride=2),
])
def test_candidates_in_blocks_are_the_kernels_compile_runs(shape):
    """The packed lowering's default first (what an untuned `compile
    --layout auto` runs), Winograd where the CPU has it; every knobs keep
    their layouts; NCHW tuning does not run them."""
    w = workload(**shape)
    space = candidates(w, LANES)
    layouts = tuned_layouts(w, LANES)
    assert space[0] == replace(Knobs.of_blocking(default_blocking(w, layout=LANES)), layout=LANES)
    assert len(set(space)) == len(space) and len(space) > 8
    assert (WINOGRAD_KNOBS in space) == (space[1] == WINOGRAD_KNOBS) == runs_winograd_kernels(w)
    # Winograd: 3×3, ungrouped, whole vectors of output channels
    assert runs_winograd_kernels(w) == (w.kernel == (3, 3) and w.groups == 1 and w.out_channels % LANES == 0)
    in_blocks, nchw = CpuSchedules(2, LANES), CpuSchedules(2)
    for knobs in space:
        assert knobs == WINOGRAD_KNOBS or (knobs.layout == LANES and knobs.algorithm != "gspc")
        assert in_blocks.runs(w, knobs) and (knobs.layout == 0 or not nchw.runs(w, knobs))
        if w.depthwise:
            assert knobs.channels == LANES or not knobs.tiled
        elif knobs.tiled and layouts.output_block:
            assert knobs.channels % LANES == 0 and w.out_channels % knobs.channels == 0
    assert not in_blocks.runs(w, direct(LANES, 4, layout=2 * LANES))  # another block than compile's


def test_grouped_workloads_keep_their_nchw_candidates():
    grouped = workload(16, 16, groups=4)
    assert candidates(grouped, LANES) == candidates(grouped)


@pytest.mark.slow
@settings(max_examples=10, deadline=None)
@given(
    channels=st.sampled_from([3, 8, 16, 24]), out_channels=st.sampled_from([8, 12, 16, 32]),
    kernel=st.sampled_from([1, 3]), stride=st.sampled_from([1, 2]), size=st.integers(4, 11),
    depthwise=st.booleans(), pick=st.integers(0, 10**6),
)
def test_every_candidate_in_blocks_measures_the_convolution(channels, out_channels, kernel, stride, size, depthwise,
                                                            pick):
    """The measurement network of a candidate in blocks (a depthwise 1×1
    convolution packs the input, another reads the output) computes what
    the reference executor does, and the calls measured are the
    convolution's: they read the input and write the output in their
    layouts."""
    from tconv.ir.params import init_params
    from tconv.lowering.tvm.build import TvmNetwork
    from tconv.semantics.reference import run

    if depthwise:
        out_channels = channels
    w = workload(channels, out_channels, kernel, channels if depthwise else 1, size, stride)
    layouts = tuned_layouts(w, LANES)
    assume(layouts is not None)
    space = [k for k in candidates(w, LANES) if k.layout]
    knobs = space[pick % len(space)]
    module = conv_network(w, knobs)
    network = TvmNetwork(module)
    params = init_params(module, seed=1)
    network.load_params(params)
    x = np.random.default_rng(pick).standard_normal(w.input, dtype=np.float32)
    (got,) = network.run(x)
    (want,) = run(module, params, x)
    assert relative_error(got, want) < 1e-5, knobs
    program = network.program
    (call,) = measured_calls(program.calls, knobs, w)
    assert len(program.calls) == 1 + bool(layouts.input_block) + bool(layouts.output_block)
    out_shape = (1, out_channels, w.out_height, w.out_width)
    if layouts.output_block:
        out_shape = (1, out_channels // LANES, w.out_height, w.out_width, LANES)
    assert program.tensors[call.writes].shape == out_shape
    assert (len(program.tensors[call.reads[0]].shape) == 5) == bool(layouts.input_block)


@pytest.mark.slow
def test_tune_in_blocks_write_and_compile(tmp_path, capsys):
    """`tconv tune` (--layout auto by default) measures a network that can
    be packed in blocks and records the layout with the knobs; `--write`
    gives the IR the knobs and the layouts; the compiled IR computes what
    the reference executor does; `--layout nchw` measures NCHW kernels."""
    from support import tconv

    from tconv.ir.builder import NetworkBuilder
    from tconv.ir.loader import load_module
    from tconv.ir.params import init_params, save_store, store_path_for
    from tconv.runtime.driver import Runtime
    from tconv.semantics.reference import run

    b = NetworkBuilder("inverted", (1, 8, 12, 12))
    x = b.relu(b.conv2d(b.input, 16, 1, name="expand"))
    x = b.relu(b.conv2d(x, 16, 3, padding=1, groups=16, name="dw"))
    module = b.finish(b.conv2d(x, 8, 1, name="project"))
    params = init_params(module, seed=2)
    ir, written, db = tmp_path / "net.mlir", tmp_path / "tuned.mlir", tmp_path / "db.jsonl"
    for path in (ir, written):
        path.write_text(module_text(module))
        save_store(store_path_for(path), params)
    status, out, err = tconv(capsys, "tune", ir, "--budget", "3", "--db", db, "--threads", "2", "--write", written)
    assert status == 0, err
    records = [json.loads(line) for line in db.read_text().splitlines()]
    assert records and all(r["layout"] == LANES for r in records)  # every candidate in blocks (no Winograd here)
    assert "NCHW8c" in out and "wrote" in out
    text = written.read_text()
    assert 'output = "NCHW8c"' in text and 'input = "NCHW8c"' in text
    status, out, err = tconv(capsys, "compile", written, "--no-tuning", "-o", tmp_path / "art")
    assert status == 0, err
    image = np.random.default_rng(0).standard_normal((1, 8, 12, 12), dtype=np.float32)
    with Runtime(tmp_path / "art", threads=2) as runtime:
        (got,) = runtime.run(image)
    (want,) = run(load_module(ir), params, image)
    assert relative_error(got, want) < 1e-5

    status, out, err = tconv(capsys, "tune", ir, "--budget", "2", "--db", db, "--threads", "2", "--layout", "nchw")
    assert status == 0, err
    added = [json.loads(line) for line in db.read_text().splitlines()][len(records):]
    assert added and all("layout" not in r for r in added)
