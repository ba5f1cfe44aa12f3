"""The architecture half of the search space: which NAS rewrite each
convolution gets.

A `Rewrite` is one NAS pass at one setting (`tconv-group{groups=4}`),
optionally followed by a second on the middle convolution a bottleneck
creates (a ResNeXt block: 1x1 down, grouped KxK, 1x1 up); an
`Assignment` maps layer names (`tconv.passes.select.layer_name`) to rewrites.
`apply_assignment` realises an assignment on a copy of a network by running
each layer's pass on that layer alone, in program order, so every rewrite
sees the shapes the earlier ones left (a bottlenecked convolution narrows its
consumer's input, which may change what the consumer can be grouped by). A
layer whose rewrite is not possible there is left as it is and reported, not
an error: the search proposes, the passes decide.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import PassPipeline
from xdsl.utils.exceptions import PassFailedException

from tconv.ir.loader import make_context
from tconv.ir.ops import Conv2dOp
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.registry import PASSES
from tconv.passes.select import layer_name


@dataclass(frozen=True)
class Rewrite:
    """One NAS pass with its options (the legality options are the search's)."""

    pass_name: str
    options: tuple[tuple[str, int], ...] = ()
    middle: Rewrite | None = None
    """Applied next to the convolution this pass names `<layer>_mid` (the
    narrow KxK of `tconv-bottleneck-block`)."""

    @property
    def label(self) -> str:
        """Short, for tables: `group 4`, `depthwise-separable`, `bottleneck-block 2`,
        `bottleneck-block 2, middle group 8`."""
        kind = self.pass_name.removeprefix("tconv-")
        label = " ".join([kind, *(str(value) for _, value in self.options)])
        return f"{label}, middle {self.middle.label}" if self.middle else label

    def spec(self, layers: Sequence[str]) -> str:
        """The pass pipeline that applies this rewrite to `layers`."""
        options = [f"{key}={value}" for key, value in self.options]
        options.append(f'layers="{",".join(layers)}"')
        spec = f"{self.pass_name}{{{' '.join(options)}}}"
        if self.middle:
            spec += "," + self.middle.spec([f"{layer}_mid" for layer in layers])
        return spec


def _rewrite(pass_name: str, middle: Rewrite | None = None, **options: int) -> Rewrite:
    return Rewrite(pass_name, tuple(options.items()), middle)


DEFAULT_REWRITES: tuple[Rewrite, ...] = (
    _rewrite("tconv-group", groups=2),
    _rewrite("tconv-group", groups=4),
    _rewrite("tconv-group", groups=8),
    _rewrite("tconv-group", groups=16),
    _rewrite("tconv-depthwise-separable"),
    _rewrite("tconv-bottleneck-block", factor=2),
    _rewrite("tconv-bottleneck-block", factor=4),
    _rewrite("tconv-bottleneck-block", _rewrite("tconv-group", groups=4), factor=2),
    _rewrite("tconv-bottleneck-block", _rewrite("tconv-group", groups=8), factor=2),
    _rewrite("tconv-bottleneck-block", _rewrite("tconv-group", groups=4), factor=4),
    _rewrite("tconv-spatial-strip", strips=2),
    _rewrite("tconv-spatial-strip", strips=4),
)
"""What the search tries on each convolution: grouping (a restricted
input-channel loop), depthwise-separable (a depthwise loop nest and a 1x1
one), bottleneck blocks (1x1 down, KxK narrow, 1x1 up), bottlenecks
with a grouped middle, and spatial strips (the output rows in 2 or 4 strips,
each a convolution with its own weights over the rows it reads). The
bottlenecks add a ReLU'd layer, so they can keep a network's capacity where
grouping alone loses a little. Strips keep the work and add parameters: what
they offer is smaller images per kernel (better cache reuse) and weights
free to differ per region, starting exact."""

Assignment = Mapping[str, Rewrite]


@dataclass
class Realised:
    """A network with an assignment applied."""

    module: ModuleOp
    params: dict[str, np.ndarray]
    applied: dict[str, Rewrite]
    skipped: dict[str, str] = field(default_factory=dict)
    """Layers whose rewrite the pass refused there, with its reason."""


def conv_layers(module: ModuleOp) -> list[str]:
    """The names of the module's convolutions, in program order."""
    return [layer_name(op) for op in module.walk() if isinstance(op, Conv2dOp)]


def apply_assignment(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    assignment: Assignment,
    provenance: Mapping[str, object] | None = None,
) -> Realised:
    """A copy of `module` with each assigned layer rewritten, in program
    order, and its parameters (kept, resized, inherited where `provenance`
    says the weights are trained, or newly initialised)."""
    result = module.clone()
    store = ParamStore(dict(params), provenance=dict(provenance or {"weights": "initial"}))
    applied: dict[str, Rewrite] = {}
    skipped: dict[str, str] = {}
    ctx = make_context()
    for layer in conv_layers(module):
        rewrite = assignment.get(layer)
        if rewrite is None:
            continue
        # A composed rewrite refused half-way must leave nothing behind.
        attempt = result.clone() if rewrite.middle else result
        # The passes remark on stderr; the search reports what it applied itself.
        with using_store(store), contextlib.redirect_stderr(io.StringIO()):
            try:
                PassPipeline.parse_spec(PASSES, rewrite.spec([layer])).apply(ctx, attempt)
            except PassFailedException as err:
                skipped[layer] = str(err)
                continue
        result = attempt
        applied[layer] = rewrite
    return Realised(result, store.values_for(result), applied, skipped)


def eligible_layers(module: ModuleOp, rewrite: Rewrite) -> list[str]:
    """The layers `rewrite` can be applied to, each on its own in the original network."""
    realised = apply_assignment(module, {}, dict.fromkeys(conv_layers(module), rewrite))
    return list(realised.applied)


def origin_of(layer: str, originals: Sequence[str]) -> str | None:
    """The original layer a convolution of a rewritten network stands for:
    passes name new weights by tagging the old name (`layer1.0.conv1` →
    `layer1.0.conv1_dw`), so the longest original name that is the layer or
    its tagged form."""
    matches = [name for name in originals if layer == name or layer.startswith(name + "_")]
    return max(matches, key=len) if matches else None
