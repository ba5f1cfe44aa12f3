"""bench/layer_profile.py: it runs on a small network, pairs each convolution
with ONNX Runtime's, and splits ONNX Runtime's profile into runs (its
timings are not checked: tests never assert speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import module_text
from tconv.ir.params import init_params, save_store

SCRIPT = Path(__file__).parents[2] / "bench" / "layer_profile.py"
sys.path.insert(0, str(SCRIPT.parent))

from layer_profile import Layer, fastest, ort_layers, pair_convolutions  # noqa: E402


def test_each_convolution_is_paired_with_onnxruntimes_in_execution_order(tmp_path):
    b = NetworkBuilder("mobile", (1, 3, 32, 32))
    x = b.relu6(b.batch_norm(b.conv2d(b.input, 16, 3, stride=2, padding=1, name="stem"), name="stem_bn"))
    x = b.relu6(b.batch_norm(b.conv2d(x, 16, 3, padding=1, groups=16, name="dw"), name="dw_bn"))
    x = b.relu6(b.batch_norm(b.conv2d(x, 32, 1, name="pw"), name="pw_bn"))
    module = b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))
    (tmp_path / "net.mlir").write_text(module_text(module))
    save_store(tmp_path / "net.npz", init_params(module))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "net.mlir"), "--threads", "1", "--rounds", "1", "--runs", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ") and "layer" not in line]
    assert [(row[1].strip(), row[2].strip(), row[3].strip()) for row in rows] == [
        ("stem", "3x3", str(16 * 16 * 16)), ("dw", "depthwise", str(16 * 16 * 16)), ("pw", "1x1", str(32 * 16 * 16)),
    ]
    assert all(float(row[4]) > 0 and float(row[5]) > 0 for row in rows)


def _event(node: int, name: str, op: str, microseconds: int, ts: int) -> dict:
    args = {"node_index": str(node), "op_name": op, "output_type_shape": [{"float": [1, 8, 4, 4]}]}
    return {"cat": "Node", "name": f"{name}_kernel_time", "dur": microseconds, "ts": ts, "args": args}


def test_onnxruntimes_profile_splits_into_runs_and_keeps_each_nodes_fastest():
    events = [
        _event(0, "conv", "Conv", 30, 1), _event(1, "relu", "Relu", 5, 2),
        {"cat": "Session", "name": "model_run", "dur": 40, "ts": 3, "args": {}},
        _event(0, "conv", "Conv", 20, 4), _event(1, "relu", "Relu", 7, 5),
        {"cat": "Node", "name": "conv_fence_before", "dur": 0, "ts": 6, "args": {}},
    ]
    runs = ort_layers(events)
    assert [[(layer.name, layer.kind) for layer in run] for run in runs] == [[("conv", "conv"), ("relu", "Relu")]] * 2
    best = fastest(runs)
    assert [layer.seconds for layer in best] == [20e-6, 5e-6] and best[0].elements == 128
    assert fastest([[Layer("a", "k", 1, 2.0)], [Layer("a", "k", 1, 1.0)], [Layer("b", "k", 1, 0.5)]])[0].seconds == 1.0


def test_convolutions_pair_by_output_size_across_a_blocks_branch_order():
    """tconv runs a projection shortcut after the block's first convolution,
    ONNX Runtime before it: each still finds its own; one without a match
    stays unpaired."""
    ours = [Layer("conv1", "conv 1x1", 64, 1.0), Layer("shortcut", "conv 1x1", 256, 1.0),
            Layer("conv2", "conv 3x3", 64, 1.0), Layer("odd", "conv 1x1", 7, 1.0)]
    theirs = [Layer("s", "conv", 256, 1.0), Layer("c1", "conv", 64, 1.0), Layer("c2", "conv", 64, 1.0)]
    pairs = [(a.name, b.name if b else None) for a, b in pair_convolutions(ours, theirs)]
    assert pairs == [("conv1", "c1"), ("shortcut", "s"), ("conv2", "c2"), ("odd", None)]
