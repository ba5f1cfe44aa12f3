"""The parameter values NAS passes read and write while they rewrite.

A pass sees only the module, but some rewrites need values: channel pruning
ranks channels by their Fisher potential (which needs the weights) and keeps
slices of the old weights; an exact split copies slices of the original
weights. The *active store* carries them: `tconv-opt` installs one made from
the input's parameter store (`net.npz` beside `net.mlir`) for the whole
pipeline, and writes the completed store beside its `-o` output. Where no store
is active (plain `xdsl-opt`, Python callers), a pass uses an empty one: every
parameter then has its initial value (seed 0) and what the pass writes is lost,
so the output's new parameters are initialised from their `init` later.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.ir.ops import ParamOp, shape_of
from tconv.ir.params import check_store, complete_params, initial_value, is_trained


@dataclass
class ParamStore:
    """Arrays by parameter name; a missing or mis-shaped entry has its initial value."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    seed: int = 0
    """The seed initial values are drawn with."""
    provenance: dict[str, object] = field(default_factory=lambda: {"weights": "initial"})
    """Where the arrays come from (see `tconv.ir.params`); a rewrite of trained
    weights makes them `inherited`."""
    source: str | None = None
    """The file the arrays were read from; None for a store made in memory."""
    checked: bool = False
    """Whether `check` has run: it checks the store as read, before any rewrite."""

    def check(self, module: ModuleOp) -> None:
        """Refuse entries that do not fit the parameters of `module` that name
        them (shape, float values), with the check `tconv run` makes; a store
        read from a file must also hold every parameter. Done once, before the
        first pass reads the store: later passes find what earlier ones wrote."""
        if self.checked:
            return
        check_store(module, self.arrays, self.source or "the parameter store", complete=self.source is not None)
        self.checked = True

    @property
    def trained(self) -> bool:
        return is_trained(self.provenance)

    def value_of(self, param: ParamOp) -> np.ndarray:
        """The value of one parameter, as `complete_params` would give it."""
        shape = shape_of(param.result)
        old = self.arrays.get(param.param_name)
        if old is not None and tuple(old.shape) == shape:
            return np.asarray(old, np.float32)
        return initial_value(param.param_name, shape, param.init.data, self.seed)

    def values_for(self, module: ModuleOp) -> dict[str, np.ndarray]:
        """Every parameter of `module`."""
        return complete_params(module, self.arrays, self.seed)


_ACTIVE: ContextVar[ParamStore | None] = ContextVar("tconv_nas_param_store", default=None)


@contextmanager
def using_store(store: ParamStore) -> Iterator[ParamStore]:
    """Make `store` the one NAS passes read and write inside the `with` block."""
    token = _ACTIVE.set(store)
    try:
        yield store
    finally:
        _ACTIVE.reset(token)


def active_store() -> ParamStore:
    """The store installed by `using_store`, or a fresh empty one."""
    store = _ACTIVE.get()
    return store if store is not None else ParamStore()
