"""Time of a full evaluation (METHODS §4–5, §8) per stage (printed, not asserted).

Data: independent Bernoulli frames with log-normal rates of mean ≈ 0.035 (speed depends on N, M,
T and the sparsity, not on structure); model: random sparse weights (10 % non-zero), double-well
units. Stages: the split (120 candidates), the paper's sampling protocol (300 chains, 100 + 50×20
sweeps), the five statistics of the model samples, of the training, test and shuffled data,
the comparisons (with the pair-subset bootstrap), the reconstruction, and the baselines (GLM on
a few neurons, PCA with M components). Wall and CPU seconds (all threads) per stage: on a shared
machine the CPU time is the figure to compare. Peak RSS is the process's.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=2 python benchmarks/evaluate_speed.py          # 10000x100
    python benchmarks/evaluate_speed.py --sizes 2000x50 --frames 3000
"""

from __future__ import annotations

import argparse
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


def fake_model(data: np.ndarray, m: int, seed: int = 1):
    from crbm_core.model import CRBM

    rng = np.random.default_rng(seed)
    n = data.shape[1]
    w = rng.normal(0.0, 0.3, (n, m)) * (rng.random((n, m)) < 0.1)
    p = np.clip(data.mean(axis=0), 1e-4, 1 - 1e-4)
    f32 = np.float32
    return CRBM(
        w.astype(f32),
        np.log(p / (1 - p)).astype(f32),
        np.ones(m, f32),
        np.zeros(m, f32),
        np.full(m, -0.5, f32),
        np.zeros(m, f32),
    )


def bench(n: int, m: int, n_frames: int, glm_neurons: int) -> dict:
    from crbm_core import evaluate as ev
    from crbm_core.baselines import glm_reconstruction, pca
    from crbm_core.split import choose_split

    data = fake_data(n_frames, n)
    model = fake_model(data, m)
    rng = np.random.default_rng(0)
    small = fake_data(200, 50, seed=2)  # JIT warm-up on a tiny problem
    tiny = fake_model(small, 3)
    ev.evaluate(tiny, small, small, rng, l1=0.01, sampling=dict(n_chains=5, burn_in=2, n_saved=2))

    times = {}

    def stage(name, fn):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times[name] = (time.perf_counter() - t, time.process_time() - c)
        return out

    split = stage("split", lambda: choose_split(data))
    train, test = split.apply(data)
    pairs = ev.sample_pairs(n)
    samples = stage("model_samples", lambda: ev.model_samples(model, train, rng))
    stage("model_statistics", lambda: ev.model_statistics(model, samples, rng, pairs, 0.01))
    stage("data_statistics(train)", lambda: ev.data_statistics(model, train, pairs))
    stage("shuffled_statistics", lambda: ev.shuffled_statistics(model, train, rng, pairs))
    result = stage(
        "evaluate (given samples)",
        lambda: ev.evaluate(model, train, test, rng, samples=samples, l1=0.01),
    )
    stage("reconstruction", lambda: ev.reconstruction(model, test, train.mean(axis=0)))
    g = stage(
        f"glm ({glm_neurons} neurons)",
        lambda: glm_reconstruction(train, test, n_subset=glm_neurons),
    )
    stage(f"pca ({m} components)", lambda: pca(train, m))
    return {
        "N": n,
        "M": m,
        "T": n_frames,
        "pairs": int(pairs[0].size),
        "times": times,
        "score": result.score,
        "glm_median_nllh": g.median_nllh,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000x100")
    p.add_argument("--frames", type=int, default=4000)
    p.add_argument("--glm-neurons", type=int, default=20)
    args = p.parse_args()
    for size in args.sizes.split(","):
        n, m = (int(x) for x in size.split("x"))
        r = bench(n, m, args.frames, args.glm_neurons)
        print(f"N = {r['N']}, M = {r['M']}, T = {r['T']}, ⟨v_i v_j⟩ pairs = {r['pairs']}")
        print(f"  {'stage':28s} {'wall s':>8s} {'CPU s':>8s}")
        for k, (wall, cpu) in r["times"].items():
            print(f"  {k:28s} {wall:8.2f} {cpu:8.2f}")
        print(f"  peak RSS {r['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
