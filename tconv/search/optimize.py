"""`tconv optimize`: one search over NAS rewrites and schedules.

The search trades architecture for speed where capacity allows. Its moves:

1. **Baseline.** The original network: the capacity metric over several
   seeds (`legality`), each convolution's latency at its best known schedule
   (measured on the target, `latency.LayerLatencies`), and, where the
   target is this machine (its CPU, or its GPU through the LLVM backend's
   cuda kernels), the whole network compiled and run, which
   calibrates network estimates (summed convolution times, scaled by the
   original's measured / summed ratio).
2. **Uniform rewrites.** Each rewrite of the space (`space.DEFAULT_REWRITES`)
   applied to every eligible convolution: its latency estimated from layer
   measurements (new workloads measured as they appear), then its capacity
   compared with the original's, fastest estimate first. Candidates the
   legality check does not accept (by default: a ratio below the minimum,
   "within noise" included; `OptimizeOptions.strict`) are kept for the
   report and never chosen.
3. **Mixing.** Per layer, the fastest of the original and the rewrites
   whose uniform network was accepted (the layers' latencies are measured, so this is a per-layer choice,
   not a global one), checked at network level; then, for each rewrite
   that was faster but illegal everywhere, the layers where it saves most are
   switched to it, as many as the capacity check allows (a binary search
   over how many). Every network-level capacity verdict uses the same
   minibatches and seeds as the original's.
4. **Schedules.** The remaining measuring time goes to the chosen
   network's workloads, the most expensive first: the leaders that earlier
   runs recorded are re-measured side by side (`LayerLatencies.confirm`),
   then each candidate schedule is ranked by a Gaussian-process model of
   the measurements so far (`cost_model`) before it is measured.
5. **Confirmation.** The chosen network, the next accepted ones by
   estimate (`OptimizeOptions.finalists` in all) and the original are
   compiled and timed side by side (alternating rounds, medians); the
   fastest is the answer, the original if none beats it.
6. **Accuracy** (with `OptimizeOptions.accuracy`, `tconv optimize --data`).
   The finalists, fastest first, are fine-tuned from the weights they
   inherited from the trained original and evaluated on the validation
   split; the answer is the fastest within the allowed accuracy drop, the
   original if none is (see `tconv.search.accuracy`).
7. **Sparsity** (with `OptimizeOptions.sparsify` as well, `--sparsify`).
   The answer pruned to a density (`tconv-sparsify`), fine-tuned with its
   zeros held, compiled (sparse kernels) and timed beside it; it becomes
   the answer where it is faster and its compiled accuracy is within the
   allowed drop (see `tconv.search.sparsify_move`).
8. **int8** (with `OptimizeOptions.quantize` as well, `--quantize`). The
   answer quantised (`tconv-quantize`, calibrated on training inputs),
   compiled with the int8 kernels and timed beside it; it becomes the
   answer where it is faster and the compiled int8 network's validation
   accuracy is within the allowed drop (see `tconv.search.quantize_move`).

Between any two measurements the search checks its deadline: at any budget
the answer is the best legal network found so far (at worst the original).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.errors import TconvError
from tconv.passes.analyses.capacity import DEFAULT_METRIC, DEFAULT_SEEDS, SeededCapacity, measure_seeds
from tconv.passes.analyses.legality import Comparison
from tconv.search.latency import LayerLatencies
from tconv.search.progress import bar, done as end_progress, show as show_progress
from tconv.search.space import (
    DEFAULT_REWRITES,
    Assignment,
    Realised,
    Rewrite,
    apply_assignment,
    conv_layers,
    eligible_layers,
    origin_of,
)
from tconv.search.tuning import Workload

if TYPE_CHECKING:  # the accuracy check imports torch: only where it is asked for
    from tconv.search.accuracy import AccuracyCheck
    from tconv.search.quantize_move import QuantizeMove
    from tconv.train.data import Dataset


@dataclass(frozen=True)
class OptimizeOptions:
    budget_s: float = 600.0
    min_capacity: float = 1.0
    metric: str = DEFAULT_METRIC
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    capacity_batch: int = 64
    rewrites: tuple[Rewrite, ...] = DEFAULT_REWRITES
    threads: int = 1
    measure_networks: bool = True
    """Compile and time whole networks (the target is this machine)."""
    patience: int = 8
    """Tuning gives up on a workload after this many candidates in a row
    that did not beat its best."""
    finalists: int = 3
    """Accepted networks confirmed by compiling and timing them, the best
    estimates first: an estimate misses what a rewrite adds besides
    convolution time (kernels, unfused ops), so the best estimate is not
    always the fastest network."""
    strict: bool = True
    """Accept only "legal" verdicts (ratio ≥ min_capacity); False also
    accepts "within noise" (see `legality`)."""
    accuracy: AccuracyCheck | None = None
    """Fine-tune the finalists and require their validation accuracy (None:
    the answer is not trained, and its accuracy is not known)."""
    sparsify: float | None = None
    """Also try the answer pruned to this density (needs `accuracy` and timed networks)."""
    quantize: QuantizeMove | None = None
    """Also try the answer in int8 (needs `accuracy` and timed networks)."""


@dataclass
class Candidate:
    """A network the search built, with what it learnt of it."""

    label: str
    assignment: dict[str, Rewrite]
    realised: Realised
    conv_seconds: float
    """Sum of its convolutions' best known latencies."""
    capacity: SeededCapacity | None = None
    comparison: Comparison | None = None
    """Capacity against the original's (None for the original itself)."""
    measured_seconds: float | None = None
    """The whole compiled network, timed (only the confirmed ones)."""
    accepted: bool | None = None
    """Whether the search may choose it: its capacity verdict passed (None: not checked)."""
    accuracy: float | None = None
    """Validation accuracy (with `--data`; after fine-tuning, for a finalist)."""
    accuracy_before: float | None = None
    """A finalist's validation accuracy with its inherited weights, before fine-tuning."""
    fine_tune_epochs: int | None = None
    move: str | None = None
    """How this network compresses `source`: "sparse" or "int8" (None: a network of the search)."""
    source: Candidate | None = None
    """The network `move` compressed."""


@dataclass
class SearchResult:
    original: Candidate
    best: Candidate
    candidates: list[Candidate]
    network_factor: float
    """Measured network time / summed convolution times, of the original (1
    where networks are not timed): a network's estimate is its convolutions'
    sum times this. The rest of a network (pooling, the classifier, memory
    traffic between kernels) shrinks with it, so a factor fits better than a
    constant."""
    search_seconds: float
    """Searching and confirming; fine-tuning, which has its own budget, apart."""
    measurements: int
    model_rank_correlation: float | None = None
    """Kendall τ between the cost model's predictions and the measurements
    that followed them (None: too few)."""
    notes: list[str] = field(default_factory=list)
    fine_tune_seconds: float | None = None
    """Fine-tuning the finalists and checking their accuracy (None: not asked for)."""

    def estimate(self, candidate: Candidate) -> float:
        return candidate.conv_seconds * self.network_factor


class Deadline:
    def __init__(self, budget_s: float) -> None:
        self.start = time.monotonic()
        self.budget_s = budget_s

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    @property
    def left(self) -> float:
        return self.budget_s - self.elapsed

    def passed(self, reserve: float = 0.0) -> bool:
        return self.left <= reserve


class NetworkTiming(Protocol):
    """Compiles candidates and runs them on the target (`network_timer.NetworkTimer`)."""

    def __call__(self, candidates: list[Candidate]) -> list[float]:
        """Seconds per run of each, timed side by side."""

    def accuracy(self, candidate: Candidate, data: Dataset) -> float:
        """Validation accuracy of the artifact last timed for `candidate` (the int8 move only)."""


Progress = Callable[[str, float, float], None]
"""progress(message, elapsed seconds, budget seconds)."""


def stderr_progress(message: str, elapsed: float, budget: float) -> None:
    fraction = elapsed / budget if budget > 0 else 1.0
    show_progress(f"optimize {bar(fraction, 24)} {elapsed:4.0f}/{budget:.0f} s  {message[:60]:60}")


class Search:
    """One optimisation of one network (see the module docstring)."""

    def __init__(
        self,
        module: ModuleOp,
        params: Mapping[str, np.ndarray],
        latencies: LayerLatencies,
        options: OptimizeOptions,
        progress: Progress | None = None,
        network_timer: NetworkTiming | None = None,
        provenance: Mapping[str, object] | None = None,
    ) -> None:
        self.module = module
        self.params = dict(params)
        self.provenance = dict(provenance or {"weights": "initial"})
        """Where the original's weights come from: rewrites of trained weights inherit them."""
        self.latencies = latencies
        self.options = options
        self.progress = progress
        self.network_timer = network_timer
        self.deadline = Deadline(options.budget_s)
        self.layers = conv_layers(module)
        self.candidates: list[Candidate] = []
        self.notes: list[str] = []
        self.baseline: SeededCapacity | None = None
        self.failed_schedules: list[str] = []
        self.predictions: list[tuple[float, float]] = []
        """(predicted, measured) seconds of schedule candidates the model ranked."""

    # Steps -----------------------------------------------------------------

    def say(self, message: str) -> None:
        if self.progress:
            self.progress(message, self.deadline.elapsed, self.options.budget_s)

    def capacity(self, module: ModuleOp) -> SeededCapacity:
        return measure_seeds(module, self.options.metric, seeds=self.options.seeds, batch=self.options.capacity_batch)

    def evaluate(self, label: str, assignment: Assignment, force: bool = False) -> Candidate | None:
        """Build the network of `assignment` and estimate its latency; None
        if the deadline passes while its new workloads are measured (unless `force`)."""
        realised = apply_assignment(self.module, self.params, assignment, self.provenance)
        for workload in self.latencies.unknown_workloads(realised.module):
            if self.deadline.passed(self.reserve) and not force:
                return None
            self.say(f"measuring {_short(workload)}")
            self.latencies.best(workload)
        candidate = Candidate(label, dict(realised.applied), realised, self.latencies.conv_seconds(realised.module))
        self.candidates.append(candidate)
        return candidate

    def check(self, candidate: Candidate) -> bool:
        """Measure `candidate`'s capacity against the original's; is it legal?"""
        assert self.baseline is not None
        self.say(f"capacity of {candidate.label}")
        candidate.capacity = self.capacity(candidate.realised.module)
        candidate.comparison = Comparison(self.baseline, candidate.capacity, self.options.min_capacity)
        verdict = candidate.comparison.verdict
        candidate.accepted = verdict == "legal" if self.options.strict else verdict != "illegal"
        return candidate.accepted

    @property
    def reserve(self) -> float:
        """Seconds kept for confirming the answer by compiling and timing it."""
        return self._reserve

    def run(self) -> SearchResult:
        self._reserve = 0.0
        # The original is the answer of last resort: it is measured whatever the budget.
        original = self.evaluate("original", {}, force=True)
        assert original is not None
        self.original = original
        self.say("capacity of the original")
        self.baseline = self.capacity(self.module)
        original.capacity = self.baseline
        original.accepted = True
        factor = 1.0
        if self.network_timer and self.options.measure_networks:
            self.say("compiling and timing the original")
            started = time.monotonic()
            (original.measured_seconds,) = self.network_timer([original])
            # Confirmation compiles and times the original and the finalists.
            self._reserve = 1.25 * (1 + self.options.finalists) * (time.monotonic() - started)
            factor = original.measured_seconds / original.conv_seconds

        best = original
        uniform: list[Candidate] = []
        applicable = 0
        for rewrite in self.options.rewrites:
            layers = eligible_layers(self.module, rewrite)
            applicable += bool(layers)
            if layers and not self.deadline.passed(self.reserve):
                candidate = self.evaluate(f"{rewrite.label} everywhere", dict.fromkeys(layers, rewrite))
                if candidate is not None:
                    uniform.append(candidate)
        # Capacity is the expensive check: fastest estimates first, and only
        # networks that could beat the best so far.
        for candidate in sorted(uniform, key=lambda c: c.conv_seconds):
            if self.deadline.passed(self.reserve):
                break
            if candidate.conv_seconds < best.conv_seconds and self.check(candidate):
                best = candidate
        legal = [c for c in uniform if c.accepted]
        best = self.mix(best, legal, original)
        faster_illegal = [c for c in uniform if c.accepted is False and c.conv_seconds < best.conv_seconds]
        for illegal in sorted(faster_illegal, key=lambda c: c.conv_seconds):
            if self.deadline.passed(self.reserve):
                break
            best = self.infiltrate(best, illegal)
        if best is original:
            self.notes.append(self.why_original(uniform, applicable))
        self.tune(best)
        best = self.confirm(original, best)
        search_seconds = self.deadline.elapsed
        fine_tune_seconds = None
        if self.options.accuracy is not None:
            best = self.check_accuracy(original, best)
            fine_tune_seconds = self.deadline.elapsed - search_seconds
            if self.options.sparsify is not None:
                best = self.sparsify(original, best)
            if self.options.quantize is not None:
                best = self.quantize(original, best)
        if self.progress:
            end_progress()
        for key, error in self.latencies.failures.items():
            self.notes.append(f"{key} could not be measured, so no network with it was chosen: {error}")
        if self.failed_schedules:
            self.notes.append(f"{len(self.failed_schedules)} schedule candidate(s) failed to build or run "
                              f"(skipped), the first: {self.failed_schedules[0]}")
        return SearchResult(
            original=original,
            best=best,
            candidates=self.candidates,
            network_factor=factor,
            search_seconds=search_seconds,
            fine_tune_seconds=fine_tune_seconds,
            measurements=self.latencies.measurements,
            model_rank_correlation=self.rank_correlation(),
            notes=self.notes,
        )

    def why_original(self, uniform: list[Candidate], applicable: int) -> str:
        """Why no rewrite replaced the original: the report says it rather
        than leaving a user to guess between budget, speed and capacity."""
        original = self.original
        unmeasured = applicable - len(uniform)
        ran_out = (
            f"; the {self.options.budget_s:g} s budget ran out before {unmeasured} of {applicable} rewrites were "
            "measured (a larger --budget searches further)" if unmeasured else ""
        )
        if applicable == 0:
            return "no rewrite applies to this network's convolutions: the answer is the original"
        faster = [c for c in uniform if c.conv_seconds < original.conv_seconds]
        if not faster:
            return f"no measured rewrite was estimated faster than the original{ran_out}: the answer is the original"
        unchecked = [c for c in faster if c.comparison is None]
        if unchecked:
            return (
                f"the {self.options.budget_s:g} s budget ran out before the capacity of {len(unchecked)} faster "
                f"rewrite(s) was checked (a larger --budget searches further): the answer is the original"
            )
        ratios = ", ".join(f"{c.label} {c.comparison.ratio:.3g}" for c in faster if c.comparison is not None)
        return (
            f"every faster rewrite lost capacity (ratio to the original, --min-capacity {self.options.min_capacity:g}: "
            f"{ratios}){ran_out}: the answer is the original"
        )

    # Mixing ------------------------------------------------------------------

    def layer_seconds(self, candidate: Candidate) -> dict[str, float]:
        """Seconds per original layer: each convolution of the candidate counted
        for the original layer it stands for (its consumers' input changes
        count where they happen)."""
        seconds = dict.fromkeys(self.layers, 0.0)
        for row in self.latencies.convs(candidate.realised.module):
            origin = origin_of(row.layer, self.layers)
            if origin is not None:
                seconds[origin] += row.seconds
        return seconds

    def mix(self, best: Candidate, legal: list[Candidate], original: Candidate) -> Candidate:
        """Per layer, the fastest of the original and the legal uniform
        rewrites (a rewrite that slows some layer, as a bottleneck does the
        stem, is taken back there)."""
        if not legal or self.deadline.passed(self.reserve):
            return best
        per_layer = {c.label: self.layer_seconds(c) for c in [original, *legal]}
        assignment: dict[str, Rewrite] = {}
        for layer in self.layers:
            options = [(per_layer[original.label][layer], None)]
            options += [(per_layer[c.label][layer], c.assignment[layer]) for c in legal if layer in c.assignment]
            fastest = min(options, key=lambda option: option[0])[1]
            if fastest is not None:
                assignment[layer] = fastest
        if assignment == best.assignment:
            return best
        candidate = self.evaluate("fastest legal rewrite per layer", assignment)
        if candidate is None or candidate.conv_seconds >= best.conv_seconds:
            return best
        return candidate if self.check(candidate) else best

    def infiltrate(self, best: Candidate, illegal: Candidate) -> Candidate:
        """`best` with as many layers as the capacity check allows switched to
        `illegal`'s rewrite, those where it saves most first."""
        rewrite = next(iter(illegal.assignment.values()))
        ours, theirs = self.layer_seconds(best), self.layer_seconds(illegal)
        gains = sorted(
            (ours[layer] - theirs[layer], layer) for layer in illegal.assignment if ours[layer] > theirs[layer]
        )
        ranked = [layer for _, layer in reversed(gains)]
        base = best
        # Switching `low` layers passes the check; switching all of them (the
        # uniform network) did not, so the search is over 0 .. len - 1.
        low, high = 0, len(ranked) - 1
        while low < high and not self.deadline.passed(self.reserve):
            count = (low + high + 1) // 2
            assignment = dict(base.assignment)
            assignment.update(dict.fromkeys(ranked[:count], rewrite))
            candidate = self.evaluate(f"{base.label} + {rewrite.label} on {count} layers", assignment)
            if candidate is None:
                break
            if candidate.conv_seconds < best.conv_seconds and self.check(candidate):
                best, low = candidate, count
            else:
                high = count - 1
        return best

    # Schedules ---------------------------------------------------------------

    def tune(self, best: Candidate) -> None:
        """Spend what is left of the budget on the chosen network's schedules
        (none where the target's kernels take no schedule)."""
        from tconv.search.cost_model import LatencyModel

        if not self.latencies.tunable:
            return
        rows = self.latencies.convs(best.realised.module)
        weight: dict[str, float] = {}
        workloads: dict[str, Workload] = {}
        for row in rows:
            weight[row.workload.key] = weight.get(row.workload.key, 0.0) + row.seconds
            workloads[row.workload.key] = row.workload
        order = sorted(workloads, key=lambda key: -weight[key])
        # Records of earlier runs first: their leaders are re-measured side by
        # side (a record made in a loaded moment is too slow and would hide its knobs).
        for key in order:
            if self.deadline.passed(self.reserve):
                break
            self.say(f"re-measuring the leaders of {_short(workloads[key])}")
            try:
                self.latencies.confirm(workloads[key], stop=lambda: self.deadline.passed(self.reserve))
            except TconvError as err:
                self.failed_schedules.append(f"leaders of {key}: {err}")
        tried = {key: set(self.latencies.database.measured(workloads[key], self.latencies.target)) for key in order}
        stale = dict.fromkeys(order, 0)
        model, fitted_on = None, 0
        while not self.deadline.passed(self.reserve):
            # Refit as the measurements grow by a quarter: a GP fit costs seconds.
            known = self.latencies.measured_count()
            if model is None or known >= 1.25 * fitted_on:
                model = LatencyModel.from_database(
                    self.latencies.database, self.latencies.target, focus=list(workloads.values())
                )
                fitted_on = known
            progressed = False
            for key in order:
                if self.deadline.passed(self.reserve):
                    break
                workload = workloads[key]
                untried = [k for k in self.latencies.candidates(workload) if k not in tried[key]]
                if not untried or stale[key] >= self.options.patience:
                    continue
                best_before = self.latencies.best(workload)[1]
                (_, knobs), *_ = model.rank([(workload, k) for k in untried])
                predicted, _ = model.predict(workload, knobs)
                self.say(f"tuning {_short(workload)}")
                try:
                    seconds = self.latencies.measure(workload, knobs)
                except TconvError as err:
                    self.failed_schedules.append(f"knobs {knobs} of {workload.key}: {err}")
                    seconds = math.inf
                tried[key].add(knobs)
                if math.isfinite(seconds):
                    self.predictions.append((predicted, seconds))
                stale[key] = 0 if seconds < best_before else stale[key] + 1
                progressed = True
            if not progressed:
                break
        best.conv_seconds = self.latencies.conv_seconds(best.realised.module)

    def rank_correlation(self) -> float | None:
        if len(self.predictions) < 5:
            return None
        from scipy.stats import kendalltau

        predicted, measured = zip(*self.predictions)
        tau = kendalltau(predicted, measured).statistic
        return None if math.isnan(tau) else float(tau)

    # Confirmation ------------------------------------------------------------

    def finalists(self, best: Candidate) -> list[Candidate]:
        """`best` and the next accepted networks by estimate (with the
        schedules tuning found): `OptimizeOptions.finalists` in all, at most."""
        for candidate in self.candidates:
            if candidate.accepted:
                candidate.conv_seconds = self.latencies.conv_seconds(candidate.realised.module)
        others = sorted(
            (c for c in self.candidates if c.accepted and c is not best and c is not self.original),
            key=lambda c: c.conv_seconds,
        )
        return [best, *others][: max(1, self.options.finalists)]

    def confirm(self, original: Candidate, best: Candidate) -> Candidate:
        """The fastest of the finalists by whole-network timing, beside the
        original (which wins if none is faster)."""
        if best is original or not (self.network_timer and self.options.measure_networks):
            return best
        finalists = self.finalists(best)
        self.say(f"compiling and timing {len(finalists)} network(s) beside the original")
        original.measured_seconds, *seconds = self.network_timer([original, *finalists])
        for candidate, measured in zip(finalists, seconds, strict=True):
            candidate.measured_seconds = measured
        fastest = min(finalists, key=lambda c: c.measured_seconds)
        if fastest is not best:
            self.notes.append(
                f"timed whole, {fastest.label} ({fastest.measured_seconds * 1e3:.2f} ms) beat the best estimate, "
                f"{best.label} ({best.measured_seconds * 1e3:.2f} ms)"
            )
        if fastest.measured_seconds >= original.measured_seconds:
            self.notes.append(
                f"the chosen network ({fastest.label}) measured {fastest.measured_seconds * 1e3:.2f} ms, not faster "
                f"than the original's {original.measured_seconds * 1e3:.2f} ms: the answer is the original"
            )
            return original
        return fastest

    # Accuracy ------------------------------------------------------------------

    def check_accuracy(self, original: Candidate, confirmed: Candidate) -> Candidate:
        """The fastest finalist whose fine-tuned validation accuracy is within
        the allowed drop of the original's; the original if none is."""
        from tconv.search.accuracy import fine_tune, validation_accuracy

        check = self.options.accuracy
        assert check is not None
        self.say("validation accuracy of the original")
        original.accuracy = validation_accuracy(self.module, self.params, check.data)
        floor = original.accuracy - check.max_drop
        timed = [c for c in self.candidates if c is not original and c.measured_seconds is not None]
        if timed:  # confirmation timed them whole: faster than the original only
            finalists = sorted(
                (c for c in timed if c.measured_seconds < original.measured_seconds), key=lambda c: c.measured_seconds
            )
        else:
            finalists = [] if confirmed is original else self.finalists(confirmed)
        budget = Deadline(check.train_budget_s)
        for index, candidate in enumerate(finalists):
            share = budget.left / (len(finalists) - index)
            self.say(f"{'distilling' if check.distill else 'fine-tuning'} {candidate.label} ({share:.0f} s)")
            trained = fine_tune(
                candidate.realised.module, candidate.realised.params, check, share, (self.module, self.params)
            )
            candidate.realised.params = trained.params
            candidate.accuracy, candidate.accuracy_before = trained.accuracy, trained.accuracy_before
            candidate.fine_tune_epochs = trained.epochs
            if candidate.accuracy >= floor:
                if candidate is not finalists[0]:
                    self.notes.append(
                        f"faster finalists lost more than {check.max_drop:.1%} of validation accuracy; the answer "
                        f"is {candidate.label}"
                    )
                return candidate
        if finalists:
            self.notes.append(
                f"no finalist kept validation accuracy within {check.max_drop:.1%} of the original's "
                f"{original.accuracy:.2%} after fine-tuning: the answer is the original"
            )
        return original

    # Compression moves ----------------------------------------------------------

    def sparsify(self, original: Candidate, best: Candidate) -> Candidate:
        """`best` pruned to `OptimizeOptions.sparsify` and fine-tuned with its
        zeros held, where that is faster and keeps the accuracy."""
        from tconv.search.accuracy import fine_tune
        from tconv.search.sparsify_move import FINE_TUNE_SHARE, sparsified

        check, density = self.options.accuracy, self.options.sparsify
        assert check is not None and density is not None
        self.say(f"pruning {best.label} to {density:.0%} density")
        try:
            realised = sparsified(best.realised, density, self.provenance)
        except TconvError as err:
            self.notes.append(f"sparsity was not tried: {err}")
            return best
        self.say(f"fine-tuning it with its zeros held ({FINE_TUNE_SHARE * check.train_budget_s:.0f} s)")
        trained = fine_tune(realised.module, realised.params, check, FINE_TUNE_SHARE * check.train_budget_s,
                            (self.module, self.params))
        realised.params = trained.params
        self.measure_sparse_kernels(realised.module)
        candidate = Candidate(f"{best.label}, sparse {density:.0%}", dict(best.assignment), realised,
                              best.conv_seconds, best.capacity, best.comparison, accepted=True,
                              accuracy_before=trained.accuracy_before, fine_tune_epochs=trained.epochs,
                              move="sparse", source=best)
        return self.compressed(original, best, candidate, f"sparse at {density:.0%}")

    def measure_sparse_kernels(self, module) -> None:
        """Measure each pruned layer's sparse kernel and its dense default
        (the first two candidates of a workload that declares nonzeros)
        where the database has no record of them (the dense knobs of the
        unpruned layer count, `tuning.dense_twin`): the pruned network is
        then compiled with the faster per layer rather than by the density
        threshold alone."""
        if not self.latencies.tunable:
            return
        for workload in (w for w in self.latencies.workloads(module) if w.nonzeros is not None):
            measured = self.latencies.database.measured(workload, self.latencies.target)
            missing = [k for k in self.latencies.candidates(workload)[:2] if k not in measured]
            if missing:
                self.say(f"measuring the sparse and dense kernels of {_short(workload)}")
            for knobs in missing:
                if self.deadline.passed(self.reserve):
                    return
                try:
                    self.latencies.measure(workload, knobs)
                except TconvError as err:
                    self.failed_schedules.append(f"{knobs.describe()} of {workload.key}: {err}")

    def quantize(self, original: Candidate, best: Candidate) -> Candidate:
        """`best` in int8 where that is faster, measured whole, and its compiled
        kernels' validation accuracy is within the allowed drop of the original's."""
        from tconv.search.quantize_move import quantized

        check, move = self.options.accuracy, self.options.quantize
        assert check is not None and move is not None
        self.say(f"quantising {best.label} to int8")
        try:
            realised = quantized(best.realised, move, check.data.x_train)
        except TconvError as err:
            self.notes.append(f"int8 was not tried: {err}")
            return best
        # Quantising changes no layer's shape: the capacity (at initialisation) is the float32 network's.
        candidate = Candidate(f"{best.label}, int8", dict(best.assignment), realised, best.conv_seconds,
                              best.capacity, best.comparison, accepted=True, move="int8", source=best)
        return self.compressed(original, best, candidate, "int8")

    def compressed(self, original: Candidate, best: Candidate, candidate: Candidate, what: str) -> Candidate:
        """`candidate` (a compressed form of `best`) compiled, timed beside
        `best` and the original, and evaluated as compiled: the answer where it
        is faster and within the allowed accuracy drop, else `best` (with a note)."""
        check = self.options.accuracy
        assert check is not None and original.accuracy is not None
        if not (self.network_timer and self.options.measure_networks):
            self.notes.append(f"{what} was not tried: it is timed and evaluated as a compiled network on this machine")
            return best
        self.candidates.append(candidate)
        self.say(f"compiling and timing the {what} network beside {best.label}")
        # The original again (and the answer): one side-by-side run, one ONNX Runtime baseline.
        timed = [original, candidate] if best is original else [original, best, candidate]
        for network, seconds in zip(timed, self.network_timer(timed), strict=True):
            network.measured_seconds = seconds
        self.say(f"validation accuracy of the {what} network")
        candidate.accuracy = self.network_timer.accuracy(candidate, check.data)
        floor = original.accuracy - check.max_drop
        assert candidate.measured_seconds is not None and best.measured_seconds is not None
        if candidate.accuracy < floor:
            self.notes.append(
                f"{what} lost more than {check.max_drop:.1%} of validation accuracy ({candidate.accuracy:.2%} "
                f"against the original's {original.accuracy:.2%}): the answer stays {best.label}"
            )
            return best
        if candidate.measured_seconds >= best.measured_seconds:
            self.notes.append(
                f"{what} measured {candidate.measured_seconds * 1e3:.3g} ms, not faster than "
                f"{best.measured_seconds * 1e3:.3g} ms: the answer stays {best.label}"
            )
            return best
        return candidate


def _short(workload: Workload) -> str:
    n, c, h, w = workload.input
    return f"{c}->{workload.out_channels} {h}x{w} k{workload.kernel[0]} g{workload.groups}"
