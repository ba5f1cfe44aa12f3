"""How well the cost model ranks measured kernels after k measurements (a
measurement, not a test).

    TVM_NUM_THREADS=2 .venv/bin/python bench/cost_model.py [--workloads 6] [--knobs 8] [--database PATH]

Picks `--workloads` distinct tunable convolutions of ResNet-34 (ImageNet) and
ResNeXt-29 8×64d (CIFAR-10, grouped), half from each, and `--knobs` random
schedule candidates of each (`tuning.candidates`), and measures them with
`tuning.measure` on this CPU into a tuning database (`--database`, default a
file in /tmp, reused on a rerun: only missing pairs are measured). Then, for
k = 5, 10, 20 and `--splits` random splits each, fits `LatencyModel` on k
measurements and reports Kendall's τ between predicted and measured seconds
on the rest: across all held-out pairs, and within each workload (the mean
over workloads of τ among its own knobs: what picking a schedule needs).
k = 0 is the model with no measurement: FLOPs / tile efficiency alone.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from tconv.errors import TconvError
from tconv.frontends.zoo import build
from tconv.search.cost_model import LatencyModel, database_samples, rank_correlation, split_samples
from tconv.search.tuning import (
    TuningDatabase,
    candidates,
    default_threads,
    measure,
    target_key,
    tunable_convs,
    workload_of,
)


def pick_pairs(workloads_per_network: int, knobs_per_workload: int, seed: int):
    rng = random.Random(seed)
    pairs = []
    for network, dataset in (("resnet34", "imagenet"), ("resnext29_8x64d", "cifar10")):
        module = build(network, dataset)
        workloads = list({workload_of(c).key: workload_of(c) for c in tunable_convs(module)}.values())
        for workload in rng.sample(workloads, min(workloads_per_network, len(workloads))):
            options = candidates(workload)
            pairs += [(workload, k) for k in rng.sample(options, min(knobs_per_workload, len(options)))]
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=6, help="distinct convolutions (half per network)")
    parser.add_argument("--knobs", type=int, default=8, help="candidates measured per convolution")
    parser.add_argument("--splits", type=int, default=10, help="random train/held-out splits per k")
    parser.add_argument("--database", default="/tmp/tconv-cost-model-bench.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    threads = default_threads()
    target = target_key(threads)
    database = TuningDatabase(args.database)
    pairs = pick_pairs(args.workloads // 2, args.knobs, args.seed)
    todo = [(w, k) for w, k in pairs if k not in database.measured(w, target)]
    print(f"{len(pairs)} (workload, knobs) pairs on {target}; measuring {len(todo)}")
    started = time.perf_counter()
    failed = []
    for index, (workload, knobs) in enumerate(todo, start=1):
        try:
            database.add(workload, target, knobs, measure(workload, knobs))
        except TconvError as err:  # a candidate the backend cannot build: reported, left out
            failed.append((workload, knobs, str(err).splitlines()[0]))
        print(f"\r  {index}/{len(todo)} measured, {time.perf_counter() - started:.0f} s", end="", flush=True)
    print()
    for workload, knobs, reason in failed:
        print(f"  not measured: {workload.key} {knobs}: {reason}")

    wanted = {w.key for w, _ in pairs}
    samples = [s for s in database_samples(database, target) if s[0].key in wanted]
    print(f"{'k':>3} {'tau (all held-out)':>19} {'tau (within workload)':>22} {'fit s':>6}")
    for k in (0, 5, 10, 20):
        overall, within, fit_s = [], [], []
        for split in range(args.splits):
            train, held_out = split_samples(samples, k, seed=split)
            start = time.perf_counter()
            model = LatencyModel().fit(train)
            fit_s.append(time.perf_counter() - start)
            overall.append(rank_correlation(model, held_out))
            within.append(rank_correlation(model, held_out, per_workload=True))
        print(
            f"{k:3d} {np.mean(overall):11.3f} ± {np.std(overall):.3f} {np.mean(within):14.3f} ± {np.std(within):.3f}"
            f" {np.mean(fit_s):6.2f}"
        )


if __name__ == "__main__":
    main()
