"""Names that cross the ONNX boundary: parameter names, value names, the function name.

ONNX allows any string as a name; a `tconv.param` name must be non-empty
printable ASCII, and one name may stand for only one value on either side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_UNPRINTABLE = re.compile(r'[^\x21-\x7e]|["\\]')
"""Characters a parameter name does not keep: anything outside printable ASCII,
spaces, and the quote and backslash that the IR's string literals escape."""

_NOT_SYMBOL = re.compile(r"[^A-Za-z0-9_.$-]")


def param_name(name: str) -> str:
    """`name` as a parameter name: kept where it is one, else with each
    offending character replaced by `_`."""
    return _UNPRINTABLE.sub("_", name) or "param"


def function_name(name: str, fallback: str) -> str:
    """A `func.func` symbol from a graph name: letters, digits and `_.$-`,
    starting with a letter or `_` (an empty name takes `fallback`)."""
    symbol = _NOT_SYMBOL.sub("_", name or fallback) or "network"
    return symbol if re.match(r"[A-Za-z_]", symbol) else f"_{symbol}"


class UniqueNames:
    """Hands out names no earlier call (and none of `taken`) has used:
    `base`, else `base_1`, `base_2`, ..."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._taken = set(taken)

    def take(self, base: str) -> str:
        name, suffix = base, 0
        while name in self._taken:
            suffix += 1
            name = f"{base}_{suffix}"
        self._taken.add(name)
        return name
