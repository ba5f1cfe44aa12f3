"""Every zoo network through ONNX and back: the exported model is valid, runs
in onnxruntime to the reference executor's result, and imports back to the
same IR and parameters.

onnxruntime is the independent side here: the reference executor runs the
*imported* module, which must also print exactly as the original did."""

import gc

import numpy as np
import onnx
import onnxruntime
import pytest
from support import relative_error, trained_like_params

from tconv.frontends import zoo
from tconv.frontends.onnx import export_model, import_model
from tconv.ir.loader import module_text
from tconv.ir.ops import shape_of
from tconv.semantics import reference

CASES = [
    pytest.param(name, dataset, id=f"{name}-{dataset}", marks=pytest.mark.slow)
    for name in zoo.network_names()
    for dataset in zoo.datasets(name)
]


@pytest.mark.parametrize("name, dataset", CASES)
def test_zoo_network_round_trips_through_onnx(name, dataset):
    module = zoo.build(name, dataset, batch=1)
    params = trained_like_params(module)
    data = export_model(module, params).SerializeToString()
    onnx.checker.check_model(data)

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    image = shape_of(module.ops.first.body.block.args[0])
    x = np.random.default_rng(1).standard_normal(image, dtype=np.float32)
    (expected,) = session.run(None, {"input": x})
    del session
    imported, imported_params = import_model(onnx.load_from_string(data))
    del data
    gc.collect()  # VGG-16 holds 550 MB of weights in each copy

    (actual,) = reference.run(imported, imported_params, x)
    assert actual.shape == expected.shape
    assert relative_error(actual, expected) < 1e-5
    assert module_text(imported) == module_text(module)
    assert imported_params.keys() == params.keys()
    for key, value in params.items():
        np.testing.assert_array_equal(imported_params[key], value, err_msg=key)
