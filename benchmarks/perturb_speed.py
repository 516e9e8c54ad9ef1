"""In-silico perturbation at N = 10,000, M = 100: wall time and the standard errors it buys.

Run: OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=2 python benchmarks/perturb_speed.py
Prints figures only (no thresholds). The model is the planted cRBM of a "crbm"-mode virtual
fish (M planted assemblies, mean rate 3.5 %) plus a dense weak background N(0, 0.03²) on every
weight, standing for the small couplings a trained model has everywhere (without it the planted
units are disjoint and common random numbers cancel the noise of every untouched neuron
exactly, which would flatter the standard errors). Chains start from the recording's frames
with the module's defaults. Each case is timed after one warm-up call (JIT compile / cache
load); the median of `--repeats` runs is printed, with the 1-minute load average (other
processes on the 2 cores slow every kernel), the CPU time of all threads (what the run costs
whatever the load: ≈ 2 × the wall time of an idle 2-core machine when both threads are busy)
and the typical standard errors of the result.
"""

from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np

from crbm_core import perturb as pt
from crbm_core.model import CRBM
from crbm_core.synthetic import generate_virtual_fish


def main(n: int, m: int, frames: int, repeats: int, background: float, seed: int) -> None:
    t0 = time.perf_counter()
    fish = generate_virtual_fish(n, frames, m, seed=seed, mode="crbm")
    rec, truth = fish.recording, fish.truth
    model = CRBM.from_dict(truth.model)
    noise = np.random.default_rng(seed + 1).normal(0.0, background, model.weights.shape)
    model.weights += noise.astype(model.dtype)
    spikes = rec.spike_array()
    print(
        f"N={n} M={m} float32, {numba.get_num_threads()} numba threads, background s.d. "
        f"{background}; virtual fish made in {time.perf_counter() - t0:.1f} s"
    )
    print(
        f"defaults: n_chains={pt.N_CHAINS} burn_in={pt.BURN_IN} n_samples={pt.N_SAMPLES} "
        f"spacing={pt.SPACING}"
    )
    k = int(np.argmax((truth.weights > 0).sum(axis=0)))
    members = np.flatnonzero(truth.weights[:, k] > 0)
    stim, targets = members[::2], members[1::2]
    home = int(truth.assemblies["home_region"][k])
    cases = {
        f"stimulate half of assembly {k} ({stim.size} neurons)": pt.neuron_clamp(
            n, m, 1, neurons=stim
        ),
        f"ablate region {rec.region_names[home]!r}": pt.neuron_clamp(
            n, m, 0, regions=home, region_labels=rec.region_labels, region_names=rec.region_names
        ),
        f"clamp HU {k} to h = 2": pt.unit_clamp(n, m, [k], 2.0),
    }
    rng = np.random.default_rng(seed)
    for name, clamp in cases.items():

        def run(clamp=clamp):
            return pt.perturb(
                model,
                spikes,
                clamp,
                rng,
                region_labels=rec.region_labels,
                n_regions=len(rec.region_names),
            )

        run()  # warm-up
        times, cpu, res = [], [], None
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            res = run()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        free = np.setdiff1d(np.arange(n), clamp.neurons)
        print(f"\n{name}")
        print(
            f"  wall time: median {np.median(times):.3f} s over {repeats} runs (min "
            f"{np.min(times):.3f}, max {np.max(times):.3f}; load {os.getloadavg()[0]:.1f}); "
            f"CPU time of all threads: median {np.median(cpu):.3f} s"
        )
        se = res.delta_p_se[free]
        print(
            f"  per-neuron SE of Δp: median {np.median(se):.1e}, 90th pct "
            f"{np.quantile(se, 0.9):.1e}; without common random numbers it would be "
            f"≈ √2·SE(p_reference) = {np.sqrt(2) * np.median(res.p_reference_se):.1e} "
            f"(median p_reference {np.median(res.p_reference):.3f})"
        )
        ok = res.region_n > 0
        drift = np.nanmax(np.abs(res.delta_h_drift) / (res.delta_h_drift_se + 1e-12))
        print(
            f"  per-region SE of mean Δp: median {np.median(res.region_delta_se[ok]):.1e} over "
            f"{ok.sum()} regions; per-HU SE of Δ⟨h⟩: median {np.median(res.delta_h_se):.1e}; "
            f"max |drift/SE| of Δ⟨h⟩ {drift:.1f}"
        )
        tgt = np.setdiff1d(targets, clamp.neurons)
        rest = np.setdiff1d(free, members)
        print(
            f"  assembly {k} unclamped members: mean Δp {res.delta_p[tgt].mean():+.3f} "
            f"(median SE {np.median(res.delta_p_se[tgt]):.1e}); non-members: mean Δp "
            f"{res.delta_p[rest].mean():+.1e}; Δ⟨h_{k}⟩ {res.delta_h[k]:+.2f} ± "
            f"{res.delta_h_se[k]:.2f}"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=10_000)
    ap.add_argument("--units", type=int, default=100)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--background", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    main(a.neurons, a.units, a.frames, a.repeats, a.background, a.seed)
