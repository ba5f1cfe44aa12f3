"""bench/capacity_tau.py: its pass specs give the variants they name, its torch
evaluation keeps the reference protocol, and its quick path runs end to end
(the τ it reports is not checked: too few variants to mean anything)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import capacity_tau  # noqa: E402

from tconv.ir.params import init_params  # noqa: E402


def test_every_rewrite_spec_gives_its_hand_built_network():
    variants = capacity_tau.all_variants()
    capacity_tau.check_rewrite_specs(variants)
    specs = {variant.name: variant.spec for variant in variants}
    assert specs["conv2+3 depthwise, no pointwise"] is not None and specs["narrower /4"] is not None
    # Not expressible: a widening, and the hand-built depthwise-separable (batch-norm between).
    assert specs["wider x2"] is None and specs["conv2 depthwise-separable"] is None
    base = capacity_tau.small_cnn(capacity_tau.BASE)
    wrong = capacity_tau.rewrite(base, {}, 'tconv-group{groups=4 layers="conv3"}', inherit=False)[0]
    assert capacity_tau.architecture(wrong) != capacity_tau.architecture(
        capacity_tau.small_cnn(capacity_tau.variants()["conv2 groups 4"])
    )


def test_an_inherited_rewrite_keeps_the_trained_weights_it_can():
    base = capacity_tau.small_cnn(capacity_tau.BASE)
    params = init_params(base, 3)  # stands for trained weights
    module, inherited = capacity_tau.rewrite(base, params, 'tconv-bottleneck{factor=2 layers="conv3"}', inherit=True)
    assert np.array_equal(inherited["conv2.weight"], params["conv2.weight"])
    kept = inherited["conv3_b2.weight"]
    assert kept.shape == (32, 32, 3, 3) and inherited["fc_b2.weight"].shape == (10, 32)
    rows = {tuple(row.ravel()) for row in params["conv3.weight"]}
    assert all(tuple(row.ravel()) in rows for row in kept)


def test_torch_evaluation_is_the_reference_protocol():
    data = capacity_tau.digits_data()
    module = capacity_tau.small_cnn(capacity_tau.variants()["conv2 groups 4"])
    params = init_params(module, 1)
    x_stats, x, y = data.x_fit[:300], data.x_val[:120], data.y_val[:120]
    reference = capacity_tau.accuracy(module, capacity_tau.with_population_statistics(module, params, x_stats), x, y)
    assert capacity_tau.torch_accuracy(module, params, x_stats, x, y) == pytest.approx(reference, abs=1 / 120 + 1e-9)


def test_the_quick_path_reports_every_signal(tmp_path):
    out = tmp_path / "tau.md"
    names = ["conv2 groups 4", "conv3 depthwise-separable (pass)", "wider x2"]
    argv = ["--quick", "--epochs", "1", "--steps", "5", "-o", str(out)]
    for name in names:
        argv += ["--variant", name]
    text = capacity_tau.main(argv)
    assert out.read_text() == text
    lines = text.splitlines()
    (header,) = [line for line in lines if line.startswith("| variant |")]
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert columns[-4:] == ["scratch 5", "inherited 0", "inherited 5", "accuracy"]
    for name in names:
        (row,) = [line for line in lines if line.startswith(f"| {name} |")]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(cell.endswith("%") for cell in cells[-4:-1]) == (name != "wider x2")
        assert cells[-4].endswith("%") and cells[-1].endswith("%")
    assert "| τ, all 3 | p | τ, the 2 rewrites | p |" in text
    (inherited,) = [line for line in lines if line.startswith("| inherited 5 |")]
    assert inherited.split("|")[2].strip() == "–"  # not defined for the widening
    assert "The 2 rewrites (inherited signals): conv2 groups 4; conv3 depthwise-separable (pass)." in text
