"""What one dashboard server process shares between its sessions: the run store and ONE job
manager (its polling thread started once), plus the first-start set-up and the `panel serve`
command line that `crbm serve` and the browser tests both use.

Panel executes the served script (`app/main.py`) once per browser session, so process-wide
objects live here, in an imported module, created on first use under a lock.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .jobs import JobManager
from .store import RunStore

ENTRY = Path(__file__).resolve().parent / "main.py"
DEMO_FILE = "demo_fish.h5"
# The first-start model of the 3,000-neuron demo: ~1 min of training on one core plus ~50 s for
# its report (measured: 2,000 updates took 90 s at 23 updates/s, report 50 s, on a shared core).
PRETRAIN = dict(n_hidden=24, n_updates=1500, seed=0, progress_every=50, checkpoint_every=500)
USABLE = ("queued", "running", "finished", "not converged", "interrupted")
UPLOAD_LIMIT_MB = 256  # websocket message limit: an upload is one message


@dataclass
class Services:
    store: RunStore
    jobs: JobManager
    pretrain_run: int | None = None


_lock = threading.Lock()
_services: Services | None = None


def first_start(store: RunStore, jobs: JobManager) -> int | None:
    """On a store without a usable run (none, or only failed/cancelled ones): add the demo
    virtual fish and queue a small pre-training run of it; returns that run's id, else None."""
    from crbm_core.cli import ensure_demo
    from crbm_core.train import TrainConfig

    if any(r["status"] in USABLE for r in store.runs()):
        return None
    path = ensure_demo(store.data_dir / DEMO_FILE, quiet=True)
    rec_id = store.add_recording(path)
    return jobs.submit(rec_id, TrainConfig(**PRETRAIN))


def services(data_dir: str | Path | None = None) -> Services:
    """This process's store and job manager (created, set up and started on the first call;
    `data_dir` defaults to $CRBM_DATA_DIR, else ./data)."""
    global _services
    with _lock:
        if _services is None:
            from crbm_core.cli import data_dir as default_dir

            store = RunStore(data_dir or default_dir())
            jobs = JobManager(store)
            run = first_start(store, jobs)
            jobs.start()
            _services = Services(store, jobs, run)
        return _services


def initial_run(store: RunStore) -> int | None:
    """The run a new page opens on: the newest finished one with a report, else the newest
    queued or running one (its progress shows), else the newest of any kind."""
    runs = store.runs()
    for pick in (
        lambda r: r["status"] in ("finished", "not converged") and r["report_path"],
        lambda r: r["status"] in ("queued", "running"),
        lambda r: True,
    ):
        found = [r["id"] for r in runs if pick(r)]
        if found:
            return max(found)
    return None


def serve_command(
    port: int = 5006,
    address: str = "127.0.0.1",
    allow_websocket_origin: list[str] | None = None,
) -> list[str]:
    """`python -m panel serve app/main.py ...` as production runs it (with a liveness endpoint
    for health checks; the script is executed once at start-up, which sets up the store)."""
    origins = allow_websocket_origin or [f"{address}:{port}", f"localhost:{port}"]
    cmd = [
        sys.executable,
        "-m",
        "panel",
        "serve",
        str(ENTRY),
        "--address",
        address,
        "--port",
        str(port),
        "--liveness",
        "--warm",
        "--num-procs",
        "1",
        "--websocket-max-message-size",
        str(UPLOAD_LIMIT_MB * 1024 * 1024),
    ]
    for origin in origins:
        cmd += ["--allow-websocket-origin", origin]
    return cmd
