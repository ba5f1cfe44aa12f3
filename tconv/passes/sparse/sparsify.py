"""`tconv-sparsify`: magnitude pruning of convolution weights to a density.

    tconv-opt net.mlir -p 'tconv-sparsify{density=0.1}' -o net_sparse.mlir
    tconv-opt net.mlir -p 'tconv-sparsify{density=0.2 scope=global layers="layer3*,layer4*"}' -o net_sparse.mlir

The smallest weights (by magnitude) of each selected convolution become zero
in the parameter store, and the convolution declares how many nonzero
weights its fullest output channel keeps (`nonzeros`), which is what the
TVM backend's sparse kernel (`tconv.lowering.tvm.sparse_conv`) is sized by.
The network's shapes do not change; what it computes does, as pruning
does (fine-tune afterwards where accuracy matters).

- `density` (0 < density ≤ 1): the share of the selected weights kept.
- `scope=layer` (the default): every output channel of every selected
  convolution keeps its ⌈density · K⌉ largest weights (K = C/G · KH · KW),
  so every layer, and every channel, has that density. Balanced rows are
  the form the sparse kernel runs best: it is sized by its fullest channel.
- `scope=global`: one magnitude threshold over all the selected weights
  together, keeping the ⌈density · total⌉ largest; layers (and channels)
  end up with different densities, and `nonzeros` is each layer's fullest
  channel's count.

Ties are broken by position (the earlier weight is kept), so the result is
deterministic. Only convolutions whose weight is a `tconv.param` can be
sparsified (others are skipped, or refused where named). A trained store
becomes `inherited` (the pruned weights are derived, not retrained), its
record kept under `inherited_from`; `sparsity` records the density and scope.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from tconv.ir.ops import ParamOp
from tconv.ir.syntax import int_attr
from tconv.passes.nas.store import ParamStore, active_store
from tconv.passes.select import select_convs

SCOPES = ("layer", "global")


@dataclass(frozen=True)
class SparsifyPass(ModulePass):
    """Magnitude pruning to a density (see the module docstring)."""

    name = "tconv-sparsify"

    uses_param_store: ClassVar[bool] = True
    """It reads and writes the weights: `tconv-opt` gives it the input's store."""

    density: float | int = 0.1
    """The share of weights kept, in (0, 1]."""
    scope: str = "layer"
    """`layer` (every output channel keeps its largest share) or `global` (one threshold)."""
    layers: str = ""
    """Comma-separated layer names and patterns; empty: every convolution."""

    def fail(self, message: str) -> PassFailedException:
        return PassFailedException(f"{self.name}: {message}")

    def __post_init__(self) -> None:
        if not 0 < self.density <= 1:
            raise self.fail(f"density must lie in (0, 1], got {self.density}")
        if self.scope not in SCOPES:
            raise self.fail(f"scope must be {' or '.join(SCOPES)}, got '{self.scope}'")

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        store = active_store()
        store.check(op)
        selected, skipped = [], []
        for layer in select_convs(op, self.layers, self.name):
            if isinstance(layer.conv.weight.owner, ParamOp):
                selected.append(layer)
            elif layer.explicit:
                raise self.fail(f"{layer.name}: its weight is computed, not a tconv.param; nothing to prune")
            else:
                skipped.append(layer.name)
        if not selected:
            raise self.fail("no convolution with a tconv.param weight " + (
                f"selected by layers='{self.layers}'" if self.layers else "in the module"))
        # A weight shared by several convolutions is pruned once.
        params = list(dict.fromkeys(layer.conv.weight.owner for layer in selected))
        weights = {param: store.value_of(param) for param in params}
        keep = self.keep_masks(weights)
        for param in params:
            store.arrays[param.param_name] = np.where(keep[param], weights[param], np.float32(0))
        for layer in selected:
            mask = keep[layer.conv.weight.owner]
            fullest = int(mask.reshape(len(mask), -1).sum(axis=1).max())
            layer.conv.properties["nonzeros"] = int_attr(max(fullest, 1))
        self.record(store)
        if skipped:
            print(f"remark: {self.name}: left {', '.join(skipped)} alone: weight not a tconv.param", file=sys.stderr)

    def keep_masks(self, weights: dict[ParamOp, np.ndarray]) -> dict[ParamOp, np.ndarray]:
        """Which weights stay, per parameter (largest magnitudes, earlier first on a tie)."""
        if self.scope == "layer":
            masks = {}
            for param, weight in weights.items():
                rows = np.abs(weight.reshape(len(weight), -1))
                kept = math.ceil(self.density * rows.shape[1])
                order = np.argsort(-rows, axis=1, kind="stable")[:, :kept]
                mask = np.zeros(rows.shape, bool)
                np.put_along_axis(mask, order, True, axis=1)
                masks[param] = mask.reshape(weight.shape)
            return masks
        flat = np.concatenate([np.abs(w).ravel() for w in weights.values()])
        kept = math.ceil(self.density * flat.size)
        chosen = np.zeros(flat.size, bool)
        chosen[np.argsort(-flat, kind="stable")[:kept]] = True
        masks, start = {}, 0
        for param, weight in weights.items():
            masks[param] = chosen[start : start + weight.size].reshape(weight.shape)
            start += weight.size
        return masks

    def record(self, store: ParamStore) -> None:
        sparsity = {"density": float(self.density), "scope": self.scope}
        if store.provenance.get("weights") == "trained":
            store.provenance = {"weights": "inherited", "sparsity": sparsity, "inherited_from": store.provenance}
        else:
            store.provenance = {**store.provenance, "sparsity": sparsity}
