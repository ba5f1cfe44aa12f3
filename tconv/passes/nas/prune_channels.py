"""`tconv-prune-channels{keep}`: remove the output channels of a convolution
with the lowest Fisher potential, and the matching inputs of its consumers.

`keep` is a ratio (0 < keep <= 1: round(keep x O) channels, at least one) or
a count (a whole number > 1). The channels are ranked by their per-channel
Fisher potential Δc (see `tconv.passes.analyses.capacity`), measured once,
before any rewrite, on the seeded minibatch of the `batch` and `seed` options
with the active store's parameters. The survivors keep their order. Every new
parameter (the convolution's weight and bias, batch-norm parameters, the next
convolution's or the classifier's weight) is the kept slice of the old one,
written to the active store under its new name (with `init=random`: its
initial value, an ablation).

Grouped convolutions, and convolutions whose output reaches a residual `add`,
a grouped consumer or the function's result, are not eligible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.utils.exceptions import PassFailedException

from tconv.errors import TconvError
from tconv.ir.ops import Conv2dOp
from tconv.passes.analyses.capacity import fisher_potential, minibatch
from tconv.passes.nas.channels import NotNarrowable, narrow_output, plan_narrowing
from tconv.passes.nas.nas_pass import NasPass, RewriteState, conv_geometry, weight_param


@dataclass(frozen=True)
class PruneChannelsPass(NasPass):
    name = "tconv-prune-channels"

    keep: float | int
    """A ratio in (0, 1] or a whole number of channels (`keep=0.5`, `keep=48`)."""

    def validate(self) -> None:
        if not (self.keep > 0 and math.isfinite(self.keep)):
            raise self.fail(f"keep must be a ratio in (0, 1] or a channel count, got {self.keep:g}")
        if self.keep > 1 and self.keep != int(self.keep):
            raise self.fail(f"keep {self.keep:g} is above 1, so it is a count, and must be a whole number")

    def kept_count(self, channels: int) -> int:
        if self.keep > 1:
            return int(self.keep)
        return max(1, round(self.keep * channels))

    def prepare(self, state: RewriteState) -> dict[Conv2dOp, np.ndarray]:
        """Per-channel Fisher potential of every convolution's block."""
        try:
            x, labels = minibatch(state.module, self.batch, self.seed)
            fisher = fisher_potential(state.module, state.store.values_for(state.module), x, labels)
        except TconvError as err:
            raise PassFailedException(f"{self.name}: cannot rank channels: {err}") from None
        return {block.block.conv: block.per_channel for block in fisher.blocks}

    def kept_channels(self, conv: Conv2dOp, state: RewriteState) -> list[int]:
        """The channels with the highest Fisher potential, in their original order."""
        ranking = np.argsort(-state.prepared[conv], kind="stable")
        return sorted(int(c) for c in ranking[: self.kept_count(len(ranking))])

    def ineligible(self, conv: Conv2dOp, state: RewriteState) -> str | None:
        _, out_channels, _, _, groups = conv_geometry(conv)
        if weight_param(conv) is None:
            return "its weight is not a tconv.param"
        if groups != 1:
            return f"it is grouped ({groups} groups)"
        kept = self.kept_count(out_channels)
        if kept >= out_channels:
            return f"keep {self.keep:g} keeps all of its {out_channels} output channels"
        if conv not in state.prepared:
            return "it has no Fisher ranking"
        try:
            plan_narrowing(conv.output, range(kept), exact=True)
        except NotNarrowable as reason:
            return str(reason)
        return None

    def rewrite(self, conv: Conv2dOp, state: RewriteState) -> None:
        kept = self.kept_channels(conv, state)
        narrow_output(conv, kept, state.maker, f"p{len(kept)}", exact=True, carry_values=state.copy_exact)
