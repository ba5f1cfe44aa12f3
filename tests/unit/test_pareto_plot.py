"""The data `tconv optimize`'s Pareto plot is drawn from: measured latencies
where the search measured them, the front, the chosen answer, a readable title."""

import pytest

from tconv.search.report import pareto_plot, pareto_png, target_title


def candidate(label, verdict, ratio, estimated, measured=None):
    return {"label": label, "verdict": verdict, "capacity_ratio": ratio, "estimated_ms": estimated,
            "measured_ms": measured}


@pytest.fixture
def report():
    return {
        "network": "resnet18 (cifar10)",
        "target": "llvm -mcpu=znver3 threads=16 kernels=3",
        "min_capacity": 1.0,
        "original": {"capacity": {"metric": "naswot"}},
        "optimized": {"label": "b"},
        "candidates": [
            candidate("original", "original", None, 10.0, measured=12.0),
            candidate("a", "legal", 1.2, 8.0),
            candidate("b", "legal", 1.1, 5.0, measured=6.0),
            candidate("c", "illegal", 0.5, 1.0),
            candidate("d", "not checked", None, 2.0),
        ],
    }


def test_measured_latency_wins_over_the_estimate(report):
    plot = pareto_plot(report)
    by_label = {p.label: p for p in plot.points}
    assert set(by_label) == {"original", "a", "b", "c"}  # d was never checked: no capacity
    assert (by_label["original"].latency_ms, by_label["original"].measured) == (12.0, True)
    assert (by_label["b"].latency_ms, by_label["b"].measured) == (6.0, True)
    assert (by_label["a"].latency_ms, by_label["a"].measured) == (8.0, False)


def test_front_and_chosen_answer(report):
    plot = pareto_plot(report)
    assert [p.label for p in plot.front] == ["b", "a"]  # c is illegal; the original is beaten by a
    assert plot.chosen.label == "b"


def test_title_names_the_machine_not_the_key(report):
    assert pareto_plot(report).title == "resnet18 (cifar10) on znver3, 16 threads"
    assert target_title("tvm cuda sm_90 kernels=2") == "tvm cuda sm_90"
    assert "kernels=" not in target_title("llvm -mcpu=skylake threads=4 kernels=3")


def test_png_is_written(report, tmp_path):
    pytest.importorskip("matplotlib")
    pareto_png(report, tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_the_accuracy_front_keeps_networks_nothing_beats_on_both_axes():
    from tconv.search.report import accuracy_front

    def net(label, ms, accuracy):
        return {"label": label, "measured_ms": ms, "accuracy": accuracy}

    networks = [net("original", 3.6, 0.986), net("rewrite", 0.5, 0.969), net("slower, worse", 0.9, 0.96),
                net("int8", 0.9, 0.986), net("sparse", 0.4, 0.95), net("tie, slower", 1.0, 0.986)]
    assert [n["label"] for n in accuracy_front(networks)] == ["sparse", "rewrite", "int8"]
