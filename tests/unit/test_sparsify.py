"""`tconv-sparsify`: magnitude pruning in the parameter store, per layer
(every output channel keeps its largest weights) or globally (one
threshold), and the `nonzeros` it declares."""

import math

import numpy as np
import pytest
from xdsl.context import Context
from xdsl.utils.exceptions import PassFailedException

from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import Conv2dOp
from tconv.ir.params import init_params
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.sparse.sparsify import SparsifyPass


def two_layers():
    b = NetworkBuilder("two", (1, 6, 8, 8))
    x = b.relu(b.conv2d(b.input, 10, 3, name="a"))
    return b.finish(b.conv2d(x, 4, 1, bias=True, name="b"))


def sparsify(module, provenance=None, **options):
    params = init_params(module)
    store = ParamStore(arrays=dict(params), provenance=provenance or {"weights": "initial"})
    with using_store(store):
        SparsifyPass(**options).apply(Context(), module)
    return params, store


def nonzeros(module) -> dict[str, int | None]:
    return {op.weight.owner.param_name: op.weight_nonzeros for op in module.walk() if isinstance(op, Conv2dOp)}


def test_per_layer_every_channel_keeps_its_largest_weights():
    module = two_layers()
    before, store = sparsify(module, density=0.2)
    for name, taps in (("a.weight", 54), ("b.weight", 10)):
        old, new = before[name].reshape(len(before[name]), -1), store.arrays[name].reshape(len(before[name]), -1)
        kept = math.ceil(0.2 * taps)
        assert ((new != 0).sum(axis=1) == kept).all()
        for row_old, row_new in zip(old, new, strict=True):
            survivors = np.abs(row_old[row_new != 0])
            assert survivors.min() >= np.abs(row_old[row_new == 0]).max()  # the largest magnitudes stay
            np.testing.assert_array_equal(row_new[row_new != 0], row_old[row_new != 0])  # unchanged
    assert nonzeros(module) == {"a.weight": 11, "b.weight": 2}
    np.testing.assert_array_equal(store.arrays["b.bias"], before["b.bias"])


def test_globally_one_threshold_keeps_the_share_across_layers():
    module = two_layers()
    before, store = sparsify(module, density=0.3, scope="global")
    old = np.concatenate([np.abs(before[n]).ravel() for n in ("a.weight", "b.weight")])
    new = np.concatenate([store.arrays[n].ravel() for n in ("a.weight", "b.weight")])
    assert (new != 0).sum() == math.ceil(0.3 * old.size)
    assert np.abs(new[new != 0]).min() >= old[new == 0].max()
    for name, count in nonzeros(module).items():
        assert count == max(1, int((store.arrays[name] != 0).reshape(len(store.arrays[name]), -1).sum(1).max()))


def test_layers_selects_and_a_trained_store_becomes_inherited():
    module = two_layers()
    trained = {"weights": "trained", "data": "digits"}
    before, store = sparsify(module, provenance=trained, density=0.5, layers="b")
    assert nonzeros(module) == {"a.weight": None, "b.weight": 5}
    np.testing.assert_array_equal(store.arrays["a.weight"], before["a.weight"])
    assert store.provenance == {"weights": "inherited", "sparsity": {"density": 0.5, "scope": "layer"},
                                "inherited_from": trained}


@pytest.mark.parametrize("options, message", [
    ({"density": 0}, "density must lie in (0, 1]"),
    ({"density": 1.5}, "density must lie in (0, 1]"),
    ({"scope": "row"}, "scope must be layer or global, got 'row'"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(PassFailedException, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        SparsifyPass(**options)


def test_an_unknown_layer_is_refused():
    with pytest.raises(PassFailedException, match="unknown layer 'c'"):
        sparsify(two_layers(), layers="c")


def test_training_holds_the_zeros_of_a_sparse_convolution():
    from tconv.train.data import load_dataset
    from tconv.train.engine import train_network
    from tconv.train.loop import TrainConfig

    b = NetworkBuilder("digits", (1, 1, 8, 8))
    x = b.relu(b.conv2d(b.input, 8, 3, name="a"))
    x = b.relu(b.conv2d(x, 8, 3, name="b"))
    module = b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))
    _, store = sparsify(module, density=0.3, layers="b")
    trained = train_network(module, store.arrays, load_dataset("digits", (1, 1, 8, 8), 10),
                            TrainConfig(epochs=1, lr=0.1), None, "cpu", progress=False, log=False)
    before, after = store.arrays["b.weight"], trained.params["b.weight"]
    np.testing.assert_array_equal(after[before == 0], 0)  # held at zero
    assert not np.array_equal(after[before != 0], before[before != 0])  # the rest trained
    assert (after != 0).reshape(8, -1).sum(axis=1).max() <= nonzeros(module)["b.weight"]
    assert (trained.params["a.weight"] != store.arrays["a.weight"]).all()  # a dense layer trains as before
