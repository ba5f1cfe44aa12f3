"""`tconv-prune-channels{keep criterion}`: remove the output channels of a
convolution that matter least, and the matching inputs of its consumers.

`keep` is a ratio (0 < keep <= 1: round(keep x O) channels, at least one) or
a count (a whole number > 1). `criterion` says which channels matter least:

- `fisher` (the default): the lowest per-channel Fisher potential Δc (see
  `tconv.passes.analyses.capacity`), measured once, before any rewrite, on
  the seeded minibatch of the `batch` and `seed` options with the active
  store's parameters. On a trained store this is the pruning signal of Theis
  et al. 2018 ("Faster gaze prediction with dense networks and Fisher
  pruning"): Δc = ½ · mean over samples of (Σ over h, w of a·g)², with a the
  block output (after batch-norm and ReLU, the value whose channel c pruning
  removes: zeroing it is what removal does to the consumers) and g its
  gradient, an estimate of the rise in loss when the channel goes. Theis et
  al. take g of each sample's own loss; `fisher_potential` takes it of the
  batch's mean loss, which is g/N, so its Δc is theirs divided by N²: one
  factor for every channel of every layer on the same minibatch, which
  changes no ranking. Batch-norm normalises by the minibatch's statistics,
  as it does while the network is fine-tuned.
- `magnitude`: the smallest L1 norm of the channel's filter, Σ|W[c]| over its
  input channels and kernel (Li et al. 2017, "Pruning filters for efficient
  ConvNets"). It needs no data.
- `uniform`: no ranking at all: the first channels are kept. A baseline that
  separates what a criterion contributes from what the narrower shape costs.

A caller that measured the ranking on its own data (`tconv prune` ranks on a
minibatch of the training split, once for every layer of a pruning step)
hands it over with `using_ranking`; the pass then uses it instead of
measuring. The survivors keep their order. Every new parameter (the
convolution's weight and bias, batch-norm parameters, the next
convolution's or the classifier's weight) is the kept slice of the old one,
written to the active store under its new name (with `init=random`: its
initial value, an ablation).

Grouped convolutions, and convolutions whose output reaches a residual `add`,
a grouped consumer or the function's result, are not eligible.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import PassFailedException

from tconv.errors import TconvError
from tconv.ir.ops import Conv2dOp
from tconv.passes.analyses.capacity import fisher_potential, minibatch
from tconv.passes.nas.channels import NotNarrowable, narrow_output, plan_narrowing
from tconv.passes.nas.nas_pass import NasPass, RewriteState, conv_geometry, weight_param

CRITERIA = ("fisher", "magnitude", "uniform")
"""The values of the `criterion` option (see the module docstring)."""


def channel_scores(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    criterion: str,
    x: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> dict[Conv2dOp, np.ndarray]:
    """How much each output channel of each convolution matters by
    `criterion` (higher matters more), in float64; `fisher` runs the network
    on inputs x and labels, the others read only the weights."""
    convs = [op for op in module.walk() if isinstance(op, Conv2dOp) and weight_param(op) is not None]
    if criterion == "fisher":
        fisher = fisher_potential(module, params, x, labels)
        named = set(convs)
        return {block.block.conv: block.per_channel for block in fisher.blocks if block.block.conv in named}
    if criterion == "magnitude":
        return {
            conv: np.abs(np.asarray(params[weight_param(conv).param_name], np.float64)).sum(axis=(1, 2, 3))
            for conv in convs
        }
    assert criterion == "uniform", criterion
    return {conv: np.zeros(conv_geometry(conv)[1]) for conv in convs}


_GIVEN: ContextVar[Mapping[Conv2dOp, np.ndarray] | None] = ContextVar("tconv_prune_ranking", default=None)


@contextmanager
def using_ranking(scores: Mapping[Conv2dOp, np.ndarray]) -> Iterator[None]:
    """Inside the block, the pass ranks the channels of each convolution of
    `scores` by its scores (higher matters more) instead of measuring its
    criterion, so that applications one layer at a time prune by one ranking
    measured once. The keys are the very ops the pass rewrites (pruning
    keeps a convolution's op; with `check-capacity` the rewrite runs on a
    copy, whose ops have no ranking)."""
    token = _GIVEN.set(scores)
    try:
        yield
    finally:
        _GIVEN.reset(token)


def prune_reason(conv: Conv2dOp, kept: int = 1) -> str | None:
    """Why `conv` cannot lose output channels (keeping `kept`), whatever the ranking, or None."""
    groups = conv_geometry(conv)[4]
    if weight_param(conv) is None:
        return "its weight is not a tconv.param"
    if groups != 1:
        return f"it is grouped ({groups} groups)"
    try:
        plan_narrowing(conv.output, range(kept), exact=True)
    except NotNarrowable as reason:
        return str(reason)
    return None


@dataclass(frozen=True)
class PruneChannelsPass(NasPass):
    """Remove the output channels of convolutions that matter least, and the matching inputs of their consumers."""

    name = "tconv-prune-channels"

    keep: float | int
    """A ratio in (0, 1] or a whole number of channels (`keep=0.5`, `keep=48`)."""
    criterion: str = "fisher"
    """Which channels go: the lowest by `fisher` or `magnitude`; with `uniform`, the last."""

    def validate(self) -> None:
        if not (self.keep > 0 and math.isfinite(self.keep)):
            raise self.fail(f"keep must be a ratio in (0, 1] or a channel count, got {self.keep:g}")
        if self.keep > 1 and self.keep != int(self.keep):
            raise self.fail(f"keep {self.keep:g} is above 1, so it is a count, and must be a whole number")
        if self.criterion not in CRITERIA:
            raise self.fail(f"criterion must be one of {', '.join(CRITERIA)}, got '{self.criterion}'")

    def kept_count(self, channels: int) -> int:
        if self.keep > 1:
            return int(self.keep)
        return max(1, round(self.keep * channels))

    def prepare(self, state: RewriteState) -> dict[Conv2dOp, np.ndarray]:
        """The score of every channel of every convolution, measured or given."""
        given = _GIVEN.get()
        if given is not None:
            return dict(given)
        try:
            x, labels = minibatch(state.module, self.batch, self.seed) if self.criterion == "fisher" else (None, None)
            return channel_scores(state.module, state.store.values_for(state.module), self.criterion, x, labels)
        except TconvError as err:
            raise PassFailedException(f"{self.name}: cannot rank channels: {err}") from None

    def kept_channels(self, conv: Conv2dOp, state: RewriteState) -> list[int]:
        """The channels that score highest (on ties, and for `uniform`, the
        first), in their original order."""
        ranking = np.argsort(-state.prepared[conv], kind="stable")
        return sorted(int(c) for c in ranking[: self.kept_count(len(ranking))])

    def ineligible(self, conv: Conv2dOp, state: RewriteState) -> str | None:
        out_channels = conv_geometry(conv)[1]
        kept = self.kept_count(out_channels)
        reason = prune_reason(conv, min(kept, out_channels))
        if reason is not None:
            return reason
        if kept >= out_channels:
            return f"keep {self.keep:g} keeps all of its {out_channels} output channels"
        scores = state.prepared.get(conv)
        if scores is None:
            return "it has no ranking"
        if len(scores) != out_channels:
            return f"its ranking scores {len(scores)} channels, it has {out_channels}"
        return None

    def rewrite(self, conv: Conv2dOp, state: RewriteState) -> None:
        kept = self.kept_channels(conv, state)
        narrow_output(conv, kept, state.maker, f"p{len(kept)}", exact=True, carry_values=state.copy_exact)
