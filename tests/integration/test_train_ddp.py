"""Data-parallel training: `torchrun --nproc-per-node 2 tconv train ...`, two
processes on loopback with the gloo backend."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tconv.cli.files import write_network
from tconv.ir.builder import NetworkBuilder
from tconv.ir.params import init_params, load_provenance, load_store
from tconv.train.data import load_dataset
from tconv.train.engine import train_network
from tconv.train.loop import TrainConfig


def network_without_batch_norm():
    """Without batch-norm, whose statistics are each process's own, two
    processes on halves of each minibatch compute the one process's gradients."""
    b = NetworkBuilder("plain", (1, 1, 8, 8))
    x = b.relu(b.conv2d(b.input, 8, 3, padding=1, bias=True, name="conv1"))
    x = b.relu(b.conv2d(x, 16, 3, padding=1, stride=2, bias=True, name="conv2"))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


@pytest.mark.slow
def test_two_processes_train_what_one_does(tmp_path):
    module = network_without_batch_norm()
    params = init_params(module)
    write_network(tmp_path / "plain.mlir", module, params)
    tconv = Path(sys.executable).parent / "tconv"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        str(tconv if tconv.exists() else shutil.which("tconv")), "train", str(tmp_path / "plain.mlir"),
        "--data", "digits", "--epochs", "2", "--lr", "0.1", "--device", "cpu", "-o", str(tmp_path / "ddp.npz"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("validation accuracy") == 1  # only the first process reports
    assert load_provenance(tmp_path / "ddp.npz")["weights"] == "trained"

    config = TrainConfig(epochs=2, lr=0.1)
    data = load_dataset("digits", (1, 1, 8, 8), 10)
    alone = train_network(module, params, data, config, None, "cpu", progress=False, log=False)
    together = load_store(tmp_path / "ddp.npz")
    for name, value in alone.params.items():
        np.testing.assert_allclose(together[name], value, rtol=2e-3, atol=2e-5, err_msg=name)
