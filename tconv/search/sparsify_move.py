"""Weight sparsity as a move of `tconv optimize --sparsify DENSITY`.

After the NAS rewrites and fine-tuning have chosen the float32 answer (and
before the int8 move, which may then quantise the sparse network), the
search prunes it: `tconv-sparsify` at DENSITY per layer (every output
channel keeps its largest weights; each convolution declares its
`nonzeros`, so the TVM backend runs it with the sparse kernel where that
density pays, `algorithm.sparse_pays`). The pruned network is fine-tuned
with its zeros held (`TrainableNetwork.hold_zeros`) for half of
`--train-budget`, compiled, timed beside the float32 answer, and evaluated
as compiled. It replaces the answer where it is faster and its accuracy
stays within the allowed drop of the original's (`Search.sparsify`).
"""

from __future__ import annotations

from collections.abc import Mapping

from xdsl.context import Context
from xdsl.utils.exceptions import PassFailedException

from tconv.errors import TconvError
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.sparse.sparsify import SparsifyPass
from tconv.search.space import Realised

FINE_TUNE_SHARE = 0.5
"""The pruned network's fine-tuning, as a share of `--train-budget` (spent beside it)."""


def sparsified(realised: Realised, density: float, provenance: Mapping[str, object]) -> Realised:
    """`realised` with every convolution's weights pruned to `density` (per
    layer) and its `nonzeros` declared; its other parameters as they were."""
    module = realised.module.clone()
    store = ParamStore(arrays=dict(realised.params), provenance=dict(provenance))
    try:
        with using_store(store):
            SparsifyPass(density=density).apply(Context(), module)
    except PassFailedException as err:
        raise TconvError(str(err)) from None
    return Realised(module, store.arrays, dict(realised.applied))
