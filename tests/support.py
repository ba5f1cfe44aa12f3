"""Helpers the test files share (importable because tests/conftest.py puts
this folder on sys.path)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tconv.cli.main import main
from tconv.ir.builder import NetworkBuilder
from tconv.ir.ops import BatchNormOp, shape_of
from tconv.ir.params import init_params, param_ops


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def trained_like_params(module, seed: int = 0, spread: float = 0.1) -> dict[str, np.ndarray]:
    """Kaiming weights; biases, shifts and means from [-spread, spread],
    batch-norm scales and variances from [1 - spread, 1 + spread]: like a
    trained network's, so every parameter matters while float32 rounding
    stays far below the bounds."""
    rng = np.random.default_rng(seed)
    params = init_params(module, seed)
    near_one = {
        operand.owner.param_name
        for op in module.walk()
        if isinstance(op, BatchNormOp)
        for operand in (op.scale, op.var)
    }
    for op in param_ops(module):
        shape = shape_of(op.result)
        if len(shape) == 1:
            center = 1.0 if op.param_name in near_one else 0.0
            params[op.param_name] = rng.uniform(center - spread, center + spread, shape).astype(np.float32)
    return params


def tconv(capsys, *argv) -> tuple[int, str, str]:
    """`tconv ARGV` in this process: its exit status, stdout and stderr."""
    status = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_user_error(result: tuple[int, str, str], *fragments: str) -> None:
    """A user error: status 1, nothing on stdout, a message (no traceback) holding every fragment."""
    status, out, err = result
    assert status == 1, err
    assert out == ""
    assert "Traceback" not in err
    assert err.strip()
    for fragment in fragments:
        assert fragment in err, err


def assert_usage_error(result: tuple[int, str, str], *fragments: str) -> None:
    """A usage error: status 2, the usage line and a message holding every fragment."""
    status, out, err = result
    assert status == 2, err
    assert out == ""
    assert "Traceback" not in err
    assert err.startswith("usage: ")
    for fragment in fragments:
        assert fragment in err, err


def small_resnet():
    """A stem, two residual blocks of 32 channels at 8x8 and a classifier:
    ResNet's structure at a size searches and compiles handle in seconds."""
    b = NetworkBuilder("small", (1, 3, 8, 8))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 32, 3, padding=1, name="conv1"), name="bn1"))
    for block in range(2):
        with b.scope(f"layer1.{block}"):
            y = b.relu(b.batch_norm(b.conv2d(x, 32, 3, padding=1, name="conv1"), name="bn1"))
            y = b.batch_norm(b.conv2d(y, 32, 3, padding=1, name="conv2"), name="bn2")
            x = b.relu(b.add(y, x))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="linear"))


def onnxruntime_int8_is_exact() -> bool:
    """Whether ONNX Runtime's integer convolutions (QLinearConv, its
    optimiser on) sum exactly on this CPU: with VNNI (AVX-512 or AVX) they
    do; on AVX2 alone its uint8 × int8 kernel adds pairs of products in
    int16 (`vpmaddubsw`), which saturates (outputs up to 0.29 off on these
    digits models, on a Zen 3)."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    return bool(features.get("avx512vnni") or features.get("avxvnni"))


ZOO_REPEATS = frozenset({("resnet34", "imagenet"), ("resnet50", "imagenet"), ("densenet121", "imagenet")})
"""ImageNet networks of the zoo whose blocks their CIFAR-10 versions (and
ResNet-18's ImageNet stem) already test whole: compiled whole they take
7–35 s each, so the backends' zoo tests run them only with
`TCONV_ZOO_ALL=1`, which keeps `make test` within its budget."""


def skip_zoo_repeat(name: str, dataset: str, repeats: frozenset = ZOO_REPEATS) -> None:
    """Skip a zoo test of (`name`, `dataset`) where it is one of `repeats`, unless `TCONV_ZOO_ALL` is set."""
    if (name, dataset) in repeats and not os.environ.get("TCONV_ZOO_ALL"):
        pytest.skip("its blocks are tested in other zoo networks; TCONV_ZOO_ALL=1 runs it")
