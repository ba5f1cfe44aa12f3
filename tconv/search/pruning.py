"""Performance-aware channel pruning: prune each layer to a channel count
the target runs fast, at the parameter count uniform pruning would keep.

Uniform pruning keeps round(ratio · O) output channels of every prunable
convolution (`tconv-prune-channels{keep=ratio}`). The speed of a pruned
layer is not proportional to its channels: counts that fill whole vectors
and register blocks run faster than their neighbours. So for each prunable
layer the counts near its uniform count are measured on the target (the
pruned convolution and its consumer, whose input shrinks with it), and one
count per layer is chosen to minimise the summed latency at the uniform
network's parameter count (within 1%), by dynamic programming over the
parameter count.
Which channels go is the prune pass's business (lowest Fisher potential).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from tconv.errors import TconvError
from tconv.ir.ops import BatchNormOp, Conv2dOp, Relu6Op, ReluOp, shape_of
from tconv.passes.select import layer_name
from tconv.search.latency import LayerLatencies
from tconv.search.space import Rewrite, eligible_layers
from tconv.search.tuning import Workload, workload_of

if TYPE_CHECKING:
    from tconv.search.optimize import Candidate, Search

SPREAD = 0.25
"""Counts within ±25% of the uniform count are candidates."""
STEP = 4
"""Besides the uniform count, candidates are the multiples of STEP in that range."""


def prune(keep: int | float) -> Rewrite:
    return Rewrite("tconv-prune-channels", (("keep", keep),))


@dataclass(frozen=True)
class PrunableLayer:
    """A convolution whose output channels may shrink, and the convolution that reads them."""

    name: str
    conv: Workload
    consumer: Workload | None
    """The next convolution (through batch-norm and activation), None if its output goes elsewhere."""
    weights_per_channel: int
    """Parameters one output channel costs: its weight row and the consumer's weight column."""

    def workloads(self, count: int) -> list[Workload]:
        """The workloads of this layer and its consumer when `count` channels are kept."""
        shrunk = [replace(self.conv, out_channels=count)]
        if self.consumer is not None:
            n, _, h, w = self.consumer.input
            shrunk.append(replace(self.consumer, input=(n, count, h, w)))
        return shrunk


def _consumer(value: SSAValue) -> Conv2dOp | None:
    """The convolution reading `value` through single-use batch-norm and activations."""
    while value.has_one_use():
        user = value.get_user_of_unique_use()
        if isinstance(user, Conv2dOp):
            return user if user.input == value else None
        if not isinstance(user, (BatchNormOp, ReluOp, Relu6Op)):
            return None
        value = user.results[0]
    return None


def prunable_layers(module: ModuleOp, ratio: float) -> list[PrunableLayer]:
    """The layers `tconv-prune-channels{keep=ratio}` would prune."""
    names = set(eligible_layers(module, prune(ratio)))
    layers = []
    for op in module.walk():
        if isinstance(op, Conv2dOp) and layer_name(op) in names:
            consumer = _consumer(op.output)
            _, in_channels, kh, kw = shape_of(op.weight)
            per_channel = in_channels * kh * kw
            if consumer is not None:
                out, _, ch, cw = shape_of(consumer.weight)
                per_channel += out * ch * cw
            layers.append(PrunableLayer(
                layer_name(op), workload_of(op), None if consumer is None else workload_of(consumer), per_channel
            ))
    return layers


def uniform_count(layer: PrunableLayer, ratio: float) -> int:
    """What `tconv-prune-channels{keep=ratio}` keeps of this layer."""
    return max(1, round(ratio * layer.conv.out_channels))


def candidate_counts(layer: PrunableLayer, ratio: float) -> list[int]:
    center = uniform_count(layer, ratio)
    low, high = max(2, math.floor(center * (1 - SPREAD))), min(layer.conv.out_channels - 1,
                                                                math.ceil(center * (1 + SPREAD)))
    return sorted({center} | {c for c in range(STEP * math.ceil(low / STEP), high + 1, STEP)})


@dataclass(frozen=True)
class PruningChoice:
    counts: dict[str, int]
    seconds: float
    """Summed latency of the pruned layers and their consumers (best known schedules)."""
    parameters: int
    """Parameters of the pruned layers' weights (as `PrunableLayer.weights_per_channel` counts them)."""


def choose_counts(
    layers: list[PrunableLayer], ratio: float, latencies: LayerLatencies, tolerance: float = 0.01
) -> tuple[PruningChoice, PruningChoice]:
    """(uniform, performance-aware) channel counts. The second keeps the
    first's parameter count (within ±`tolerance`) and has the least summed
    measured latency: a multiple-choice knapsack, solved by dynamic
    programming over parameter counts in buckets of `tolerance`/(4 · layers)
    of the budget, each bucket keeping its fastest partial choice. Measures
    every candidate count's workloads."""
    table = {
        layer.name: {
            count: (sum(latencies.best(w)[1] for w in layer.workloads(count)), count * layer.weights_per_channel)
            for count in candidate_counts(layer, ratio)
        }
        for layer in layers
    }
    counts = {layer.name: uniform_count(layer, ratio) for layer in layers}
    uniform = PruningChoice(
        counts, sum(table[name][c][0] for name, c in counts.items()), sum(table[name][c][1] for name, c in counts.items())
    )
    low, high = uniform.parameters * (1 - tolerance), uniform.parameters * (1 + tolerance)
    quantum = max(1.0, tolerance * uniform.parameters / (4 * len(layers)))

    # What the layers after each one can still add, to drop partial choices that cannot reach the band.
    rest_min, rest_max = [0] * (len(layers) + 1), [0] * (len(layers) + 1)
    for i in reversed(range(len(layers))):
        sizes = [p for _, p in table[layers[i].name].values()]
        rest_min[i], rest_max[i] = rest_min[i + 1] + min(sizes), rest_max[i + 1] + max(sizes)
    # bucket → (seconds, parameters, counts so far)
    states: dict[int, tuple[float, int, tuple[int, ...]]] = {0: (0.0, 0, ())}
    for i, layer in enumerate(layers):
        reached: dict[int, tuple[float, int, tuple[int, ...]]] = {}
        for seconds, parameters, counts in states.values():
            for count, (s, p) in table[layer.name].items():
                total = parameters + p
                if total + rest_min[i + 1] > high or total + rest_max[i + 1] < low:
                    continue
                key = round(total / quantum)
                if key not in reached or seconds + s < reached[key][0]:
                    reached[key] = (seconds + s, total, (*counts, count))
        states = reached
    fits = [state for state in states.values() if low <= state[1] <= high]
    if not fits:
        return uniform, uniform
    seconds, parameters, counts = min(fits)
    if seconds >= uniform.seconds:
        return uniform, uniform
    return uniform, PruningChoice(dict(zip((layer.name for layer in layers), counts)), seconds, parameters)


@dataclass
class PruningStudy:
    """Uniform against performance-aware pruning of the original network."""

    ratio: float
    uniform: PruningChoice
    aware: PruningChoice
    networks: tuple["Candidate", "Candidate"]
    """The two pruned networks (uniform, performance-aware), with capacity and, where timed, latency."""
    original_seconds: float | None = None
    """The original, timed in the same rounds as the pruned networks."""


def pruning_study(search: "Search", ratio: float) -> PruningStudy:
    """Prune `search`'s original network both ways at `ratio`, check both
    networks' capacity and, where the search times networks, time them
    beside the original."""
    layers = prunable_layers(search.module, ratio)
    if not layers:
        raise TconvError(f"error: optimize: --prune {ratio:g}: no convolution of the network can be pruned")
    search.say(f"pruning {ratio:g}: measuring channel counts")
    uniform, aware = choose_counts(layers, ratio, search.latencies)
    networks = []
    for label, choice in (("uniform", uniform), ("performance-aware", aware)):
        assignment = {name: prune(count) for name, count in choice.counts.items()}
        candidate = search.evaluate(f"{label} pruning {ratio:g}", assignment, force=True)
        assert candidate is not None
        search.check(candidate)
        networks.append(candidate)
    study = PruningStudy(ratio, uniform, aware, (networks[0], networks[1]))
    if search.network_timer and search.options.measure_networks:
        search.say(f"pruning {ratio:g}: compiling and timing")
        study.original_seconds, networks[0].measured_seconds, networks[1].measured_seconds = (
            search.network_timer([search.original, *networks])
        )
    return study
