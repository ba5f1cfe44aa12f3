"""A trained network in, a faster trained network out: the whole job, measured.

    .venv/bin/python bench/accuracy.py [--network resnet18] [--epochs 8] [--budget 420]
                                       [--train-budget 240] [--max-drop 1] [--compare-epochs 5]

Run on a quiet machine (the search times networks side by side). Steps, each
a tconv command as a user types it, each skipped when its output is already
in `--work` (so an interrupted run goes on):

1. `tconv zoo NET --dataset cifar10`, then `tconv train` on the built-in
   digits (resized to 32×32) for `--epochs` epochs with shifts: the original.
2. `tconv optimize ORIGINAL --data digits --max-accuracy-drop P`: the
   answer, fine-tuned, with the original's and its validation accuracy, and
   its latency beside tconv's and ONNX Runtime's on the trained original
   (timed side by side in the search's confirmation).
3. The answer's architecture trained for `--compare-epochs` epochs (the
   same options each time) from three starts: random initial weights,
   weights inherited from the trained original, and inherited weights
   distilled from the original (`tconv distill`: soft targets and attention
   transfer).

Writes `summary.md` (and `summary.json`) in `--work`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def tconv(*argv: object, log: Path) -> None:
    """Run one tconv command, its output appended to `log`; stop on failure."""
    command = [str(BIN / "tconv"), *map(str, argv)]
    print("$ tconv", " ".join(map(str, argv)), flush=True)
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        started = time.monotonic()
        status = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
        out.write(f"# exit {status} after {time.monotonic() - started:.0f} s\n")
    if status != 0:
        sys.exit(f"failed (exit {status}): see {log}")


def inherited_answer(work: Path) -> Path:
    """The answer's architecture with the weights its rewrites inherit from the
    trained original (before fine-tuning), as `inherited.mlir` + `.npz`."""
    from tconv.cli.files import write_network
    from tconv.cli.train import load_network
    from tconv.search.space import DEFAULT_REWRITES, apply_assignment

    report = json.loads((work / "answer" / "report.json").read_text())
    by_label = {rewrite.label: rewrite for rewrite in DEFAULT_REWRITES}
    assignment = {layer: by_label[label] for layer, label in report["optimized"]["rewrites"].items()}
    module, params, provenance = load_network(str(work / "original.mlir"))
    realised = apply_assignment(module, params, assignment, provenance)
    write_network(work / "inherited.mlir", realised.module, realised.params, {"weights": "inherited"})
    return work / "inherited.mlir"


def random_answer(work: Path) -> Path:
    """The answer's architecture with seeded initial weights, as `random.mlir` + `.npz`."""
    from tconv.cli.files import write_network
    from tconv.ir.loader import load_module
    from tconv.ir.params import init_params

    module = load_module(work / "answer" / "optimized.mlir")
    write_network(work / "random.mlir", module, init_params(module), {"weights": "initial"})
    return work / "random.mlir"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), for the record beside the figures."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", default="resnet18")
    parser.add_argument("--epochs", type=int, default=8, help="training of the original")
    parser.add_argument("--budget", type=float, default=420, help="the search's budget (s)")
    parser.add_argument("--train-budget", type=float, default=240, help="fine-tuning's budget (s)")
    parser.add_argument("--max-drop", type=float, default=1.0, help="percentage points")
    parser.add_argument("--compare-epochs", type=int, default=5)
    parser.add_argument("--compare-lr", type=float, default=0.02)
    parser.add_argument("--work", type=Path, default=Path("build/accuracy"))
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"

    if not (work / "original.npz").exists():
        tconv("zoo", args.network, "--dataset", "cifar10", "-o", work / "untrained.mlir", log=log)
        tconv("train", work / "untrained.mlir", "--data", "digits", "--epochs", args.epochs, "--augment",
              "-o", work / "original.npz", log=log)
    if not (work / "answer" / "report.json").exists():
        tconv("optimize", work / "original.mlir", "--data", "digits", "--max-accuracy-drop", args.max_drop,
              "--budget", args.budget, "--train-budget", args.train_budget, "-o", work / "answer", log=log)
    report = json.loads((work / "answer" / "report.json").read_text())
    starts = {"random": random_answer, "inherited": inherited_answer}
    compared = {}
    for start, build in starts.items():
        out = work / f"{start}_trained.npz"
        if not out.exists():
            tconv("train", build(work), "--data", "digits", "--epochs", args.compare_epochs, "--lr", args.compare_lr,
                  "--augment", "-o", out, log=log)
        compared[start] = json.loads((work / f"{start}_trained.train" / "history.json").read_text())
    out = work / "distilled_trained.npz"
    if not out.exists():
        student = work / "inherited.mlir" if (work / "inherited.mlir").exists() else inherited_answer(work)
        tconv("distill", student, "--teacher", work / "original.mlir", "--data", "digits", "--epochs",
              args.compare_epochs, "--lr", args.compare_lr, "--augment", "-o", out, log=log)
    compared["distilled"] = json.loads((work / "distilled_trained.train" / "history.json").read_text())

    original, best = report["original"], report["optimized"]
    summary = {
        "date": time.strftime("%Y-%m-%d"), "machine": cpu_model(),
        "network": args.network, "original_epochs": args.epochs, "target": report["target"],
        "search_seconds": report["search_seconds"], "fine_tune_seconds": report["fine_tune_seconds"],
        "original_accuracy": original["accuracy"], "answer_accuracy": best["accuracy"],
        "answer_label": best["label"], "answer_fine_tune_epochs": best["fine_tune_epochs"],
        "original_ms": original["measured_ms"], "answer_ms": best["measured_ms"],
        "onnxruntime_original_ms": report.get("ort_original_ms"), "speedup": report["speedup"],
        "parameters": [original["parameters"], best["parameters"]],
        "compare_epochs": args.compare_epochs, "compare_lr": args.compare_lr,
        "compared": {start: [e["val_accuracy"] for e in history] for start, history in compared.items()},
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [
        f"# {args.network} (CIFAR-10 shape) on digits: trained in, faster trained out",
        "",
        f"{summary['date']}, {summary['machine']}, {report['target']}; original trained {args.epochs} epochs; search "
        f"{report['search_seconds']:.0f} s, fine-tuning {report['fine_tune_seconds']:.0f} s.",
        "",
        "| | original | answer |",
        "|---|---|---|",
        f"| validation accuracy | {100 * original['accuracy']:.2f}% | {100 * best['accuracy']:.2f}% |",
        f"| tconv latency, batch 1 | {original['measured_ms']:.2f} ms | {best['measured_ms']:.2f} ms |",
        f"| ONNX Runtime on the trained original | {report.get('ort_original_ms') or float('nan'):.2f} ms | |",
        f"| speed-up over ONNX Runtime | | {report['speedup'].get('vs_onnxruntime_original', float('nan')):.2f}x |",
        f"| parameters | {original['parameters']:,} | {best['parameters']:,} |",
        "",
        f"Answer: {best['label']} (fine-tuned {best['fine_tune_epochs']} epochs).",
        "",
        f"The answer's architecture trained {args.compare_epochs} epochs (lr {args.compare_lr}, shifts) from three "
        "starts, validation accuracy after each epoch:",
        "",
        "| start | " + " | ".join(f"epoch {i + 1}" for i in range(args.compare_epochs)) + " |",
        "|---|" + "---|" * args.compare_epochs,
    ]
    for start, accuracies in summary["compared"].items():
        lines.append(f"| {start} | " + " | ".join(f"{100 * a:.2f}%" for a in accuracies) + " |")
    (work / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
