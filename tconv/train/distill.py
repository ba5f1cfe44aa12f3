"""Distillation: a student network trained to imitate a trained teacher.

A NAS rewrite (grouped, narrowed, bottlenecked) of a trained network starts
from weights that no longer compute what the teacher learnt, and retraining it
on the labels alone throws away what the teacher knows beyond them: which
wrong classes are nearly right, and where in the image it looks. BlockSwap and
Moonshine recover a cheap student's accuracy by training it on three signals
at once, the `Distillation` objective (for `engine.train_network`):

- the labels: cross-entropy, weighted 1 - alpha;
- the teacher's soft targets (Hinton et al. 2015):
  alpha · T² · KL(softmax(teacher / T) || softmax(student / T)), averaged over
  the minibatch; T² keeps the gradients' scale independent of T;
- the teacher's attention (Zagoruyko & Komodakis 2017): at the matching stage
  outputs (`matching_points`), the attention map Q of an activation a is the
  mean over channels of a², flattened and L2-normalised per sample, so it
  holds no channels and a student of other widths compares with the teacher;
  the term is β/2 · Σ_points mean((Q_s − Q_t)²), the mean over the samples and
  the map's positions. That is the AT paper's β/2 · Σ ||Q_s − Q_t||₂² with β
  "divided by the number of elements in the attention map and the batch
  size", the form its code (and Moonshine's) computes and for which β = 1000
  is tuned.

The teacher runs in evaluation mode (batch-norm by its running statistics)
and without gradients: only the student learns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from tconv.ir.ops import AddOp, ReluOp, shape_of
from tconv.semantics.reference import single_function
from tconv.train.network import TrainableNetwork

STAGE_OPS = (ReluOp, AddOp)
"""The ops whose results can be a stage's output: a ReLU after a convolution,
or the residual add (where no ReLU follows it)."""

Resolution = tuple[int, int]


@dataclass(frozen=True)
class DistillConfig:
    temperature: float = 4.0
    """T of the soft targets: higher flattens them, showing more of the
    teacher's ranking of the wrong classes (Hinton's T; 4 as in the AT and
    Moonshine experiments)."""
    alpha: float = 0.9
    """The weight of the soft targets; the labels get 1 - alpha."""
    attention: float = 1000.0
    """β of attention transfer (0: off)."""


@dataclass(frozen=True)
class MatchPoint:
    """Where the student's attention is compared with the teacher's."""

    resolution: Resolution
    teacher: Operation
    student: Operation


def stage_outputs(module: ModuleOp) -> dict[Resolution, Operation]:
    """For each spatial resolution (H, W) of a 4-D relu or add result, the last
    such op at that resolution in program order; in the order the resolutions
    first appear."""
    outputs: dict[Resolution, Operation] = {}
    for op in single_function(module).body.block.ops:
        if isinstance(op, STAGE_OPS):
            shape = shape_of(op.results[0])
            if len(shape) == 4:
                outputs[(shape[2], shape[3])] = op  # a later op at the resolution replaces the earlier
    return outputs


def matching_points(teacher: ModuleOp, student: ModuleOp) -> list[MatchPoint]:
    """The points where attention transfer compares student and teacher.

    The rule: for each spatial resolution present in both networks, the result
    of the LAST relu or add op at that resolution, in program order, in each
    network (`stage_outputs`). In a ResNet these are the outputs of the stages
    (the last block before the resolution halves), the points the AT paper,
    BlockSwap and Moonshine compare. Resolutions, not op names or channel
    counts, pair the two networks: a NAS rewrite of the teacher keeps its
    resolutions while it renames, groups, narrows or replaces the blocks
    between them, and attention maps have no channels. Resolutions only one
    network has are skipped; where none is common, the list is empty and
    attention transfer has nothing to compare. Points come in the teacher's
    order (from the input to the classifier)."""
    theirs = stage_outputs(student)
    return [
        MatchPoint(resolution, op, theirs[resolution])
        for resolution, op in stage_outputs(teacher).items()
        if resolution in theirs
    ]


def attention_map(activation: torch.Tensor) -> torch.Tensor:
    """Q of an N x C x H x W activation: the mean over channels of its square,
    flattened to N x HW and L2-normalised per sample."""
    return F.normalize(activation.pow(2).mean(1).flatten(1), dim=1)


def attention_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ over the points of mean((Q_s − Q_t)²), from the activations at each
    point (before β/2)."""
    return sum(
        ((attention_map(s) - attention_map(t)) ** 2).mean() for s, t in zip(student, teacher, strict=True)
    )


def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(teacher / T) || softmax(student / T)), averaged over the minibatch."""
    return F.kl_div(
        F.log_softmax(student / temperature, 1), F.log_softmax(teacher / temperature, 1),
        reduction="batchmean", log_target=True,
    ) * temperature**2


class Distillation:
    """The `Objective` of distillation (see the module docstring): called with
    the student in training mode, it runs the teacher on the same minibatch
    and returns (the combined loss, the student's logits)."""

    def __init__(
        self, teacher: TrainableNetwork, points: Sequence[MatchPoint], config: DistillConfig = DistillConfig()
    ) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.points = list(points) if config.attention > 0 else []
        self.config = config
        self.device = torch.device("cpu")
        """Where the teacher is: it follows the student's minibatches."""

    def __call__(self, student: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        if x.device != self.device:
            self.teacher.to(x.device)
            self.device = x.device
        teacher_maps = _Capture([p.teacher for p in self.points])
        student_maps = _Capture([p.student for p in self.points])
        with torch.no_grad():
            teacher_logits = self.teacher(x, observe=teacher_maps.observe)
        logits = student(x, observe=student_maps.observe)
        loss = (1 - config.alpha) * F.cross_entropy(logits, labels)
        loss = loss + config.alpha * soft_target_loss(logits, teacher_logits, config.temperature)
        if self.points:
            loss = loss + config.attention / 2 * attention_loss(student_maps.tensors(), teacher_maps.tensors())
        return loss, logits


class _Capture:
    """The results of `ops` in one forward pass, through the network's `observe`."""

    def __init__(self, ops: list[Operation]) -> None:
        self.ops = ops
        self.wanted = set(ops)
        self.seen: dict[Operation, torch.Tensor] = {}
        self.observe = self._observe if ops else None

    def _observe(self, op: Operation, tensor: torch.Tensor) -> None:
        if op in self.wanted:
            self.seen[op] = tensor

    def tensors(self) -> list[torch.Tensor]:
        return [self.seen[op] for op in self.ops]
