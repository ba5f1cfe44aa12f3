"""The accuracy check of `tconv optimize --data`: is a faster network still
as good as the original?

Capacity at initialisation stays the cheap pre-filter; this check is the
verdict. The search's finalists start from weights inherited from the
trained original (`tconv.passes.nas.inherit`), are fine-tuned on the
training split for their share of `--train-budget`, and are evaluated on the
validation split the original is evaluated on. The answer is the fastest
finalist whose validation accuracy is at most `max_drop` below the
original's; the original where none is.

A finalist's share of the budget buys whole epochs: one timed training step
(forward, backward and update of a minibatch, after a warm-up step) says
what an epoch costs, and the fine-tuning runs as many epochs as fit (at
least one) on the usual cosine schedule. Where the estimate was short (a
busy machine), training stops when the share is spent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
from xdsl.dialects.builtin import ModuleOp

from tconv.train.data import Dataset
from tconv.train.distill import DistillConfig, Distillation, matching_points
from tconv.train.engine import train_network
from tconv.train.loop import Objective, TrainConfig, cross_entropy, evaluate
from tconv.train.network import TrainableNetwork, recalibrate_batch_norm

EPOCH_MARGIN = 1.2
"""Epoch estimates are scaled up by this much (evaluation, Python overhead)."""
CALIBRATION_IMAGES = 1024
"""Training images a finalist's batch-norm statistics are re-estimated on."""


@dataclass(frozen=True)
class AccuracyCheck:
    data: Dataset
    max_drop: float
    """The largest allowed loss of validation accuracy, as a fraction (0.01: one point)."""
    train_budget_s: float
    """Fine-tuning time for all finalists together."""
    max_epochs: int | None = None
    """At most this many epochs per finalist, however many the budget would buy."""
    config: TrainConfig = TrainConfig(lr=0.01)
    """Fine-tuning's options; `epochs` is set per finalist from its budget.
    A small learning rate: the weights are inherited, not random."""
    device: str = "auto"
    distill: DistillConfig | None = None
    """Distil the original into each finalist (soft targets and attention
    transfer, `tconv.train.distill`) instead of fine-tuning on the labels alone."""


@dataclass(frozen=True)
class TrainedCandidate:
    params: dict[str, np.ndarray]
    accuracy: float
    accuracy_before: float
    """Validation accuracy with the inherited weights (batch-norm statistics
    re-estimated on training images), before fine-tuning."""
    epochs: int


def validation_accuracy(module: ModuleOp, params: Mapping[str, np.ndarray], data: Dataset) -> float:
    network = TrainableNetwork(module, params)
    return evaluate(network, data.x_val, data.y_val)[1]


def epoch_seconds(module: ModuleOp, params: Mapping[str, np.ndarray], data: Dataset, batch: int) -> float:
    """What one epoch of training costs, from one timed step (after a warm-up step)."""
    network = TrainableNetwork(module, params).train()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.0)
    batch = min(batch, len(data.y_train))
    x = torch.from_numpy(data.x_train[:batch])
    labels = torch.from_numpy(data.y_train[:batch])
    seconds = 0.0
    for _ in range(2):
        start = time.perf_counter()
        loss, _ = cross_entropy(network, x, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds = time.perf_counter() - start
    return seconds * math.ceil(len(data.y_train) / batch)


def objective_for(
    module: ModuleOp, check: AccuracyCheck, original: tuple[ModuleOp, Mapping[str, np.ndarray]]
) -> Objective:
    """What fine-tuning `module` minimises: the labels' cross-entropy, or
    distillation from the original where the check asks for it."""
    if check.distill is None:
        return cross_entropy
    teacher_module, teacher_params = original
    points = matching_points(teacher_module, module) if check.distill.attention > 0 else []
    return Distillation(TrainableNetwork(teacher_module, teacher_params), points, check.distill)


def fine_tune(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    check: AccuracyCheck,
    seconds: float,
    original: tuple[ModuleOp, Mapping[str, np.ndarray]],
) -> TrainedCandidate:
    """`module` fine-tuned (or distilled from `original`, the module and its
    weights) from `params` for about `seconds`, and its validation accuracy."""
    start = time.perf_counter()
    objective = objective_for(module, check, original)
    # Batch-norm statistics re-estimated on training images: the inherited ones
    # describe the original's activations (see `recalibrate_batch_norm`).
    network = TrainableNetwork(module, params)
    chosen = np.random.default_rng(0).permutation(len(check.data.x_train))[:CALIBRATION_IMAGES]
    recalibrate_batch_norm(network, check.data.x_train[np.sort(chosen)])
    before = evaluate(network, check.data.x_val, check.data.y_val)[1]
    params = network.arrays()
    per_epoch = epoch_seconds(module, params, check.data, check.config.batch) * EPOCH_MARGIN
    epochs = max(1, int((seconds - (time.perf_counter() - start)) / per_epoch))
    if check.max_epochs is not None:
        epochs = min(epochs, check.max_epochs)
    trained = train_network(
        module, params, check.data, replace(check.config, epochs=epochs), None, check.device,
        objective=objective, progress=False, log=False,
        time_limit_s=max(seconds - (time.perf_counter() - start), 0.0),
    )
    assert trained is not None  # the search runs in one process
    return TrainedCandidate(trained.params, trained.history[-1].val_accuracy, before, len(trained.history))
