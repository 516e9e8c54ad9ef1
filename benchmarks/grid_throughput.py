"""Grid throughput on a Dask cluster: models per hour with 1 and 2 workers (printed, not asserted).

A λ × M grid (3 sparsity strengths `l1` × 2 hidden-unit counts = 6 runs) of one fixed virtual
fish goes through the job manager's Dask backend onto a LocalCluster of 1, then 2 single-thread
worker processes (each with a fresh run store); the time from the first submission to the last
run ending gives models/hour and the 1 → 2 worker scaling. Every run also writes its report, as
in production. Each worker's first run includes loading numba's compiled kernels.

    python benchmarks/grid_throughput.py                       # 1,000 neurons, 2,000 frames
    python benchmarks/grid_throughput.py --neurons 3000 --frames 4000 --updates 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per worker: the scaling comes from workers

LAMBDAS = (0.005, 0.01, 0.02)
HIDDEN = (10, 20)


def grid_seconds(fish: Path, n_workers: int, updates: int, work: Path) -> tuple[float, list]:
    from distributed import LocalCluster

    from app.jobs import JobManager

    configs = [
        dict(n_hidden=m, l1=lam, n_updates=updates, progress_every=100, seed=0)
        for lam in LAMBDAS
        for m in HIDDEN
    ]
    with LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        with JobManager(work / f"store-{n_workers}", scheduler=cluster.scheduler_address) as jm:
            t0 = time.perf_counter()
            ids = [jm.submit(fish, cfg) for cfg in configs]
            runs = jm.wait(ids, timeout=24 * 3600, interval=0.2)
            seconds = time.perf_counter() - t0
    return seconds, runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--neurons", type=int, default=1000)
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--assemblies", type=int, default=10)
    p.add_argument("--updates", type=int, default=1000)
    args = p.parse_args()

    from crbm_core.synthetic import generate_virtual_fish, save_virtual_fish

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fish = save_virtual_fish(
            generate_virtual_fish(args.neurons, args.frames, args.assemblies, seed=0),
            work / "fish.h5",
        )
        print(
            f"grid: {len(LAMBDAS)} λ × {len(HIDDEN)} M = {len(LAMBDAS) * len(HIDDEN)} runs of "
            f"{args.updates} updates; fish N={args.neurons}, T={args.frames}; "
            f"{os.cpu_count()} cores here"
        )
        rates = {}
        for n_workers in (1, 2):
            seconds, runs = grid_seconds(fish, n_workers, args.updates, work)
            statuses = sorted({r["status"] for r in runs})
            rates[n_workers] = len(runs) / seconds * 3600
            print(
                f"{n_workers} worker(s): {seconds:7.1f} s  {rates[n_workers]:7.1f} models/hour  "
                f"(runs ended {', '.join(statuses)})"
            )
        print(f"scaling 1 → 2 workers: {rates[2] / rates[1]:.2f}×")


if __name__ == "__main__":
    main()
