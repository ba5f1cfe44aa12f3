"""Pruning a trained network in steps, each followed by fine-tuning: Fisher
pruning (Theis et al. 2018), or magnitude pruning (Li et al. 2017) to compare.

Every step

1. ranks the output channels of every prunable convolution (those
   `tconv-prune-channels` can narrow) by the criterion, measured once with
   the current weights on a seeded minibatch of the *training* split (the
   validation split judges the result and must not choose it);
2. removes the globally least important channels, about `step` of the
   prunable channels that remain, but no more than reaching the parameter
   target takes, and never a layer's last channel;
3. fine-tunes the whole network for `epochs_per_step` epochs
   (`tconv.train.engine.train_network`) and records its validation accuracy,
   right after the removal and after the fine-tuning.

It stops once the learnable parameters (`tconv.ir.params.parameter_count`)
are at most the target. Theis et al. remove one feature map at a time with a
few hundred training steps between; a step here removes a share of them, so
that a large network needs tens of steps, not thousands.

**The global ranking.** Channels of different layers compete in one list,
so their scores must be on one scale. The Fisher potential Δc is one
already: it estimates the rise in training loss when the channel goes, in
units of the loss whatever the layer (the reason Theis et al. can prune the
whole network at once); it is ranked as measured. A filter's L1 norm is not:
it grows with the layer's fan-in and with how its batch-norm rescales it, so
raw norms would empty the layers of small fan-in first. Each layer's norms
are divided by their mean: a channel goes when it is weak *for its layer*,
and a layer loses channels in proportion to how unequal they are. The scores
handed to the pass (`using_ranking`) are these; within a layer the order is
the criterion's own, so the pass keeps what the global ranking kept.

The module and parameters given are not changed: the result is a pruned copy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import PassPipeline

from tconv.errors import TconvError
from tconv.ir.loader import make_context
from tconv.ir.ops import BatchNormOp, Conv2dOp, ParamOp, shape_of
from tconv.ir.params import parameter_count
from tconv.passes.nas.channels import Resize, plan_narrowing
from tconv.passes.nas.prune_channels import channel_scores, prune_reason, using_ranking
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.registry import PASSES
from tconv.passes.select import layer_name
from tconv.train.data import Dataset
from tconv.train.distributed import resolve_device
from tconv.train.engine import train_network
from tconv.train.loop import TrainConfig, evaluate
from tconv.train.network import TrainableNetwork

CRITERIA = ("fisher", "magnitude")
"""The criteria a global ranking can compare across layers (see the module docstring)."""


@dataclass(frozen=True)
class PruneConfig:
    target: float
    """The parameters to reach at most: a count (a whole number > 1) or a
    ratio of the original's (0 < target <= 1), as `keep` of the pass."""
    step: float = 0.1
    """The share of the remaining prunable channels one step removes (0 < step <= 1)."""
    criterion: str = "fisher"
    rank_batch: int = 128
    """Training images the ranking is measured on, each step."""
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, lr=0.01))
    """The fine-tuning after each step (`epochs` 0: none); step s trains with seed `seed + s`."""


@dataclass(frozen=True)
class PruneStep:
    step: int
    """0 for the network as given."""
    parameters: int
    channels: dict[str, int]
    """Output channels of every prunable layer, by its name in the given network."""
    removed: int
    """Channels this step removed."""
    pruned_accuracy: float | None
    """Validation accuracy right after the removal (None for step 0)."""
    val_loss: float
    val_accuracy: float
    """After the fine-tuning."""


@dataclass(frozen=True)
class Pruned:
    module: ModuleOp
    params: dict[str, np.ndarray]
    steps: list[PruneStep]
    target: int
    """The parameter target, as a count."""
    skipped: dict[str, str]
    """The layers that cannot be pruned, and why."""


# What can be pruned, and how far ----------------------------------------------


def convolutions(module: ModuleOp) -> list[Conv2dOp]:
    """The convolutions in program order; pruning keeps them (and this order),
    so a position names the same layer before and after."""
    return [op for op in module.walk() if isinstance(op, Conv2dOp)]


def prunable(module: ModuleOp) -> tuple[list[int], dict[str, str]]:
    """The positions (in `convolutions`) of the layers whose output channels
    can be pruned, and why each of the others cannot."""
    positions, skipped = [], {}
    for index, conv in enumerate(convolutions(module)):
        reason = prune_reason(conv)
        if reason is None:
            positions.append(index)
        else:
            skipped[layer_name(conv)] = reason
    return positions, skipped


def parameters_after(module: ModuleOp, counts: Mapping[Conv2dOp, int]) -> int:
    """The learnable parameters of `module` once each convolution of `counts`
    keeps that many output channels, counted from the resizes the pass makes
    (the convolution's weight and bias, batch-norm, each consumer's input),
    without making them."""
    shapes: dict[ParamOp, list[int]] = {}
    for conv, count in counts.items():
        resizes = plan_narrowing(conv.output, range(count), exact=True).resizes
        resizes += [Resize(conv, index, 0, tuple(range(count))) for index in range(1, len(conv.operands))]
        for resize in resizes:
            if isinstance(resize.op, BatchNormOp) and resize.operand in (3, 4):
                continue  # running statistics: state, not parameters
            param = resize.op.operands[resize.operand].owner
            shape = shapes.setdefault(param, list(shape_of(param.result)))
            shape[resize.axis] = len(resize.kept) // (resize.groups if resize.axis == 1 else 1)
    saved = sum(math.prod(shape_of(param.result)) - math.prod(shape) for param, shape in shapes.items())
    return parameter_count(module) - saved


def target_error(target: float) -> str | None:
    """Why `target` is neither a ratio in (0, 1] nor a whole count above 1, or None."""
    if not (target > 0 and math.isfinite(target)) or (target > 1 and target != int(target)):
        return f"the parameter target must be a ratio in (0, 1] or a whole count, got {target:g}"
    return None


def parameter_target(module: ModuleOp, target: float) -> int:
    """`target` as a parameter count; raises TconvError when it is not a
    valid target or pruning every prunable layer to one channel cannot reach it."""
    if target_error(target):
        raise TconvError(f"error: {target_error(target)}")
    original = parameter_count(module)
    count = int(target) if target > 1 else math.floor(target * original)
    if count >= original:
        return count
    positions, skipped = prunable(module)
    why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
    if not positions:
        raise TconvError(f"error: no convolution can be pruned ({why})")
    convs = convolutions(module)
    least = parameters_after(module, {convs[i]: 1 for i in positions})
    if count < least:
        fixed = f"; the others cannot be pruned ({why})" if skipped else ""
        raise TconvError(
            f"error: cannot prune to {count:,} parameters (of {original:,}): with each of its "
            f"{len(positions)} prunable convolutions down to one channel the network keeps {least:,}{fixed}"
        )
    return count


# One step ------------------------------------------------------------------


def global_scores(scores: Mapping[Conv2dOp, np.ndarray], criterion: str) -> dict[Conv2dOp, np.ndarray]:
    """Scores comparable across layers (see the module docstring)."""
    if criterion == "fisher":
        return dict(scores)
    return {conv: s / s.mean() if s.mean() > 0 else s for conv, s in scores.items()}


def removals(scores: Mapping[Conv2dOp, np.ndarray], count: int) -> dict[Conv2dOp, int]:
    """How many channels each layer loses when the `count` lowest-scoring
    channels network-wide go, each layer keeping its best one (on ties, the
    earlier layer's channel goes first)."""
    layers = list(scores)
    candidates = sorted(
        (float(score), order) for order, conv in enumerate(layers) for score in np.sort(scores[conv])[:-1]
    )
    removed = dict.fromkeys(layers, 0)
    for _, order in candidates[:count]:
        removed[layers[order]] += 1
    return removed


def ranking_minibatch(data: Dataset, size: int, seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """`size` training images and labels, drawn without replacement with (seed, step)."""
    rng = np.random.default_rng([seed, step])
    chosen = np.sort(rng.choice(len(data.y_train), min(size, len(data.y_train)), replace=False))
    return data.x_train[chosen], data.y_train[chosen]


def keep_option(kept: int, channels: int) -> str:
    """`keep` for `kept` of `channels` channels: a count above 1, else the
    ratio that rounds to one channel (keep=1 is the ratio 1, all of them)."""
    return str(kept) if kept > 1 else repr(1 / channels)


def prune_step(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    positions: list[int],
    count: int,
    target: int,
    criterion: str,
    x: np.ndarray,
    labels: np.ndarray,
) -> tuple[dict[str, np.ndarray], int]:
    """Remove up to `count` channels from the prunable layers at `positions`
    in place, fewer where fewer reach `target`, ranked by `criterion` (on
    inputs x and labels, for Fisher); return the parameters of the narrowed
    network and how many channels went."""
    convs = [convolutions(module)[i] for i in positions]
    measured = channel_scores(module, params, criterion, x, labels)
    scores = global_scores({conv: measured[conv] for conv in convs}, criterion)

    def counts(removed: int) -> dict[Conv2dOp, int]:
        return {conv: len(scores[conv]) - lost for conv, lost in removals(scores, removed).items()}

    # The fewest removals that reach the target, if fewer than `count` do: parameters fall as channels go.
    low, high = 1, count
    while low < high:
        middle = (low + high) // 2
        if parameters_after(module, counts(middle)) <= target:
            high = middle
        else:
            low = middle + 1
    store = ParamStore(dict(params), provenance={"weights": "trained"})
    context = make_context()
    with using_store(store), using_ranking(scores):
        # Pruning a layer renames its consumers' weights, so a later layer's
        # name changes when an earlier one is pruned: the last layer goes first.
        for conv, kept in reversed(counts(low).items()):
            if kept < len(scores[conv]):
                spec = (f'tconv-prune-channels{{keep={keep_option(kept, len(scores[conv]))} '
                        f'layers="{layer_name(conv)}" criterion={criterion} init=inherit}}')
                PassPipeline.parse_spec(PASSES, spec).apply(context, module)
    return store.values_for(module), low


# The steps -----------------------------------------------------------------


def prune_network(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    data: Dataset,
    config: PruneConfig,
    device: str = "auto",
    log: bool = False,
    on_step: Callable[[PruneStep], None] | None = None,
) -> Pruned:
    """Prune a trained network to `config.target` parameters in steps, each
    fine-tuned (see the module docstring); `on_step` sees every step as it
    ends, step 0 (the network as given) first."""
    if config.criterion not in CRITERIA:
        raise TconvError(f"error: the criterion must be one of {', '.join(CRITERIA)}, got '{config.criterion}'")
    if not 0 < config.step <= 1:
        raise TconvError(f"error: the step must be a share in (0, 1], got {config.step:g}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TconvError("error: pruning runs in one process: start it without torchrun")
    torch_device = resolve_device(device)
    target = parameter_target(module, config.target)
    module = module.clone()
    params = dict(params)
    positions, skipped = prunable(module)
    names = [layer_name(convolutions(module)[i]) for i in positions]  # as given: pruning renames them

    def record(step: int, removed: int, pruned: float | None, score: tuple[float, float]) -> PruneStep:
        convs = convolutions(module)
        channels = {name: shape_of(convs[i].output)[1] for name, i in zip(names, positions)}
        result = PruneStep(step, parameter_count(module), channels, removed, pruned, *score)
        steps.append(result)
        if on_step is not None:
            on_step(result)
        return result

    def validation() -> tuple[float, float]:
        network = TrainableNetwork(module, params).to(torch_device)
        return evaluate(network, data.x_val, data.y_val, torch_device)

    steps: list[PruneStep] = []
    last = record(0, 0, None, validation())
    while last.parameters > target:
        step = last.step + 1
        remaining = sum(last.channels.values())
        prunable_now = remaining - len(positions)
        assert prunable_now > 0, "parameter_target checked that the target is reachable"
        count = min(prunable_now, max(1, round(config.step * remaining)))
        x, labels = ranking_minibatch(data, config.rank_batch, config.finetune.seed, step)
        params, removed = prune_step(module, params, positions, count, target, config.criterion, x, labels)
        pruned = validation()
        score = pruned
        if config.finetune.epochs > 0:
            finetune = replace(config.finetune, seed=config.finetune.seed + step)
            trained = train_network(
                module, params, data, finetune, None, device, title=f"pruning step {step}",
                progress=log, log=log,
            )
            assert trained is not None, "one process is always the leader"
            params = trained.params
            score = trained.history[-1].val_loss, trained.history[-1].val_accuracy
        last = record(step, removed, pruned[1], score)
    return Pruned(module, params, steps, target, skipped)
