"""A run store holding one small virtual fish and one finished run with its report, made by the
real code path (store → job worker → model file → report), for the dashboard's tests."""

from __future__ import annotations

from pathlib import Path

from app.job_worker import run_job
from app.store import RunStore
from crbm_core.synthetic import generate_virtual_fish, save_virtual_fish
from crbm_core.train import TrainConfig

FISH = dict(n_neurons=600, n_frames=800, n_assemblies=6, seed=5, frame_rate=4.0)
CONFIG = dict(n_hidden=8, n_updates=300, batch_size=50, n_chains=50, n_mc=5, seed=1)


def trained_store(data_dir: str | Path, **config) -> tuple[RunStore, int]:
    """(store, run id) of a finished run on a 600-neuron virtual fish in `data_dir`."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    fish_path = data_dir / "tiny_fish.h5"
    save_virtual_fish(generate_virtual_fish(**FISH, name="tiny virtual fish"), fish_path)
    store = RunStore(data_dir)
    run_id = store.create_run(
        store.add_recording(fish_path), TrainConfig(**{**CONFIG, **config}).to_json()
    )
    status = run_job(store, run_id)
    run = store.run(run_id)
    if status not in ("finished", "not converged") or not run["report_path"]:
        raise RuntimeError(f"the test run ended {status}: {run['message']}\n{run['traceback']}")
    return store, run_id
