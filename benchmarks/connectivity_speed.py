"""Region FC at paper scale: time and peak memory of the cRBM FC and of the spike baselines.

Run: OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=2 python benchmarks/connectivity_speed.py
     [--neurons 50000 --hidden 200 --frames 5000 --rate 0.035 --cases crbm,spikes]

Each case runs in its own Python process so that its peak RSS (resource.getrusage ru_maxrss)
is its own: the figure includes the interpreter, numba, the frames (T×N uint8) and the model.
Neurons get atlas regions in the real fish's proportions (unlabelled ones included); frames are
independent Bernoulli spikes at `rate` (the cost of the baselines grows as rate²). The first call
(JIT compile or cache load) runs on a small input and is reported separately. Prints figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _data(n: int, m: int, t: int, rate: float, seed: int = 0):
    from crbm_core import atlas

    rng = np.random.default_rng(seed)
    geom = atlas.region_geometry()
    share = np.append(geom.real_share, geom.unlabelled_share)
    labels = rng.choice(np.append(np.arange(atlas.N_REGIONS), -1), size=n, p=share / share.sum())
    frames = np.empty((t, n), dtype=np.uint8)
    for t0 in range(0, t, 256):  # chunks: no T×N float temporary
        frames[t0 : t0 + 256] = rng.random((min(256, t - t0), n), dtype=np.float32) < rate
    return rng, labels, frames


def _model(rng, n: int, m: int):
    from crbm_core.model import CRBM

    f32 = np.float32
    return CRBM(
        (rng.normal(0, 0.05, (n, m)) * (rng.random((n, m)) < 0.3)).astype(f32),
        np.full(n, -3.0, f32),
        np.ones(m, f32),
        rng.normal(0, 0.5, m).astype(f32),
        rng.normal(-0.5, 0.5, m).astype(f32),
        rng.uniform(-0.3, 0.3, m).astype(f32),
    )


def _timed(out: dict, key: str, fn):
    """Run fn, recording wall and CPU seconds (all threads): on a shared machine the CPU time
    says what the run costs, the wall time what it took."""
    c0, t0 = time.process_time(), time.perf_counter()
    res = fn()
    out[key], out[key + "_cpu"] = time.perf_counter() - t0, time.process_time() - c0
    return res


def run_case(case: str, n: int, m: int, t: int, rate: float) -> dict:
    import numba

    from crbm_core import connectivity as cf

    rng, labels, frames = _data(n, m, t, rate)
    out = {"case": case, "threads": numba.get_num_threads(), "rss_after_data_mb": _rss_mb()}
    small = slice(0, 2000)
    if case == "crbm":
        model = _model(rng, n, m)
        tiny = _model(np.random.default_rng(1), 2000, m)
        t0 = time.perf_counter()
        cf.crbm_region_fc(tiny, frames[:50, small], labels[small])
        out["first_call_s"] = time.perf_counter() - t0
        var = _timed(out, "hidden_variance_s", lambda: cf.hidden_variance(model, frames))
        fc = _timed(
            out, "region_fc_s", lambda: cf.crbm_region_fc(model, frames, labels, hu_variance=var)
        )
    else:
        t0 = time.perf_counter()
        cf.spike_fc(frames[:, small], labels[small])
        out["first_call_s"] = time.perf_counter() - t0
        fc = _timed(out, "spike_fc_s", lambda: cf.spike_fc(frames, labels)).correlation
    out["finite_pairs"] = int(np.isfinite(fc).sum())
    out["peak_rss_mb"] = _rss_mb()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--neurons", type=int, default=50_000)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--frames", type=int, default=5_000)
    p.add_argument("--rate", type=float, default=0.035)
    p.add_argument("--cases", default="crbm,spikes")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(run_case(a.child, a.neurons, a.hidden, a.frames, a.rate)))
        return
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    print(
        f"N={a.neurons} M={a.hidden} T={a.frames} rate={a.rate} "
        f"NUMBA_NUM_THREADS={env.get('NUMBA_NUM_THREADS', 'all cores')}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for case in a.cases.split(","):
        args = [sys.executable, __file__, "--child", case]
        args += ["--neurons", str(a.neurons), "--hidden", str(a.hidden)]
        args += ["--frames", str(a.frames), "--rate", str(a.rate)]
        res = json.loads(subprocess.run(args, env=env, check=True, capture_output=True).stdout)
        if case == "crbm":
            wall = res["hidden_variance_s"] + res["region_fc_s"]
            cpu = res["hidden_variance_s_cpu"] + res["region_fc_s_cpu"]
            print(
                f"cRBM FC:     ⟨Var(h|v)⟩ over T frames {res['hidden_variance_s']:6.2f} s, "
                f"region FC {res['region_fc_s']:6.2f} s, total {wall:6.2f} s wall "
                f"({cpu:.2f} s CPU)"
            )
        else:
            print(
                f"spike FC:    covariance + correlation {res['spike_fc_s']:6.2f} s wall "
                f"({res['spike_fc_s_cpu']:.2f} s CPU)"
            )
        print(
            f"             peak RSS {res['peak_rss_mb']:7.0f} MB (after making the data "
            f"{res['rss_after_data_mb']:.0f} MB); first call on 2000 neurons "
            f"{res['first_call_s']:.2f} s; {res['threads']} numba threads; "
            f"finite region pairs {res['finite_pairs']}"
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
