"""What `tconv optimize` found, for people (report.md, pareto.png) and for
programs (report.json).

Per layer: the rewrite chosen, the schedule its convolutions run with, the
latency before and after (each convolution at its best measured schedule;
a rewritten layer counts every convolution that replaced it), and the
Fisher potential of its block(s) before and after: the one capacity metric
that decomposes over layers. The network's capacity (the search's metric,
over several seeds) is in the summary. Per candidate: every network the
search built, with its estimated latency and its capacity verdict; the Pareto
plot shows them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.passes.analyses.capacity import fisher_potential, minibatch
from tconv.passes.analyses.summary import summarize
from tconv.search.latency import LayerLatencies
from tconv.search.optimize import Candidate, SearchResult
from tconv.search.pruning import PruningChoice, PruningStudy
from tconv.search.space import origin_of
from tconv.search.tuning import Knobs
from tconv.search.tuning import describe_knobs as tuning_description

FISHER_BATCH = 16
UNTUNED_SCHEDULE = "thread per output"
"""The schedule column where the target's kernels take no knobs (the LLVM
backend's GPU kernels, `tconv.search.cuda_measure`)."""


@dataclass(frozen=True)
class LayerRow:
    layer: str
    rewrite: str
    schedule: str
    """Knobs of the layer's convolution(s) (`describe_knobs`), comma-separated."""
    before_ms: float
    after_ms: float
    fisher_before: float
    fisher_after: float


def describe_knobs(knobs: Knobs) -> str:
    """`direct 16x4` (channel block x column tile, channels in the vector) or
    `gspc 4x2x8` (channel block x rows x columns, columns in the vector), and
    the rest as `tuning.describe_knobs` says it."""
    text = tuning_description(knobs)
    return f"direct {text}" if knobs.algorithm == "direct" else text


def _fisher_by_layer(module: ModuleOp, params: Mapping[str, np.ndarray], layers: list[str]) -> dict[str, float]:
    """Fisher potential of each original layer's block(s), on one seeded minibatch."""
    x, labels = minibatch(module, FISHER_BATCH, 0)
    totals = dict.fromkeys(layers, 0.0)
    for block in fisher_potential(module, params, x, labels).blocks:
        origin = origin_of(block.name, layers)
        if origin is not None:
            totals[origin] += block.total
    return totals


def layer_rows(result: SearchResult, latencies: LayerLatencies, layers: list[str]) -> list[LayerRow]:
    """Per original layer; an int8 answer's rows are its float32 source's
    (its rewrites and schedules; int8 layers are timed whole, not per layer)."""
    before, after = result.original, result.best
    if after.move == "int8":
        after = after.source
    fisher_before = _fisher_by_layer(before.realised.module, before.realised.params, layers)
    fisher_after = (
        fisher_before if after is before
        else _fisher_by_layer(after.realised.module, after.realised.params, layers)
    )
    seconds_before = {row.layer: row.seconds for row in latencies.convs(before.realised.module)}
    after_seconds = dict.fromkeys(layers, 0.0)
    schedules: dict[str, list[str]] = {layer: [] for layer in layers}
    for row in latencies.convs(after.realised.module):
        origin = origin_of(row.layer, layers)
        if origin is not None:
            after_seconds[origin] += row.seconds
            schedules[origin].append(describe_knobs(row.knobs) if latencies.tunable else UNTUNED_SCHEDULE)
    return [
        LayerRow(
            layer,
            after.assignment[layer].label if layer in after.assignment else "-",
            ", ".join(schedules[layer]),
            seconds_before[layer] * 1e3,
            after_seconds[layer] * 1e3,
            fisher_before[layer],
            fisher_after[layer],
        )
        for layer in layers
    ]


def _network(candidate: Candidate, result: SearchResult) -> dict:
    summary = summarize(candidate.realised.module)
    capacity = candidate.capacity
    comparison = candidate.comparison
    return {
        "label": candidate.label,
        "rewrites": {layer: rewrite.label for layer, rewrite in candidate.assignment.items()},
        "parameters": summary.parameters,
        "parameter_bytes": summary.parameter_bytes,
        "flops": summary.flops,
        "conv_ms": candidate.conv_seconds * 1e3,
        # Layer estimates are of dense float32 kernels: a compressed network is only measured.
        "estimated_ms": None if candidate.move else result.estimate(candidate) * 1e3,
        "move": candidate.move,
        "source": None if candidate.source is None else candidate.source.label,
        "measured_ms": None if candidate.measured_seconds is None else candidate.measured_seconds * 1e3,
        "capacity": None if capacity is None else {
            "metric": capacity.metric, "median": capacity.median, "low": capacity.low, "high": capacity.high,
            "seeds": list(capacity.seeds), "values": list(capacity.values),
        },
        "capacity_ratio": None if comparison is None else _finite(comparison.ratio),
        "capacity_noise": None if comparison is None else _finite(comparison.noise),
        "verdict": (
            "original" if candidate is result.original else "not checked" if comparison is None else comparison.verdict
        ),
        "accepted": candidate.accepted,
        "accuracy": candidate.accuracy,
        "accuracy_before_fine_tuning": candidate.accuracy_before,
        "fine_tune_epochs": candidate.fine_tune_epochs,
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _pruning(study: PruningStudy, result: SearchResult) -> dict:
    def side(choice: PruningChoice, network: Candidate) -> dict:
        return {
            "counts": choice.counts,
            "pruned_layers_ms": choice.seconds * 1e3,
            "pruned_layers_parameters": choice.parameters,
            "network": _network(network, result),
        }

    return {
        "ratio": study.ratio,
        "original_measured_ms": None if study.original_seconds is None else study.original_seconds * 1e3,
        "uniform": side(study.uniform, study.networks[0]),
        "performance_aware": side(study.aware, study.networks[1]),
    }


def build_report(
    result: SearchResult, rows: list[LayerRow], context: Mapping[str, object], study: PruningStudy | None = None
) -> dict:
    """The JSON document: `context` (network, target, budget, peers), the
    search's findings and, if one ran, the pruning study."""
    original, best = result.original, result.best
    speedups = {}
    if original.measured_seconds and best.measured_seconds:
        speedups["vs_original_tconv"] = original.measured_seconds / best.measured_seconds
    ort = context.get("ort_original_ms")
    if isinstance(ort, float) and best.measured_seconds:
        speedups["vs_onnxruntime_original"] = ort / (best.measured_seconds * 1e3)
    return {
        **context,
        "search_seconds": result.search_seconds,
        "fine_tune_seconds": result.fine_tune_seconds,
        "measurements": result.measurements,
        "cost_model_kendall_tau": result.model_rank_correlation,
        "original": _network(original, result),
        "optimized": _network(best, result),
        "speedup": speedups,
        "network_factor": result.network_factor,
        "layers": [row.__dict__ for row in rows],
        "candidates": [_network(candidate, result) for candidate in result.candidates],
        "pruning": None if study is None else _pruning(study, result),
        "notes": result.notes,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}" if value < 0.1 else f"{value:.2f}"


def markdown(report: dict) -> str:
    original, best = report["original"], report["optimized"]
    metric = original["capacity"]["metric"]
    lines = [
        f"# tconv optimize: {report['network']} on {target_title(report['target'])}",
        "",
        f"Search: {report['search_seconds']:.0f} s of a {report['budget_seconds']:.0f} s budget, "
        f"{report['measurements']} layer measurements, {len(report['candidates'])} candidate networks; "
        f"capacity metric {metric} over seeds {', '.join(map(str, original['capacity']['seeds']))}, "
        f"min-capacity {report['min_capacity']:g} ("
        + ("only ratios at or above it accepted" if report.get("strict_capacity")
           else "ratios short of it by less than the seeds' spread accepted as within noise") + ").",
        "",
        "| | original | optimized | original / optimized |",
        "|---|---|---|---|",
    ]

    def row(name: str, a: float | None, b: float | None, fmt: str, higher_is_better: bool = False) -> str:
        if a is None or b is None:
            return f"| {name} | {'-' if a is None else format(a, fmt)} | {'-' if b is None else format(b, fmt)} | - |"
        ratio = (b / a) if higher_is_better else (a / b if b else float("inf"))
        return f"| {name} | {a:{fmt}} | {b:{fmt}} | {ratio:.2f}x |"

    lines.append(row("latency, measured (ms)", original["measured_ms"], best["measured_ms"], ".2f"))
    lines.append(row("latency, estimated (ms)", original["estimated_ms"], best["estimated_ms"], ".2f"))
    if report.get("ort_original_ms") is not None:
        speedup = report["speedup"].get("vs_onnxruntime_original")
        lines.append(f"| ONNX Runtime running the original (ms) | {report['ort_original_ms']:.2f} | - | "
                     + ("-" if speedup is None else f"{speedup:.2f}x (ONNX Runtime / optimized)") + " |")
    if original.get("accuracy") is not None:
        a, b = original["accuracy"], best["accuracy"]
        lines.append(f"| validation accuracy (%) | {100 * a:.2f} | {100 * b:.2f} | "
                     f"{100 * (b - a):+.2f} points (allowed: -{100 * report['max_accuracy_drop']:.2f}) |")
    lines.append(row("parameters", original["parameters"], best["parameters"], ",d"))
    lines.append(row("weights stored (KB)", original["parameter_bytes"] / 1e3, best["parameter_bytes"] / 1e3, ",.1f"))
    lines.append(row("MFLOPs", original["flops"] / 1e6, best["flops"] / 1e6, ".1f"))
    ratio = best["capacity_ratio"]
    lines.append(
        f"| capacity ({metric}, median) | {original['capacity']['median']:.4g} | {best['capacity']['median']:.4g} | "
        + ("-" if ratio is None else f"{ratio:.4f} ± {best['capacity_noise']:.4f}, {best['verdict']}") + " |"
    )
    lines += ["", f"Weights of the answer: {report.get('weights', 'not recorded')}."]
    if report.get("accuracy_data"):
        lines += ["", "## Accuracy", "", f"Data: {report['accuracy_data']}. Finalists, fastest first, fine-tuned "
                  f"from inherited weights until one kept the accuracy ({report['fine_tune_seconds']:.0f} s):", "",
                  "| | network | measured ms | accuracy inherited (%) | epochs | accuracy fine-tuned (%) |",
                  "|---|---|---|---|---|---|",
                  f"| | original | {_ms(original['measured_ms'])} | - | - | {100 * original['accuracy']:.2f} |"]
        for number, candidate in enumerate(_fine_tuned(report), 1):
            lines.append(
                f"| {number} | {candidate['label']} | {_ms(candidate['measured_ms'])} | "
                f"{100 * candidate['accuracy_before_fine_tuning']:.2f} | {candidate['fine_tune_epochs']} | "
                f"{100 * candidate['accuracy']:.2f} |"
            )
    lines += _moves_markdown(report)
    lines += ["", "## Layers", "",
              "| layer | rewrite | schedule | ms before | ms after | Fisher before | Fisher after |",
              "|---|---|---|---|---|---|---|"]
    for layer in report["layers"]:
        lines.append(
            f"| {layer['layer']} | {layer['rewrite']} | {layer['schedule']} | {layer['before_ms']:.3f} | "
            f"{layer['after_ms']:.3f} | {layer['fisher_before']:.3g} | {layer['fisher_after']:.3g} |"
        )
    lines += ["", "## Candidates", "",
              "| network | estimated ms | measured ms | MFLOPs | capacity ratio | verdict |", "|---|---|---|---|---|---|"]
    for candidate in report["candidates"]:
        ratio = candidate["capacity_ratio"]
        capacity = "-" if ratio is None else f"{ratio:.4f} ± {candidate['capacity_noise']:.4f}"
        lines.append(
            f"| {candidate['label']} | {_ms(candidate['estimated_ms'])} | {_ms(candidate['measured_ms'])} | "
            f"{candidate['flops'] / 1e6:.1f} | {capacity} | {candidate['verdict']} |"
        )
    if report.get("pruning"):
        lines += _pruning_markdown(report["pruning"])
    if report.get("cost_model_kendall_tau") is not None:
        lines += ["", f"Cost model: Kendall τ {report['cost_model_kendall_tau']:.2f} between its predictions and "
                  "the measurements that followed them."]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def _moves_markdown(report: dict) -> list[str]:
    """The compression moves: each network they made beside the one it compresses."""
    moved = [c for c in report["candidates"] if c.get("move") is not None]
    if not moved:
        return []
    by_label = {c["label"]: c for c in report["candidates"]}
    lines = ["", "## Compression", "", "Each network compressed beside the one it compresses, compiled and timed "
             "side by side; accuracy of the compiled network on the validation split. "
             + (f"int8: {report['int8']}. " if report.get("int8") else ""), "",
             "| move | network | measured ms | weights stored (KB) | epochs | validation accuracy (%) |",
             "|---|---|---|---|---|---|"]

    def row(move: str, network: dict) -> str:
        accuracy = "-" if network["accuracy"] is None else f"{100 * network['accuracy']:.2f}"
        epochs = "-" if move != "sparse" or network["fine_tune_epochs"] is None else network["fine_tune_epochs"]
        return (f"| {move} | {network['label']} | {_ms(network['measured_ms'])} | "
                f"{network['parameter_bytes'] / 1e3:,.1f} | {epochs} | {accuracy} |")

    shown: set[str] = set()
    for network in moved:
        if network["source"] not in shown:
            lines.append(row("(before)", by_label[network["source"]]))
        lines.append(row(network["move"], network))
        shown.add(network["label"])
    answer = report["optimized"]
    lines += ["", f"The answer is the {answer['move']} network." if answer["move"] else
              "The answer is uncompressed (see the notes)."]
    return lines


def _pruning_markdown(pruning: dict) -> list[str]:
    uniform, aware = pruning["uniform"], pruning["performance_aware"]

    def capacity(side: dict) -> str:
        network = side["network"]
        ratio = network["capacity_ratio"]
        return "-" if ratio is None else f"{ratio:.4f} ± {network['capacity_noise']:.4f}, {network['verdict']}"

    counts = ", ".join(
        f"{layer} {uniform['counts'][layer]}→{aware['counts'][layer]}"
        for layer in uniform["counts"] if uniform["counts"][layer] != aware["counts"][layer]
    ) or "the same as uniform"
    return [
        "", f"## Channel pruning at {pruning['ratio']:g}", "",
        f"Performance-aware counts differing from uniform: {counts}.", "",
        "| | uniform | performance-aware |", "|---|---|---|",
        f"| pruned layers + consumers, measured (ms) | {uniform['pruned_layers_ms']:.3f} | "
        f"{aware['pruned_layers_ms']:.3f} |",
        f"| their weights | {uniform['pruned_layers_parameters']:,} | {aware['pruned_layers_parameters']:,} |",
        f"| network parameters | {uniform['network']['parameters']:,} | {aware['network']['parameters']:,} |",
        f"| network, measured (ms; original {_ms(pruning['original_measured_ms'])}) | "
        f"{_ms(uniform['network']['measured_ms'])} | {_ms(aware['network']['measured_ms'])} |",
        f"| capacity ratio | {capacity(uniform)} | {capacity(aware)} |",
    ]


@dataclass(frozen=True)
class ParetoPoint:
    label: str
    latency_ms: float
    """The whole network's measured time where it was measured, else the layers' estimate."""
    measured: bool
    capacity_ratio: float
    verdict: str


@dataclass(frozen=True)
class ParetoPlot:
    """What `pareto_png` draws: kept apart from the drawing, so it can be checked."""

    points: list[ParetoPoint]
    front: list[ParetoPoint]
    """Legal points no other legal point beats on both latency and capacity, fastest first."""
    chosen: ParetoPoint | None
    """The answer of the search."""
    title: str


def target_title(target: str) -> str:
    """A target key as a reader names the machine: `llvm -mcpu=znver3 threads=16
    kernels=3` is `znver3, 16 threads` (the key's version fields are internal)."""
    words = target.split()
    cpu = next((w.split("=", 1)[1] for w in words if w.startswith("-mcpu=")), None)
    threads = next((w.split("=", 1)[1] for w in words if w.startswith("threads=")), None)
    rest = [w for w in words if not w.startswith(("-mcpu=", "threads=", "kernels=")) and not (cpu and w == "llvm")]
    parts = [" ".join(rest), cpu or "", f"{threads} threads" if threads else ""]
    return ", ".join(part for part in parts if part) or target


def pareto_plot(report: dict) -> ParetoPlot:
    """The points of every candidate whose capacity was measured, its front and the answer."""
    points = []
    for c in report["candidates"]:
        if (c["verdict"] != "original" and c["capacity_ratio"] is None) or c.get("move") is not None:
            continue  # never checked (slower than a legal one), or compressed: no capacity of its own
        measured = c["measured_ms"] is not None
        points.append(ParetoPoint(
            c["label"], c["measured_ms"] if measured else c["estimated_ms"], measured,
            1.0 if c["verdict"] == "original" else c["capacity_ratio"], c["verdict"],
        ))
    front, best = [], -math.inf
    for point in sorted(points, key=lambda p: (p.latency_ms, -p.capacity_ratio)):
        if point.verdict != "illegal" and point.capacity_ratio > best:
            front.append(point)
            best = point.capacity_ratio
    chosen = next((p for p in points if p.label == report["optimized"]["label"]), None)
    return ParetoPlot(points, front, chosen, f"{report['network']} on {target_title(report['target'])}")


def pareto_png(report: dict, path: Path) -> None:
    """Latency (log axis; measured where the search timed the whole network,
    else estimated) against capacity ratio: the candidates, the Pareto front
    joined by a line, the answer marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot = pareto_plot(report)
    colours = {"original": "black", "legal": "tab:green", "within noise": "tab:blue", "illegal": "tab:red"}
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    for verdict, colour in colours.items():
        for measured in (True, False):
            chosen = [p for p in plot.points if p.verdict == verdict and p.measured == measured]
            if chosen:
                axes.scatter([p.latency_ms for p in chosen], [p.capacity_ratio for p in chosen], s=28,
                             label=f"{verdict}{'' if measured else ' (estimated)'}",
                             c=colour if measured else "none", edgecolors=colour)
    if len(plot.front) > 1:
        axes.plot([p.latency_ms for p in plot.front], [p.capacity_ratio for p in plot.front], c="grey", lw=1,
                  ls="--", label="Pareto front")
    if plot.chosen is not None:
        axes.scatter([plot.chosen.latency_ms], [plot.chosen.capacity_ratio], marker="*", s=220, c="gold",
                     edgecolors="black", zorder=3, label="chosen")
    axes.axhline(report["min_capacity"], c="grey", lw=0.5)
    axes.set_xscale("log")
    axes.set_xlabel("latency (ms, log scale): filled measured, hollow estimated from layers")
    axes.set_ylabel(f"capacity / original ({report['original']['capacity']['metric']})")
    axes.set_title(plot.title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def _fine_tuned(report: dict) -> list[dict]:
    """The fine-tuned finalists in the order they were tuned: fastest measured first."""
    tuned = [c for c in report["candidates"] if c["fine_tune_epochs"] is not None and c.get("move") is None]
    return sorted(tuned, key=lambda c: math.inf if c["measured_ms"] is None else c["measured_ms"])


def accuracy_front(networks: list[dict]) -> list[dict]:
    """The networks no other one beats on both measured latency and
    validation accuracy, fastest first."""
    front: list[dict] = []
    for network in sorted(networks, key=lambda n: (n["measured_ms"], -n["accuracy"])):
        if not front or network["accuracy"] > front[-1]["accuracy"]:
            front.append(network)
    return front


def accuracy_png(report: dict, path: Path) -> None:
    """Measured latency against validation accuracy, with each network's
    stored weights as its marker's area: the original, every fine-tuned
    finalist (numbered fastest first, as `report.md` lists them), the
    compressed networks (sparse, int8) where they were tried; their Pareto
    front dashed, the answer outlined in gold, the allowed drop as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    original, answer = report["original"], report["optimized"]
    tuned = [c for c in _fine_tuned(report) if c["measured_ms"] is not None]
    moved = [c for c in report["candidates"] if c.get("move") is not None and c["accuracy"] is not None]

    def area(network: dict) -> float:  # the original's weights: 60 square points
        return max(8.0, 60.0 * network["parameter_bytes"] / max(original["parameter_bytes"], 1))

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    groups = (("original", [original], "black", "o"), ("fine-tuned finalists", tuned, "tab:blue", "o"),
              ("sparse", [c for c in moved if c["move"] == "sparse"], "tab:green", "s"),
              ("int8", [c for c in moved if c["move"] == "int8"], "tab:purple", "D"))
    for label, networks, colour, marker in groups:
        for number, network in enumerate(networks):
            chosen = network["label"] == answer["label"]
            axes.scatter([network["measured_ms"]], [100 * network["accuracy"]], c=colour, marker=marker,
                         s=area(network), edgecolors="gold" if chosen else colour, linewidths=2.5 if chosen else 1,
                         label=label if number == 0 else None, zorder=3 if chosen else 2)
    for number, candidate in enumerate(tuned, 1):
        axes.annotate(f"{number}", (candidate["measured_ms"], 100 * candidate["accuracy"]),
                      textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = accuracy_front([original, *tuned, *moved])
    if len(front) > 1:
        axes.plot([c["measured_ms"] for c in front], [100 * c["accuracy"] for c in front], c="grey", lw=1, ls="--",
                  label="Pareto front")
    axes.axhline(100 * (original["accuracy"] - report["max_accuracy_drop"]), c="grey", lw=0.8, ls="--",
                 label="allowed drop")
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(ScalarFormatter())
    axes.set_xlabel("measured latency (ms, log scale); marker area: stored weights")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title(f"{report['network']}: the answer (gold edge) against the original and the finalists", fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def write_json(report: dict) -> str:
    return json.dumps(report, indent=2, default=float) + "\n"
