"""Training speed: updates/s and the ratio to the unavoidable dense work (printed, not asserted).

For each (N, M): batch 100, 100 chains, N_MC = 15, float32, after JIT warm-up. The reference
cost is 15 dense float32 (100×M)·(M×N) products timed in the same process (the h → v direction of
the 15 Gibbs sweeps, which no implementation can skip). Data: independent Bernoulli frames with
log-normal rates of mean ≈ 0.035 (speed depends on N, M and the sparsity, not on structure).

    python benchmarks/train_speed.py                 # (1000, 50), (5000, 100), (40000, 200)
    python benchmarks/train_speed.py --sizes 5000x100 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np


def fake_data(n_frames: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rate = np.clip(rng.lognormal(np.log(0.02), 1.0, n), 1e-4, 0.5)
    rate *= 0.035 / rate.mean()
    out = np.empty((n_frames, n), np.uint8)
    for t0 in range(0, n_frames, 500):
        out[t0 : t0 + 500] = rng.random((min(500, n_frames - t0), n)) < rate
    return out


def gemm_reference(n: int, m: int, repeats: int = 5) -> float:
    """Median time of 15 dense float32 (100×M)·(M×N) products."""
    rng = np.random.default_rng(1)
    h = rng.normal(size=(100, m)).astype(np.float32)
    w = rng.normal(size=(n, m)).astype(np.float32)
    h @ w.T
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(15):
            h @ w.T
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench(n: int, m: int, n_frames: int, updates: int, repeats: int) -> dict:
    from crbm_core.train import TrainConfig, init_state, update_step

    data = fake_data(n_frames, n)
    cfg = TrainConfig(n_hidden=m, n_updates=10**6).resolved(n, float(data.mean()))
    state = init_state(data, cfg)
    data_mean = data.mean(axis=0).astype(np.float32)
    for _ in range(2):  # JIT warm-up
        update_step(state, data, data_mean, cfg)
    per_update = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(updates):
            update_step(state, data, data_mean, cfg)
        per_update.append((time.perf_counter() - t) / updates)
    upd = float(np.median(per_update))
    ref = gemm_reference(n, m)
    return {
        "N": n,
        "M": m,
        "updates_per_s": 1.0 / upd,
        "update_ms": 1e3 * upd,
        "gemm15_ms": 1e3 * ref,
        "ratio": upd / ref,
        "spread": (max(per_update) - min(per_update)) / upd,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000x50,5000x100,40000x200")
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    import numba
    from threadpoolctl import threadpool_info

    import crbm_core  # noqa: F401  (sets the threading layer)

    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]
    print(
        f"numba {numba.__version__}, threads {numba.config.NUMBA_NUM_THREADS}, layer "
        f"{numba.config.THREADING_LAYER}; BLAS {blas}; "
        f"load average {os.getloadavg()}"
    )
    print(
        f"{'N':>7} {'M':>4} {'upd/s':>8} {'update ms':>10} {'15 GEMM ms':>11} {'ratio':>6} "
        f"{'spread':>7}"
    )
    for size in args.sizes.split(","):
        n, m = (int(x) for x in size.split("x"))
        updates = max(3, int(2e6 / (n * m) * 10))
        r = bench(n, m, args.frames, min(updates, 100), args.repeats)
        print(
            f"{r['N']:>7} {r['M']:>4} {r['updates_per_s']:>8.2f} {r['update_ms']:>10.1f} "
            f"{r['gemm15_ms']:>11.1f} {r['ratio']:>6.2f} {r['spread']:>7.1%}",
            flush=True,
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS of this process: {peak:.2f} GB (T = {args.frames} frames, largest size)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
