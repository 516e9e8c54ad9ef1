"""Model-selection sweeps (METHODS §5): a grid such as λ × M × repeats over one or more
recordings, submitted as one unit, and its results table.

Each run is scored by its report: min over the five statistics of (1 − nRMSE), the paper's rule.
A run counts only if it passes the paper's convergence filter, 0.01 < std(w) < 0.1 on its final
weights (the trainer marks a run that fails it "not converged"); per recording, the selected
model is the counted run with the highest score.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import h5py
import numpy as np

from crbm_core.errors import ParameterError
from crbm_core.h5io import read_str_attr
from crbm_core.train import TrainConfig

from .store import RunStore

STATISTICS = ("v", "h", "vh", "vv", "hh")  # METHODS §5, in the report's naming
W_STD_RANGE = (0.01, 0.1)  # the paper's convergence filter on std(w)
MAX_RUNS = 500  # a sweep larger than this is almost surely a typo in the grid


def grid_configs(config=None, grid: dict | None = None, repeats: int = 1) -> list[TrainConfig]:
    """One TrainConfig per grid point and repeat. `grid` maps TrainConfig parameter names to
    lists of values (e.g. {"l1": [0.01, 0.02], "n_hidden": [100, 200]}); repeat r uses
    seed = config seed + r, so repeats differ only by their randomness."""
    base = config if isinstance(config, TrainConfig) else TrainConfig(**(config or {}))
    grid = dict(grid or {})
    known = set(TrainConfig.param.objects("existing")) - {"name"}
    unknown = sorted(set(grid) - known)
    if unknown:
        raise ParameterError(f"sweep over unknown training parameter(s): {', '.join(unknown)}")
    repeats = int(repeats)
    if repeats < 1:
        raise ParameterError(f"repeats {repeats}: need at least 1")
    if "seed" in grid and repeats > 1:
        raise ParameterError("sweep either over seeds or with repeats, not both")
    for name, values in grid.items():
        if not isinstance(values, list | tuple) or not values:
            raise ParameterError(f"sweep values of {name}: need a non-empty list")
    n = math.prod(len(v) for v in grid.values()) * repeats
    if n > MAX_RUNS:
        raise ParameterError(f"a sweep of {n} runs per recording; the limit is {MAX_RUNS}")
    base_values = {k: v for k, v in base.param.values().items() if k != "name"}
    out = []
    for point in itertools.product(*grid.values()):
        for r in range(repeats):
            at = dict(zip(grid, point, strict=True))
            values = {**base_values, **at}
            values["seed"] = values["seed"] + r if "seed" not in grid else values["seed"]
            try:
                out.append(TrainConfig(**values))
            except (ValueError, TypeError) as exc:
                raise ParameterError(f"bad sweep point {at}: {exc}") from None
    return out


def report_values(path: str | Path) -> dict:
    """The `values` of each report section, without reading its arrays (cheap per run)."""
    with h5py.File(path, "r") as f:
        return {name: json.loads(read_str_attr(f[name], "values", "{}")) for name in f}


def _weight_std(model_path: str) -> float | None:
    if not model_path or not Path(model_path).exists():
        return None
    with h5py.File(model_path, "r") as f:
        if "model/weights" not in f:
            return None
        return float(np.std(f["model/weights"][()]))


def results_table(store: RunStore, sweep_id: int) -> list[dict]:
    """One row per run of the sweep: its grid values, status, the five nRMSEs, the score,
    median reconstruction nLLH, std(w), whether it passes the convergence filter, and whether
    it is its recording's selected model."""
    sweep = store.sweep(sweep_id)
    grid = sweep["spec"].get("grid", {})
    names = list(grid) + ([] if "seed" in grid else ["seed"])
    recordings = {r["id"]: r["name"] for r in store.recordings()}
    rows = []
    for run in store.sweep_runs(sweep_id):
        config = json.loads(run["config"])
        row = {
            "run": run["id"],
            "recording_id": run["recording_id"],
            "recording": recordings.get(run["recording_id"], str(run["recording_id"])),
            **{k: config.get(k) for k in names},
            "status": run["status"],
            "score": None,
            **{f"nrmse_{s}": None for s in STATISTICS},
            "median_nllh": None,
            "w_std": None,
            "converged": False,
            "selected": False,
        }
        if run["status"] in ("finished", "not converged"):
            row["w_std"] = _weight_std(run["model_path"])
            low, high = W_STD_RANGE
            row["converged"] = row["w_std"] is not None and low < row["w_std"] < high
        if run["report_path"] and Path(run["report_path"]).exists():
            ev = report_values(run["report_path"]).get("evaluation", {})
            row["score"] = ev.get("score")
            row["median_nllh"] = ev.get("median_nllh")
            for s in STATISTICS:
                row[f"nrmse_{s}"] = (ev.get("statistics", {}).get(s) or {}).get("nrmse")
        rows.append(row)
    for run_id in select(rows).values():
        if run_id is not None:
            next(r for r in rows if r["run"] == run_id)["selected"] = True
    return rows


def select(rows: list[dict]) -> dict[int, int | None]:
    """{recording id: the run with the highest score among the converged, scored runs} (None
    where no run of that recording qualifies yet; ties go to the earlier run)."""
    best: dict[int, tuple[float, int] | None] = {r["recording_id"]: None for r in rows}
    for r in rows:
        if not r["converged"] or r["score"] is None or not math.isfinite(r["score"]):
            continue
        current = best[r["recording_id"]]
        if current is None or r["score"] > current[0]:
            best[r["recording_id"]] = (r["score"], r["run"])
    return {rec: None if b is None else b[1] for rec, b in best.items()}


def grid_summary(rows: list[dict], params: tuple[str, str] = ("l1", "n_hidden")) -> list[dict]:
    """Mean score of the converged runs per recording and grid cell (for the score heatmap),
    with how many of the cell's runs converged."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["recording_id"], *(r.get(p) for p in params)), []).append(r)
    out = []
    for (rec, *values), members in cells.items():
        scores = [
            m["score"]
            for m in members
            if m["converged"] and m["score"] is not None and math.isfinite(m["score"])
        ]
        out.append(
            {
                "recording_id": rec,
                **dict(zip(params, values, strict=True)),
                "score": float(np.mean(scores)) if scores else None,
                "n_converged": len(scores),
                "n_runs": len(members),
            }
        )
    return out
