"""`tconv distill`: train a student network to imitate a trained teacher.

    tconv distill student.mlir --teacher net.mlir --data digits --epochs 10 -o distilled.npz

The student is typically a NAS rewrite of the teacher (`tconv-opt`,
`tconv optimize`) that lost accuracy; distillation retrains it on the labels,
the teacher's soft targets and the teacher's attention at their common stage
outputs (`tconv.train.distill`), which recovers more than the labels alone.
Both networks take their weights from the .npz beside them; they must take
the same input and score the same classes. Training and its options are those
of `tconv train`: OUT.npz receives the student's store (marked `trained`, with
`distilled_from` naming the teacher), OUT.mlir its IR, OUT.train/ the
checkpoint, learning curve and `report.md`, the table printed at the end:
the teacher's, the student's before and the student's distilled accuracy on
the same validation images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

from tconv.cli import train
from tconv.cli.command import Command, UsageError, note
from tconv.errors import TconvError

SETTINGS = "distillation.json"
"""In OUT.train/: what the checkpoint was distilled with, checked by --resume."""
REPORT = "report.md"
DEFAULTS = {"temperature": 4.0, "alpha": 0.9, "attention": 1000.0}
"""Those of `tconv.train.distill.DistillConfig` (which imports torch; --help must not)."""


def configure(parser: argparse.ArgumentParser) -> None:
    train.configure(parser)
    student = next(action for action in parser._actions if action.dest == "file")  # train's NET.mlir
    student.metavar, student.help = "STUDENT.mlir", "the network to train; its weights are read from the .npz beside it"
    group = parser.add_argument_group("distillation")
    group.add_argument("--teacher", required=True, metavar="TEACHER.mlir",
                       help="the trained network to imitate; its weights are read from the .npz beside it")
    group.add_argument("--temperature", type=float, default=DEFAULTS["temperature"], metavar="T",
                       help="temperature of the soft targets (default: %(default)g)")
    group.add_argument("--alpha", type=float, default=DEFAULTS["alpha"], metavar="A",
                       help="weight of the soft targets; the labels' cross-entropy gets 1 - A (default: %(default)g)")
    group.add_argument("--attention", type=float, default=DEFAULTS["attention"], metavar="BETA",
                       help="weight β of attention transfer at the stage outputs both networks have; "
                       "0 turns it off (default: %(default)g)")


def execute(args: argparse.Namespace) -> None:
    if not args.temperature > 0:
        raise UsageError(f"--temperature must be positive, got {args.temperature}")
    if not 0 <= args.alpha <= 1:
        raise UsageError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if not args.attention >= 0:
        raise UsageError(f"--attention must be at least 0, got {args.attention}")
    store_path, ir_path, work = train.outputs(args.output)
    train.require_torch()
    config = train.training_config(args)
    student, student_params, student_provenance = train.load_network(args.file, args.seed)
    teacher, teacher_params, teacher_provenance = train.load_network(args.teacher, args.seed)
    check_compatible(args.file, student, args.teacher, teacher)
    if teacher_provenance.get("weights") == "initial":
        note(f"the teacher {args.teacher} has initial weights, not trained ones: it has little to teach")
    data = train.load_data(args, student)

    from tconv.train.distill import DistillConfig, Distillation, matching_points
    from tconv.train.engine import network_identity, train_network
    from tconv.train.loop import evaluate
    from tconv.train.network import TrainableNetwork

    distill = DistillConfig(args.temperature, args.alpha, args.attention)
    points = matching_points(teacher, student) if distill.attention > 0 else []
    matched = [f"{h}x{w}" for h, w in (p.resolution for p in points)]
    if distill.attention > 0:
        if points:
            note(f"attention transfer at the stage outputs of {', '.join(matched)}")
        else:
            note("the student and the teacher have no spatial resolution in common: attention transfer is off")
    settings = {
        "teacher": network_identity(teacher) + ":" + weights_digest(teacher_params),
        "temperature": distill.temperature, "alpha": distill.alpha, "attention": distill.attention,
    }
    check_or_record_settings(work, settings, args.resume)
    objective = Distillation(TrainableNetwork(teacher, teacher_params), points, distill)
    result = train_network(student, student_params, data, config, work, args.device, args.resume,
                           title=f"{Path(args.file).stem} distilled from {Path(args.teacher).stem}",
                           objective=objective)
    if result is None:
        return  # not the leader of a torchrun group

    # The same validation images, where the teacher is (the training device).
    device = objective.device
    teacher_score = evaluate(objective.teacher, data.x_val, data.y_val, device)
    before = evaluate(TrainableNetwork(student, student_params).to(device), data.x_val, data.y_val, device)
    last = result.history[-1]
    after = last.val_loss, last.val_accuracy

    from tconv.atomic import write_text_atomic
    from tconv.cli.files import write_network

    provenance = {
        **train.trained_provenance(data, config, result.history),
        "distilled_from": str(args.teacher),
        "distillation": {
            "temperature": distill.temperature, "alpha": distill.alpha, "attention": distill.attention,
            "matched": matched, "teacher_val_accuracy": teacher_score[1],
        },
    }
    write_network(ir_path, student, result.params, provenance)
    table = report_table(
        data.description, len(data.y_val), teacher_score,
        (before, student_provenance.get("weights", "initial")), (after, last.epoch),
    )
    write_text_atomic(work / REPORT, f"# {args.file} distilled from {args.teacher}\n\n"
                      f"T {distill.temperature:g}, alpha {distill.alpha:g}, attention β {distill.attention:g}"
                      f" at {', '.join(matched) or 'no stage outputs'}; {last.epoch} epochs, lr {config.lr:g}, "
                      f"batch {config.batch}, augment {config.augment}, seed {config.seed}\n\n{table}")
    print(f"distilled {args.file} from {args.teacher} for {last.epoch} epoch{'s' if last.epoch != 1 else ''} "
          f"on {data.description}")
    print(table, end="")
    print(f"wrote {store_path} (+ {ir_path.name}), {work}/: checkpoint.pt, {SETTINGS}, history.json, curve.png, {REPORT}")


def check_compatible(student_path: str, student, teacher_path: str, teacher) -> None:
    """The student learns from the teacher's outputs on the same images: both
    take one input shape (the batch aside) and score the same classes."""
    from tconv.ir.shapes import format_shape
    from tconv.passes.analyses.capacity import classes, input_shape

    def signature(module) -> str:
        return f"takes {format_shape(input_shape(module)[1:])} inputs and scores {classes(module)} classes"

    mine, theirs = signature(student), signature(teacher)
    if mine != theirs:
        raise TconvError(
            f"{student_path}: error: the student {mine}, the teacher {teacher_path} {theirs}: "
            "distillation needs the same input and classes"
        )


def weights_digest(params) -> str:
    """A digest of a store's arrays: another teacher is another digest."""
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode())
        digest.update(params[name].tobytes())
    return digest.hexdigest()


def check_or_record_settings(work: Path, settings: dict[str, object], resume: bool) -> None:
    """The checkpoint knows the training options and the student, not the
    teacher or the loss: --resume goes on only with the ones it was made with."""
    from tconv.atomic import write_text_atomic
    from tconv.train.engine import CHECKPOINT

    path = work / SETTINGS
    if not resume:
        if int(os.environ.get("RANK", "0")) == 0:  # the torchrun leader writes, as train_network's
            work.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(settings, indent=1) + "\n")
        return
    if not path.exists() and not (work / CHECKPOINT).exists():
        return  # nothing to resume from: train_network says so
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        raise TconvError(f"{work / CHECKPOINT}: error: the checkpoint was not made by tconv distill") from None
    changed = [key for key, value in settings.items() if recorded.get(key) != value]
    if changed:
        shown = ", ".join("another teacher" if key == "teacher" else f"{key} {recorded.get(key)}" for key in changed)
        raise TconvError(f"{path}: error: the checkpoint was distilled with other settings ({shown}); "
                         "resume with the same ones")


def report_table(
    data: str,
    images: int,
    teacher: tuple[float, float],
    before: tuple[tuple[float, float], str],
    after: tuple[tuple[float, float], int],
) -> str:
    """Teacher, student before and student distilled side by side (Markdown):
    validation accuracy and loss, each (loss, accuracy)."""
    (before_score, weights), (after_score, epochs) = before, after
    columns = [("teacher", teacher), (f"student before ({weights})", before_score),
               (f"student distilled ({epochs} epoch{'s' if epochs != 1 else ''})", after_score)]
    rows = [
        f"| {images} validation images | " + " | ".join(name for name, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
        "| accuracy | " + " | ".join(f"{score[1]:.2%}" for _, score in columns) + " |",
        "| loss | " + " | ".join(f"{score[0]:.4f}" for _, score in columns) + " |",
    ]
    return "\n".join(rows) + f"\n\nValidation split: {data}.\n"


DISTILL = Command(
    name="distill",
    help="train a student network (a NAS rewrite) to imitate a trained teacher: soft targets and attention transfer",
    description=__doc__.split("\n\n", 2)[2].replace("\n", " "),
    configure=configure,
    execute=execute,
)
