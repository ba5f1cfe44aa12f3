"""`tconv prune`: prune a trained network's channels and fine-tune it, in
steps, down to a parameter budget.

    tconv prune trained.mlir --data digits --params 0.5 -o pruned.npz

Each step removes about --step of the prunable channels that remain, the
globally least important by --criterion (Fisher: the loss a channel's removal
is estimated to cost, Theis et al. 2018; magnitude: its filter's L1 norm
against its layer's, Li et al. 2017), measured on a minibatch of the
training split, then fine-tunes --epochs-per-step epochs, until the learnable
parameters are at most --params (a count, or a ratio of the network's). A
table of the steps goes to stdout as they end: parameters, channels of every
prunable layer, validation accuracy right after the removal and after the
fine-tuning. OUT.npz receives the pruned, fine-tuned store (marked
`trained`), OUT.mlir its IR, OUT.train/ `prune.json` and `report.md` with the
steps. The network's weights must be trained (`tconv train`): pruning ranks
what a network learnt, and initial weights have learnt nothing.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from tconv.cli import train
from tconv.cli.command import Command, UsageError, positive_int
from tconv.errors import TconvError

DEFAULTS = {"step": 0.1, "epochs_per_step": 1, "lr": 0.01, "batch": 64, "rank_batch": 128}
"""Those of `tconv.train.prune.PruneConfig` (which imports torch; --help must not).
Fine-tuning starts from trained weights: a fifth of `tconv train`'s learning rate."""
CRITERIA = ("fisher", "magnitude")
REPORT, LOG = "report.md", "prune.json"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="NET.mlir",
                        help="the trained network; its weights are read from the .npz beside it")
    train.add_data_arguments(parser)
    parser.add_argument("--params", required=True, metavar="P",
                        help="the learnable parameters to reach at most: a count (250000) or a ratio of the "
                        "network's (0.5)")
    parser.add_argument("--step", type=float, default=DEFAULTS["step"], metavar="S",
                        help="share of the remaining prunable channels one step removes (default: %(default)g)")
    parser.add_argument("--criterion", choices=CRITERIA, default="fisher",
                        help="which channels go: the lowest Fisher potential (Theis et al.) or the smallest "
                        "filter norm for its layer (Li et al.) (default: %(default)s)")
    parser.add_argument("--epochs-per-step", type=int, default=DEFAULTS["epochs_per_step"],
                        metavar="E", help="fine-tuning epochs after each step; 0: none (default: %(default)s)")
    parser.add_argument("--rank-batch", type=positive_int, default=DEFAULTS["rank_batch"], metavar="N",
                        help="training images the ranking is measured on, each step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"], metavar="LR",
                        help="initial learning rate of each step's fine-tuning (cosine to 0; default: %(default)g)")
    parser.add_argument("--batch", type=positive_int, default=DEFAULTS["batch"], metavar="N",
                        help="fine-tuning minibatch size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the ranking minibatches and the fine-tuning (default: 0)")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                        help="where to fine-tune (default: auto, a GPU where torch sees one)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.npz",
                        help="the pruned store; OUT.mlir (the IR) and OUT.train/ (prune.json, report.md) go beside it")


def execute(args: argparse.Namespace) -> None:
    if not 0 < args.step <= 1:
        raise UsageError(f"--step must be a share in (0, 1], got {args.step:g}")
    if args.epochs_per_step < 0:
        raise UsageError(f"--epochs-per-step must be at least 0, got {args.epochs_per_step}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    store_path, ir_path, work = train.outputs(args.output)
    train.require_torch()
    from tconv.ir.params import is_trained, store_path_for
    from tconv.train.loop import TrainConfig
    from tconv.train.prune import PruneConfig, parameter_target, prune_network, target_error

    try:
        target = float(args.params)
    except ValueError:
        raise UsageError(f"--params must be a number, got '{args.params}'") from None
    if target_error(target):
        raise UsageError(f"--params: {target_error(target)}")

    weights = store_path_for(args.file)
    if not weights.exists():
        raise TconvError(f"{args.file}: error: no weights beside it ({weights}): pruning needs trained "
                         "weights; run tconv train first")
    module, params, provenance = train.load_network(args.file, args.seed)
    if not is_trained(provenance):
        raise TconvError(f"{args.file}: error: the weights in {weights} are {provenance.get('weights')}, not "
                         "trained: pruning ranks what a network learnt; run tconv train first")
    try:
        parameter_target(module, target)
    except TconvError as err:
        raise TconvError(f"{args.file}: {err}") from None
    data = train.load_data(args, module)
    config = PruneConfig(
        target=target, step=args.step, criterion=args.criterion, rank_batch=args.rank_batch,
        finetune=TrainConfig(epochs=args.epochs_per_step, lr=args.lr, batch=args.batch, seed=args.seed),
    )
    rows: list[str] = []

    def show(step) -> None:
        if step.step == 0:
            rows.extend(table_header(list(step.channels)))
            print("\n".join(rows), flush=True)
        rows.append(table_row(step))
        print(rows[-1], flush=True)

    pruned = prune_network(module, params, data, config, args.device, log=True, on_step=show)

    from tconv.atomic import write_text_atomic
    from tconv.cli.files import write_network

    original, last = pruned.steps[0], pruned.steps[-1]
    settings = {
        "criterion": config.criterion, "target": pruned.target, "step": config.step,
        "epochs_per_step": config.finetune.epochs, "rank_batch": config.rank_batch,
        "finetune": json.loads(json.dumps(config.finetune.__dict__)),
    }
    write_network(ir_path, pruned.module, pruned.params, {
        "weights": "trained", "data": data.description, "val_accuracy": last.val_accuracy,
        "pruned_from": str(args.file), "pruning": {**settings, "steps": last.step, "parameters": last.parameters},
    })
    work.mkdir(parents=True, exist_ok=True)
    log = {"network": str(args.file), "data": data.description, **settings,
           "not_prunable": pruned.skipped, "steps": [asdict(step) for step in pruned.steps]}
    write_text_atomic(work / LOG, json.dumps(log, indent=1) + "\n")
    ranking = (f"Fisher potential on {config.rank_batch} training images a step, ranked across layers as measured"
               if config.criterion == "fisher" else "filter L1 norm over its layer's mean, ranked across layers")
    epochs = config.finetune.epochs
    fixed = "".join(f"\n- {name}: not prunable, {reason}" for name, reason in pruned.skipped.items())
    write_text_atomic(work / REPORT, (
        f"# {args.file} pruned to {pruned.target:,} parameters\n\n"
        f"Criterion: {ranking}; about {config.step:g} of the "
        f"prunable channels a step, each step fine-tuned {epochs} epoch{'s' if epochs != 1 else ''} "
        f"(lr {config.finetune.lr:g}, batch {config.finetune.batch}, seed {config.finetune.seed}). "
        f"Validation split: {data.description}.\n{fixed + chr(10) if fixed else ''}\n" + "\n".join(rows) + "\n"
    ))
    print(f"pruned {args.file} from {original.parameters:,} to {last.parameters:,} parameters in {last.step} "
          f"step{'s' if last.step != 1 else ''}: validation accuracy {original.val_accuracy:.2%} → "
          f"{last.val_accuracy:.2%}")
    print(f"wrote {store_path} (+ {ir_path.name}), {work}/: {LOG}, {REPORT}")


def table_header(layers: list[str]) -> list[str]:
    """The Markdown table of the steps: one column of channels per prunable layer."""
    columns = ["step", "parameters", *layers, "accuracy pruned", "accuracy fine-tuned"]
    return ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]


def table_row(step) -> str:
    pruned = "" if step.pruned_accuracy is None else f"{step.pruned_accuracy:.2%}"
    cells = [str(step.step), f"{step.parameters:,}", *map(str, step.channels.values()), pruned,
             f"{step.val_accuracy:.2%}"]
    return "| " + " | ".join(cells) + " |"


PRUNE = Command(
    name="prune",
    help="prune a trained network's channels (Fisher or magnitude) and fine-tune it, in steps, to a parameter budget",
    description=__doc__.split("\n\n", 2)[2].replace("\n", " "),
    configure=configure,
    execute=execute,
)
