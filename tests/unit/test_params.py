"""The parameter store: deterministic initialisation and clear binding errors."""

import numpy as np
import pytest

from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import module_text, parse_module
from tconv.ir.params import (
    PROVENANCE_KEY,
    ParamError,
    bind_params,
    complete_params,
    init_params,
    is_trained,
    load_provenance,
    load_store,
    parameter_count,
    save_store,
    store_path_for,
)


def small_network(width: int = 8):
    b = NetworkBuilder("small", (1, 3, 16, 16))
    x = b.relu(b.batch_norm(b.conv2d(b.input, width, 3, name="conv1"), name="bn1"))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


def test_initialisation_is_deterministic_and_kaiming():
    module = small_network(64)
    first, second = init_params(module, seed=3), init_params(module, seed=3)
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].dtype == np.float32
        np.testing.assert_array_equal(first[name], second[name])
    assert not np.array_equal(first["conv1.weight"], init_params(module, seed=4)["conv1.weight"])
    # Kaiming normal, fan_in = 3*3*3: std sqrt(2/27).
    assert abs(first["conv1.weight"].std() - np.sqrt(2 / 27)) < 0.02
    np.testing.assert_array_equal(first["bn1.weight"], np.ones(64))
    np.testing.assert_array_equal(first["bn1.running_mean"], np.zeros(64))
    np.testing.assert_array_equal(first["bn1.running_var"], np.ones(64))
    np.testing.assert_array_equal(first["fc.bias"], np.zeros(10))


def test_reshaping_one_parameter_keeps_the_others():
    old = init_params(small_network(8), seed=0)
    new_module = small_network(16)
    new = complete_params(new_module, old, seed=0)
    assert new["conv1.weight"].shape == (16, 3, 3, 3)
    assert new["fc.weight"].shape == (10, 16)
    # Unchanged shapes keep their values; a fresh entry is drawn from (seed, name).
    assert new["fc.bias"] is old["fc.bias"]
    np.testing.assert_array_equal(new["conv1.weight"], init_params(new_module, seed=0)["conv1.weight"])


def test_store_round_trip(tmp_path):
    module = small_network()
    arrays = init_params(module)
    ir_path = tmp_path / "net.mlir"
    path = store_path_for(ir_path)
    assert path == tmp_path / "net.npz"
    save_store(path, arrays)
    loaded = bind_params(module, load_store(path))
    for name, value in arrays.items():
        np.testing.assert_array_equal(loaded[name], value)
    assert [p.name for p in tmp_path.iterdir()] == ["net.npz"]


def test_missing_and_misshaped_entries_name_parameter_and_shapes():
    module = parse_module(module_text(small_network()), "net.mlir")
    arrays = init_params(module)
    missing = dict(arrays)
    del missing["bn1.running_var"]
    with pytest.raises(ParamError) as err:
        bind_params(module, missing, "net.npz")
    assert "net.mlir:" in str(err.value)
    assert "parameter 'bn1.running_var' is missing from net.npz" in str(err.value)
    wrong = dict(arrays, **{"conv1.weight": np.zeros((8, 3, 5, 5), np.float32)})
    with pytest.raises(ParamError) as err:
        bind_params(module, wrong, "net.npz")
    assert "parameter 'conv1.weight': net.npz has shape 8x3x5x5, the IR expects 8x3x3x3" in str(err.value)


def test_unreadable_store(tmp_path):
    with pytest.raises(ParamError, match="parameter store not found"):
        load_store(tmp_path / "absent.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ParamError, match="not a readable .npz parameter store"):
        load_store(bad)


def test_parameter_count_excludes_running_statistics():
    # conv 8*3*3*3 = 216, bn scale+shift 16, fc 10*8 + 10 = 90.
    assert parameter_count(small_network()) == 216 + 16 + 90


def test_the_store_keeps_its_provenance_apart_from_the_parameters(tmp_path):
    module = small_network()
    params = init_params(module)
    path = tmp_path / "net.npz"
    save_store(path, params)
    assert load_provenance(path) == {"weights": "initial"}
    save_store(path, params, {"weights": "trained", "accuracy": 0.97})
    assert load_store(path).keys() == params.keys()
    assert load_provenance(path) == {"weights": "trained", "accuracy": 0.97}
    assert is_trained(load_provenance(path)) and not is_trained({"weights": "initial"})


def test_a_malformed_provenance_is_a_located_error(tmp_path):
    path = tmp_path / "net.npz"
    np.savez(path, **{PROVENANCE_KEY: np.frombuffer(b'{"weights": "magic"}', np.uint8)})
    with pytest.raises(ParamError, match=r"net\.npz: error: .*'weights' is one of initial, trained, inherited"):
        load_provenance(path)
    np.savez(path, **{PROVENANCE_KEY: np.frombuffer(b"\xff{", np.uint8)})
    with pytest.raises(ParamError, match="is not JSON"):
        load_provenance(path)
