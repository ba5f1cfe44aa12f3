"""The learning curve of a training run: loss and accuracy per epoch, training
and validation, as a PNG (redrawn after every epoch, written atomically)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tconv.atomic import write_atomic
from tconv.train.loop import Epoch


def learning_curve_png(history: Sequence[Epoch], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e.epoch for e in history]
    figure, (loss, accuracy) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    loss.plot(epochs, [e.train_loss for e in history], "o-", label="training")
    loss.plot(epochs, [e.val_loss for e in history], "o-", label="validation")
    loss.set_xlabel("epoch")
    loss.set_ylabel("cross-entropy")
    loss.legend(fontsize=8)
    accuracy.plot(epochs, [100 * e.train_accuracy for e in history], "o-", label="training")
    accuracy.plot(epochs, [100 * e.val_accuracy for e in history], "o-", label="validation")
    accuracy.set_xlabel("epoch")
    accuracy.set_ylabel("accuracy (%)")
    accuracy.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png"))
    plt.close(figure)
