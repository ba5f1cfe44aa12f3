"""The search of `tconv optimize` on a small residual network, with a
deterministic stand-in for the device (latency = FLOPs / a speed that
falls with the group count), so that what the search must choose is known.
Real measurement is tested in tests/integration/test_optimize_cli.py."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import small_resnet

from tconv.ir.loader import verify_module
from tconv.ir.ops import Conv2dOp, shape_of
from tconv.ir.params import init_params
from tconv.passes.analyses.summary import summarize
from tconv.passes.select import layer_name
from tconv.search.latency import LayerLatencies
from tconv.search.optimize import Candidate, OptimizeOptions, Search
from tconv.search.pruning import (
    PrunableLayer,
    candidate_counts,
    choose_counts,
    prunable_layers,
    pruning_study,
    uniform_count,
)
from tconv.search.report import build_report, layer_rows, markdown
from tconv.search.space import DEFAULT_REWRITES, Rewrite, apply_assignment, conv_layers, eligible_layers, origin_of
from tconv.search.tuning import CONFIRM, CONFIRM_PASSES, SPARSE_KNOBS, TuningDatabase, Workload, candidates, workload_of
from tconv.semantics.reference import run


class FakeDevice:
    """Seconds = FLOPs / speed, where grouped convolutions run slower per
    FLOP (as on real CPUs); the knobs (block, tile) scale the time by a
    smooth factor, so tuning has something to find."""

    target_key = "fake"

    def __init__(self) -> None:
        self.seen = []

    def measure(self, workload, knobs) -> float:
        self.seen.append((workload, knobs))
        speed = 1e11 / (1 + 0.15 * math.log2(workload.groups))
        block, tile = knobs.channels, knobs.columns
        return workload.flops / speed * (1 + 0.05 * abs(block - 8) + 0.02 * abs(tile - 4))


def search(tmp_path, options: OptimizeOptions, module=None):
    module = module or small_resnet()
    latencies = LayerLatencies(TuningDatabase(tmp_path / "db.jsonl"), FakeDevice())
    return Search(module, init_params(module), latencies, options), latencies


OPTIONS = OptimizeOptions(budget_s=120, seeds=(0, 1), capacity_batch=16, measure_networks=False)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One search of the small network: (search, latencies, result)."""
    s, latencies = search(tmp_path_factory.mktemp("search"), OPTIONS)
    return s, latencies, s.run()


def test_rewrite_spec_and_label():
    rewrite = Rewrite("tconv-group", (("groups", 4),))
    assert rewrite.label == "group 4"
    assert rewrite.spec(["a", "b.c"]) == 'tconv-group{groups=4 layers="a,b.c"}'


def test_apply_assignment_rewrites_only_the_assigned_layers():
    module = small_resnet()
    params = init_params(module)
    group4 = Rewrite("tconv-group", (("groups", 4),))
    realised = apply_assignment(module, params, {"layer1.0.conv2": group4})
    verify_module(realised.module)
    assert list(realised.applied) == ["layer1.0.conv2"]
    assert summarize(realised.module).parameters == summarize(module).parameters - 32 * 32 * 9 * 3 // 4
    # Untouched layers keep their values; the input is not changed.
    assert np.array_equal(realised.params["layer1.1.conv1.weight"], params["layer1.1.conv1.weight"])
    assert conv_layers(module) == ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2"]
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    (logits,) = run(realised.module, realised.params, x)
    assert logits.shape == (1, 10)


def test_a_rewrite_the_pass_refuses_is_skipped_with_its_reason():
    module = small_resnet()
    group64 = Rewrite("tconv-group", (("groups", 64),))  # 32 channels cannot be grouped by 64
    realised = apply_assignment(module, {}, {"layer1.0.conv1": group64})
    assert realised.applied == {}
    assert "layer1.0.conv1" in realised.skipped and "64" in realised.skipped["layer1.0.conv1"]


def test_a_bottleneck_with_a_grouped_middle_is_one_rewrite():
    module = small_resnet()
    b2g4 = Rewrite("tconv-bottleneck-block", (("factor", 2),), Rewrite("tconv-group", (("groups", 4),)))
    assert b2g4.label == "bottleneck-block 2, middle group 4"
    assert b2g4.spec(["a"]) == 'tconv-bottleneck-block{factor=2 layers="a"},tconv-group{groups=4 layers="a_mid"}'
    realised = apply_assignment(module, init_params(module), {"layer1.0.conv2": b2g4})
    verify_module(realised.module)
    assert realised.applied == {"layer1.0.conv2": b2g4}
    convs = {layer_name(op): op for op in realised.module.walk() if isinstance(op, Conv2dOp)}
    middle = [op for name, op in convs.items() if name.startswith("layer1.0.conv2_mid")]
    assert len(middle) == 1 and middle[0].groups.value.data == 4
    # 32 -> 16 (1x1), 16 -> 16 in 4 groups (3x3), 16 -> 32 (1x1), instead of 32 -> 32 (3x3).
    saved = 32 * 32 * 9 - (16 * 32 + 16 * 4 * 9 + 32 * 16)
    assert summarize(realised.module).parameters == summarize(module).parameters - saved
    assert all(origin_of(name, conv_layers(module)) == "layer1.0.conv2" for name in convs if "conv2_" in name)


def test_a_composed_rewrite_refused_half_way_leaves_the_layer_as_it_was():
    module = small_resnet()
    # The bottleneck applies (32 -> 16 wide); its 16-channel middle cannot be grouped by 64.
    b2g64 = Rewrite("tconv-bottleneck-block", (("factor", 2),), Rewrite("tconv-group", (("groups", 64),)))
    group4 = Rewrite("tconv-group", (("groups", 4),))
    realised = apply_assignment(module, {}, {"layer1.0.conv1": group4, "layer1.0.conv2": b2g64})
    assert realised.applied == {"layer1.0.conv1": group4}
    assert "64" in realised.skipped["layer1.0.conv2"]
    assert "layer1.0.conv2" in conv_layers(realised.module)
    assert not any("_mid" in name for name in conv_layers(realised.module))


def test_eligible_layers_and_origins():
    module = small_resnet()
    group8 = Rewrite("tconv-group", (("groups", 8),))
    assert eligible_layers(module, group8) == conv_layers(module)[1:]  # the stem has 3 input channels
    layers = conv_layers(module)
    assert origin_of("layer1.0.conv1_g8", layers) == "layer1.0.conv1"
    assert origin_of("layer1.0.conv1", layers) == "layer1.0.conv1"
    assert origin_of("conv1_dw", layers) == "conv1"
    assert origin_of("linear", layers) is None


def test_search_picks_a_faster_legal_network(searched):
    _, _, result = searched
    assert result.best is not result.original
    assert result.best.accepted and result.best.comparison is not None
    assert result.best.conv_seconds < result.original.conv_seconds
    # Every candidate with a capacity verdict was compared on the original's seeds.
    for candidate in result.candidates:
        if candidate.comparison is not None:
            assert candidate.comparison.before.seeds == (0, 1)
    # No illegal network is ever the answer, and the answer is the fastest accepted one.
    accepted = [c for c in result.candidates if c.comparison is not None and c.accepted]
    assert result.best.conv_seconds <= min(c.conv_seconds for c in accepted) + 1e-12
    verify_module(result.best.realised.module)


class SlowFirstTimer:
    """Whole networks take their convolutions' estimate, except that the
    first finalist it is shown (the best estimate) pays a large overhead,
    as a rewrite that adds many kernels would."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, candidates) -> list[float]:
        self.calls.append([c.label for c in candidates])
        seconds = [c.conv_seconds for c in candidates]
        if len(candidates) > 1:
            seconds[1] += 10 * candidates[0].conv_seconds
        return seconds


def test_confirmation_times_the_finalists_and_takes_the_fastest(searched):
    s, _, result = searched
    # Three more accepted networks (as mixing and infiltration leave behind on
    # real networks); the best estimate is slow whole.
    best = result.best
    others = sorted((c for c in result.candidates if c is not best and c is not result.original),
                    key=lambda c: c.conv_seconds)
    saved = [(c, c.accepted, c.measured_seconds) for c in result.candidates], list(s.notes)
    for candidate in others[:3]:
        candidate.accepted = True
    near = others[:2]  # the finalists with `best`: the next two estimates
    timer = SlowFirstTimer()
    s.network_timer = timer
    s.options = OptimizeOptions(**{**OPTIONS.__dict__, "measure_networks": True, "finalists": 3})
    try:
        chosen = s.confirm(result.original, best)
        notes = list(s.notes)
        faster = chosen.measured_seconds < best.measured_seconds
    finally:  # the search is the module's fixture: leave it as it was
        s.network_timer, s.options = None, OPTIONS
        for candidate, accepted, measured in saved[0]:
            candidate.accepted, candidate.measured_seconds = accepted, measured
        s.notes[:] = saved[1]
    (call,) = timer.calls
    assert call[:2] == ["original", best.label] and sorted(call[2:]) == sorted(c.label for c in near)
    assert chosen in near and faster
    assert any("beat the best estimate" in note for note in notes)


def test_nothing_is_legal_at_an_unreachable_min_capacity(tmp_path):
    s, _ = search(tmp_path, OptimizeOptions(**{**OPTIONS.__dict__, "min_capacity": 2.0}))
    result = s.run()
    assert result.best is result.original
    assert all(not c.accepted for c in result.candidates if c.comparison is not None)
    assert any("every faster rewrite lost capacity" in note and "--min-capacity 2" in note for note in result.notes)


def test_a_tiny_budget_still_answers(tmp_path):
    s, _ = search(tmp_path, OptimizeOptions(**{**OPTIONS.__dict__, "budget_s": 1e-3}))
    result = s.run()
    assert result.best is result.original
    # The report says why: the budget, not the rewrites.
    assert any("budget ran out" in note and "larger --budget" in note for note in result.notes), result.notes


def test_tuning_uses_the_cost_model_and_finds_better_knobs(searched):
    _, latencies, result = searched
    # The fake device runs fastest at block 8, tile 4, or as near as this
    # CPU's vector width lets the candidates come; after tuning, some of the
    # chosen network's workloads have found their fastest candidate.
    device = FakeDevice()
    found = []
    for row in latencies.convs(result.best.realised.module):
        knobs, _ = latencies.database.best(row.workload, "fake")
        fastest = min(candidates(row.workload), key=lambda k: device.measure(row.workload, k))
        found.append(device.measure(row.workload, knobs) == device.measure(row.workload, fastest))
    assert any(found)
    assert result.measurements > len({row.workload.key for row in latencies.convs(result.best.realised.module)})


def test_resumes_from_the_database(tmp_path):
    first, first_latencies = search(tmp_path, OPTIONS)
    first.run()
    second, second_latencies = search(tmp_path, OPTIONS)
    second.run()
    # The second run starts from the first's records: of what the first measured it
    # re-measures only each workload's CONFIRM leaders, in one side-by-side round.
    first_pairs = [(w.key, k) for w, k in first_latencies.measurer.seen]
    second_pairs = [(w.key, k) for w, k in second_latencies.measurer.seen]
    assert first_pairs and len(first_pairs) == len(set(first_pairs))
    again = [pair for pair in second_pairs if pair in set(first_pairs)]
    assert again and all(again.count(pair) == CONFIRM_PASSES for pair in again)
    assert all(second_pairs.count(pair) == 1 for pair in second_pairs if pair not in again)
    for key in {key for key, _ in again}:
        (workload,) = {w for w, _ in first_latencies.measurer.seen if w.key == key}
        measured = first_latencies.database.measured(workload, "fake")
        assert {k for k2, k in again if k2 == key} <= set(sorted(measured, key=measured.get)[:CONFIRM])


class DistinctDevice(FakeDevice):
    """FakeDevice with no two candidates of a workload equally fast."""

    def measure(self, workload, knobs) -> float:
        order = candidates(workload).index(knobs)
        return super().measure(workload, knobs) * (1 + 1e-4 * order / len(candidates(workload)))


def test_a_stale_record_is_re_measured(tmp_path):
    """A record of an earlier run left too slow (a loaded moment) hides
    the best knobs of the network's heaviest convolution until re-measured."""
    module = small_resnet()
    latencies = LayerLatencies(TuningDatabase(tmp_path / "first.jsonl"), DistinctDevice())
    result = Search(module, init_params(module), latencies, OPTIONS).run()
    rows = latencies.convs(result.best.realised.module)
    heaviest = max(rows, key=lambda row: row.seconds).workload
    best_knobs, best_seconds = latencies.database.best(heaviest, "fake")
    runner_up = sorted(latencies.database.measured(heaviest, "fake").values())[1]
    stale = TuningDatabase(tmp_path / "stale.jsonl")
    for (key, target), measured in latencies.database.records.items():
        for knobs, seconds in measured.items():
            slow = key == heaviest.key and knobs == best_knobs
            stale.records.setdefault((key, target), {})[knobs] = 1.00001 * runner_up if slow else seconds
    ranked = sorted(stale.measured(heaviest, "fake"), key=stale.measured(heaviest, "fake").get)
    assert ranked[0] != best_knobs and best_knobs in ranked[:CONFIRM]
    again = LayerLatencies(stale, DistinctDevice())
    Search(small_resnet(), init_params(small_resnet()), again, OPTIONS).run()
    assert stale.measured(heaviest, "fake")[best_knobs] == best_seconds
    assert stale.best(heaviest, "fake")[1] <= best_seconds


def test_report_tables(searched):
    s, latencies, result = searched
    module = s.module
    rows = layer_rows(result, latencies, conv_layers(module))
    assert [row.layer for row in rows] == conv_layers(module)
    assert any(row.rewrite != "-" for row in rows)
    report = build_report(result, rows, {"network": "small", "target": "fake", "budget_seconds": 120.0,
                                         "min_capacity": 1.0, "threads": 1, "ort_original_ms": None})
    text = markdown(report)
    assert "| layer | rewrite |" in text and "## Candidates" in text
    assert report["optimized"]["verdict"] in ("legal", "within noise")
    # Only the original is "original"; candidates the search did not check say so.
    verdicts = [c["verdict"] for c in report["candidates"]]
    assert verdicts[0] == "original" and "original" not in verdicts[1:]
    assert all((c["capacity_ratio"] is None) == (c["verdict"] == "not checked") for c in report["candidates"][1:])


@pytest.mark.parametrize("rewrite", DEFAULT_REWRITES, ids=lambda r: r.label)
def test_every_default_rewrite_applies_to_the_small_network(rewrite):
    module = small_resnet()
    layers = eligible_layers(module, rewrite)
    assert layers
    realised = apply_assignment(module, {}, dict.fromkeys(layers, rewrite))
    verify_module(realised.module)
    if rewrite.pass_name == "tconv-spatial-strip":
        # Strips keep the work (each output row is computed once) and add weights.
        assert summarize(realised.module).flops == summarize(module).flops
        assert summarize(realised.module).parameters > summarize(module).parameters
    else:
        assert summarize(realised.module).flops < summarize(module).flops


class VectorFriendlyDevice(FakeDevice):
    """Channel counts that are not whole 8-lane vectors run 1.5 times slower."""

    def measure(self, workload, knobs) -> float:
        ragged = workload.out_channels % 8 or workload.input[1] % 8
        return super().measure(workload, knobs) * (1.5 if ragged else 1.0)


def test_performance_aware_pruning_prefers_whole_vectors(tmp_path):
    module = small_resnet()
    latencies = LayerLatencies(TuningDatabase(tmp_path / "db.jsonl"), VectorFriendlyDevice())
    layers = prunable_layers(module, 0.3)
    # Each block's conv1 (its output does not reach the residual add), read by conv2.
    assert [layer.name for layer in layers] == ["layer1.0.conv1", "layer1.1.conv1"]
    assert all(layer.consumer is not None for layer in layers)
    assert candidate_counts(layers[0], 0.3) == [8, 10, 12]
    uniform, aware = choose_counts(layers, 0.3, latencies)
    assert uniform.counts == {"layer1.0.conv1": 10, "layer1.1.conv1": 10}
    # At the same parameter count, one layer takes whole vectors and the other pays for it.
    assert sorted(aware.counts.values()) == [8, 12]
    assert aware.parameters == uniform.parameters and aware.seconds < uniform.seconds


class TableLatencies:
    """`LayerLatencies.best` from a table: seconds per (layer width, output channels)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def best(self, workload):
        return None, self.seconds[workload.input[1], workload.out_channels]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_performance_aware_pruning_is_the_fastest_choice_at_the_same_size(data):
    """Against brute force over every combination of counts: the answer lies
    within the ±tolerance band around uniform's parameters, and no
    combination comfortably inside the band (3/4 of it; the buckets may
    cost the rest) is faster."""
    widths = data.draw(st.lists(st.sampled_from([16, 24, 32, 48]), min_size=1, max_size=4))
    layers = [
        PrunableLayer(f"l{i}", Workload((1, width, 8, 8), 8 * width, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
                      None, data.draw(st.integers(50, 5000)))
        for i, width in enumerate(widths)
    ]
    ratio = data.draw(st.sampled_from([0.25, 0.5, 0.75]))
    seconds = {}
    for layer in layers:
        for count in candidate_counts(layer, ratio):
            seconds[layer.conv.input[1], count] = data.draw(st.floats(0.1, 10.0))
    tolerance = 0.02
    uniform, aware = choose_counts(layers, ratio, TableLatencies(seconds), tolerance)

    assert uniform.counts == {layer.name: uniform_count(layer, ratio) for layer in layers}
    assert abs(aware.parameters - uniform.parameters) <= tolerance * uniform.parameters
    assert aware.parameters == sum(aware.counts[l.name] * l.weights_per_channel for l in layers)
    assert aware.seconds == pytest.approx(sum(seconds[l.conv.input[1], aware.counts[l.name]] for l in layers))
    assert aware.seconds <= uniform.seconds
    for combination in itertools.product(*(candidate_counts(layer, ratio) for layer in layers)):
        size = sum(c * l.weights_per_channel for c, l in zip(combination, layers))
        if abs(size - uniform.parameters) <= 0.75 * tolerance * uniform.parameters:
            total = sum(seconds[l.conv.input[1], c] for c, l in zip(combination, layers))
            assert aware.seconds <= total + 1e-9


def test_pruning_study_builds_and_checks_both_networks(tmp_path):
    module = small_resnet()
    latencies = LayerLatencies(TuningDatabase(tmp_path / "db.jsonl"), VectorFriendlyDevice())
    s = Search(module, init_params(module), latencies, OPTIONS)
    s.run()
    study = pruning_study(s, 0.3)
    uniform, aware = study.networks
    for network, count in ((uniform, 10), (aware, study.aware.counts["layer1.0.conv1"])):
        verify_module(network.realised.module)
        assert network.comparison is not None and network.accepted is not None
        widths = [shape_of(op.output)[1] for op in network.realised.module.walk()
                  if isinstance(op, Conv2dOp) and layer_name(op).startswith("layer1.0.conv1")]
        assert widths == [count]


# Accuracy (--data) --------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_small(tmp_path_factory):
    """The small network trained on digits for two epochs: (module, params, data)."""
    from tconv.train.data import load_dataset
    from tconv.train.engine import train_network
    from tconv.train.loop import TrainConfig

    module = small_resnet()
    data = load_dataset("digits", (1, 3, 8, 8), 10)
    trained = train_network(module, init_params(module), data, TrainConfig(epochs=2, lr=0.1), None, "cpu",
                            progress=False, log=False)
    return module, trained.params, data


class FakeTimer:
    """Networks take their estimate (`int8_speedup` times less per compression move);
    accuracy is the reference executor's, on the QDQ semantics for int8."""

    def __init__(self, int8_speedup: float = 2.0) -> None:
        self.int8_speedup = int8_speedup

    def __call__(self, candidates):
        def moves(c) -> int:  # each compression move makes a network this much faster
            return 0 if c.move is None else 1 + moves(c.source)

        return [c.conv_seconds / self.int8_speedup ** moves(c) for c in candidates]

    def accuracy(self, candidate, data) -> float:
        from tconv.search.network_timer import classified_share

        realised = candidate.realised
        return classified_share(lambda x: run(realised.module, realised.params, x), 1, data)


def accuracy_search(tmp_path, trained_small, max_drop: float, distill=None, quantize=None, timer=None,
                    sparsify=None):
    return accuracy_searcher(tmp_path, trained_small, max_drop, distill, quantize, timer, sparsify).run()


def accuracy_searcher(tmp_path, trained_small, max_drop: float, distill=None, quantize=None, timer=None,
                      sparsify=None) -> Search:
    from tconv.search.accuracy import AccuracyCheck

    module, params, data = trained_small
    # Two epochs each, the budget only a bound: a busy machine must not starve the fine-tuning.
    check = AccuracyCheck(data, max_drop, train_budget_s=120, max_epochs=2, device="cpu", distill=distill)
    options = OptimizeOptions(**{**OPTIONS.__dict__, "measure_networks": True, "accuracy": check,
                                 "quantize": quantize, "sparsify": sparsify})
    latencies = LayerLatencies(TuningDatabase(tmp_path / "db.jsonl"), FakeDevice())
    return Search(module, params, latencies, options, network_timer=timer or FakeTimer(),
                  provenance={"weights": "trained"})


def test_with_data_the_answer_is_fine_tuned_and_within_the_accuracy_drop(tmp_path, trained_small):
    result = accuracy_search(tmp_path, trained_small, max_drop=0.5)
    original, best = result.original, result.best
    assert original.accuracy > 0.3  # trained: chance is 0.1
    assert best is not original and best.fine_tune_epochs >= 1
    assert best.accuracy >= original.accuracy - 0.5
    # The answer's weights are the fine-tuned ones: they give the accuracy the search reports.
    from tconv.search.accuracy import validation_accuracy

    assert validation_accuracy(best.realised.module, best.realised.params, trained_small[2]) == best.accuracy
    report = build_report(result, [], {"network": "small", "target": "fake", "budget_seconds": 120,
                                       "min_capacity": 1.0, "max_accuracy_drop": 0.5, "weights": "fine-tuned",
                                       "accuracy_data": "digits"})
    text = markdown(report)
    assert "| validation accuracy (%) |" in text and "## Accuracy" in text


def test_with_data_no_finalist_within_the_drop_leaves_the_original(tmp_path, trained_small):
    result = accuracy_search(tmp_path, trained_small, max_drop=-1.0)  # would need 100 points more
    assert result.best is result.original
    assert any("no finalist kept validation accuracy" in note for note in result.notes)
    tuned = [c for c in result.candidates if c.fine_tune_epochs is not None]
    assert tuned and all(c.accuracy_before is not None for c in tuned)


def test_with_data_and_distillation_the_finalists_learn_from_the_original(tmp_path, trained_small, monkeypatch):
    from tconv.search import accuracy
    from tconv.train.distill import Distillation, DistillConfig

    objectives = []
    real = accuracy.objective_for
    monkeypatch.setattr(accuracy, "objective_for", lambda *a: objectives.append(real(*a)) or objectives[-1])
    result = accuracy_search(tmp_path, trained_small, max_drop=0.5, distill=DistillConfig())
    assert objectives and all(isinstance(o, Distillation) for o in objectives)
    # The small network's stages (8x8) match between the original and every rewrite of it.
    assert all(o.points for o in objectives)
    assert result.best.fine_tune_epochs >= 1



@pytest.fixture(scope="module")
def compressed(tmp_path_factory, trained_small):
    """One search with both compression moves: (the search, its result)."""
    from tconv.search.quantize_move import QuantizeMove

    search = accuracy_searcher(tmp_path_factory.mktemp("moves"), trained_small, max_drop=0.5, sparsify=0.3,
                               quantize=QuantizeMove(16))
    return search, search.run()


def test_with_sparsify_and_quantize_the_answer_is_pruned_fine_tuned_then_quantised(compressed):
    search, result = compressed
    best = result.best
    # Both moves were taken (each measured faster, and the small network keeps its accuracy):
    # int8 of the sparse network of the fine-tuned finalist.
    assert best.move == "int8" and best.source.move == "sparse", result.notes
    sparse, tuned = best.source, best.source.source
    assert tuned.move is None and tuned.fine_tune_epochs >= 1 and tuned is not result.original
    assert sparse.fine_tune_epochs >= 1 and sparse.accuracy >= result.original.accuracy - 0.5
    for op in sparse.realised.module.walk():
        if isinstance(op, Conv2dOp):
            weight = sparse.realised.params[op.weight.owner.param_name]
            rows = (weight != 0).reshape(len(weight), -1).sum(axis=1)
            assert op.weight_nonzeros == math.ceil(0.3 * weight[0].size) and rows.max() <= op.weight_nonzeros
            # Each pruned layer's sparse kernel was measured against its dense default.
            measured = search.latencies.database.measured(workload_of(op), search.latencies.target)
            assert SPARSE_KNOBS in measured and len(measured) >= 2
    # The int8 form keeps the sparse network's weights and adds QDQ pairs; its accuracy is its own.
    from tconv.ir.ops import QuantizeOp

    assert best.realised.params is sparse.realised.params
    assert any(isinstance(op, QuantizeOp) for op in best.realised.module.walk())
    assert best.accuracy >= result.original.accuracy - 0.5 and best.measured_seconds < sparse.measured_seconds


def test_the_report_shows_each_compression_beside_its_source(tmp_path, compressed):
    from tconv.search.quantize_move import QuantizeMove

    search, result = compressed
    best, sparse = result.best, result.best.source
    report = build_report(result, [], {"network": "small", "target": "fake", "budget_seconds": 120,
                                       "min_capacity": 1.0, "max_accuracy_drop": 0.5, "weights": "fine-tuned",
                                       "accuracy_data": "digits", "int8": QuantizeMove(16).describe()})
    optimized = report["optimized"]
    assert optimized["move"] == "int8" and optimized["source"] == sparse.label and optimized["estimated_ms"] is None
    sparse_row = next(c for c in report["candidates"] if c["label"] == sparse.label)
    assert optimized["capacity_ratio"] == sparse_row["capacity_ratio"] is not None
    assert optimized["parameter_bytes"] < sparse_row["parameter_bytes"] / 2  # int8 weights; biases stay f32
    assert [c["label"] for c in report["candidates"] if c["move"]] == [sparse.label, best.label]
    text = markdown(report)
    assert "## Compression" in text and "| sparse | " in text and "| int8 | " in text
    assert "The answer is the int8 network." in text
    # Per-layer rows describe the network int8 quantised (Fisher potential is not defined through QDQ ops).
    latencies = LayerLatencies(TuningDatabase(tmp_path / "db.jsonl"), FakeDevice())
    rows = layer_rows(result, latencies, conv_layers(result.original.realised.module))
    assert [row.rewrite for row in rows] == [
        sparse.assignment[row.layer].label if row.layer in sparse.assignment else "-" for row in rows
    ]


def test_a_compressed_form_that_loses_accuracy_or_is_slower_is_not_taken(compressed):
    search, result = compressed
    search.candidates = list(search.candidates)  # the fixture's result stays as it was
    tuned = result.best.source.source

    class Inaccurate(FakeTimer):
        def accuracy(self, candidate, data) -> float:
            return 0.0 if candidate.move else super().accuracy(candidate, data)

    search.network_timer = Inaccurate()
    assert search.quantize(result.original, tuned) is tuned
    assert "int8 lost more than" in search.notes[-1], search.notes
    search.network_timer = FakeTimer(0.5)  # compressed networks twice as slow
    assert search.quantize(result.original, tuned) is tuned
    assert "int8 measured" in search.notes[-1] and "not faster than" in search.notes[-1], search.notes


def test_the_network_timer_builds_again_only_what_changed(tmp_path, monkeypatch):
    from tconv.search import network_timer
    from tconv.search.network_timer import NetworkTimer
    from tconv.search.space import Realised

    built = []
    monkeypatch.setattr(network_timer, "compile_network",
                        lambda module, params, directory, **_: built.append(directory))
    database = TuningDatabase(tmp_path / "db.jsonl")
    timer = NetworkTimer(database, 1, tmp_path)
    module = small_resnet()
    candidate = Candidate("net", {}, Realised(module, init_params(module), {}), 1.0)
    first = timer.compile(candidate)
    assert timer.compile(candidate) == first and timer.artifact_of(candidate) == first and len(built) == 1
    candidate.realised.params = dict(candidate.realised.params)  # fine-tuned: new weights
    assert timer.artifact_of(candidate) is None and timer.compile(candidate) != first and len(built) == 2
    workload = workload_of(next(op for op in module.walk() if isinstance(op, Conv2dOp)))
    database.add(workload, "fake", candidates(workload)[0], 1e-3)  # tuning measured: schedules may change
    assert timer.artifact_of(candidate) is None and len({timer.compile(candidate), *built}) == 3
