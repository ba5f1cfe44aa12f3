"""The sparse convolution kernel (`tconv.lowering.tvm.sparse_conv`) against
the reference executor, on networks `tconv-sparsify` pruned: hypothesis
over groups, odd images, strides, dilations, asymmetric padding, densities
(rows padded where a channel keeps fewer weights than its fullest), batch
sizes and the fused epilogue (bias, batch-norm, residual, activation)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xdsl.context import Context
from xdsl.dialects.builtin import DictionaryAttr, StringAttr

from tconv.errors import TconvError
from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import Conv2dOp
from tconv.ir.params import init_params
from tconv.lowering.tvm.build import lower_kernels, run_tvm
from tconv.passes.nas.store import ParamStore, using_store
from tconv.passes.sparse.sparsify import SparsifyPass
from tconv.semantics.reference import run


def sparsified(module, density: float, scope: str = "layer", seed: int = 0) -> dict[str, np.ndarray]:
    store = ParamStore(arrays=init_params(module, seed=seed))
    with using_store(store):
        SparsifyPass(density=density, scope=scope).apply(Context(), module)
    return store.arrays


def kernels(module) -> list[str]:
    return [call.symbol.split("_", 1)[1] for call in lower_kernels(module)[1].calls]


@st.composite
def cases(draw):
    kh, kw = draw(st.sampled_from([(1, 1), (3, 3), (1, 3), (5, 5)]))
    padding = tuple(draw(st.integers(0, k - 1)) if k > 1 else 0 for k in (kh, kw, kh, kw))
    dilation = draw(st.integers(1, 2)) if kw > 1 else 1
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    return {
        "batch": draw(st.integers(1, 2)),
        "groups": groups,
        "channels": groups * draw(st.integers(1, 6)),
        "out_channels": groups * draw(st.integers(1, 12)),
        "height": draw(st.integers(max(1, kh - padding[0] - padding[2]), 13)),
        "width": draw(st.integers(max(1, dilation * (kw - 1) + 1 - padding[1] - padding[3]), 37)),
        "kernel": (kh, kw),
        "strides": (draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        "padding": padding,
        "dilation": dilation,
        "density": draw(st.sampled_from([0.01, 0.05, 0.1])),
        "scope": draw(st.sampled_from(["layer", "global"])),
        "bias": draw(st.booleans()),
        "batch_norm": draw(st.booleans()),
        "residual": draw(st.booleans()),
        "activation": draw(st.sampled_from([None, "relu", "relu6"])),
        "seed": draw(st.integers(0, 2**16)),
    }


def network(case):
    b = NetworkBuilder("sparse", (case["batch"], case["channels"], case["height"], case["width"]))
    y = b.conv2d(b.input, case["out_channels"], case["kernel"], stride=case["strides"], padding=case["padding"],
                 dilation=(1, case["dilation"]), groups=case["groups"], bias=case["bias"], name="conv")
    if case["batch_norm"]:
        y = b.batch_norm(y, name="bn")
    if case["residual"]:
        y = b.add(y, b.conv2d(b.input, case["out_channels"], case["kernel"], stride=case["strides"],
                              padding=case["padding"], dilation=(1, case["dilation"]), name="shortcut"))
    if case["activation"] is not None:
        y = getattr(b, case["activation"])(y)
    return b.finish(y)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_the_sparse_kernel_computes_the_pruned_convolution(case):
    module = network(case)
    params = sparsified(module, case["density"], case["scope"], case["seed"])
    if case["batch_norm"]:  # statistics away from the identity, so that folding them is tested
        rng = np.random.default_rng(case["seed"])
        for name in ("bn.weight", "bn.bias", "bn.running_mean"):
            params[name] = rng.standard_normal(case["out_channels"]).astype(np.float32)
        params["bn.running_var"] = rng.uniform(0.5, 2, case["out_channels"]).astype(np.float32)
    for conv in module.walk():  # small kernels keep more than 10% (at least one weight): ask for sparse
        if isinstance(conv, Conv2dOp):
            conv.properties["schedule"] = DictionaryAttr({"algorithm": StringAttr("sparse")})
    assert kernels(module).count("sparse_conv2d") == 1 + case["residual"]
    x = np.random.default_rng(case["seed"]).standard_normal(
        (case["batch"], case["channels"], case["height"], case["width"])).astype(np.float32)
    expected = run(module, params, x)[0]
    got = run_tvm(module, params, x)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


def _conv(module) -> Conv2dOp:
    return next(op for op in module.walk() if isinstance(op, Conv2dOp))


def test_a_schedule_picks_the_kernel_whatever_the_density():
    b = NetworkBuilder("dense_enough", (1, 8, 6, 6))
    module = b.finish(b.conv2d(b.input, 8, 3, name="conv"))
    params = sparsified(module, 0.5)
    assert kernels(module) != ["sparse_conv2d"]  # 50%: dense by default
    _conv(module).properties["schedule"] = DictionaryAttr({"algorithm": StringAttr("sparse")})
    assert kernels(module) == ["sparse_conv2d"]
    x = np.random.default_rng(0).standard_normal((1, 8, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run_tvm(module, params, x)[0], run(module, params, x)[0], rtol=1e-5, atol=1e-5)
    _conv(module).properties["schedule"] = DictionaryAttr({"algorithm": StringAttr("direct")})
    module.verify()
    assert kernels(module) == ["conv2d"]


def test_weights_denser_than_declared_are_refused_with_the_channel():
    b = NetworkBuilder("lies", (1, 4, 5, 5))
    module = b.finish(b.conv2d(b.input, 4, 3, name="conv"))
    sparsified(module, 0.05)
    dense = init_params(module)  # the declaration stays, the weights are dense again
    with pytest.raises(TconvError, match="output channel 0 has 36 nonzero weights, more than the 2"):
        run_tvm(module, dense, np.zeros((1, 4, 5, 5), np.float32))


def test_the_llvm_backend_and_cuda_refuse_the_sparse_kernel_at_the_op():
    from tconv.lowering.llvm.build import lower_program

    b = NetworkBuilder("asks", (1, 8, 6, 6))
    module = b.finish(b.conv2d(b.input, 8, 3, name="conv"))
    sparsified(module, 0.05)
    _conv(module).properties["schedule"] = DictionaryAttr({"algorithm": StringAttr("sparse")})
    with pytest.raises(TconvError, match="llvm backend: has no sparse kernel"):
        lower_program(module)
    with pytest.raises(TconvError, match="tvm backend: cuda has no sparse convolution kernel"):
        lower_kernels(module, "cuda")


def test_folding_batch_norm_keeps_the_declaration():
    from tconv.passes.classical.fold_bn import FoldBatchNormPass

    b = NetworkBuilder("folds", (1, 8, 6, 6))
    module = b.finish(b.relu(b.batch_norm(b.conv2d(b.input, 8, 3, name="conv"), name="bn")))
    store = ParamStore(arrays=sparsified(module, 0.05))
    with using_store(store):
        FoldBatchNormPass().apply(Context(), module)
    assert _conv(module).weight_nonzeros == 4 and kernels(module) == ["sparse_conv2d"]
