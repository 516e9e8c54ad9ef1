"""Micro-benchmark of the dReLU layer kernels: ns per element at B=100, M=200, float32.

Run: NUMBA_NUM_THREADS=2 OMP_NUM_THREADS=1 python benchmarks/layers_speed.py
Prints figures only (no thresholds). The first call of each function (JIT compile or cache
load) is excluded; the best of several repeats is reported.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from crbm_core.layers import drelu_cgf, drelu_moments, drelu_params, drelu_sample


def best_ns_per_element(fn, n_elements: int, repeats: int = 20) -> float:
    fn()  # compile / load cache
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / n_elements * 1e9


def main(batch: int = 100, units: int = 200) -> None:
    rng = np.random.default_rng(0)
    dtype = np.float32
    params = drelu_params(
        np.ones(units, dtype),
        rng.normal(0.0, 1.0, units).astype(dtype),
        rng.normal(-1.0, 1.5, units).astype(dtype),  # mostly double wells, some thresholded
        rng.uniform(-0.5, 0.5, units).astype(dtype),
    )
    inp = rng.normal(0.0, 2.0, (batch, units)).astype(dtype)
    # I = −20: x₊ ≈ +20 (continued-fraction path, deep-tail sampling), x₋ ≈ −20 (broad branch)
    tail = np.full_like(inp, -20.0)
    n = batch * units
    cases = {
        "drelu_moments": lambda: drelu_moments(inp, *params),
        "drelu_cgf": lambda: drelu_cgf(inp, *params),
        "drelu_sample": lambda: drelu_sample(inp, *params, rng),
        "drelu_moments, I=-20": lambda: drelu_moments(tail, *params),
        "drelu_sample, I=-20": lambda: drelu_sample(tail, *params, rng),
    }
    configured = numba.get_num_threads()
    print(f"B={batch} M={units} float32 (ns per element; other busy cores slow parallel kernels)")
    try:
        for threads in sorted({1, configured}):
            numba.set_num_threads(threads)
            print(f"numba threads = {threads}")
            for name, fn in cases.items():
                print(f"  {name:22s} {best_ns_per_element(fn, n):8.1f}")
    finally:
        numba.set_num_threads(configured)


if __name__ == "__main__":
    main()
