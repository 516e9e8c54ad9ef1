"""Wall time until default training recovers ≥ 90 % of planted assemblies (speed issue, item 3).

Trains with default settings (only the number of updates and the seed set) on a fixed virtual
fish — N = 5,000 neurons, 40 planted assemblies, 4,000 frames, seed 0 — and checks recovery
(best-match |cosine| ≥ 0.8 after sign swap, `GroundTruth.best_match`) every `--every` updates.
Prints the time course and the first wall time (training time only, recovery checks excluded)
at which the target was reached, or that it was not within the run.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=2 python benchmarks/time_to_quality.py --updates 14000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--neurons", type=int, default=5000)
    p.add_argument("--assemblies", type=int, default=40)
    p.add_argument("--frames", type=int, default=4000)
    p.add_argument("--fish-seed", type=int, default=0)
    p.add_argument("--updates", type=int, default=14000)
    p.add_argument("--every", type=int, default=500, help="updates between recovery checks")
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--set", default="", help="TrainConfig settings, e.g. 'bn_correction=True'")
    args = p.parse_args()

    from crbm_core.synthetic import generate_virtual_fish
    from crbm_core.train import TrainConfig, train

    fish = generate_virtual_fish(args.neurons, args.frames, args.assemblies, seed=args.fish_seed)
    extra = {k: eval(v) for k, v in (kv.split("=") for kv in args.set.split(",") if kv)}  # noqa: S307
    cfg = TrainConfig(n_updates=args.updates, seed=0, checkpoint_every=args.every, **extra)
    print(f"load average {os.getloadavg()}; N = {args.neurons}, K = {args.assemblies}", flush=True)
    clock = {"train": 0.0, "since": time.perf_counter(), "reached": None}

    def check(state, _cfg):
        clock["train"] += time.perf_counter() - clock["since"]
        best = fish.truth.best_match(state.model.sign_swapped().weights)
        frac = float(np.mean(best >= 0.8))
        if clock["reached"] is None and frac >= args.target:
            clock["reached"] = (clock["train"], state.update)
        line = f"update {state.update:>6}  {clock['train']:7.0f} s  recovered {frac:6.1%}"
        print(line, flush=True)
        clock["since"] = time.perf_counter()

    result = train(fish.recording.spike_array(), cfg, checkpoint=check)
    if clock["reached"]:
        t, u = clock["reached"]
        print(f"time to {args.target:.0%}: {t:.0f} s ({u} updates); run {result.status}")
    else:
        print(f"{args.target:.0%} not reached in {args.updates} updates; run {result.status}")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
