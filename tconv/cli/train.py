"""`tconv train`: train a network's weights on data, and write them back.

    tconv train net.mlir --data digits --epochs 10 -o trained.npz

The network is the IR as it is (the weights in `net.npz` beside it, else
initialised from the IR with --seed); training runs it in PyTorch op for op
(`tconv.train`), on a GPU where torch sees one. OUT.npz receives the trained
store (weights and batch-norm statistics, marked `trained`), with a copy of
the IR beside it as OUT.mlir, so `tconv compile OUT.mlir`, `tconv export` and
`tconv run` ship the trained network. OUT.train/ holds the checkpoint written
after every epoch (`--resume` goes on from it), `history.json` and the
learning curve `curve.png`. Under `torchrun --nproc-per-node N` the processes
train data-parallel (DDP); only the first writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tconv.cli.command import Command, UsageError, note, positive_int
from tconv.errors import TconvError

DEFAULTS = {"epochs": 10, "lr": 0.05, "batch": 64, "weight_decay": 5e-4}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="NET.mlir", help="the network; its weights are read from the .npz beside it")
    add_data_arguments(parser)
    parser.add_argument("--epochs", type=positive_int, default=DEFAULTS["epochs"], metavar="N",
                        help=f"passes over the training data (default: {DEFAULTS['epochs']})")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"], metavar="LR",
                        help=f"initial learning rate of SGD (Nesterov momentum 0.9, cosine schedule to 0; "
                        f"default: {DEFAULTS['lr']})")
    parser.add_argument("--batch", type=positive_int, default=DEFAULTS["batch"], metavar="N",
                        help=f"minibatch size, over all processes (default: {DEFAULTS['batch']})")
    parser.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"], metavar="W",
                        help=f"L2 weight decay (default: {DEFAULTS['weight_decay']})")
    parser.add_argument("--augment", nargs="?", const="shift", default="none",
                        choices=("none", "shift", "shift-flip"),
                        help="random shifts by up to 1/8 of the image (--augment or --augment shift), and "
                        "horizontal flips (shift-flip; not for digits) (default: none)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the data order and augmentation (and of the initial weights without a "
                        "store); the same seed trains the same weights on the CPU (default: 0)")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                        help="where to train (default: auto, a GPU where torch sees one)")
    parser.add_argument("--resume", action="store_true",
                        help="go on from the checkpoint in OUT.train/ (same network and options; --epochs may grow)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.npz",
                        help="the trained store; OUT.mlir (the IR) and OUT.train/ (checkpoint, curve) go beside it")


def add_data_arguments(parser, required: bool = True) -> None:
    """--data and its split, shared by every command that trains or evaluates."""
    parser.add_argument("--data", required=required, metavar="digits|DATA.npz|FOLDER",
                        help="digits (scikit-learn's, built in), an .npz with x_train, y_train, x_val, y_val "
                        "(or x, y), or a folder with one subfolder of PNG/JPEG images per class")
    parser.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                        help="share of the data held out for validation where --data has no split (default: 0.2)")
    parser.add_argument("--split-seed", type=int, default=0, metavar="S",
                        help="seed of that stratified split: keep it to compare networks on the same "
                        "images (default: 0)")


def require_torch() -> None:
    """Training needs PyTorch, which comes with the `train` extra."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise TconvError("error: training needs PyTorch: pip install 'tconv[train]'") from None


def load_network(path: str, seed: int = 0):
    """(module, parameters, provenance) of an IR file and the store beside it;
    without a store, initial values drawn with `seed`."""
    from tconv.ir.loader import load_module
    from tconv.ir.params import bind_params, init_params, load_provenance, load_store, store_exists, store_path_for

    module = load_module(path)
    store = store_path_for(path)
    if store_exists(store):
        return module, bind_params(module, load_store(store), source=str(store)), load_provenance(store)
    note(f"no parameter store {store}: weights initialised from the IR (seed {seed})")
    return module, init_params(module, seed), {"weights": "initial"}


def load_data(args: argparse.Namespace, module):
    """The dataset of --data, fitted to the network."""
    from tconv.passes.analyses.capacity import classes, input_shape
    from tconv.train.data import load_dataset

    return load_dataset(args.data, input_shape(module), classes(module), args.split_seed, args.val_fraction)


def outputs(output: str) -> tuple[Path, Path, Path]:
    """OUT.npz, OUT.mlir and OUT.train/ of `-o OUT.npz`."""
    store = Path(output)
    if store.suffix != ".npz":
        raise UsageError(f"-o: the trained store is an .npz file, got '{output}'")
    return store, store.with_suffix(".mlir"), store.with_suffix(".train")


def training_config(args: argparse.Namespace):
    """The TrainConfig of the options `configure` adds, checked."""
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if not args.weight_decay >= 0:
        raise UsageError(f"--weight-decay must be at least 0, got {args.weight_decay}")
    from tconv.train.loop import TrainConfig

    return TrainConfig(
        epochs=args.epochs, lr=args.lr, batch=args.batch, weight_decay=args.weight_decay,
        augment=args.augment, seed=args.seed,
    )


def trained_provenance(data, config, history) -> dict:
    """What a trained store records: its data, options, epochs and validation accuracy."""
    return {
        "weights": "trained", "data": data.description, "epochs": history[-1].epoch,
        "val_accuracy": history[-1].val_accuracy, "config": dict(config.__dict__),
    }


def execute(args: argparse.Namespace) -> None:
    store_path, ir_path, work = outputs(args.output)
    require_torch()
    config = training_config(args)
    module, params, _ = load_network(args.file, args.seed)
    data = load_data(args, module)

    from tconv.train.engine import train_network

    result = train_network(module, params, data, config, work, args.device, args.resume, title=Path(args.file).stem)
    if result is None:
        return  # not the leader of a torchrun group
    from tconv.cli.files import write_network

    write_network(ir_path, module, result.params, trained_provenance(data, config, result.history))
    last = result.history[-1]
    best = max(result.history, key=lambda e: e.val_accuracy)
    print(f"trained {args.file} for {last.epoch} epoch{'s' if last.epoch != 1 else ''} on {data.description}")
    print(f"validation accuracy {last.val_accuracy:.2%} (loss {last.val_loss:.4f}); best {best.val_accuracy:.2%} "
          f"at epoch {best.epoch}")
    print(f"wrote {store_path} (+ {ir_path.name}), {work}/: checkpoint.pt, history.json, curve.png")


TRAIN = Command(
    name="train",
    help="train a network's weights on data (PyTorch; DDP under torchrun) and write the trained store",
    description=__doc__.split("\n\n", 2)[2].replace("\n", " "),
    configure=configure,
    execute=execute,
)
