"""Server-side time of one Perturbation-view update at N = 10,000, M = 100 (issue target ≤ 1 s):
from a control change (mode, clamp, slider) to the view's sources holding the new result.

Run: OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=2 python benchmarks/perturbation_view_speed.py
Prints figures only. The model is the planted cRBM of a "crbm"-mode virtual fish with a weak
dense background (as benchmarks/perturb_speed.py); the view runs on a state whose loaded run is
that model and recording (the report part the view reads — HU traces for the slider range —
computed here). Each case: one warm-up, then the median of `--repeats`; the share of the time
spent in `crbm_core.perturb` vs filling the Bokeh sources is printed. Browser rendering is not
included (the browser benchmark measures it).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numba
import numpy as np
import panel as pn
import param

from app.state import ExplorerState, LoadedRun
from app.views import perturbation as pv
from crbm_core.dynamics import hu_traces, ward_order
from crbm_core.model import CRBM
from crbm_core.synthetic import generate_virtual_fish


def main(n: int, m: int, frames: int, repeats: int, seed: int) -> None:
    fish = generate_virtual_fish(n, frames, m, seed=seed, mode="crbm")
    rec, truth = fish.recording, fish.truth
    model = CRBM.from_dict(truth.model)
    model.weights += (
        np.random.default_rng(seed + 1).normal(0, 0.03, model.weights.shape).astype(model.dtype)
    )
    traces = hu_traces(model, rec.spike_array())
    order, _ = ward_order(traces)
    state = ExplorerState(tempfile.mkdtemp(prefix="crbm-bench-"))
    loaded = LoadedRun({"id": 0, "status": "finished"}, rec, model,
                       {"dynamics": {"traces": traces}}, order)  # fmt: skip
    view = pv.PerturbationView(state=state)
    state.run_id = 0  # not in the (empty) store: loads nothing, records an error
    t0 = time.perf_counter()
    with param.edit_constant(state):
        state.loaded = loaded  # what ExplorerState does for a stored run (the view watches it)
    pn.panel(view).get_root()
    print(f"view filled for the run (figures, map of {n} neurons, first perturbation): "
          f"{time.perf_counter() - t0:.2f} s")  # fmt: skip
    k = int(np.argmax((truth.weights > 0).sum(axis=0)))
    members = np.flatnonzero(truth.weights[:, k] > 0)
    print(f"N={n} M={m} T={frames}, {numba.get_num_threads()} numba threads, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip

    def stimulate_half():
        view._map.selected.indices = [int(i) for i in members[::2]]
        view.clamp.value = "stimulate (1)"
        view.mode.value = pv.MODES[2]
        view.compute()

    def ablate_region():
        view.mode.value = pv.MODES[0]
        view.clamp.value = "ablate (0)"
        view.compute()

    def slider():
        state.hu = k
        view.mode.value = pv.MODES[3]  # the first time: a slider for HU k
        s = view.sliders[k]
        value = s.end if s.value != s.end else s.start
        s.value = value
        with param.edit_constant(s):
            s.value_throttled = value  # what the browser sends on release

    view.auto.value = False
    for name, case in (("stimulate half an assembly (lasso)", stimulate_half),
                       ("ablate a region", ablate_region)):  # fmt: skip
        case()
        times, core = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            case()
            times.append(time.perf_counter() - t)
            core.append(view.seconds)
        print(f"{name}: {np.median(times):.3f} s per update (perturb {np.median(core):.3f} s); "
              f"{view.result.clamp.label}")  # fmt: skip
    view.auto.value = True
    slider()
    times, core = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        slider()
        times.append(time.perf_counter() - t)
        core.append(view.seconds)
    print(f"move the HU slider (auto update): {np.median(times):.3f} s per update "
          f"(perturb {np.median(core):.3f} s); {view.result.clamp.label}")  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--neurons", type=int, default=10_000)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--frames", type=int, default=2_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    main(a.neurons, a.hidden, a.frames, a.repeats, a.seed)
