"""A learned latency model of convolution kernels, to rank schedule
candidates before measuring them.

    model = LatencyModel().fit(samples)               # [(workload, knobs, seconds), ...]
    best_first = model.rank([(workload, k) for k in candidates(workload)])
    tau = rank_correlation(model, held_out)

The model predicts log(seconds) as an analytic *baseline* plus a learned
*residual*:

- the baseline is log(FLOPs / efficiency): the work, divided by the
  fraction of issued FMA slots that do useful work in the templates'
  register-tile models (`register_tile`: `blocking.tile_efficiency`,
  `blocking.column_efficiency`). It ranks candidates with no
  measurement at all;
- the residual, log(measured seconds) − baseline, is a Gaussian process
  (scikit-learn's `GaussianProcessRegressor`) over `workload_features`:
  a constant × Matérn(ν = 5/2) kernel with one length scale per feature,
  plus white noise for the timing jitter; standardised features (those
  constant over the samples left out), normalised targets, a fixed
  `random_state` for the optimiser's restarts.

So the GP learns how a machine departs from the issue-rate model (its
per-FLOP speed, overheads of small layers, register spills, blocks that
fill vectors partly), and with few measurements the prediction falls back
to the baseline:

- 0 samples: the baseline (an order by FLOPs / efficiency; the seconds are
  a FLOP a nanosecond, only a scale), with std PRIOR_STD;
- 1 sample: the baseline shifted to pass through it (same order);
- 2 samples: that, plus the GP's correction near each, with the kernel's
  hyperparameters at their initial values (the marginal likelihood of two
  points says nothing about 25 length scales);
- 3 samples or more: the hyperparameters are fitted.

Deterministic: the same samples give the same model and the same ranking.
"""

from __future__ import annotations

import math
import random
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tconv.errors import TconvError
from tconv.ir.schedule import GSPC
from tconv.kernels.blocking import column_efficiency, tile_efficiency
from tconv.search.tuning import Knobs, TuningDatabase, Workload

Sample = tuple[Workload, Knobs, float]
"""One measurement: a workload, the knobs it ran with, its seconds."""

MAX_KNOBS = 7
"""Knob slots in the feature vector (`tuning.Knobs.slots`)."""

MISSING_KNOB = -1.0
"""The feature of an absent knob (a present knob k ≥ 0 is log2(1 + k) ≥ 0)."""

FEATURE_NAMES = (
    "log2 batch",
    "log2 input channels",
    "log2 output channels",
    "log2 input channels per group",
    "log2 output channels per group",
    "log2 output height",
    "log2 output width",
    "log2 kernel height",
    "log2 kernel width",
    "log2 stride height",
    "log2 stride width",
    "log2 dilation height",
    "log2 dilation width",
    "log2 groups",
    "log2 FLOPs",
    "depthwise",
    *(f"log2(1 + knob {i})" for i in range(MAX_KNOBS)),
    "log2 issue-rate efficiency of the register tile",
    "log2 vector accumulators of the register tile",
    "lane use of the register tile",
)
"""What each entry of `workload_features` is."""

FIXED_HYPERPARAMETERS_BELOW = 3
"""Fewer samples than this: the kernel's hyperparameters stay at their initial values."""

MAX_SAMPLES = 400
"""The most measurements a model is fitted on (see `LatencyModel.from_database`)."""

RANDOM_STATE = 0


@lru_cache(maxsize=1)
def host_lanes() -> int:
    """The f32 lanes of this machine's vector registers (16 with AVX-512)."""
    from tconv.lowering.tvm.target import cpu_target, vector_unit

    return vector_unit(cpu_target()).lanes


def _log2(value: float) -> float:
    return math.log2(max(float(value), 1e-30))


@dataclass(frozen=True)
class RegisterTile:
    """What the knobs make of one accumulation step, in the templates' core
    model: the issue-rate efficiency (useful FMA slots per issued one, in
    (0, 1]), the vector accumulators the tile holds, and the fraction of
    their lanes that hold real channels or columns."""

    efficiency: float
    accumulators: int
    lane_use: float


def register_tile(workload: Workload, knobs: Knobs, lanes: int) -> RegisterTile:
    """The register tile of `workload` with `knobs`. Direct template:
    `channels` in vectors × `columns`, efficiency by
    `blocking.tile_efficiency`. GSPC: `channels` × `rows` × `columns` in
    vectors, by `blocking.column_efficiency`. Knobs naming no tile
    (Winograd, none): efficiency 1, one accumulator, full lanes."""
    if not knobs.tiled or min(knobs.channels, knobs.columns) < 1:
        return RegisterTile(1.0, 1, 1.0)
    block, width_tile, rows = knobs.channels, knobs.columns, max(1, knobs.rows)
    if knobs.algorithm == GSPC:
        vectors = -(-width_tile // lanes)
        efficiency = column_efficiency(
            block, rows, width_tile, workload.out_group, workload.out_height, workload.out_width,
            workload.kernel, lanes,
        )
        tile = RegisterTile(efficiency, block * rows * vectors, width_tile / (vectors * lanes))
    else:
        vectors = -(-block // lanes)
        channels = block if workload.depthwise else workload.out_group
        efficiency = tile_efficiency(block, width_tile, channels, workload.out_width, lanes)
        tile = RegisterTile(efficiency, vectors * width_tile, block / (vectors * lanes))
    return RegisterTile(min(1.0, max(1e-3, tile.efficiency)), tile.accumulators, tile.lane_use)


def workload_features(workload: Workload, knobs: Knobs, lanes: int | None = None) -> np.ndarray:
    """The fixed-length feature vector of a convolution with `knobs` (entries
    named by FEATURE_NAMES): log2 of the shape's sizes, the FLOPs, whether it
    is depthwise, the first MAX_KNOBS knobs (MISSING_KNOB where absent), and
    the register tile they make (`register_tile`): its issue-rate efficiency,
    its vector accumulators (too many spill past the register file) and the
    lanes it fills (a block of 1.5 vectors runs far slower than the issue-rate
    model says). `lanes`: the target's vector lanes (default this machine's)."""
    lanes = host_lanes() if lanes is None else lanes
    n, c, _, _ = workload.input
    groups = workload.groups
    knob_slots = [_log2(1 + k) for k in knobs.slots()[:MAX_KNOBS]]
    knob_slots += [MISSING_KNOB] * (MAX_KNOBS - len(knob_slots))
    tile = register_tile(workload, knobs, lanes)
    features = [
        _log2(n), _log2(c), _log2(workload.out_channels), _log2(c // groups), _log2(workload.out_group),
        _log2(workload.out_height), _log2(workload.out_width),
        _log2(workload.kernel[0]), _log2(workload.kernel[1]),
        _log2(workload.strides[0]), _log2(workload.strides[-1]),
        _log2(workload.dilations[0]), _log2(workload.dilations[-1]),
        _log2(groups), _log2(workload.flops), float(workload.depthwise),
        *knob_slots,
        _log2(tile.efficiency), _log2(tile.accumulators), tile.lane_use,
    ]
    return np.asarray(features, dtype=np.float64)


def baseline_log_seconds(workload: Workload, knobs: Knobs, lanes: int | None = None) -> float:
    """log(FLOPs / issue-rate efficiency): the analytic part of the prediction, in
    log-seconds up to a constant (a FLOP a nanosecond)."""
    lanes = host_lanes() if lanes is None else lanes
    return math.log(workload.flops * 1e-9 / register_tile(workload, knobs, lanes).efficiency)


class LatencyModel:
    """Predicted seconds of convolution kernels (see the module docstring).
    `lanes`: the vector lanes of the measured machine (default this one's)."""

    PRIOR_STD = 1.0
    """The std of a prediction with no sample (in log-seconds: a factor e)."""

    def __init__(self, lanes: int | None = None, random_state: int = RANDOM_STATE) -> None:
        self.lanes = host_lanes() if lanes is None else lanes
        self.random_state = random_state
        self.samples: list[Sample] = []
        self._gp = None
        self._mean = self._scale = self._columns = None
        self._offset = 0.0

    def _kernel(self, dimensions: int):
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        return (
            ConstantKernel(1.0, (1e-2, 1e2))
            * Matern(length_scale=np.full(dimensions, 3.0), length_scale_bounds=(0.1, 1e3), nu=2.5)
            + WhiteKernel(0.05, (1e-5, 1.0))
        )

    def _features(self, pairs: Iterable[tuple[Workload, Knobs]]) -> np.ndarray:
        return np.array([workload_features(w, k, self.lanes) for w, k in pairs]).reshape(-1, len(FEATURE_NAMES))

    def _baselines(self, pairs: Sequence[tuple[Workload, Knobs]]) -> np.ndarray:
        return np.array([baseline_log_seconds(w, k, self.lanes) for w, k in pairs])

    def fit(self, samples: Iterable[Sample]) -> LatencyModel:
        """Learn from `samples` (replacing what was learned before); returns self."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor

        self.samples = list(samples)
        for workload, knobs, seconds in self.samples:
            if not seconds > 0 or not math.isfinite(seconds):
                raise TconvError(f"error: cost model: a measurement must be positive seconds, got {seconds} "
                                 f"for '{workload.key}' with knobs {knobs}")
        self._gp = None
        if not self.samples:
            return self
        pairs = [(w, k) for w, k, _ in self.samples]
        x = self._features(pairs)
        # Features constant over the samples say nothing yet: left out, so the
        # optimiser has fewer length scales to fit.
        scale = x.std(axis=0)
        self._columns = np.flatnonzero(scale > 1e-9) if len(self.samples) > 1 else np.arange(x.shape[1])
        x = x[:, self._columns]
        self._mean = x.mean(axis=0)
        self._scale = np.where(scale[self._columns] > 1e-9, scale[self._columns], 1.0)
        residual = np.log([s for _, _, s in self.samples]) - self._baselines(pairs)
        few = len(self.samples) < FIXED_HYPERPARAMETERS_BELOW
        self._gp = GaussianProcessRegressor(
            kernel=self._kernel(x.shape[1]),
            normalize_y=not few,  # one or two values have no spread to normalise by
            optimizer=None if few else "fmin_l_bfgs_b",
            n_restarts_optimizer=0 if few else 2,
            random_state=self.random_state,
        )
        # With normalize_y the GP adds the residuals' mean itself; without, it is added here.
        self._offset = float(residual.mean()) if few else 0.0
        residual = residual - self._offset
        with warnings.catch_warnings():
            # A length scale at its upper bound means that feature does not matter: no news.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._gp.fit((x - self._mean) / self._scale, residual)
        return self

    def predict_log(self, pairs: Sequence[tuple[Workload, Knobs]]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of log(seconds) of each (workload, knobs)."""
        pairs = list(pairs)
        baseline = self._baselines(pairs)
        if self._gp is None:
            return baseline, np.full(len(pairs), self.PRIOR_STD)
        x = (self._features(pairs)[:, self._columns] - self._mean) / self._scale
        mean, std = self._gp.predict(x, return_std=True)
        return baseline + self._offset + mean, std

    def predict(self, workload: Workload, knobs: Knobs) -> tuple[float, float]:
        """Predicted seconds of one run, and the std of its logarithm."""
        mean, std = self.predict_log([(workload, knobs)])
        return float(math.exp(mean[0])), float(std[0])

    def rank(
        self, candidates: Sequence[tuple[Workload, Knobs]], strategy: str = "mean", kappa: float = 1.0
    ) -> list[tuple[Workload, Knobs]]:
        """`candidates` fastest first: by predicted mean (`mean`), or by the
        lower confidence bound mean − kappa·std (`lcb`: uncertain candidates
        rise, to explore). Ties keep the given order."""
        if strategy not in ("mean", "lcb"):
            raise TconvError(f"error: cost model: unknown ranking strategy '{strategy}' (expected mean or lcb)")
        candidates = list(candidates)
        if not candidates:
            return []
        mean, std = self.predict_log(candidates)
        score = mean - kappa * std if strategy == "lcb" else mean
        order = sorted(range(len(candidates)), key=lambda i: (round(float(score[i]), 9), i))
        return [candidates[i] for i in order]

    @classmethod
    def from_database(
        cls, database: TuningDatabase, target: str, lanes: int | None = None, focus: Sequence[Workload] = ()
    ) -> LatencyModel:
        """A model fitted on the measurements of `target` in `database`: all
        of them up to MAX_SAMPLES, else those of the `focus` workloads first
        and an even spread of the rest (a GP fit grows with the cube of its
        samples: a tuning database of 2,400 records took minutes)."""
        samples = database_samples(database, target)
        if len(samples) > MAX_SAMPLES:
            keys = {w.key for w in focus}
            own = [sample for sample in samples if sample[0].key in keys]
            rest = [sample for sample in samples if sample[0].key not in keys]
            samples = _spread(own, MAX_SAMPLES) + _spread(rest, max(0, MAX_SAMPLES - len(own)))
        return cls(lanes).fit(samples)


def _spread(samples: list[Sample], count: int) -> list[Sample]:
    """`count` of `samples`, evenly spaced (all where there are no more)."""
    if len(samples) <= count:
        return samples
    return [samples[i * len(samples) // count] for i in range(count)]


# Workloads back from the database ------------------------------------------------

_KEY = re.compile(
    r"conv2d n(\d+) c(\d+) h(\d+) w(\d+) o(\d+) k(\d+)x(\d+) s([\dx]+) p([\d,]+) d([\dx]+) g(\d+)"
)


def parse_workload_key(key: str) -> Workload:
    """The Workload whose `.key` is `key`."""
    match = _KEY.fullmatch(key)
    if not match:
        raise TconvError(f"error: '{key}' is not a convolution workload key (expected the form of Workload.key)")
    n, c, h, w, o, kh, kw = (int(g) for g in match.groups()[:7])
    strides, padding, dilations, groups = match.groups()[7:]
    return Workload(
        (n, c, h, w), o, (kh, kw), tuple(int(s) for s in strides.split("x")),
        tuple(int(p) for p in padding.split(",")), tuple(int(d) for d in dilations.split("x")), int(groups),
    )


def database_samples(database: TuningDatabase, target: str) -> list[Sample]:
    """Every measurement of `target` in `database`, in a stable order."""
    samples = []
    for (workload_key, record_target), measured in sorted(database.records.items()):
        if record_target != target:
            continue
        workload = parse_workload_key(workload_key)
        samples.extend((workload, knobs, seconds) for knobs, seconds in sorted(measured.items()))
    return samples


def split_samples(samples: Sequence[Sample], train: int, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """`train` samples drawn at random (reproducibly, by `seed`) and the rest, held out."""
    if not 0 <= train <= len(samples):
        raise TconvError(f"error: cannot train on {train} of {len(samples)} measurements")
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    return [samples[i] for i in order[:train]], [samples[i] for i in order[train:]]


def rank_correlation(model: LatencyModel, held_out: Sequence[Sample], per_workload: bool = False) -> float:
    """Kendall's τ between the model's predicted and the measured seconds of
    `held_out` (1: the same order; 0: unrelated). `per_workload`: the mean τ
    over the workloads with at least 3 held-out samples, each ranked among its
    own knobs only — what choosing a schedule needs; across workloads, FLOPs
    alone order most pairs."""
    from scipy.stats import kendalltau

    def tau(samples: Sequence[Sample]) -> float:
        predicted, _ = model.predict_log([(w, k) for w, k, _ in samples])
        return float(kendalltau(predicted, [s for _, _, s in samples]).statistic)

    if not per_workload:
        if len(held_out) < 2:
            raise TconvError(f"error: a rank correlation needs 2 held-out measurements or more, got {len(held_out)}")
        return tau(held_out)
    by_workload: dict[str, list[Sample]] = {}
    for sample in held_out:
        by_workload.setdefault(sample[0].key, []).append(sample)
    taus = [tau(group) for group in by_workload.values() if len(group) >= 3]
    taus = [t for t in taus if math.isfinite(t)]
    if not taus:
        raise TconvError("error: a per-workload rank correlation needs a workload with 3 held-out measurements or more")
    return float(np.mean(taus))
