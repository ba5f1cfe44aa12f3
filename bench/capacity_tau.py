"""Does capacity at initialisation predict trained accuracy, and does a few
steps of training predict it better? Kendall τ between each signal and test
accuracy over rewrite variants of a small CNN on scikit-learn's digits (8×8
grey, 10 classes).

    .venv/bin/python bench/capacity_tau.py [--quick] [--epochs 10] [--seeds 3] [--steps 20,100]
        [--engine torch|reference] [--source digits|gaussian] [--variant NAME ...] [-o FILE]

The base network is conv 16 → conv 32 → 2×2 max-pool → conv 64 → global
average pool → dense 10, every convolution 3×3 with batch-norm and ReLU (its
convolutions are `conv1`, `conv2`, `conv3`). Each variant applies one rewrite
(grouping, bottleneck, depthwise with and without a pointwise convolution,
width, depth, kernel size) and is built directly with `NetworkBuilder`; the
variants marked "(pass)" are the forms tconv's NAS passes produce where the
hand-built list has no equal (depthwise-separable with nothing between the
depthwise and the pointwise convolution, bottleneck blocks): their network is
the pass applied to the base.

The data: scikit-learn's `train_test_split` of the standardised digits, 25 %
test, stratified, random_state 0: 1,347 training and 450 test digits. For the
trained signals below the training split is split again (20 % validation,
stratified, random_state 0): 1,077 fitting and 270 validation digits, so no
signal sees a test digit.

Per variant and per seed s (0, 1, ...), from `init_params(module, s)`:
- capacity at initialisation: Fisher potential and NASWOT on the default
  minibatch (`capacity.minibatch(module, 64, s)`, 64 digits drawn from all
  1,797), and SynFlow;
- the target: training on the whole training split, SGD (momentum 0.9, weight
  decay 5e-4, batches of 32, learning rate 0.05), `--epochs` epochs, then test
  accuracy. `--engine torch` (the default) trains with `tconv.train`
  (Nesterov momentum, a cosine schedule to 0, the last short batch kept);
  `--engine reference` with tconv's numpy backward pass (plain momentum, a
  constant rate, the last short batch dropped: the protocol of the first
  measurement, about 2 epochs affordable). Either way batch-norm trains in
  training mode and is evaluated in inference form with the mean and (biased)
  variance of each batch-norm input over the whole training split;
- "scratch k": validation accuracy after k SGD steps from the same
  initialisation on the fitting digits (batches of 32, learning rate 0.05 on a
  cosine schedule over the k steps), defined for every variant;
- "inherited k", for the variants that are a NAS rewrite of the base
  expressible by tconv's passes (`REWRITE_SPECS`, `PASS_VARIANTS`; each spec
  is checked to give the variant's exact network): the base is trained once
  (seed 0, `--epochs` epochs, on the fitting digits), the variant's pass spec
  is applied to it with the trained store (the passes inherit its weights:
  block-diagonal part, kept channels, rank-1 or Tucker-2 factors), and the
  rewritten network is fine-tuned for k steps at learning rate 0.01 (what
  `tconv optimize --data` fine-tunes with; batch order from s); "inherited 0"
  is the rewrite itself, untouched. The base is not among these variants (it
  would inherit its own trained weights).
Validation accuracy is measured like test accuracy, batch-norm statistics
over the fitting digits. Capacity values are medians over the seeds,
accuracies means. τ is `scipy.stats.kendalltau` (τ-b), over all variants and
over the rewrite variants; parameter count and FLOPs are ranked too, as the
baselines a signal must beat. With two seeds or more, "ceiling" ranks the
variants by one full training (seed 0) against the mean of the others: how
well a second training run agrees with the first.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau
from sklearn.model_selection import train_test_split
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import PassPipeline

from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import make_context
from tconv.ir.ops import BatchNormOp, ParamOp, shape_of
from tconv.ir.params import init_params
from tconv.passes.analyses import capacity
from tconv.passes.analyses.capacity_data import DEFAULT_SOURCE, SOURCES, standardised_digits
from tconv.passes.analyses.summary import summarize
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.registry import PASSES
from tconv.semantics.backward import forward_backward, forward_values
from tconv.semantics.reference import single_function
from tconv.train.data import Dataset
from tconv.train.engine import train_network
from tconv.train.loop import TrainConfig, evaluate
from tconv.train.network import TrainableNetwork

METRICS = ("fisher", "naswot", "synflow")
CAPACITY_BATCH = 64
ENGINES = ("torch", "reference")
BATCH = 32
LR = 0.05
"""Full training and the k steps from scratch."""
FINE_TUNE_LR = 0.01
"""The k steps from inherited weights (the search's fine-tuning rate)."""
VALIDATION_FRACTION = 0.2
FULL = {"epochs": 10, "seeds": 3, "steps": (20, 100)}
QUICK = {"epochs": 3, "seeds": 1, "steps": (5, 20)}
QUICK_VARIANTS = (
    "conv2 groups 4", "conv3 bottleneck 2", "conv3 depthwise-separable (pass)", "narrower /2", "wider x2",
)


# The variants ---------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One 3×3 (or `kernel`) convolution of the network and how it is rewritten."""

    out: int
    groups: int = 1
    """1, a number of groups, or 0 for depthwise (groups = input channels)."""
    pointwise: bool = False
    """Follow the (grouped or depthwise) convolution by a 1×1 convolution to `out`
    channels: depthwise-separable when groups is 0."""
    kernel: int = 3


BASE = (Layer(16), Layer(32), Layer(64))


def _conv_block(b: NetworkBuilder, x, layer: Layer, name: str):
    in_channels = shape_of(x)[1]
    groups = in_channels if layer.groups == 0 else layer.groups
    # Depthwise with a pointwise after it keeps the input width; without one it
    # must reach `out` itself (channel multiplier out / in).
    out = in_channels if layer.pointwise and layer.groups == 0 else layer.out
    x = b.relu(b.batch_norm(b.conv2d(x, out, layer.kernel, groups=groups, name=name), name=f"{name}.bn"))
    if layer.pointwise:
        x = b.relu(b.batch_norm(b.conv2d(x, layer.out, 1, name=f"{name}.pw"), name=f"{name}.pw.bn"))
    return x


def small_cnn(layers: tuple[Layer | None, ...], name: str = "digits_cnn"):
    """The network; a None layer is left out (the pool stays after the second slot)."""
    b = NetworkBuilder(name, (1, 1, 8, 8))
    x = b.input
    for index, layer in enumerate(layers):
        if layer is not None:
            x = _conv_block(b, x, layer, f"conv{index + 1}")
        if index == 1:
            x = b.max_pool2d(x, 2)
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


def _replace(slot: int, layer: Layer | None) -> tuple[Layer | None, ...]:
    layers = list(BASE)
    layers[slot] = layer
    return tuple(layers)


def variants() -> dict[str, tuple[Layer | None, ...]]:
    """Every hand-built variant by name. conv1 reads one channel, so only conv2 and conv3 are grouped."""
    found: dict[str, tuple[Layer | None, ...]] = {"base": BASE}
    # conv2 reads 16 channels: its groups 16 is "conv2 depthwise, no pointwise" below.
    for groups in (2, 4, 8):
        found[f"conv2 groups {groups}"] = _replace(1, Layer(32, groups))
    for groups in (2, 4, 8, 16):
        found[f"conv3 groups {groups}"] = _replace(2, Layer(64, groups))
    for groups in (2, 4, 8):
        found[f"conv2+3 groups {groups}"] = (BASE[0], Layer(32, groups), Layer(64, groups))
    found["conv2+3 groups 8 + pointwise"] = (BASE[0], Layer(32, 8, True), Layer(64, 8, True))
    for factor in (2, 4):
        found[f"conv1 bottleneck {factor}"] = _replace(0, Layer(16 // factor))
    for factor in (2, 4, 8):
        found[f"conv2 bottleneck {factor}"] = _replace(1, Layer(32 // factor))
    for factor in (2, 4, 16):
        found[f"conv3 bottleneck {factor}"] = _replace(2, Layer(64 // factor))
    found["conv2 depthwise-separable"] = _replace(1, Layer(32, 0, True))
    found["conv3 depthwise-separable"] = _replace(2, Layer(64, 0, True))
    found["conv2+3 depthwise-separable"] = (BASE[0], Layer(32, 0, True), Layer(64, 0, True))
    found["conv2 depthwise, no pointwise"] = _replace(1, Layer(32, 0))
    found["conv3 depthwise, no pointwise"] = _replace(2, Layer(64, 0))
    found["conv2+3 depthwise, no pointwise"] = (BASE[0], Layer(32, 0), Layer(64, 0))
    found["wider x2"] = tuple(Layer(layer.out * 2) for layer in BASE)
    found["conv3 wider x2"] = _replace(2, Layer(128))
    found["narrower /2"] = tuple(Layer(layer.out // 2) for layer in BASE)
    found["narrower /4"] = tuple(Layer(layer.out // 4) for layer in BASE)
    found["without conv2"] = _replace(1, None)
    found["without conv3"] = _replace(2, None)
    found["conv1 only"] = (BASE[0], None, None)
    found["conv2+3 1x1"] = (BASE[0], Layer(32, kernel=1), Layer(64, kernel=1))
    return found


def _spec(pass_name: str, layers: str, **options: int) -> str:
    settings = [f"{key}={value}" for key, value in options.items()]
    settings.append(f'layers="{layers}"')
    return f"{pass_name}{{{' '.join(settings)}}}"


def rewrite_specs() -> dict[str, str]:
    """The hand-built variants that are a NAS rewrite of the base, with the pass
    pipeline that gives exactly their network (`check_rewrite_specs`). The
    others are not: the hand-built depthwise-separable forms put batch-norm
    and ReLU between the depthwise and pointwise convolutions (the pass puts
    nothing, see `PASS_VARIANTS`), grouped + pointwise adds a layer, and no
    pass widens, removes a layer or changes a kernel's size."""
    specs: dict[str, str] = {}
    for groups in (2, 4, 8):
        specs[f"conv2 groups {groups}"] = _spec("tconv-group", "conv2", groups=groups)
        specs[f"conv2+3 groups {groups}"] = _spec("tconv-group", "conv2,conv3", groups=groups)
    for groups in (2, 4, 8, 16):
        specs[f"conv3 groups {groups}"] = _spec("tconv-group", "conv3", groups=groups)
    for layer, factors in (("conv1", (2, 4)), ("conv2", (2, 4, 8)), ("conv3", (2, 4, 16))):
        for factor in factors:
            specs[f"{layer} bottleneck {factor}"] = _spec("tconv-bottleneck", layer, factor=factor)
    # Depthwise with a channel multiplier is grouping by the input channels.
    conv2_depthwise = _spec("tconv-group", "conv2", groups=16)
    conv3_depthwise = _spec("tconv-group", "conv3", groups=32)
    specs["conv2 depthwise, no pointwise"] = conv2_depthwise
    specs["conv3 depthwise, no pointwise"] = conv3_depthwise
    specs["conv2+3 depthwise, no pointwise"] = f"{conv2_depthwise},{conv3_depthwise}"
    for factor in (2, 4):
        specs[f"narrower /{factor}"] = _spec("tconv-bottleneck", "conv1,conv2,conv3", factor=factor)
    return specs


PASS_VARIANTS: dict[str, str] = {
    "conv2 depthwise-separable (pass)": _spec("tconv-depthwise-separable", "conv2"),
    "conv3 depthwise-separable (pass)": _spec("tconv-depthwise-separable", "conv3"),
    "conv2+3 depthwise-separable (pass)": _spec("tconv-depthwise-separable", "conv2,conv3"),
    "conv2 bottleneck-block 2 (pass)": _spec("tconv-bottleneck-block", "conv2", factor=2),
    "conv3 bottleneck-block 2 (pass)": _spec("tconv-bottleneck-block", "conv3", factor=2),
    "conv3 bottleneck-block 4 (pass)": _spec("tconv-bottleneck-block", "conv3", factor=4),
    "conv3 bottleneck-block 2 + middle groups 4 (pass)": _spec("tconv-bottleneck-block", "conv3", factor=2)
    + "," + _spec("tconv-group", "conv3_mid", groups=4),
}
"""Rewrites the search makes (`tconv.search.space.DEFAULT_REWRITES`) whose
form no hand-built variant has; their network is the pass applied to the base."""


@dataclass(frozen=True)
class Variant:
    name: str
    layers: tuple[Layer | None, ...] | None
    """The hand-built network; None: the pass's (`spec` on the base)."""
    spec: str | None
    """The pass pipeline that rewrites the base into this network; None where
    the passes cannot (the variant has no inherited signal)."""

    def module(self) -> ModuleOp:
        if self.layers is not None:
            return small_cnn(self.layers)
        assert self.spec is not None
        return rewrite(small_cnn(BASE), {}, self.spec, inherit=False)[0]


def all_variants() -> list[Variant]:
    specs = rewrite_specs()
    found = [Variant(name, layers, specs.get(name)) for name, layers in variants().items()]
    return found + [Variant(name, None, spec) for name, spec in PASS_VARIANTS.items()]


def rewrite(
    module: ModuleOp, params: dict[str, np.ndarray], spec: str, *, inherit: bool
) -> tuple[ModuleOp, dict[str, np.ndarray]]:
    """A copy of `module` rewritten by the pass pipeline `spec`, and its
    parameters: inherited from `params` (taken as trained) when `inherit`,
    else freshly initialised for the new ones (as `apply_assignment` runs them)."""
    result = module.clone()
    store = ParamStore(dict(params), provenance={"weights": "trained" if inherit else "initial"})
    with using_store(store), contextlib.redirect_stderr(io.StringIO()):  # the passes' remarks
        PassPipeline.parse_spec(PASSES, spec).apply(make_context(), result)
    if inherit:
        assert store.provenance.get("init") == "inherit", store.provenance
    return result, store.values_for(result)


def architecture(module: ModuleOp) -> list[tuple[str, ...]]:
    """The network as op kinds, operand and result types and properties:
    equal for two networks that differ in parameter names only."""
    return [
        (
            op.name,
            *(str(operand.type) for operand in op.operands),
            "->",
            *(str(result.type) for result in op.results),
            *sorted(f"{key}={value}" for key, value in op.properties.items()),
        )
        for op in single_function(module).body.block.ops
        if not isinstance(op, ParamOp)
    ]


def check_rewrite_specs(chosen: Sequence[Variant]) -> None:
    """Every hand-built variant's spec, applied to the base, gives its network."""
    base = small_cnn(BASE)
    for variant in chosen:
        if variant.spec is not None and variant.layers is not None:
            rewritten = rewrite(base, {}, variant.spec, inherit=False)[0]
            if architecture(rewritten) != architecture(variant.module()):
                raise AssertionError(f"{variant.spec} does not give the network of '{variant.name}'")


# Training and evaluation ----------------------------------------------------


def _learnable(module) -> list[str]:
    """Every parameter but the batch-norm running statistics."""
    statistics = {
        operand.owner.param_name
        for op in module.walk()
        if isinstance(op, BatchNormOp)
        for operand in (op.mean, op.var)
        if isinstance(operand.owner, ParamOp)
    }
    return [op.param_name for op in module.walk() if isinstance(op, ParamOp) and op.param_name not in statistics]


def train(module, params, x, y, *, epochs: int, seed: int, batch: int = BATCH, lr: float = LR):
    """The reference engine: SGD with momentum 0.9 and weight decay 5e-4 on
    tconv's numpy backward pass; returns the trained parameters."""
    params = dict(params)
    names = _learnable(module)
    velocity = {name: np.zeros_like(params[name]) for name in names}
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x) - batch + 1, batch):
            chosen = order[start : start + batch]
            result = forward_backward(module, params, [x[chosen]], y[chosen], keep=set())
            for name in names:
                grad = result.param_grads[name] + 5e-4 * params[name]
                velocity[name] = 0.9 * velocity[name] + grad
                params[name] = (params[name] - lr * velocity[name]).astype(np.float32)
    return params


def train_torch(
    module, params, x, y, *, epochs: int, seed: int, batch: int = BATCH, lr: float = LR
) -> dict[str, np.ndarray]:
    """The torch engine (`tconv.train`): SGD, Nesterov momentum 0.9, weight
    decay 5e-4, cosine schedule from `lr` to 0 over all the steps."""
    data = Dataset(x, y, x[:0], y[:0], "digits")  # no validation pass per epoch
    config = TrainConfig(epochs=epochs, lr=lr, batch=batch, seed=seed)
    trained = train_network(module, params, data, config, None, "cpu", progress=False, log=False)
    assert trained is not None
    return trained.params


def train_steps(
    module, params, x, y, *, steps: int, seed: int, lr: float, batch: int = BATCH
) -> dict[str, np.ndarray]:
    """`steps` SGD steps of the torch engine (its cosine schedule over them),
    on batches drawn from `x` epoch by epoch in an order seeded by `seed`."""
    if steps == 0:
        return dict(params)
    rng = np.random.default_rng([seed, steps])
    epochs = math.ceil(steps * batch / len(x))
    order = np.concatenate([rng.permutation(len(x)) for _ in range(epochs)])[: steps * batch]
    return train_torch(module, params, x[order], y[order], epochs=1, seed=seed, batch=batch, lr=lr)


def with_population_statistics(module, params, x) -> dict[str, np.ndarray]:
    """`params` with each batch-norm's running mean and variance replaced by its
    input's statistics over all of `x` (one training-mode forward pass)."""
    values = forward_values(module, params, [x], batch_norm="train")
    params = dict(params)
    for op in module.walk():
        if isinstance(op, BatchNormOp):
            inputs = values[op.input].astype(np.float64)
            axes = (0, 2, 3) if inputs.ndim == 4 else (0,)
            params[op.mean.owner.param_name] = inputs.mean(axis=axes).astype(np.float32)
            params[op.var.owner.param_name] = inputs.var(axis=axes).astype(np.float32)
    return params


def accuracy(module, params, x, y) -> float:
    logits = forward_values(module, params, [x], batch_norm="inference")[
        list(module.ops.first.body.block.ops)[-1].operands[0]
    ]
    return float(np.mean(np.argmax(logits, axis=1) == y))


@torch.no_grad()
def torch_accuracy(module, params, x_statistics, x, y) -> float:
    """`with_population_statistics` over `x_statistics`, then `accuracy` on
    (`x`, `y`), in torch: the same protocol, fast enough to run per step count."""
    network = TrainableNetwork(module, params)
    network.train()
    inputs: dict[object, torch.Tensor] = {}
    batch_norms = [op for op in module.walk() if isinstance(op, BatchNormOp)]
    wanted = {op.input for op in batch_norms}

    def observe(op, value: torch.Tensor) -> None:
        if op.results[0] in wanted:
            inputs[op.results[0]] = value

    network(torch.from_numpy(x_statistics), observe=observe)
    for op in batch_norms:
        values = inputs[op.input].double()
        dims = (0, 2, 3) if values.ndim == 4 else (0,)
        network.value(op.mean.owner.param_name).copy_(values.mean(dim=dims))
        network.value(op.var.owner.param_name).copy_(values.var(dim=dims, unbiased=False))
    return evaluate(network, x, y)[1]


# The experiment -------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_fit: np.ndarray
    """The training split less the validation digits: what the trained signals train on."""
    y_fit: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def digits_data() -> Data:
    images, labels = standardised_digits()
    images, labels = images[:, None].astype(np.float32), labels.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, stratify=labels, random_state=0
    )
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=VALIDATION_FRACTION, stratify=y_train, random_state=0
    )
    return Data(x_train, y_train, x_test, y_test, x_fit, y_fit, x_val, y_val)


@dataclass(frozen=True)
class Base:
    """The base network trained once on the fitting digits: what rewrites inherit."""

    module: ModuleOp
    params: dict[str, np.ndarray]
    val_accuracy: float
    test_accuracy: float


def train_base(data: Data, epochs: int) -> Base:
    module = small_cnn(BASE)
    params = train_torch(module, init_params(module, 0), data.x_fit, data.y_fit, epochs=epochs, seed=0)
    return Base(
        module, params,
        torch_accuracy(module, params, data.x_fit, data.x_val, data.y_val),
        torch_accuracy(module, params, data.x_fit, data.x_test, data.y_test),
    )


@dataclass
class Row:
    name: str
    parameters: int
    flops: int
    capacity: dict[str, float]
    accuracy: float
    accuracies: list[float]
    signals: dict[str, float] = field(default_factory=dict)
    """Validation accuracy after k steps ("scratch 20", "inherited 100", ...), mean over seeds."""
    spec: str | None = None


def scratch(steps: int) -> str:
    return f"scratch {steps}"


def inherited(steps: int) -> str:
    return f"inherited {steps}"


def run_variant(
    variant: Variant,
    seeds: Sequence[int],
    epochs: int,
    data: Data,
    source: str,
    base: Base | None,
    steps: Sequence[int],
    engine: str,
    log: Callable[[str], None],
) -> Row:
    module = variant.module()
    summary = summarize(module)
    values: dict[str, list[float]] = {metric: [] for metric in METRICS}
    accuracies = []
    signals: dict[str, list[float]] = {}
    for seed in seeds:
        params = init_params(module, seed)
        x, labels = capacity.minibatch(module, CAPACITY_BATCH, seed, source)
        for metric in METRICS:
            values[metric].append(capacity.measure(module, params, metric, x, labels).value)
        if engine == "torch":
            trained = train_torch(module, params, data.x_train, data.y_train, epochs=epochs, seed=seed)
            accuracies.append(torch_accuracy(module, trained, data.x_train, data.x_test, data.y_test))
        else:
            trained = train(module, params, data.x_train, data.y_train, epochs=epochs, seed=seed)
            trained = with_population_statistics(module, trained, data.x_train)
            accuracies.append(accuracy(module, trained, data.x_test, data.y_test))
        for k in steps:
            stepped = train_steps(module, params, data.x_fit, data.y_fit, steps=k, seed=seed, lr=LR)
            signals.setdefault(scratch(k), []).append(
                torch_accuracy(module, stepped, data.x_fit, data.x_val, data.y_val)
            )
    if variant.spec is not None and base is not None:
        rewritten, params = rewrite(base.module, base.params, variant.spec, inherit=True)
        assert architecture(rewritten) == architecture(module), variant.name
        signals[inherited(0)] = [torch_accuracy(rewritten, params, data.x_fit, data.x_val, data.y_val)]
        for k in steps:
            for seed in seeds:
                stepped = train_steps(rewritten, params, data.x_fit, data.y_fit, steps=k, seed=seed, lr=FINE_TUNE_LR)
                signals.setdefault(inherited(k), []).append(
                    torch_accuracy(rewritten, stepped, data.x_fit, data.x_val, data.y_val)
                )
    row = Row(
        name=variant.name,
        parameters=summary.parameters,
        flops=summary.flops,
        capacity={metric: float(np.median(v)) for metric, v in values.items()},
        accuracy=float(np.mean(accuracies)),
        accuracies=accuracies,
        signals={name: float(np.mean(v)) for name, v in signals.items()},
        spec=variant.spec if base is not None else None,
    )
    shown = ", ".join(f"{name} {100 * value:.1f}%" for name, value in row.signals.items())
    log(f"{variant.name}: accuracy {100 * row.accuracy:.1f}%; {shown}")
    return row


# The report -----------------------------------------------------------------


def signal_names(steps: Sequence[int]) -> list[str]:
    return [*(scratch(k) for k in steps), inherited(0), *(inherited(k) for k in steps)]


def markdown(rows: list[Row], steps: Sequence[int] = ()) -> str:
    """One row per variant, by accuracy: its size, capacity and signals."""
    signals = signal_names(steps) if steps else []
    lines = [
        "| variant | params | FLOPs | Fisher | NASWOT | SynFlow | "
        + "".join(f"{name} | " for name in signals) + "accuracy |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(signals) + "---:|",
    ]
    for row in sorted(rows, key=lambda r: -r.accuracy):
        c = row.capacity
        cells = [f"{100 * row.signals[name]:.1f}%" if name in row.signals else "–" for name in signals]
        lines.append(
            f"| {row.name} | {row.parameters:,} | {row.flops:,} | {c['fisher']:.4g} | "
            f"{c['naswot']:.2f} | {c['synflow']:.4g} | " + "".join(f"{cell} | " for cell in cells)
            + f"{100 * row.accuracy:.1f}% |"
        )
    return "\n".join(lines)


def rankings(rows: list[Row], steps: Sequence[int]) -> dict[str, list[float | None]]:
    """Each signal's value per row (None where it is not defined)."""
    found: dict[str, list[float | None]] = {
        {"fisher": "Fisher", "naswot": "NASWOT", "synflow": "SynFlow"}[metric]: [row.capacity[metric] for row in rows]
        for metric in METRICS
    }
    found["parameters"] = [row.parameters for row in rows]
    found["FLOPs"] = [row.flops for row in rows]
    for name in signal_names(steps):
        found[name] = [row.signals.get(name) for row in rows]
    return found


def tau(values: Sequence[float | None], target: Sequence[float]) -> tuple[float, float, int]:
    """Kendall τ-b and its p-value over the entries where `values` is defined, and their count."""
    pairs = [(value, goal) for value, goal in zip(values, target) if value is not None]
    if len(pairs) < 3:
        return math.nan, math.nan, len(pairs)
    tau_b, p = kendalltau(*zip(*pairs))
    return float(tau_b), float(p), len(pairs)


def tau_table(rows: list[Row], steps: Sequence[int]) -> str:
    """τ of every signal against accuracy, over all variants (where defined for
    all) and over the rewrite variants."""
    rewrites = [row for row in rows if row.spec is not None]
    every = rankings(rows, steps)
    subset = rankings(rewrites, steps)
    target_all = [row.accuracy for row in rows]
    target_subset = [row.accuracy for row in rewrites]

    def cells(values, target, total) -> str:
        t, p, count = tau(values, target)
        if count != total or math.isnan(t):
            return "– | – |"
        return f"{t:+.3f} | {p:.2g} |"

    lines = [
        f"| ranked by | τ, all {len(rows)} | p | τ, the {len(rewrites)} rewrites | p |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in every:
        lines.append(
            f"| {name} | {cells(every[name], target_all, len(rows))} "
            f"{cells(subset[name], target_subset, len(rewrites))}"
        )
    if rows and len(rows[0].accuracies) >= 2:
        def ceiling(chosen: list[Row]) -> str:
            first = [row.accuracies[0] for row in chosen]
            return cells(first, [float(np.mean(row.accuracies[1:])) for row in chosen], len(chosen))

        others = len(rows[0].accuracies) - 1
        lines.append(f"| ceiling: full training seed 0 vs the mean of {others} other seeds | "
                     f"{ceiling(rows)} {ceiling(rewrites)}")
    return "\n".join(lines)


def report(rows: list[Row], steps: Sequence[int], header: str) -> str:
    rewrites = [row.name for row in rows if row.spec is not None]
    return "\n\n".join([
        header,
        tau_table(rows, steps),
        markdown(rows, steps),
        f"The {len(rewrites)} rewrites (inherited signals): " + "; ".join(rewrites) + ".",
    ]) + "\n"


def parse_steps(text: str) -> tuple[int, ...]:
    steps = tuple(int(part) for part in text.split(",") if part.strip())
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"expected positive step counts like 20,100, got '{text}'")
    return steps


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: {len(QUICK_VARIANTS)} variants, {QUICK['seeds']} seed, "
                        f"{QUICK['epochs']} epochs, steps {','.join(map(str, QUICK['steps']))}")
    parser.add_argument("--epochs", type=int, help=f"full training (default {FULL['epochs']}; reference engine 2)")
    parser.add_argument("--seeds", type=int, help=f"initialisation seeds per variant (default {FULL['seeds']})")
    parser.add_argument("--steps", type=parse_steps, help="the k of the k-step signals (default 20,100)")
    parser.add_argument("--engine", choices=ENGINES, default="torch", help="how the full training runs")
    parser.add_argument(
        "--source", choices=SOURCES, default=DEFAULT_SOURCE, help="the minibatch capacity is measured on"
    )
    parser.add_argument("--variant", action="append", default=[], metavar="NAME",
                        help="only this variant (repeatable; default: all, or the quick ones)")
    parser.add_argument("--only", type=int, default=0, help="first N variants only (0: all)")
    parser.add_argument("-o", "--output", type=Path, help="also write the report here")
    args = parser.parse_args(argv)

    defaults = QUICK if args.quick else FULL
    epochs = args.epochs or (2 if args.engine == "reference" and not args.quick else defaults["epochs"])
    seeds = tuple(range(args.seeds or defaults["seeds"]))
    steps = args.steps or defaults["steps"]
    everything = {variant.name: variant for variant in all_variants()}
    names = args.variant or (list(QUICK_VARIANTS) if args.quick else list(everything))
    unknown = [name for name in names if name not in everything]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; the variants: {'; '.join(everything)}")
    chosen = [everything[name] for name in names]
    if args.only:
        chosen = chosen[: args.only]

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is as fast, and leaves the other core alone
    try:
        start = time.perf_counter()
        check_rewrite_specs(chosen)
        data = digits_data()
        base = train_base(data, epochs)
        log(f"base trained on the fitting digits: validation {100 * base.val_accuracy:.1f}%, "
            f"test {100 * base.test_accuracy:.1f}%")
        rows = [run_variant(variant, seeds, epochs, data, args.source, base, steps, args.engine, log)
                for variant in chosen]
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    header = (
        f"{len(rows)} variants, seeds {seeds}, {epochs} epochs ({args.engine} engine), capacity on "
        f"{args.source}, {len(data.x_train)} training / {len(data.x_test)} test digits; k-step signals on "
        f"{len(data.x_fit)} fitting / {len(data.x_val)} validation digits, k = {', '.join(map(str, steps))} "
        f"(scratch lr {LR}, inherited lr {FINE_TUNE_LR}, batch {BATCH}); the base for inheritance: "
        f"validation {100 * base.val_accuracy:.1f}%, test {100 * base.test_accuracy:.1f}%; {elapsed:.0f} s"
    )
    text = report(rows, steps, header)
    print(text, end="")
    if args.output:
        args.output.write_text(text)
    return text


if __name__ == "__main__":
    main()
