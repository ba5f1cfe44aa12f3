"""Every tconv pass by its pipeline name, loaded lazily (as xDSL's own registry)."""

from collections.abc import Callable
from importlib import import_module

from xdsl.passes import ModulePass


def _set_batch() -> type[ModulePass]:
    from tconv.passes.set_batch import SetBatchPass

    return SetBatchPass


def _nas(module: str, cls: str) -> Callable[[], type[ModulePass]]:
    """A loader of the NAS pass `cls` in `tconv.passes.nas.<module>`."""

    def load() -> type[ModulePass]:
        return getattr(import_module(f"tconv.passes.nas.{module}"), cls)

    return load


def _schedule(cls: str) -> Callable[[], type[ModulePass]]:
    """A loader of the schedule pass `cls` in `tconv.passes.classical.schedule`."""

    def load() -> type[ModulePass]:
        return getattr(import_module("tconv.passes.classical.schedule"), cls)

    return load


PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "tconv-set-batch": _set_batch,
    "tconv-tile": _schedule("TilePass"),
    "tconv-reorder": _schedule("ReorderPass"),
    "tconv-unroll": _schedule("UnrollPass"),
    "tconv-vectorize": _schedule("VectorizePass"),
    "tconv-parallel": _schedule("ParallelPass"),
    "tconv-group": _nas("group", "GroupPass"),
    "tconv-bottleneck": _nas("bottleneck", "BottleneckPass"),
    "tconv-bottleneck-block": _nas("bottleneck_block", "BottleneckBlockPass"),
    "tconv-depthwise-separable": _nas("depthwise_separable", "DepthwiseSeparablePass"),
    "tconv-split-output": _nas("split_output", "SplitOutputPass"),
    "tconv-unroll-conv": _nas("unroll_conv", "UnrollConvPass"),
    "tconv-prune-channels": _nas("prune_channels", "PruneChannelsPass"),
}
