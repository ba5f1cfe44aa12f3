"""bench/suite.py end to end on its smallest case: the benchmark stays
runnable, tunes into the database it is given and applies it (its timings
are not checked: tests never assert speed)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from tconv.search.tuning import TuningDatabase, target_key, tunable_convs, workload_of

SUITE = Path(__file__).parents[2] / "bench" / "suite.py"


def test_the_suite_tunes_applies_and_writes_its_table(tmp_path):
    db, out = tmp_path / "db.jsonl", tmp_path / "bench.md"
    case = "CIFAR 64ch 32² 3×3 g4"
    result = subprocess.run(
        [sys.executable, str(SUITE), "--kernels", "--only", case, "--threads", "1", "--rounds", "2",
         "--peak-size", "512", "--tuning", str(db), "--tune", "2", "-o", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    table = out.read_text()
    assert f"tconv schedules from {db}, tuned 2 s per case" in table
    assert "peak: FMA loop " in table and "512² sgemm in torch: " in table
    (row,) = [line for line in table.splitlines() if line.startswith(f"| {case} |")]
    (header,) = [line for line in table.splitlines() if line.startswith("| case |")]
    cells = dict(zip(
        (cell.strip() for cell in header.strip("|").split("|")), (cell.strip() for cell in row.strip("|").split("|"))
    ))
    assert cells["threads"] == "1" and "TVM default GFLOP/s" in cells  # TVM's own build, checked against tconv's output
    spread = "its quartiles over rounds"
    assert cells["fastest peer"] in ("PyTorch", "ORT", "OpenVINO")
    assert cells["torch.compile GFLOP/s"] == "-"  # only with --torch-compile
    numbers = {key: value for key, value in cells.items() if key not in ("case", "threads", spread, "fastest peer")}
    assert all(float(value.rstrip("%")) > 0 for key, value in numbers.items() if value != "-"), numbers
    low, high = map(float, cells[spread].split("–"))
    assert 0 < low <= float(cells["tconv vs it"]) <= high
    sys.path.insert(0, str(SUITE.parent))
    from suite import KERNELS, conv_network

    (conv,) = tunable_convs(conv_network(*KERNELS[case]))
    assert TuningDatabase(db).measured(workload_of(conv), target_key(1))


def test_ratios_compare_with_the_fastest_peer_and_with_tvm_apart():
    """The targets are against the fastest of what a user would otherwise run
    (PyTorch, ONNX Runtime, OpenVINO, torch.compile, those measured): a faster
    TVM default does not lower that ratio; it has its own column."""
    sys.path.insert(0, str(SUITE.parent))
    from suite import Row

    row = Row("case", 2, 1.0, {"tconv": [1.0], "PyTorch": [2.0], "ORT": [3.0], "TVM default": [0.5]}, 4.0)
    assert row.ratio("PyTorch", "ORT") == 2.0 and row.ratio("TVM default") == 0.5
    assert row.markdown().endswith("| 1.0 | 0.5 | 0.3 | - | - | 2.0 | PyTorch | 2.00 | - | 0.50 | 25% |")
    row = Row("case", 2, 1.0, {"tconv": [1.0], "PyTorch": [2.0], "ORT": [3.0], "OpenVINO": [0.8]}, 4.0)
    assert row.fastest_peer() == "OpenVINO"
    assert row.markdown().endswith("| OpenVINO | 0.80 | - | - | 25% |")


def test_a_ratio_is_the_median_of_the_ratios_within_rounds():
    """In two rounds of three, tconv is twice as fast as the faster peer; the
    medians of each alone (2.0 s against 2.0 s) would say 1.0."""
    sys.path.insert(0, str(SUITE.parent))
    from suite import Row

    row = Row("case", 2, 1.0, {"tconv": [1.0, 2.0, 2.0], "PyTorch": [9.0, 9.0, 9.0], "ORT": [2.0, 2.0, 4.0]}, 4.0)
    assert row.seconds == {"tconv": 2.0, "PyTorch": 9.0, "ORT": 2.0}
    assert row.ratio("PyTorch", "ORT") == 2.0
    assert row.round_ratios("PyTorch", "ORT") == [2.0, 1.0, 2.0]
    assert row.spread("PyTorch", "ORT") == "1.50–2.00"


def test_the_fma_loop_computes_its_chains_and_measures_a_rate():
    """The peak's loop is the code it claims to be: 12 chains of
    acc = acc * a + b from acc = b, on vectors as wide as the host's."""
    sys.path.insert(0, str(SUITE.parent))
    from fma_peak import ACCUMULATORS, _compiled, fma_peak, vector_width

    assert vector_width("+sse2,+avx,+avx2,-avx512f") == 8 and vector_width("+avx512f,+avx") == 16
    assert vector_width("+sse2,-avx") == 4
    _, loop, flops_per_iteration = _compiled()
    assert loop(1, 0.5, 1.0) == ACCUMULATORS * 1.5 and loop(2, 0.5, 1.0) == ACCUMULATORS * 1.75
    assert flops_per_iteration in (2 * 4 * ACCUMULATORS, 2 * 8 * ACCUMULATORS, 2 * 16 * ACCUMULATORS)
    assert fma_peak(1, seconds=0.002, rounds=1, pause_s=0.0) > 0


def test_the_zoo_survey_runs_each_convolution_as_compiled_and_checks_it_against_onnx_runtime():
    """bench/zoo_convs.py's pieces on WRN-40-2: every convolution counted
    once per occurrence; a direct layer measured in channel blocks (between
    its packing convolutions, not timed), a Winograd one in NCHW, a 1×1 on
    a small image unscheduled (the pointwise kernel, as compiled), each run
    and compared with ONNX Runtime's output (`runners` refuses a mismatch),
    then ONNX Runtime ready to time the Conv alone."""
    sys.path.insert(0, str(SUITE.parent))
    import zoo_convs

    from tconv.frontends.zoo import build
    from tconv.ir.ops import Conv2dOp
    from tconv.kernels.algorithm import WINOGRAD
    from tconv.search.tuning import UNSCHEDULED, WINOGRAD_KNOBS, cpu_unit

    counts, origin = zoo_convs.zoo_workloads(["wrn40_2"])
    assert sum(counts.values()) == sum(isinstance(op, Conv2dOp) for op in build("wrn40_2").walk())
    assert set(origin.values()) == {"wrn40_2"}
    direct = next(w for w in counts if w.kernel == (1, 1) and w.input[1] % cpu_unit().lanes == 0)
    knobs, chosen = zoo_convs.compiled_knobs(direct, layout=True)
    assert knobs.layout == cpu_unit().lanes and chosen.startswith("direct")
    winograd = next(w for w in counts if zoo_convs.compiled_knobs(w, layout=True)[0] == WINOGRAD_KNOBS)
    assert zoo_convs.compiled_knobs(winograd, layout=True)[1] == WINOGRAD
    # A 1×1 on a small image runs the pointwise kernel, which no schedule asks for.
    pointwise = next(w for w in zoo_convs.zoo_workloads(["mobilenet_v1"])[0] if w.key.startswith(
        "conv2d n1 c512 h14 w14 o512 k1x1"))
    knobs, chosen = zoo_convs.compiled_knobs(pointwise, layout=True)
    assert knobs == replace(UNSCHEDULED, layout=cpu_unit().lanes) and chosen.startswith("unscheduled")
    for workload in (direct, winograd, pointwise):
        run, ort = zoo_convs.runners(workload, zoo_convs.compiled_knobs(workload, layout=True)[0], threads=1)
        run()
        ort()
        assert ort.output.shape == (1, workload.out_channels, workload.out_height, workload.out_width)
