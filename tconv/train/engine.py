"""One call from a network, its weights and data to trained weights: what
`tconv train`, `tconv distill` and the accuracy-checked search share.

`train_network` joins torchrun's process group where there is one, trains
(`loop.Trainer`) with a checkpoint, `history.json` and the learning curve in
`work` after every epoch, and returns the trained parameters (on the leader;
None on the other processes).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.atomic import write_text_atomic
from tconv.ir.loader import module_text
from tconv.train import distributed
from tconv.train.curve import learning_curve_png
from tconv.train.data import Dataset
from tconv.train.loop import Epoch, Objective, Trainer, TrainConfig, cross_entropy
from tconv.train.network import TrainableNetwork

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"
CURVE = "curve.png"


@dataclass(frozen=True)
class Trained:
    params: dict[str, np.ndarray]
    history: list[Epoch]


def train_network(
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    data: Dataset,
    config: TrainConfig,
    work: Path | None,
    device: str = "auto",
    resume: bool = False,
    title: str = "",
    objective: Objective = cross_entropy,
    progress: bool = True,
    log: bool = True,
    time_limit_s: float | None = None,
) -> Trained | None:
    """Train `module` from `params` (see the module docstring). `work` None
    keeps nothing on disk (the search's fine-tuning)."""
    processes = distributed.start(device)
    try:
        network = TrainableNetwork(module, params)

        def on_epoch(epoch: Epoch) -> None:
            if log:
                print(
                    f"epoch {epoch.epoch}/{config.epochs}: loss {epoch.train_loss:.4f}, accuracy "
                    f"{epoch.train_accuracy:.2%} | validation loss {epoch.val_loss:.4f}, accuracy "
                    f"{epoch.val_accuracy:.2%} ({epoch.seconds:.1f} s)",
                    file=sys.stderr, flush=True,
                )
            if work is not None:
                write_text_atomic(work / HISTORY, json.dumps([asdict(e) for e in trainer.history], indent=1) + "\n")
                learning_curve_png(trainer.history, f"{title}: {data.description}", work / CURVE)

        trainer = Trainer(
            network, data, config,
            checkpoint=None if work is None else work / CHECKPOINT,
            objective=objective, processes=processes, on_epoch=on_epoch, progress=progress,
            identity=network_identity(module), time_limit_s=time_limit_s,
        )
        history = trainer.run(resume)
        if not processes.leader:
            return None
        return Trained(network.arrays(), history)
    finally:
        distributed.stop(processes)


def network_identity(module: ModuleOp) -> str:
    """What a checkpoint must match: a digest of the network's IR."""
    return hashlib.sha256(module_text(module).encode()).hexdigest()
