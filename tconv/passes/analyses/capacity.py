"""Representational capacity of an untrained network: Fisher potential, the
NASWOT score and SynFlow, measured with the reference executor.

Fisher potential and NASWOT run the network as it is being trained, on one
minibatch: batch-norm normalises with the statistics of the minibatch
(training mode), not with its running mean and variance, which at
initialisation are 0 and 1 and say nothing.

**Convolution blocks.** The output of the block of a `conv2d` is found by
following the convolution's result through at most one `batch_norm` and then
at most one `relu` or `relu6`, taking each step only where that op is the
value's single user; the last value reached is the block output. In a ResNet
basic block, `conv1 → bn1 → relu` ends at the relu, while `conv2 → bn2 → add`
ends at bn2 (an add is not followed), as does the projection shortcut. A block
is named as `tconv summary` names its convolution (`layer1.0.conv1` for the
conv reading `layer1.0.conv1.weight`).

**Fisher potential** (Theis et al. 2018, as used by BlockSwap, Turner et al.
2020). With a the block output (N x C x H x W) and g = ∂L/∂a, where L is the
softmax cross-entropy of the logits against the labels, averaged over the
batch: per channel c,

    Δc = ½ · mean over samples n of (Σ over h, w of a·g)²

A block's potential is Σc Δc; the network's is the sum over its blocks. The
per-channel values are kept: they rank channels for pruning. Since L is a
mean over the batch, g shrinks as the batch grows: compare potentials measured
at one batch size.

**NASWOT** (Mellor et al. 2021). Each `relu` and `relu6` whose result reaches
the function's result binarises its input per sample, x > 0, into codes
c ∈ {0,1}^(N x features). With K = Σ over those ReLUs of c·cᵀ + (1-c)·(1-c)ᵀ
(the N x N counts of agreeing units), the score is log|det K|, from
`numpy.linalg.slogdet` in float64 (-inf where K is singular).

**SynFlow** (Tanaka et al. 2020, as a zero-cost proxy in Abdelfattah et al.
2021) needs no data. Every parameter θ is replaced by |θ|, the network is run
in float64 on one all-ones input, and R is the sum of its logits. The score is
Σ |θ · ∂R/∂θ| over the weights of every `conv2d` and `dense` (not biases, not
batch-norm). Batch-norm runs in inference form with |scale|, |shift|, |mean|
and |var| (training mode would normalise the single constant sample to zero);
at initialisation (mean 0, var 1, scale 1, shift 0) it is the identity up to
1/sqrt(1 + ε), so this is SynFlow of the network without batch-norm, as
Tanaka et al. prescribe. The value grows geometrically with depth: compare it
between variants of one network, as a ratio.

`minibatch` draws the seeded data the metrics run on (scikit-learn's digits by
default; see `tconv.passes.analyses.capacity_data`). `measure_seeds` repeats a
measurement over several seeds and reports the median and the spread.
Everything is deterministic: the same parameters, data and labels give the
same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import prod

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue

from tconv.ir.loader import TconvError
from tconv.ir.ops import BatchNormOp, Conv2dOp, DenseOp, ParamOp, Relu6Op, ReluOp, TconvOp, shape_of
from tconv.ir.params import init_params
from tconv.passes.analyses import capacity_data
from tconv.passes.analyses.capacity_data import DEFAULT_SOURCE
from tconv.passes.analyses.summary import summarize
from tconv.semantics.backward import check_labels, forward_backward, forward_values, parameter_gradients
from tconv.semantics.reference import single_function

METRICS = ("fisher", "naswot", "synflow")

DEFAULT_METRIC = "naswot"
"""The metric legality checks and `tconv capacity` use unless told otherwise.
NASWOT is the only one of the three that refuses the harmful ResNet-34
rewrites and accepts the mild one at min-capacity 1.0
(tests/integration/test_capacity_discrimination.py): the Fisher potential
rises when every 3×3 convolution becomes depthwise, and SynFlow falls for any
rewrite that removes weights, grouping in two included. On the digits τ
experiment (bench/capacity_tau.py, docs/benchmarks.md) NASWOT ranks trained
accuracy positively (τ ≈ +0.39), SynFlow about as well (≈ +0.36), Fisher
inversely (≈ -0.17); plain parameter and FLOP counts rank it better than all
three (≈ +0.58, +0.59): capacity is a pre-filter, accuracy after
fine-tuning the verdict (`tconv optimize --data`)."""

DEFAULT_SEEDS = (0, 1, 2)

BATCH_NORM = "train"
"""The batch-norm mode both metrics measure in (see the module docstring)."""


# The data -------------------------------------------------------------------


def _signature(module: ModuleOp) -> tuple[tuple[int, ...], int]:
    """The shape of the network's single input and its number of classes (the
    second dimension of its single N x K result)."""
    function = single_function(module)
    inputs = function.function_type.inputs.data
    outputs = function.function_type.outputs.data
    if len(inputs) != 1:
        raise TconvError(
            f"capacity: the network must take one input, '{function.sym_name.data}' takes {len(inputs)}"
        )
    if len(outputs) != 1 or len(shape_of(outputs[0])) != 2:
        shapes = ", ".join("x".join(map(str, shape_of(o))) for o in outputs) or "nothing"
        raise TconvError(
            f"capacity: the network must return one N x classes tensor of logits, it returns {shapes}"
        )
    return shape_of(inputs[0]), shape_of(outputs[0])[1]


def input_shape(module: ModuleOp) -> tuple[int, ...]:
    """The shape of the network's input as the IR declares it."""
    return _signature(module)[0]


def classes(module: ModuleOp) -> int:
    """The number of classes the network's logits score."""
    return _signature(module)[1]


def minibatch(
    module: ModuleOp, batch: int, seed: int, source: str = DEFAULT_SOURCE
) -> tuple[np.ndarray, np.ndarray]:
    """`batch` float32 inputs in the shape of the network's input and int64
    labels in its classes, drawn with `seed` from `source` ("digits":
    scikit-learn's digits, resized, with their labels; "gaussian": N(0, 1)
    and uniform labels; see `tconv.passes.analyses.capacity_data`)."""
    shape, count = _signature(module)
    return capacity_data.draw(source, shape, count, batch, seed)


# Convolution blocks ---------------------------------------------------------


@dataclass(frozen=True)
class ConvBlock:
    """A convolution and the value that ends its block."""

    name: str
    """As `tconv summary` names the convolution."""
    conv: Conv2dOp
    output: SSAValue

    @property
    def weight(self) -> str | None:
        """The convolution's weight entry in the parameter store."""
        owner = self.conv.weight.owner
        return owner.param_name if isinstance(owner, ParamOp) else None


def _single_user(value: SSAValue, kinds: tuple[type[Operation], ...]) -> Operation | None:
    """The op that uses `value`, if it is its only use and the op is one of `kinds`."""
    uses = list(value.uses)
    if len(uses) == 1 and isinstance(uses[0].operation, kinds) and uses[0].index == 0:
        return uses[0].operation
    return None


def conv_blocks(module: ModuleOp) -> list[ConvBlock]:
    """Every convolution's block, in program order (see the module docstring)."""
    names = {
        op: layer.name
        for op, layer in zip(
            (op for op in module.walk() if isinstance(op, TconvOp)), summarize(module).layers
        )
    }
    blocks = []
    for op in single_function(module).body.block.ops:
        if not isinstance(op, Conv2dOp):
            continue
        output = op.results[0]
        for kinds in ((BatchNormOp,), (ReluOp, Relu6Op)):
            user = _single_user(output, kinds)
            if user is not None:
                output = user.results[0]
        blocks.append(ConvBlock(names[op], op, output))
    return blocks


# Fisher potential -----------------------------------------------------------


@dataclass(frozen=True)
class BlockFisher:
    """The Fisher potential of one convolution block."""

    block: ConvBlock
    per_channel: np.ndarray
    """Δc of each of the block's output channels (float64)."""

    @property
    def name(self) -> str:
        return self.block.name

    @property
    def total(self) -> float:
        return float(self.per_channel.sum())


@dataclass(frozen=True)
class FisherPotential:
    blocks: tuple[BlockFisher, ...]
    loss: float
    """The cross-entropy the gradients are taken of."""

    @property
    def total(self) -> float:
        return float(sum(block.total for block in self.blocks))

    def by_name(self) -> dict[str, BlockFisher]:
        return {block.name: block for block in self.blocks}


def channel_fisher(activation: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Δc = ½ · mean over n of (Σ over h, w of a·g)², per channel c of an
    N x C x H x W activation a and its gradient g, in float64."""
    per_sample = (activation * grad).sum(axis=(2, 3), dtype=np.float64)
    return 0.5 * np.mean(np.square(per_sample), axis=0)


def fisher_potential(
    module: ModuleOp, params: Mapping[str, np.ndarray], x: np.ndarray, labels: np.ndarray
) -> FisherPotential:
    """The Fisher potential of every convolution block on inputs x and labels."""
    blocks = conv_blocks(module)
    result = forward_backward(
        module, params, [x], labels, batch_norm=BATCH_NORM,
        keep={block.output for block in blocks}, param_grads=False,
    )
    return FisherPotential(
        blocks=tuple(
            BlockFisher(block, channel_fisher(result.values[block.output], result.grads[block.output]))
            for block in blocks
        ),
        loss=result.loss,
    )


# NASWOT ---------------------------------------------------------------------


def _live_ops(function: func.FuncOp) -> set[Operation]:
    """The ops whose result the function's result depends on."""
    live: set[Operation] = set()
    pending = [function.body.block.last_op]
    while pending:
        op = pending.pop()
        if op is None or op in live:
            continue
        live.add(op)
        pending.extend(o.owner for o in op.operands if isinstance(o.owner, Operation))
    return live


@dataclass(frozen=True)
class NaswotScore:
    score: float
    """log|det K|; -inf where K is singular."""
    relus: int
    """How many ReLUs K sums over."""
    kernel: np.ndarray
    """K, N x N, float64."""


def naswot_score(module: ModuleOp, params: Mapping[str, np.ndarray], x: np.ndarray) -> NaswotScore:
    """The NASWOT score of the network on inputs x."""
    function = single_function(module)
    values = forward_values(module, params, [x], batch_norm=BATCH_NORM)
    live = _live_ops(function)
    batch = x.shape[0]
    kernel = np.zeros((batch, batch))
    relus = 0
    for op in function.body.block.ops:
        if not isinstance(op, ReluOp | Relu6Op) or op not in live:
            continue
        relus += 1
        features = prod(shape_of(op.input)[1:])
        # float32 counts agreements exactly below 2^24 units per sample, at half the cost.
        dtype = np.float32 if features < 1 << 24 else np.float64
        codes = (values[op.input] > 0).reshape(batch, -1).astype(dtype)
        active = codes.sum(axis=1, dtype=np.float64)
        both_active = (codes @ codes.T).astype(np.float64)
        # c·cᵀ + (1-c)·(1-c)ᵀ = 2·c·cᵀ - |c_i| - |c_j| + features
        kernel += 2 * both_active - active[:, None] - active[None, :] + features
    sign, logdet = np.linalg.slogdet(kernel)
    return NaswotScore(score=float(logdet) if sign != 0 else -np.inf, relus=relus, kernel=kernel)


# SynFlow --------------------------------------------------------------------


def _weight_names(module: ModuleOp) -> list[str]:
    """The store names of the weights of every conv2d and dense."""
    return [
        op.weight.owner.param_name
        for op in module.walk()
        if isinstance(op, Conv2dOp | DenseOp) and isinstance(op.weight.owner, ParamOp)
    ]


def synflow_score(module: ModuleOp, params: Mapping[str, np.ndarray]) -> float:
    """SynFlow of the network with parameters `params` (see the module docstring)."""
    shape, _ = _signature(module)
    positive = {name: np.abs(np.asarray(value, np.float64)) for name, value in params.items()}
    ones = np.ones((1, *shape[1:]), np.float64)
    grads = parameter_gradients(
        module, positive, [ones], np.ones_like, batch_norm="inference", dtype=np.float64
    )
    return float(sum(np.sum(positive[name] * np.abs(grads[name])) for name in _weight_names(module)))


# The report -----------------------------------------------------------------


@dataclass(frozen=True)
class CapacityReport:
    """A capacity metric with the network's size and work."""

    network: str
    metric: str
    value: float
    batch: int
    """The minibatch the metric was measured on."""
    parameters: int
    flops: int
    activation_bytes: int
    ir_batch: int
    """The batch `flops` and `activation_bytes` are counted at (the IR's)."""
    fisher: FisherPotential | None = None
    naswot: NaswotScore | None = None


def measure(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    metric: str,
    x: np.ndarray,
    labels: np.ndarray | None = None,
) -> CapacityReport:
    """`metric` (one of METRICS) on inputs x (and labels, which Fisher needs;
    SynFlow uses neither), with the parameter count, FLOPs and activation bytes of `tconv summary`."""
    if metric not in METRICS:
        raise TconvError(f"capacity: unknown metric '{metric}' (expected one of {', '.join(METRICS)})")
    shape, count = _signature(module)
    summary = summarize(module)
    common = dict(
        network=summary.name,
        metric=metric,
        batch=x.shape[0],
        parameters=summary.parameters,
        flops=summary.flops,
        activation_bytes=summary.activation_bytes,
        ir_batch=shape[0],
    )
    if metric == "synflow":
        common["batch"] = 1  # one all-ones input; x is not used
        return CapacityReport(value=synflow_score(module, params), **common)
    if metric == "fisher":
        if labels is None:
            raise TconvError("capacity: the Fisher potential needs labels")
        fisher = fisher_potential(module, params, x, check_labels(labels, x.shape[0], count))
        return CapacityReport(value=fisher.total, fisher=fisher, **common)
    naswot = naswot_score(module, params, x)
    return CapacityReport(value=naswot.score, naswot=naswot, **common)


# Several seeds --------------------------------------------------------------


@dataclass(frozen=True)
class SeededCapacity:
    """One metric measured once per seed."""

    metric: str
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    """The metric at each seed, in the order of `seeds`."""
    reports: tuple[CapacityReport, ...]

    @property
    def median(self) -> float:
        return float(np.median(self.values))

    @property
    def low(self) -> float:
        return float(min(self.values))

    @property
    def high(self) -> float:
        return float(max(self.values))

    @property
    def relative_spread(self) -> float:
        """(max - min) / |median|: how far apart the seeds are, as a fraction."""
        median = abs(self.median)
        return (self.high - self.low) / median if median > 0 else float("inf")


def measure_seeds(
    module: ModuleOp,
    metric: str,
    *,
    seeds: tuple[int, ...] = DEFAULT_SEEDS,
    batch: int = 64,
    params: Mapping[str, np.ndarray] | None = None,
    source: str = DEFAULT_SOURCE,
    data: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> SeededCapacity:
    """`metric` once per seed. At seed s the minibatch is `minibatch(module,
    batch, s, source)` unless `data` (inputs, labels) is given, and the
    parameters are `params` if given, else `init_params(module, s)`. So without
    a store the spread covers both the initialisation and the data; with one,
    the data alone (SynFlow, which uses no data, then has no spread)."""
    if not seeds:
        raise TconvError("capacity: measure_seeds needs at least one seed")
    reports = []
    for seed in seeds:
        x, labels = data if data is not None else minibatch(module, batch, seed, source)
        values = params if params is not None else init_params(module, seed)
        reports.append(measure(module, values, metric, x, labels))
    return SeededCapacity(
        metric=metric,
        seeds=tuple(seeds),
        values=tuple(report.value for report in reports),
        reports=tuple(reports),
    )
