"""Does capacity at initialisation predict trained accuracy? Kendall τ between
each capacity metric and test accuracy over rewrite variants of a small CNN
on scikit-learn's digits (8×8 grey, 10 classes).

    .venv/bin/python bench/capacity_tau.py [--epochs 2] [--seeds 3] [--source digits|gaussian]

The base network is conv 16 → conv 32 → 2×2 max-pool → conv 64 → global
average pool → dense 10, every convolution 3×3 with batch-norm and ReLU. Each
variant applies one rewrite (grouping, bottleneck, depthwise with and without
a pointwise convolution, width, depth, kernel size) and is built directly with
`NetworkBuilder`.

Per variant and per initialisation seed s (0, 1, ...):
- capacity at initialisation, with `init_params(module, s)`: Fisher potential
  and NASWOT on the default minibatch (`capacity.minibatch(module, 64, s)`, 64
  digits drawn from all 1,797), and SynFlow;
- training from that initialisation with tconv's reference backward pass:
  SGD, momentum 0.9, learning rate 0.05, weight decay 5e-4, batches of 32, for
  `--epochs` epochs over the training split (1,347 digits; the split is
  scikit-learn's `train_test_split`, 25 % test, stratified, random_state 0),
  batch-norm in training mode;
- test accuracy on the 450 held-out digits, batch-norm in inference form with
  the mean and (biased) variance of each batch-norm input over the whole
  training split.
Capacity values are medians over the seeds, accuracy the mean. τ is
`scipy.stats.kendalltau` (τ-b) over the variants; parameter count and FLOPs
are ranked too, as the baselines a metric must beat.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau
from sklearn.model_selection import train_test_split

from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import BatchNormOp, ParamOp, shape_of
from tconv.ir.params import init_params
from tconv.passes.analyses import capacity
from tconv.passes.analyses.capacity_data import DEFAULT_SOURCE, SOURCES, standardised_digits
from tconv.passes.analyses.summary import summarize
from tconv.runtime.backward import forward_backward, forward_values

METRICS = ("fisher", "naswot", "synflow")
CAPACITY_BATCH = 64


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
    """Every variant by name. conv1 reads one channel, so only conv2 and conv3 are grouped."""
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


# Training -------------------------------------------------------------------


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


def train(module, params, x, y, *, epochs: int, seed: int, batch: int = 32, lr: float = 0.05):
    """SGD with momentum 0.9 and weight decay 5e-4; returns the trained parameters."""
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


# The experiment -------------------------------------------------------------


@dataclass
class Row:
    name: str
    parameters: int
    flops: int
    capacity: dict[str, float]
    accuracy: float
    accuracies: list[float]


def run_variant(name, layers, seeds, epochs, split, source, log: Callable[[str], None]) -> Row:
    x_train, x_test, y_train, y_test = split
    module = small_cnn(layers)
    summary = summarize(module)
    values = {metric: [] for metric in METRICS}
    accuracies = []
    for seed in seeds:
        params = init_params(module, seed)
        x, labels = capacity.minibatch(module, CAPACITY_BATCH, seed, source)
        for metric in METRICS:
            values[metric].append(capacity.measure(module, params, metric, x, labels).value)
        trained = train(module, params, x_train, y_train, epochs=epochs, seed=seed)
        trained = with_population_statistics(module, trained, x_train)
        accuracies.append(accuracy(module, trained, x_test, y_test))
    row = Row(
        name=name,
        parameters=summary.parameters,
        flops=summary.flops,
        capacity={metric: float(np.median(v)) for metric, v in values.items()},
        accuracy=float(np.mean(accuracies)),
        accuracies=accuracies,
    )
    log(f"{name}: accuracy {row.accuracy:.4f} {row.capacity}")
    return row


def markdown(rows: list[Row]) -> str:
    lines = [
        "| variant | params | FLOPs | Fisher | NASWOT | SynFlow | accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda r: -r.accuracy):
        c = row.capacity
        lines.append(
            f"| {row.name} | {row.parameters:,} | {row.flops:,} | {c['fisher']:.4g} | "
            f"{c['naswot']:.2f} | {c['synflow']:.4g} | {100 * row.accuracy:.1f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, help="initialisation seeds per variant")
    parser.add_argument(
        "--source", choices=SOURCES, default=DEFAULT_SOURCE, help="the minibatch capacity is measured on"
    )
    parser.add_argument("--only", type=int, default=0, help="first N variants only (0: all)")
    args = parser.parse_args()

    images, labels = standardised_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        images[:, None], labels, test_size=0.25, stratify=labels, random_state=0
    )
    split = (x_train, x_test, y_train, y_test)
    chosen = list(variants().items())
    if args.only:
        chosen = chosen[: args.only]
    seeds = tuple(range(args.seeds))
    start = time.perf_counter()
    rows = [
        run_variant(name, layers, seeds, args.epochs, split, args.source, lambda line: print(line, flush=True))
        for name, layers in chosen
    ]
    elapsed = time.perf_counter() - start

    print()
    print(
        f"{len(rows)} variants, seeds {seeds}, {args.epochs} epochs, capacity on {args.source}, "
        f"{len(x_train)} training / {len(x_test)} test digits, {elapsed:.0f} s"
    )
    print()
    print(markdown(rows))
    print()
    accuracies = [row.accuracy for row in rows]
    print("| ranked by | Kendall τ vs accuracy | p-value |")
    print("|---|---:|---:|")
    rankings = {metric: [row.capacity[metric] for row in rows] for metric in METRICS}
    rankings["parameters"] = [row.parameters for row in rows]
    rankings["FLOPs"] = [row.flops for row in rows]
    for name, values in rankings.items():
        tau, p = kendalltau(values, accuracies)
        print(f"| {name} | {tau:+.3f} | {p:.2g} |")


if __name__ == "__main__":
    main()
