"""Zoo networks compiled whole by the TVM lowering for this CPU, against the
reference executor on random inputs and parameters (random batch-norm
statistics too, so that folding is exercised): every network of the zoo,
for every dataset it is built for (the ImageNet ones whose blocks their
CIFAR-10 versions test, `support.ZOO_REPEATS`, with `TCONV_ZOO_ALL=1`)."""

import numpy as np
import pytest
from support import skip_zoo_repeat

from tconv.frontends import zoo
from tconv.ir.params import init_params
from tconv.lowering.tvm.build import TvmNetwork
from tconv.semantics.reference import run


def random_params(module, seed=0):
    rng = np.random.default_rng(seed)
    params = init_params(module)
    for name, value in params.items():
        if name.endswith("running_var"):
            params[name] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        elif name.endswith(("running_mean", "bias")) or name.endswith("bn1.weight"):
            params[name] = (0.1 * rng.standard_normal(value.shape)).astype(np.float32) + (
                1.0 if name.endswith("weight") else 0.0
            )
    return params


@pytest.mark.parametrize(
    ("name", "dataset"),
    [
        pytest.param(name, dataset, id=f"{name}-{dataset}",
                     marks=[pytest.mark.slow] if dataset == "imagenet" else [])
        for name in zoo.network_names()
        for dataset in zoo.datasets(name)
    ],
)
def test_zoo_network_matches_reference(name, dataset):
    skip_zoo_repeat(name, dataset)
    module = zoo.build(name, dataset)
    params = random_params(module)
    network = TvmNetwork(module)
    network.load_params(params)
    image = np.random.default_rng(1).standard_normal(network.program.inputs[0].shape).astype(np.float32)
    (actual,) = network.run(image)
    (expected,) = run(module, params, image)
    error = np.linalg.norm(actual - expected) / np.linalg.norm(expected)
    assert error < 1e-4, f"{name}: relative error {error:.2e}"
    # Running again on the same tensors gives the same result (no state left behind).
    (again,) = network.run(image)
    np.testing.assert_array_equal(again, actual)


def test_program_of_resnet18_is_well_formed():
    """Every call reads tensors that exist before it and writes one new
    activation; the output is the last call's."""
    from tconv.lowering.tvm.build import lower_kernels

    kernels, program = lower_kernels(zoo.build("resnet18", "cifar10"))
    written = {t.id for t in program.tensors if t.kind != "activation"}
    for call in program.calls:
        assert all(index in written for index in call.reads), call
        assert program.tensors[call.writes].kind == "activation" and call.writes not in written
        written.add(call.writes)
    assert program.outputs == [program.calls[-1].writes]
    assert set(program.symbols) == {str(gv.name_hint) for gv in kernels.functions}
    assert program.format_calls().splitlines()[0].startswith("call k0_conv2d 0 ")


def test_wrong_input_shape_is_an_error():
    from tconv.ir.builder import NetworkBuilder
    from tconv.ir.loader import TconvError

    b = NetworkBuilder("tiny", (1, 2, 4, 4))
    module = b.finish(b.relu(b.input))
    network = TvmNetwork(module)
    network.load_params({})
    with pytest.raises(TconvError, match="input 0: expected float32 1x2x4x4, got float32 2x2x4x4"):
        network.run(np.zeros((2, 2, 4, 4), np.float32))
