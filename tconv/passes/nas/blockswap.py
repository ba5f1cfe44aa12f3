"""`tconv-blockswap{budget}`: give each residual block a cheaper block type,
chosen by sampling networks under a parameter budget and keeping the one with
the highest Fisher potential (BlockSwap, Turner et al. 2020).

**Residual blocks** are found by structure, not by name. For each `add`, both
operands are followed back through the inputs of `conv2d`, `batch_norm`,
`relu` and `relu6` until the two paths meet; the operand whose path crosses
more convolutions is the residual branch, the other the shortcut (identity or
projection). A ResNet basic block's branch is conv1 → bn1 → relu → conv2 →
bn2, a bottleneck block's conv1 → ... → bn3. A block is named by its first
convolution (`layer1.0.conv1`), and `layers` selects blocks by that name,
with the patterns of `tconv.passes.select`.

**Block types.** A type rewrites every ungrouped KxK convolution (C → O
channels) on the block's branch, by composing the single-convolution NAS
rewrites; 1x1 and grouped convolutions stay. Batch-norm, biases and the
output shape are kept, so only the convolution weights change:

| type | rewrite | weights per convolution |
|---|---|---|
| `keep` | none | O·C·K |
| `g2` … `g16` | `tconv-group{groups=G}` | O·(C/G)·K |
| `dw` | `tconv-depthwise-separable` | C·K + O·C |
| `b2`, `b4` | `tconv-bottleneck-block{factor=F}` (W = O/F) | W·C + W·W·K + O·W |
| `b2g2` … `b4g8` | the same, then `tconv-group{groups=G}` on its middle | W·C + W·(W/G)·K + O·W |

(K = KH·KW.) A type is a candidate for a block when every convolution it
rewrites has channels its groups and factor divide.

**Budget.** `budget` in (0, 1] is a fraction of the original network's
parameters (as `tconv summary` counts them); a whole number above 1 is an
absolute count. A network is in budget when its parameter count is within
± `tolerance` (2.5%, as in BlockSwap) of that target.

**Search.** Per-block types are drawn uniformly at random (numpy, seeded with
`seed`) and each assignment's parameter count is computed from the table, not
from a built network, until `samples` distinct in-budget assignments are found
(or MAX_DRAWS have been drawn). Each is built on a copy of the module and
scored by `rank-metric` on the seeded minibatch (`batch`, `seed`) with the
active store's parameters, new ones at their initial values; the highest score
wins (the first, on a tie). The Fisher potential is summed over the
convolution blocks of the original network only (see
`tconv.passes.analyses.capacity`): the inner convolutions a factorisation adds
(the depthwise, bottleneck down and middle convolutions) are not counted, so
every candidate is measured at the same activations, as BlockSwap measures one
activation per block, and a type is not rewarded for having more convolutions.
NASWOT and SynFlow are the whole network's (`measure`).

The winner is applied to the module, its new parameters' initial values are
written to the active store, and one remark on stderr names the chosen types.
With `check-capacity`, `metric` is measured on the original and on the winner
and the rewrite is refused, leaving the module unchanged, if the ratio is
below `min-capacity` (see `tconv.passes.nas.legality`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.rewriter import Rewriter

from tconv.errors import TconvError
from tconv.ir.ops import AddOp, BatchNormOp, Conv2dOp, Relu6Op, ReluOp
from tconv.ir.params import param_ops
from tconv.passes.analyses.capacity import METRICS, fisher_potential, measure, minibatch
from tconv.passes.analyses.summary import summarize
from tconv.passes.nas.bottleneck_block import BottleneckBlockPass
from tconv.passes.nas.depthwise_separable import DepthwiseSeparablePass
from tconv.passes.nas.group import GroupPass
from tconv.passes.nas.nas_pass import NasPass, RewriteState, conv_geometry, weight_param
from tconv.passes.nas.params import ParamMaker
from tconv.passes.nas.store import ParamStore, active_store
from tconv.passes.select import WILDCARDS, layer_name, parse_layers

MAX_DRAWS = 1 << 18
"""How many random assignments the search draws at most before it gives up."""

_DRAWS_AT_ONCE = 4096

_BRANCH_OPS = (Conv2dOp, BatchNormOp, ReluOp, Relu6Op)
"""The ops a residual branch or shortcut is followed back through (by their input)."""


# Residual blocks --------------------------------------------------------------


@dataclass(frozen=True)
class ResidualBlock:
    """The convolutions on the residual branch of one `add`."""

    name: str
    """The name of its first convolution, as `tconv summary` names it."""
    convs: tuple[Conv2dOp, ...]
    """The branch's convolutions, in program order."""

    @property
    def swappable(self) -> tuple[Conv2dOp, ...]:
        """The convolutions a block type rewrites: ungrouped, KxK, with a weight parameter."""
        def swappable(conv: Conv2dOp) -> bool:
            _, _, kernel_h, kernel_w, groups = conv_geometry(conv)
            return groups == 1 and (kernel_h, kernel_w) != (1, 1) and weight_param(conv) is not None

        return tuple(conv for conv in self.convs if swappable(conv))


def _ancestry(value: SSAValue) -> list[SSAValue]:
    """`value` and the values it is computed from through the inputs of
    convolutions, batch-norms and ReLUs, nearest first."""
    chain = [value]
    while isinstance(value.owner, _BRANCH_OPS):
        value = value.owner.operands[0]
        chain.append(value)
    return chain


def _convs_until(value: SSAValue, stop: set[SSAValue]) -> list[Conv2dOp] | None:
    """The convolutions between `value` and the first of its ancestors in
    `stop`, in program order; None when it reaches none of them."""
    convs: list[Conv2dOp] = []
    for ancestor in _ancestry(value):
        if ancestor in stop:
            return convs[::-1]
        if isinstance(ancestor.owner, Conv2dOp):
            convs.append(ancestor.owner)
    return None


def residual_block(add: AddOp) -> ResidualBlock | None:
    """The block whose branch `add` closes, or None when its operands do not
    meet (see the module docstring) or both cross as many convolutions."""
    lhs, rhs = add.lhs, add.rhs
    from_lhs = _convs_until(lhs, set(_ancestry(rhs)))
    from_rhs = _convs_until(rhs, set(_ancestry(lhs)))
    if from_lhs is None or from_rhs is None or len(from_lhs) == len(from_rhs):
        return None
    branch = max(from_lhs, from_rhs, key=len)
    return ResidualBlock(layer_name(branch[0]), tuple(branch))


def residual_blocks(module: ModuleOp) -> list[ResidualBlock]:
    """Every residual block of `module`, in program order."""
    found = (residual_block(op) for op in module.walk() if isinstance(op, AddOp))
    return [block for block in found if block is not None]


# Block types ------------------------------------------------------------------


@dataclass(frozen=True)
class BlockType:
    """One way to rebuild a block's swappable convolutions (see the table in
    the module docstring)."""

    kind: str
    """"keep", "grouped", "depthwise-separable" or "bottleneck"."""
    groups: int = 1
    """Of a grouped convolution, or of a bottleneck's middle one."""
    factor: int = 1
    """A bottleneck's width is O / factor."""

    @property
    def name(self) -> str:
        if self.kind == "grouped":
            return f"g{self.groups}"
        if self.kind == "depthwise-separable":
            return "dw"
        if self.kind == "bottleneck":
            return f"b{self.factor}" + (f"g{self.groups}" if self.groups > 1 else "")
        return self.kind

    def weights(self, conv: Conv2dOp) -> int | None:
        """The weight entries this type gives `conv` (ungrouped), or None
        where its channels do not divide."""
        in_channels, out_channels, kernel_h, kernel_w, _ = conv_geometry(conv)
        kernel = kernel_h * kernel_w
        if self.kind == "keep":
            return out_channels * in_channels * kernel
        if self.kind == "grouped":
            if in_channels % self.groups or out_channels % self.groups:
                return None
            return out_channels * (in_channels // self.groups) * kernel
        if self.kind == "depthwise-separable":
            return in_channels * kernel + out_channels * in_channels
        if out_channels % self.factor or (out_channels // self.factor) % self.groups:
            return None
        width = out_channels // self.factor
        return width * in_channels + width * (width // self.groups) * kernel + out_channels * width

    def rewrite(self, conv: Conv2dOp, state: RewriteState) -> list[Conv2dOp]:
        """Rebuild `conv` with the single-convolution passes; return the inner
        convolutions this adds (those that do not produce its output)."""
        if self.kind == "keep":
            return []
        if self.kind == "grouped":
            _rewrite_with(GroupPass(groups=self.groups), conv, state)
            return []
        use = next(iter(conv.output.uses))
        if self.kind == "depthwise-separable":
            _rewrite_with(DepthwiseSeparablePass(), conv, state)
            pointwise = use.operation.operands[use.index].owner
            return [pointwise.input.owner]
        _rewrite_with(BottleneckBlockPass(factor=self.factor), conv, state)
        up = use.operation.operands[use.index].owner
        middle = up.input.owner
        if self.groups > 1:
            _rewrite_with(GroupPass(groups=self.groups), middle, state)
        return [middle.input.owner, middle]


def _rewrite_with(rewrite: NasPass, conv: Conv2dOp, state: RewriteState) -> None:
    reason = rewrite.ineligible(conv, state)
    # The candidates were chosen by `BlockType.weights`; a refusal here is a bug.
    assert reason is None, f"{rewrite.name} refuses {layer_name(conv)}: {reason}"
    rewrite.rewrite(conv, state)


BLOCK_TYPES: tuple[BlockType, ...] = (
    BlockType("keep"),
    *(BlockType("grouped", groups=groups) for groups in (2, 4, 8, 16)),
    BlockType("depthwise-separable"),
    *(
        BlockType("bottleneck", groups=groups, factor=factor)
        for factor in (2, 4)
        for groups in (1, 2, 4, 8)
    ),
)


@dataclass(frozen=True)
class BlockChoices:
    """A selected block, the types it can take and what each adds to the
    network's parameter count."""

    block: ResidualBlock
    types: tuple[BlockType, ...]
    extra: np.ndarray
    """Per type: its weights minus the block's original ones (int64)."""


def block_choices(block: ResidualBlock) -> BlockChoices:
    original = sum(BlockType("keep").weights(conv) for conv in block.swappable)
    types, extra = [], []
    for block_type in BLOCK_TYPES:
        counts = [block_type.weights(conv) for conv in block.swappable]
        if None not in counts:
            types.append(block_type)
            extra.append(sum(counts) - original)
    return BlockChoices(block, tuple(types), np.array(extra, np.int64))


# The pass -----------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A network from the search: a type index per selected block."""

    assignment: tuple[int, ...]
    parameters: int
    score: float = -math.inf
    module: ModuleOp | None = None


@dataclass(frozen=True)
class BlockSwapPass(NasPass):
    """Replace residual blocks by cheaper ones within a parameter budget, chosen by capacity (BlockSwap).
    It rewrites
    blocks, not convolutions, so it drives `apply` itself instead of the
    per-convolution `ineligible` and `rewrite` of `NasPass`."""

    name = "tconv-blockswap"

    budget: float | int
    """A fraction of the original parameters in (0, 1], or a whole count above 1."""
    samples: int = 32
    """How many distinct in-budget networks are built and scored. Each costs
    one measurement of `rank-metric` (ResNet-34 CIFAR, Fisher at batch 8: a
    few seconds)."""
    tolerance: float = 0.025
    """How far from the budget a network's parameter count may be, as a fraction of it."""
    rank_metric: str = "fisher"
    """What the candidates are ranked by: fisher, naswot or synflow (highest wins)."""

    def validate(self) -> None:
        if not (self.budget > 0 and math.isfinite(self.budget)):
            raise self.fail(f"budget must be a fraction in (0, 1] or a parameter count, got {self.budget:g}")
        if self.budget > 1 and self.budget != int(self.budget):
            raise self.fail(
                f"budget {self.budget:g} is above 1, so it is a parameter count, and must be a whole number"
            )
        if not 0 < self.tolerance < 1:
            raise self.fail(f"tolerance must be in (0, 1), got {self.tolerance:g}")
        if self.samples < 1:
            raise self.fail(f"samples must be at least 1, got {self.samples}")
        if self.rank_metric not in METRICS:
            raise self.fail(f"unknown rank-metric '{self.rank_metric}' (expected one of {', '.join(METRICS)})")

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        check = self.capacity_check()
        store = active_store()
        choices = [block_choices(block) for block in self.selected_blocks(op)]
        original = summarize(op).parameters
        target = self.budget * original if self.budget <= 1 else int(self.budget)
        low, high = target * (1 - self.tolerance), target * (1 + self.tolerance)
        candidates = self.sample(choices, original, low, high)
        data = self.minibatch(op)
        best = max(
            (self.scored(op, choices, candidate, store, data) for candidate in candidates),
            key=lambda candidate: candidate.score,
        )
        if self.check_capacity:
            before = check.value(op, store, data)
            after = check.value(best.module, store, data)
            check.require(before, after, self.name, [c.block.name for c in choices])
        known = {param.param_name for param in param_ops(op)}
        self.build(op, choices, best.assignment, store)
        for param in param_ops(op):
            if param.param_name not in known:
                store.arrays[param.param_name] = store.value_of(param)
        chosen = ", ".join(f"{c.block.name}={c.types[i].name}" for c, i in zip(choices, best.assignment))
        print(
            f"remark: {self.name}: {chosen}; {best.parameters:,} parameters "
            f"(budget {target:,.0f} ± {self.tolerance * 100:g}%, original {original:,}); "
            f"{self.rank_metric} {best.score:.6g}, the best of {len(candidates)} in-budget networks",
            file=sys.stderr,
        )

    # Selection -----------------------------------------------------------------

    def selected_blocks(self, module: ModuleOp) -> list[ResidualBlock]:
        """The blocks `layers` selects that have a convolution to swap.
        Refuses an unknown or ineligible block named without wildcards."""
        blocks = residual_blocks(module)
        entries = parse_layers(self.layers)
        explicit = {entry for entry in entries if not any(c in entry for c in WILDCARDS)}
        names = [block.name for block in blocks]
        unknown = sorted(explicit - set(names))
        if unknown:
            raise self.fail(f"unknown block '{unknown[0]}' (the residual blocks are: {', '.join(names) or 'none'})")
        selected, skipped = [], []
        for block in blocks:
            if entries and not any(fnmatchcase(block.name, entry) for entry in entries):
                continue
            if block.swappable:
                selected.append(block)
            elif block.name in explicit:
                raise self.fail(f"cannot swap block {block.name}: its branch has no ungrouped KxK convolution")
            else:
                skipped.append(block.name)
        if skipped:
            print(
                f"remark: {self.name}: skipped {', '.join(skipped)}: "
                "its branch has no ungrouped KxK convolution",
                file=sys.stderr,
            )
        if not selected:
            what = f"selected by layers='{self.layers}'" if self.layers else "in the module"
            raise self.fail(f"no residual block with an ungrouped KxK convolution {what}")
        return selected

    # Sampling ------------------------------------------------------------------

    def sample(self, choices: Sequence[BlockChoices], original: int, low: float, high: float) -> list[Candidate]:
        """Up to `samples` distinct assignments with a parameter count in
        [low, high], in the order they were drawn."""
        reachable = (
            original + sum(int(c.extra.min()) for c in choices),
            original + sum(int(c.extra.max()) for c in choices),
        )

        def range_text() -> str:
            lo, hi = reachable
            return (
                f"the block types reach {lo:,} to {hi:,} parameters "
                f"({lo / original:.1%} to {hi / original:.1%} of the original {original:,})"
            )

        window = f"{low:,.0f} to {high:,.0f} parameters"
        if high < reachable[0] or low > reachable[1]:
            raise self.fail(f"no network within {window} (budget ± {self.tolerance * 100:g}%): {range_text()}")
        rng = np.random.default_rng(self.seed)
        counts = np.array([len(c.types) for c in choices])
        found: dict[tuple[int, ...], int] = {}
        drawn = 0
        while drawn < MAX_DRAWS and len(found) < self.samples:
            draws = rng.integers(0, counts, size=(_DRAWS_AT_ONCE, len(choices)))
            drawn += _DRAWS_AT_ONCE
            totals = original + sum(c.extra[draws[:, i]] for i, c in enumerate(choices))
            for row in np.flatnonzero((totals >= low) & (totals <= high)):
                found.setdefault(tuple(int(i) for i in draws[row]), int(totals[row]))
        if not found:
            raise self.fail(
                f"none of {drawn:,} random networks has {window} (budget ± {self.tolerance * 100:g}%); "
                f"{range_text()}: choose a budget nearer the middle of that range or a larger tolerance"
            )
        return [Candidate(a, p) for a, p in list(found.items())[: self.samples]]

    # Building and scoring --------------------------------------------------------

    def build(
        self, module: ModuleOp, choices: Sequence[BlockChoices], assignment: tuple[int, ...], store: ParamStore
    ) -> set[Conv2dOp]:
        """Give the blocks of `module` the assigned types; return the inner
        convolutions the rewrites added."""
        blocks = {block.name: block for block in residual_blocks(module)}
        state = RewriteState(module, store, ParamMaker(module, store, Rewriter()))
        inner: set[Conv2dOp] = set()
        for choice, index in zip(choices, assignment):
            for conv in blocks[choice.block.name].swappable:
                inner.update(choice.types[index].rewrite(conv, state))
        self._refresh_types(module)
        return inner

    def minibatch(self, module: ModuleOp) -> tuple[np.ndarray, np.ndarray]:
        try:
            return minibatch(module, self.batch, self.seed)
        except TconvError as err:
            raise self.fail(f"cannot rank the candidates: {err}") from None

    def scored(
        self,
        module: ModuleOp,
        choices: Sequence[BlockChoices],
        candidate: Candidate,
        store: ParamStore,
        data: tuple[np.ndarray, np.ndarray],
    ) -> Candidate:
        """`candidate` built on a copy of `module`, with its score."""
        network = module.clone()
        inner = self.build(network, choices, candidate.assignment, store)
        params = store.values_for(network)
        x, labels = data
        if self.rank_metric == "fisher":
            fisher = fisher_potential(network, params, x, labels)
            score = sum(block.total for block in fisher.blocks if block.block.conv not in inner)
        else:
            score = measure(network, params, self.rank_metric, x, labels).value
        score = score if not math.isnan(score) else -math.inf
        return Candidate(candidate.assignment, candidate.parameters, score, network)
