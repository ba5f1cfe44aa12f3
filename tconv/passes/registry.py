"""Every tconv pass by its pipeline name, loaded lazily (as xDSL's own registry)."""

from collections.abc import Callable

from xdsl.passes import ModulePass


def _set_batch() -> type[ModulePass]:
    from tconv.passes.set_batch import SetBatchPass

    return SetBatchPass


PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "tconv-set-batch": _set_batch,
}
