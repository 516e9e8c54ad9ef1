"""Sweeps: grid expansion, a real grid of worker processes, its results table and selection."""

import math
import subprocess
import sys

import numpy as np
import pytest

from app.jobs import JobManager
from app.store import RunStore
from app.sweeps import STATISTICS, grid_configs, grid_summary, results_table, select
from crbm_core.errors import ParameterError
from crbm_core.modelfile import load_model
from crbm_core.recording import Recording
from crbm_core.report import load_report
from crbm_core.train import TrainConfig

T, N = 400, 120
SMALL = dict(batch_size=20, n_chains=20, n_mc=2, progress_every=10, n_updates=100, seed=3)


def test_grid_expands_every_point_and_repeat():
    configs = grid_configs(SMALL, {"l1": [0.0, 0.01, 0.05], "n_hidden": [2, 4]}, repeats=2)
    assert len(configs) == 12
    points = [(c.l1, c.n_hidden, c.seed) for c in configs]
    assert len(set(points)) == 12
    assert {(l1, m) for l1, m, _ in points} == {(a, b) for a in (0.0, 0.01, 0.05) for b in (2, 4)}
    assert {s for *_, s in points} == {3, 4}  # repeats differ by seed only
    assert all(c.n_updates == 100 and c.batch_size == 20 for c in configs)
    assert len(grid_configs(TrainConfig(seed=7), None, 3)) == 3


@pytest.mark.parametrize(
    "grid, repeats, message",
    [
        ({"lambda": [0.1]}, 1, "unknown training parameter.*lambda"),
        ({"l1": []}, 1, "non-empty list"),
        ({"l1": 0.1}, 1, "non-empty list"),
        ({"seed": [1, 2]}, 2, "over seeds or with repeats"),
        ({"n_hidden": [4, -1]}, 1, "bad sweep point.*n_hidden"),
        ({"l1": [0.1]}, 0, "repeats 0"),
        ({"l1": list(np.linspace(0, 1, 30)), "n_hidden": list(range(2, 22))}, 1, "limit"),
    ],
)
def test_bad_grids_are_refused(grid, repeats, message):
    with pytest.raises(ParameterError, match=message):
        grid_configs(SMALL, grid, repeats)


def _row(run, rec, score, converged):
    return {"run": run, "recording_id": rec, "score": score, "converged": converged}


def test_selection_is_the_best_converged_score_per_recording():
    rows = [
        _row(1, 1, 0.9, False),  # best score, but fails the convergence filter
        _row(2, 1, 0.7, True),
        _row(3, 1, 0.8, True),
        _row(4, 1, 0.8, True),  # tie: the earlier run wins
        _row(5, 1, None, True),  # not evaluated
        _row(6, 2, 0.95, False),
        _row(7, 2, float("nan"), True),
    ]
    assert select(rows) == {1: 3, 2: None}


@pytest.fixture
def recordings(tmp_path):
    paths = []
    for seed in (0, 1):
        spikes = (np.random.default_rng(seed).random((T, N)) < 0.05).astype(np.uint8)
        path = tmp_path / f"fish{seed}.h5"
        Recording.from_arrays(spikes, np.zeros((N, 3)), frame_rate=2.0, name=f"fish {seed}").save(
            path
        )
        paths.append(path)
    return paths


@pytest.mark.slow
def test_a_sweep_runs_every_point_and_tabulates_its_scores(tmp_path, recordings):
    store = RunStore(tmp_path / "data")
    manager = JobManager(store, max_workers=2)
    grid = {"l1": [0.0, 0.05], "n_hidden": [2, 3]}
    sweep_id = manager.submit_sweep(recordings, SMALL, grid, repeats=1, name="test grid")
    runs = store.sweep_runs(sweep_id)
    assert len(runs) == 8 and store.sweep(sweep_id)["name"] == "test grid"
    manager.wait([r["id"] for r in runs], timeout=300)
    rows = results_table(store, sweep_id)
    assert len(rows) == 8
    assert {(r["recording"], r["l1"], r["n_hidden"]) for r in rows} == {
        (f"fish {s}", a, b) for s in (0, 1) for a in (0.0, 0.05) for b in (2, 3)
    }
    for row, run in zip(rows, runs, strict=True):
        assert row["status"] in ("finished", "not converged"), run["message"]
        # the score is the paper's rule on the five nRMSEs in the run's own report
        stats = load_report(store.run(row["run"])["report_path"])["evaluation"]["values"]
        nrmse = [stats["statistics"][s]["nrmse"] for s in STATISTICS]
        assert [row[f"nrmse_{s}"] for s in STATISTICS] == nrmse
        assert row["score"] == pytest.approx(min(1 - x for x in nrmse if x is not None))
        # the convergence filter on the final weights, as the trainer judged it
        w_std = float(np.std(load_model(run["model_path"]).weights))
        assert row["w_std"] == pytest.approx(w_std)
        assert row["converged"] == (0.01 < w_std < 0.1) == (row["status"] == "finished")
    for rec in {r["recording_id"] for r in rows}:
        mine = [r for r in rows if r["recording_id"] == rec]
        ok = [r for r in mine if r["converged"] and math.isfinite(r["score"])]
        chosen = [r["run"] for r in mine if r["selected"]]
        assert chosen == ([max(ok, key=lambda r: (r["score"], -r["run"]))["run"]] if ok else [])
    cells = grid_summary(rows)
    assert len(cells) == 8 and all(c["n_runs"] == 1 for c in cells)

    # the command line prints the same table
    out = subprocess.run(
        [sys.executable, "-m", "crbm_core.cli", "jobs", "results", str(sweep_id)],
        capture_output=True,
        text=True,
        env={**_env(), "CRBM_DATA_DIR": str(store.data_dir)},
        check=True,
    ).stdout
    assert f"sweep {sweep_id} (test grid): 8 runs" in out
    for row in rows:
        assert any(line.split()[0] == str(row["run"]) for line in out.splitlines()[2:])


def _env():
    import os

    return {k: v for k, v in os.environ.items() if k != "CRBM_DATA_DIR"}


def test_cli_sweep_queues_the_grid(tmp_path, recordings):
    env = {**_env(), "CRBM_DATA_DIR": str(tmp_path / "data")}
    cmd = [sys.executable, "-m", "crbm_core.cli", "jobs"]
    bad = subprocess.run(
        [*cmd, "sweep", str(recordings[0]), "--grid", "l1=0.1,oops"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "not a valid l1" in bad.stderr
    out = subprocess.run(
        [*cmd, "--max-workers", "1", "sweep", str(recordings[0]), "--grid", "l1=0,0.05"]
        + ["--grid", "n-hidden=2,3", "--repeats", "2", "--n-updates", "20", "--batch-size", "20"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "8 runs queued (1 started)" in out
    store = RunStore(tmp_path / "data")
    (sweep,) = store.sweeps()
    assert sweep["spec"]["grid"] == {"l1": [0.0, 0.05], "n_hidden": [2, 3]}
    configs = [TrainConfig.from_json(r["config"]) for r in store.sweep_runs(sweep["id"])]
    assert sorted((c.l1, c.n_hidden, c.seed) for c in configs) == sorted(
        (a, b, s) for a in (0.0, 0.05) for b in (2, 3) for s in (0, 1)
    )
    assert all(c.n_updates == 20 for c in configs)
    for r in store.sweep_runs(sweep["id"]):  # leave no worker behind
        if r["status"] in ("queued", "running"):
            JobManager(store).cancel(r["id"])
