"""The training loop: SGD with momentum on a cosine schedule, a checkpoint
every epoch, validation accuracy every epoch, reproducible for a seed.

Everything random in an epoch (the order of the samples, the augmentation)
is drawn from generators seeded by (seed, epoch), and the checkpoint keeps
the weights, the batch-norm statistics and the optimizer's momentum: an
interrupted run resumed from its last checkpoint ends with the same weights
as one that was not interrupted (on the CPU; GPU kernels need not be
deterministic).

What is minimised is an `Objective`: cross-entropy on the labels by default;
distillation (`tconv.train.distill`) brings its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tconv.atomic import write_atomic
from tconv.errors import TconvError
from tconv.search.progress import bar, done as end_progress, show as show_progress
from tconv.train.data import Dataset
from tconv.train.distributed import Processes
from tconv.train.network import TrainableNetwork

AUGMENTATIONS = ("none", "shift", "shift-flip")
EVAL_BATCH = 256
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    lr: float = 0.05
    """The learning rate at the start of the cosine schedule (it ends at 0)."""
    batch: int = 64
    """The global minibatch (split across processes under torchrun)."""
    weight_decay: float = 5e-4
    momentum: float = 0.9
    augment: str = "none"
    """none; shift: random translations by up to 1/8 of the image (zero
    filled); shift-flip: and horizontal flips (not for digits or text)."""
    seed: int = 0


@dataclass(frozen=True)
class Epoch:
    """What one epoch measured."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""`objective(network, x, labels) -> (loss, logits)`, the network in training mode."""


def cross_entropy(network: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = network(x)
    return F.cross_entropy(logits, labels), logits


@torch.no_grad()
def evaluate(network: TrainableNetwork, x: np.ndarray, y: np.ndarray, device: torch.device | str = "cpu") -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the network in evaluation mode."""
    was_training = network.training
    network.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(x), EVAL_BATCH):
        inputs = torch.from_numpy(x[start : start + EVAL_BATCH]).to(device)
        labels = torch.from_numpy(y[start : start + EVAL_BATCH]).to(device)
        logits = network(inputs)
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
    network.train(was_training)
    return loss / max(len(x), 1), correct / max(len(x), 1)


def augment(images: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    """`images` (N x C x H x W) randomly shifted (and flipped), see TrainConfig.augment."""
    if how == "none":
        return images
    count, _, height, width = images.shape
    pad = max(1, height // 8), max(1, width // 8)
    padded = np.pad(images, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    rows = rng.integers(0, 2 * pad[0] + 1, count)
    columns = rng.integers(0, 2 * pad[1] + 1, count)
    flips = rng.random(count) < 0.5 if how == "shift-flip" else np.zeros(count, bool)
    out = np.empty_like(images)
    for i in range(count):
        crop = padded[i, :, rows[i] : rows[i] + height, columns[i] : columns[i] + width]
        out[i] = crop[:, :, ::-1] if flips[i] else crop
    return out


@dataclass
class Trainer:
    network: TrainableNetwork
    data: Dataset
    config: TrainConfig
    checkpoint: Path | None = None
    """Where the state goes after every epoch (None: nowhere)."""
    objective: Objective = cross_entropy
    processes: Processes = field(default_factory=lambda: Processes(torch.device("cpu")))
    on_epoch: Callable[[Epoch], None] | None = None
    """Called on the leader after each epoch (the CLI prints and draws the curve)."""
    progress: bool = False
    identity: str = ""
    """What the checkpoint must have been made for (the network's text): a
    resume from another network's checkpoint is refused."""
    time_limit_s: float | None = None
    """Stop training once this much time has passed (the epoch under way ends
    early, is evaluated and is the last): a budgeted fine-tuning must not
    overrun when the machine turns out slower than estimated."""
    history: list[Epoch] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.config.augment not in AUGMENTATIONS:
            raise TconvError(f"error: unknown augmentation '{self.config.augment}' (expected {', '.join(AUGMENTATIONS)})")
        if self.config.batch % self.processes.world:
            raise TconvError(
                f"error: the minibatch of {self.config.batch} does not split over {self.processes.world} processes"
            )
        torch.manual_seed(self.config.seed)
        self.network.to(self.processes.device)
        self.model: nn.Module = self.network
        if self.processes.parallel:
            self.model = nn.parallel.DistributedDataParallel(self.network)
        self.optimizer = torch.optim.SGD(
            self.network.parameters(), lr=self.config.lr, momentum=self.config.momentum,
            weight_decay=self.config.weight_decay, nesterov=True,
        )
        self.steps_per_epoch = max(1, math.ceil(len(self.data.y_train) / self.config.batch))

    # The schedule -----------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        total = self.config.epochs * self.steps_per_epoch
        return 0.5 * self.config.lr * (1 + math.cos(math.pi * min(step, total) / total))

    # Checkpoints ------------------------------------------------------------

    def save(self, epoch: int) -> None:
        if self.checkpoint is None or not self.processes.leader:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "identity": self.identity,
            "config": asdict(self.config),
            "params": {name: self.network.value(name).detach().cpu() for name in self.network.names},
            "optimizer": self.optimizer.state_dict(),
            "history": [asdict(e) for e in self.history],
        }
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.checkpoint, lambda tmp: torch.save(state, tmp))

    def resume(self) -> int:
        """Load the checkpoint; return the number of epochs it had done."""
        path = self.checkpoint
        if path is None or not path.exists():
            raise TconvError(f"{path}: error: no checkpoint to resume from")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many kinds on a damaged file
            raise TconvError(f"{path}: error: not a readable tconv checkpoint ({type(err).__name__}: {err})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise TconvError(f"{path}: error: not a tconv training checkpoint")
        if state["identity"] != self.identity:
            raise TconvError(f"{path}: error: the checkpoint was made for another network")
        changed = [
            key for key, value in asdict(self.config).items()
            if key != "epochs" and state["config"].get(key) != value
        ]
        if changed:
            raise TconvError(
                f"{path}: error: the checkpoint was trained with other options ("
                + ", ".join(f"{key} {state['config'].get(key)}" for key in changed)
                + "); resume with the same ones"
            )
        with torch.no_grad():
            for name in self.network.names:
                self.network.value(name).copy_(state["params"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = [Epoch(**e) for e in state["history"]]
        return int(state["epoch"])

    # Training ---------------------------------------------------------------

    def run(self, resume: bool = False) -> list[Epoch]:
        first = self.resume() if resume else 0
        self.stop_at = None if self.time_limit_s is None else time.perf_counter() + self.time_limit_s
        for epoch in range(first, self.config.epochs):
            start = time.perf_counter()
            train_loss, train_accuracy = self.train_epoch(epoch)
            val_loss, val_accuracy = evaluate(
                self.network, self.data.x_val, self.data.y_val, self.processes.device
            )
            record = Epoch(epoch + 1, train_loss, train_accuracy, val_loss, val_accuracy, time.perf_counter() - start)
            self.history.append(record)
            self.save(epoch + 1)
            if self.on_epoch is not None and self.processes.leader:
                self.on_epoch(record)
            if self.out_of_time():
                break
        return self.history

    def out_of_time(self) -> bool:
        return self.stop_at is not None and time.perf_counter() > self.stop_at

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training data; its (mean loss, accuracy)."""
        config, processes, device = self.config, self.processes, self.processes.device
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(len(self.data.y_train))
        self.model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for step in range(self.steps_per_epoch):
            batch = order[step * config.batch : (step + 1) * config.batch]
            if len(batch) < processes.world:
                break  # every process must take part in every step (DDP's all-reduce)
            mine = np.array_split(batch, processes.world)[processes.rank]
            images = augment(self.data.x_train[mine], config.augment, rng)
            x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
            labels = torch.from_numpy(self.data.y_train[mine]).to(device)
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(epoch * self.steps_per_epoch + step)
            loss, logits = self.objective(self.model, x, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.network.hold_zeros()
            loss_sum += loss.item() * len(mine)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(mine)
            if self.out_of_time():
                break
            if self.progress and processes.leader:
                show_progress(
                    f"epoch {epoch + 1}/{config.epochs} {bar((step + 1) / self.steps_per_epoch, 24)} "
                    f"loss {loss_sum / seen:.3f} accuracy {correct / seen:.1%}"
                )
        if self.progress and processes.leader:
            end_progress()
        if processes.parallel:  # the epoch's figures over every process's share
            totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(totals)
            loss_sum, correct, seen = totals.tolist()
        if not np.isfinite(loss_sum):
            raise TconvError(
                f"error: training diverged in epoch {epoch + 1} (the loss is not finite); try a smaller --lr"
            )
        return loss_sum / max(seen, 1), correct / max(seen, 1)
