"""Weight inheritance (`tconv.passes.nas.inherit`, the `init` option of NAS
passes): each factorisation is exact where its form allows it, a rewrite of a
trained network computes nearer the original than a random restart, and the
option and provenance say what happened."""

import re

import numpy as np
import pytest
import torch
from xdsl.passes import PassPipeline
from xdsl.utils.exceptions import PassFailedException

from tconv.cli.files import write_network
from tconv.cli.opt import main as opt_main
from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import make_context, verify_module
from tconv.ir.ops import shape_of
from tconv.ir.params import init_params, initial_value, load_provenance, load_store, store_path_for
from tconv.passes.analyses.capacity_data import digits_minibatch, standardised_digits
from tconv.passes.nas.inherit import dense_kernel, depthwise_separable, regroup, tucker2
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.registry import PASSES
from tconv.semantics.reference import run, single_function
from tconv.semantics.torch_executor import interpret

TRAINED = {"weights": "trained", "accuracy": 0.9}


def apply(module, spec: str, store: ParamStore) -> ParamStore:
    with using_store(store):
        PassPipeline.parse_spec(PASSES, spec).apply(make_context(), module)
    verify_module(module)
    return store


def with_init(spec: str, init: str) -> str:
    """`spec` (one pass) with the option init=`init` added."""
    return f"{spec[:-1]} init={init}}}" if spec.endswith("}") else f"{spec}{{init={init}}}"


def one_conv(in_channels=4, out_channels=8, groups=1, stride=1, bias=True):
    """A single convolution (3x3, padded) whose output is the function's result."""
    b = NetworkBuilder("one", (2, in_channels, 6, 6))
    return b.finish(b.conv2d(b.input, out_channels, 3, stride=stride, groups=groups, bias=bias, name="conv"))


def rewritten_matches(module, arrays: dict, spec: str, init: str = "inherit") -> None:
    """`spec` with `init` on `module` with `arrays` computes what the original did."""
    x = np.random.default_rng(1).standard_normal(shape_of(single_function(module).args[0])).astype(np.float32)
    expected = run(module, arrays, x)[0]
    store = apply(module, with_init(spec, init), ParamStore(dict(arrays)))
    np.testing.assert_allclose(run(module, store.values_for(module), x)[0], expected, rtol=1e-4, atol=1e-4)


# Exactness ---------------------------------------------------------------------


def composed(down, mid, up) -> np.ndarray:
    """The kernel the bottleneck block's three convolutions compute together."""
    return np.einsum("oa,abij,bc->ocij", up[:, :, 0, 0], mid, down[:, :, 0, 0])


def test_tucker2_composes_to_the_kernel_at_full_rank():
    """down, mid and up compose to (U_out U_outᵀ) W (U_in U_inᵀ): W itself when
    the width covers both unfoldings' ranks; here W > C, so U_in has zero columns."""
    weight = np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32)
    down, mid, up = tucker2(weight, 8)
    assert (down.shape, mid.shape, up.shape) == ((8, 4, 1, 1), (8, 8, 3, 3), (8, 8, 1, 1))
    np.testing.assert_allclose(composed(down, mid, up), weight, atol=1e-5)
    # Below full rank, a projection: HOOI's sweeps fit no worse than plain HOSVD.
    hooi = np.linalg.norm(weight - composed(*tucker2(weight, 2)))
    hosvd = np.linalg.norm(weight - composed(*tucker2(weight, 2, sweeps=0)))
    assert hooi <= hosvd + 1e-5 and hosvd < np.linalg.norm(weight)


def test_bottleneck_block_of_a_low_rank_kernel_is_exact():
    """A 16 x 4 kernel of Tucker rank 8 (mode 0) through bottleneck-block factor 2
    (W = 8), strided and with a bias: the three convolutions compute the original."""
    module = one_conv(4, 16, stride=2)
    rng = np.random.default_rng(2)
    arrays = init_params(module)
    factor, core = rng.standard_normal((16, 8)), rng.standard_normal((8, 4, 3, 3))
    arrays["conv.weight"] = np.einsum("oa,acij->ocij", factor, core).astype(np.float32)
    arrays["conv.bias"] = rng.standard_normal(16).astype(np.float32)
    rewritten_matches(module, arrays, "tconv-bottleneck-block{factor=2}")


def test_group_keeps_a_block_diagonal_kernel_and_regroups_a_grouped_one():
    module = one_conv(4, 8)
    arrays = init_params(module)
    block = np.zeros((8, 4, 1, 1), np.float32)
    block[:4, :2] = block[4:, 2:] = 1
    arrays["conv.weight"] = arrays["conv.weight"] * block
    rewritten_matches(module, arrays, "tconv-group{groups=2}")
    # Four groups' blocks lie inside two groups' blocks: regrouping 4 → 2 is exact.
    module = one_conv(8, 8, groups=4)
    rewritten_matches(module, init_params(module), "tconv-group{groups=2}")


def test_regroup_slices_the_dense_kernel():
    weight = np.arange(8 * 2 * 1 * 1, dtype=np.float32).reshape(8, 2, 1, 1)
    dense = dense_kernel(weight, 4)
    assert dense.shape == (8, 8, 1, 1) and np.count_nonzero(dense) == np.count_nonzero(weight)
    np.testing.assert_array_equal(regroup(weight, 4, 4), weight)
    np.testing.assert_array_equal(regroup(weight, 4, 1, slice(2, 4)), dense[2:4])


def test_depthwise_separable_of_a_rank_one_per_channel_kernel_is_exact():
    module = one_conv(4, 8)
    rng = np.random.default_rng(3)
    arrays = init_params(module)
    pointwise, depthwise = rng.standard_normal((8, 4)), rng.standard_normal((4, 3, 3))
    arrays["conv.weight"] = np.einsum("oc,cij->ocij", pointwise, depthwise).astype(np.float32)
    arrays["conv.bias"] = rng.standard_normal(8).astype(np.float32)
    rewritten_matches(module, arrays, "tconv-depthwise-separable")
    fitted_depthwise, fitted_pointwise = depthwise_separable(arrays["conv.weight"])
    assert fitted_depthwise.shape == (4, 1, 3, 3) and fitted_pointwise.shape == (8, 4, 1, 1)


def test_split_output_of_a_grouped_conv_is_exact_when_inherited():
    module = one_conv(4, 8, groups=2)
    rewritten_matches(module, init_params(module, seed=4), "tconv-split-output{splits=2}")


def test_unroll_conv_of_a_kernel_block_diagonal_past_its_dense_rows_is_exact():
    module = one_conv(4, 8)
    arrays = init_params(module, seed=5)
    arrays["conv.weight"][4:6, 2:] = arrays["conv.weight"][6:, :2] = 0
    rewritten_matches(module, arrays, "tconv-unroll-conv{dense=4 groups=2}")
    # The same with the old rule (untrained, auto): the dense part only is copied.
    module = one_conv(4, 8)
    with pytest.raises(AssertionError):
        rewritten_matches(module, arrays, "tconv-unroll-conv{dense=4 groups=2}", init="auto")


def test_bottleneck_keeps_the_largest_channels_into_a_grouped_consumer():
    """a (8 channels, 4 of them zero) → bn → relu → b (2 groups): keeping the 4
    nonzero channels, 2 per group of b, is exact."""
    b = NetworkBuilder("chain", (2, 3, 5, 5))
    a = b.relu(b.batch_norm(b.conv2d(b.input, 8, 3, name="a"), name="bn"))
    module = b.finish(b.conv2d(a, 4, 3, groups=2, name="b"))
    arrays = init_params(module, seed=6)
    arrays["a.weight"][[2, 3, 4, 7]] = 0
    rewritten_matches(module, arrays, 'tconv-bottleneck{factor=2 layers="a"}')


# Nearer the trained original than a random restart -----------------------------


def digits_net():
    """8x8 digits: three 3x3 convolutions of 16 channels with batch-norm and
    ReLU (the last strided, with a bias), global pooling and a classifier."""
    b = NetworkBuilder("digits", (1, 1, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 16, 3, name="conv1"), name="bn1"))
    x = b.relu(b.batch_norm(b.conv2d(x, 16, 3, name="conv2"), name="bn2"))
    x = b.relu(b.batch_norm(b.conv2d(x, 16, 3, stride=2, bias=True, name="conv3"), name="bn3"))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


@pytest.fixture(scope="module")
def trained() -> dict[str, np.ndarray]:
    """`digits_net`'s weights after 200 SGD steps on digits (batch-norm in eval
    mode: its running statistics stay 0 and 1, its scale and shift learn)."""
    module = digits_net()
    statistics = ("running_mean", "running_var")
    params = {
        name: torch.tensor(value, requires_grad=not name.endswith(statistics))
        for name, value in init_params(module).items()
    }
    optimiser = torch.optim.SGD([p for p in params.values() if p.requires_grad], lr=0.05, momentum=0.9)
    images, labels = standardised_digits()
    images, labels = torch.from_numpy(images[:, None]), torch.from_numpy(labels)
    rng = np.random.default_rng(0)
    function = single_function(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    try:
        for _ in range(200):
            batch = torch.from_numpy(rng.choice(len(images), 32))
            (logits,) = interpret(function, params, [images[batch]])
            loss = torch.nn.functional.cross_entropy(logits, labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            accuracy = (interpret(function, params, [images])[0].argmax(1) == labels).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    assert accuracy > 0.9, accuracy
    return {name: p.detach().numpy().copy() for name, p in params.items()}


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return digits_minibatch((1, 1, 8, 8), 10, 256, seed=1)[0]


def relative_error(trained, digits, spec: str, init: str) -> float:
    """How far `spec` (with `init`) moves the trained network's logits on digits."""
    module = digits_net()
    expected = run(module, trained, digits)[0]
    store = apply(module, with_init(spec, init), ParamStore(dict(trained), provenance=dict(TRAINED)))
    logits = run(module, store.values_for(module), digits)[0]
    return float(np.linalg.norm(logits - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize(
    "spec",
    [
        'tconv-group{groups=2 layers="conv2"}',
        'tconv-bottleneck{factor=2 layers="conv2"}',
        'tconv-bottleneck-block{factor=2 layers="conv2"}',
        'tconv-depthwise-separable{layers="conv2"}',
        'tconv-prune-channels{keep=0.5 layers="conv2"}',
    ],
)
def test_inherited_weights_stay_nearer_the_trained_network(trained, digits, spec):
    inherited = relative_error(trained, digits, spec, "auto")
    random = relative_error(trained, digits, spec, "random")
    print(f"{spec}: relative logit error inherited {inherited:.3f}, random {random:.3f}")
    assert inherited < random


# The option and the provenance -----------------------------------------------


def grouped(store: ParamStore, init: str) -> tuple[np.ndarray, ParamStore]:
    """conv2's weight after tconv-group{groups=2} with `init`, and the store."""
    module = digits_net()
    apply(module, f'tconv-group{{groups=2 layers="conv2" init={init}}}', store)
    return store.values_for(module)["conv2_g2.weight"], store


def test_random_on_a_trained_store_gives_the_initial_values(trained):
    weight, store = grouped(ParamStore(dict(trained), provenance=dict(TRAINED)), "random")
    np.testing.assert_array_equal(weight, initial_value("conv2_g2.weight", (16, 8, 3, 3), "kaiming_normal", 0))
    assert store.provenance == {"weights": "inherited", "init": "random", "inherited_from": TRAINED}


def test_inherit_on_an_untrained_store_inherits():
    initial = init_params(digits_net())
    weight, store = grouped(ParamStore(dict(initial)), "inherit")
    np.testing.assert_array_equal(weight, regroup(initial["conv2.weight"], 1, 2))
    assert store.provenance == {"weights": "initial", "init": "inherit"}
    # auto on an untrained store: the initial values, provenance untouched.
    weight, store = grouped(ParamStore(dict(initial)), "auto")
    np.testing.assert_array_equal(weight, initial_value("conv2_g2.weight", (16, 8, 3, 3), "kaiming_normal", 0))
    assert store.provenance == {"weights": "initial"}


def test_a_bad_init_is_a_pass_failure():
    message = "tconv-bottleneck: init must be one of auto, inherit, random, got 'copy'"
    with pytest.raises(PassFailedException, match=re.escape(message)):
        apply(digits_net(), "tconv-bottleneck{factor=2 init=copy}", ParamStore())


def test_tconv_opt_writes_inherited_weights_and_says_so(tmp_path, trained):
    source, out = tmp_path / "net.mlir", tmp_path / "out.mlir"
    write_network(source, digits_net(), trained, TRAINED)
    assert opt_main([str(source), "-p", 'tconv-group{groups=2 layers="conv2"}', "-o", str(out)]) == 0
    assert load_provenance(store_path_for(out)) == {"weights": "inherited", "init": "inherit", "inherited_from": TRAINED}
    # A second rewrite keeps the record of the trained weights and inherits again.
    again = tmp_path / "again.mlir"
    assert opt_main([str(out), "-p", 'tconv-group{groups=4 layers="conv3"}', "-o", str(again)]) == 0
    assert load_provenance(store_path_for(again)) == {"weights": "inherited", "init": "inherit", "inherited_from": TRAINED}
    written = load_store(store_path_for(out))["conv2_g2.weight"]
    np.testing.assert_array_equal(written, regroup(trained["conv2.weight"], 1, 2))
