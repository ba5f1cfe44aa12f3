"""Every tconv pass by its pipeline name, loaded lazily (as xDSL's own registry)."""

from collections.abc import Callable
from importlib import import_module

from xdsl.passes import ModulePass


def _loader(module: str, cls: str) -> Callable[[], type[ModulePass]]:
    """A loader of the pass class `cls` in `tconv.passes.<module>`."""

    def load() -> type[ModulePass]:
        return getattr(import_module(f"tconv.passes.{module}"), cls)

    return load


PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "tconv-set-batch": _loader("set_batch", "SetBatchPass"),
    "tconv-tile": _loader("classical.schedule", "TilePass"),
    "tconv-reorder": _loader("classical.schedule", "ReorderPass"),
    "tconv-unroll": _loader("classical.schedule", "UnrollPass"),
    "tconv-vectorize": _loader("classical.schedule", "VectorizePass"),
    "tconv-parallel": _loader("classical.schedule", "ParallelPass"),
    "tconv-fold-bn": _loader("classical.fold_bn", "FoldBatchNormPass"),
    "tconv-fuse": _loader("classical.fuse", "FusePass"),
    "tconv-pack": _loader("classical.pack", "PackPass"),
    "tconv-group": _loader("nas.group", "GroupPass"),
    "tconv-bottleneck": _loader("nas.bottleneck", "BottleneckPass"),
    "tconv-bottleneck-block": _loader("nas.bottleneck_block", "BottleneckBlockPass"),
    "tconv-depthwise-separable": _loader("nas.depthwise_separable", "DepthwiseSeparablePass"),
    "tconv-split-output": _loader("nas.split_output", "SplitOutputPass"),
    "tconv-unroll-conv": _loader("nas.unroll_conv", "UnrollConvPass"),
    "tconv-spatial-strip": _loader("nas.spatial_strip", "SpatialStripPass"),
    "tconv-prune-channels": _loader("nas.prune_channels", "PruneChannelsPass"),
    "tconv-blockswap": _loader("nas.blockswap", "BlockSwapPass"),
    "tconv-quantize": _loader("quant.quantize", "QuantizePass"),
    "tconv-sparsify": _loader("sparse.sparsify", "SparsifyPass"),
}
