"""The `layers` option: which convolutions a pass (NAS or schedule) changes.

A convolution is named by its weight parameter without `.weight`
(`layer1.0.conv1` for `layer1.0.conv1.weight`), as `tconv summary` names it.
The option is a comma-separated list of names and `fnmatch` patterns
(`layers="conv1,layer1.*"`); empty selects every convolution.

An entry without wildcards names a layer *explicitly*: it must exist, and a
pass refuses it when it is not eligible. Convolutions reached only through a
pattern or the default are skipped with a remark when not eligible.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import PassFailedException

from tconv.ir.ops import Conv2dOp, ParamOp

WILDCARDS = "*?["


def layer_name(conv: Conv2dOp) -> str:
    """The convolution's name: its weight parameter's name without `.weight`."""
    weight = conv.weight.owner
    if isinstance(weight, ParamOp):
        return weight.param_name.removesuffix(".weight")
    return "<conv2d without a weight parameter>"


@dataclass(frozen=True)
class Selected:
    conv: Conv2dOp
    name: str
    explicit: bool
    """Named without wildcards: refuse rather than skip when not eligible."""


def parse_layers(layers: str) -> list[str]:
    return [entry.strip() for entry in layers.split(",") if entry.strip()]


def select_convs(module: ModuleOp, layers: str, pass_name: str) -> list[Selected]:
    """The convolutions `layers` selects, in program order. Raises
    PassFailedException for an explicit name that no convolution has."""
    convs = [op for op in module.walk() if isinstance(op, Conv2dOp)]
    entries = parse_layers(layers)
    if not entries:
        return [Selected(conv, layer_name(conv), False) for conv in convs]
    names = {conv: layer_name(conv) for conv in convs}
    explicit = [e for e in entries if not any(c in e for c in WILDCARDS)]
    for entry in explicit:
        if entry not in names.values():
            known = ", ".join(names.values()) or "none"
            raise PassFailedException(
                f"{pass_name}: unknown layer '{entry}' (the convolutions are: {known})"
            )
    selected = []
    for conv in convs:
        name = names[conv]
        if name in explicit:
            selected.append(Selected(conv, name, True))
        elif any(fnmatchcase(name, entry) for entry in entries):
            selected.append(Selected(conv, name, False))
    return selected
