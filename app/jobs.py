"""Job manager (embedded backend): one spawned process per training run, a FIFO queue, a limit.

The server never trains: `submit` puts a queued run into the store and `poll()` (called
periodically by the server, or by `start()`'s background thread) starts queued runs as
`python -m app.job_worker` processes while fewer than `max_workers` run. The worker owns its
run's status and progress in the store, so the manager holds no state the store does not: a new
manager on the same store picks up where a dead one stopped. Workers run in their own session,
so they outlive a server that is stopped or killed; on start-up the manager marks runs whose
worker is gone "interrupted", and `resume(run_id)` continues them from their last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from crbm_core.errors import CrbmError, ParameterError
from crbm_core.modelfile import has_checkpoint

from .store import RESUMABLE, TERMINAL, RunStore, StoreError

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class JobError(CrbmError):
    """A job request the manager cannot carry out; says which run and why."""


def pid_alive(pid: int | None) -> bool:
    """Whether process `pid` exists and is not a zombie (a killed child not yet reaped)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): os.kill said it exists
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def worker_alive(pid: int | None, run_id: int) -> bool:
    """Whether `pid` is still the worker of run `run_id` (not a reused pid of another program)."""
    if not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid
    return b"app.job_worker" in argv and str(run_id).encode() in argv


def worker_env(base: dict | None = None) -> dict:
    """The worker's environment: one BLAS/OpenMP thread (numba does the parallel work, and
    two threading layers fighting cost the reference code 10–140×), NUMBA_NUM_THREADS as given
    or 1, and this project importable."""
    env = dict(os.environ if base is None else base)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env["NUMBA_NUM_THREADS"] = env.get("NUMBA_NUM_THREADS") or "1"
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *([path] if path else [])])
    return env


def _config_json(config) -> str:
    from crbm_core.train import TrainConfig

    if isinstance(config, TrainConfig):
        return config.to_json()
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ParameterError(f"config must be a TrainConfig or a dict, got {type(config)}")
    try:
        return TrainConfig(**config).to_json()
    except (ValueError, TypeError) as exc:  # param's bound and type checks
        raise ParameterError(f"bad training config: {exc}") from None


class JobManager:
    """Queue, start, cancel and resume training runs of `store`, at most `max_workers` at once.

    With `recover` (default), runs left "running" by a worker that is gone are marked
    "interrupted" now; `auto_resume` also queues them again.
    """

    def __init__(
        self,
        store: RunStore | str | os.PathLike | None = None,
        max_workers: int | None = None,
        *,
        recover: bool = True,
        auto_resume: bool = False,
    ):
        self.store = store if isinstance(store, RunStore) else RunStore(store)
        self.max_workers = (os.cpu_count() or 1) if max_workers is None else int(max_workers)
        if self.max_workers < 1:
            raise ParameterError(f"max_workers {max_workers}: need at least 1")
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if recover:
            for run_id in self.recover():
                if auto_resume:
                    self.resume(run_id)

    # -- submitting -----------------------------------------------------------------------------
    def submit(self, recording, config=None) -> int:
        """Queue a run of `recording` (a path, indexed now, or a recording id) with `config`
        (TrainConfig or dict of its parameters); returns the run id. Starts it if a slot is
        free."""
        text = _config_json(config)
        if isinstance(recording, int):
            rec_id = recording
        else:
            rec_id = self.store.add_recording(recording)
        run_id = self.store.create_run(rec_id, text)
        self.poll()
        return run_id

    def submit_sweep(
        self, recordings, config=None, grid: dict | None = None, repeats: int = 1, name: str = ""
    ) -> int:
        """Queue a model-selection sweep: every grid point × repeat (`sweeps.grid_configs`) on
        every recording (paths or ids), as one sweep; returns the sweep id. Its results table
        is `sweeps.results_table(store, sweep_id)`."""
        from .sweeps import grid_configs

        configs = grid_configs(config, grid, repeats)  # validated before anything is stored
        recordings = [recordings] if isinstance(recordings, str | int | os.PathLike) else recordings
        if not recordings:
            raise ParameterError("a sweep needs at least one recording")
        ids = [r if isinstance(r, int) else self.store.add_recording(r) for r in recordings]
        spec = {
            "recordings": ids,
            "grid": dict(grid or {}),
            "repeats": int(repeats),
            "config": json.loads(configs[0].to_json()),
        }
        sweep_id = self.store.create_sweep(name or f"sweep of {len(configs) * len(ids)} runs", spec)
        for rec_id in ids:
            for cfg in configs:
                self.store.create_run(rec_id, cfg.to_json(), sweep_id=sweep_id)
        self.poll()
        return sweep_id

    def cancel(self, run_id: int) -> str:
        """Cancel a run: a queued one now; a running one stops at its next update, writes a
        final checkpoint and ends "cancelled". Returns the status after the request."""
        run = self.store.run(run_id)
        if run["status"] in ("queued", "interrupted"):
            if self.store.set_status(
                run_id,
                "cancelled",
                message="cancelled before it ran",
                only_from=("queued", "interrupted"),
            ):
                return "cancelled"
            run = self.store.run(run_id)
        if run["status"] != "running":
            raise JobError(f"run {run_id} is {run['status']}; only queued or running runs cancel")
        self.store.request_cancel(run_id)
        if run["pid"] and run["host"] == socket.gethostname():
            try:
                os.kill(int(run["pid"]), signal.SIGTERM)
            except ProcessLookupError:
                pass  # it just ended; poll() records how
        return "running"

    def resume(self, run_id: int) -> int:
        """Queue an interrupted, cancelled or failed run again; its worker continues from the
        last checkpoint in the run's model file (or starts over if none was written)."""
        run = self.store.run(run_id)
        if run["status"] not in RESUMABLE:
            raise JobError(
                f"run {run_id} is {run['status']}; only {', '.join(RESUMABLE)} runs resume"
            )
        if not self.store.set_status(
            run_id, "queued", message=_resume_note(run), only_from=RESUMABLE
        ):
            raise JobError(f"run {run_id} changed status meanwhile; try again")
        self.poll()
        return run_id

    # -- the loop -------------------------------------------------------------------------------
    def recover(self) -> list[int]:
        """Mark "interrupted" every running run of this host whose worker process is gone
        (and is not one of ours still starting); returns their ids."""
        found = []
        host = socket.gethostname()
        for run in self.store.runs("running"):
            if run["host"] != host or run["id"] in self._procs:
                continue
            if worker_alive(run["pid"], run["id"]):
                continue
            if self.store.set_status(
                run["id"],
                "interrupted",
                message=f"its worker (pid {run['pid']}) ended without finishing; resumable",
                only_from=("running",),
            ):
                found.append(run["id"])
        return found

    def poll(self) -> list[int]:
        """Reap ended workers, mark lost runs, start queued runs into free slots (FIFO).
        Returns the ids started."""
        with self._lock:
            self._reap()
            self.recover()
            busy = {r["id"] for r in self.store.runs("running")} | set(self._procs)
            started = []
            for run in self.store.runs("queued"):
                if len(busy) >= self.max_workers:
                    break
                if run["id"] in self._procs:
                    continue
                self._spawn(run["id"])
                busy.add(run["id"])
                started.append(run["id"])
            return started

    tick = poll

    def _spawn(self, run_id: int) -> None:
        folder = self.store.runs_dir / str(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "worker.log", "ab") as logf:
            self._procs[run_id] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "app.job_worker",
                    "--store",
                    str(self.store.data_dir),
                    "--run",
                    str(run_id),
                ],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=worker_env(),
                cwd=str(PROJECT_ROOT),
                start_new_session=True,  # outlives the server; its Ctrl-C does not reach it
            )

    def _reap(self) -> None:
        """Record the end of workers that exited without ending their run (crash, kill)."""
        for run_id, proc in list(self._procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self._procs[run_id]
            run = self.store.run(run_id)
            if run["status"] not in ("queued", "running"):
                continue
            if run["status"] == "running" and run["pid"] != proc.pid:
                continue  # another manager's worker claimed the run first; this one did nothing
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            if run["status"] == "running" and run["cancel_requested"]:
                target, note = "cancelled", f"worker ended by {how} while cancelling"
            elif run["status"] == "running":
                target, note = "interrupted", f"worker ended by {how}; resumable"
            else:
                log_path = self.store.runs_dir / str(run_id) / "worker.log"
                target, note = "failed", f"worker ended by {how} before starting (see {log_path})"
            try:
                self.store.set_status(run_id, target, message=note, only_from=(run["status"],))
            except StoreError as exc:  # e.g. cancelled from another manager meanwhile
                log.warning("run %s: %s", run_id, exc)

    # -- background thread, waiting ---------------------------------------------------------------
    def start(self, interval: float = 0.5) -> JobManager:
        """Poll every `interval` seconds in a daemon thread (errors are logged, never fatal)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()

        def loop():
            while not self._stop.wait(interval):
                try:
                    self.poll()
                except Exception:
                    log.exception("job manager poll failed")

        self._thread = threading.Thread(target=loop, name="crbm-job-manager", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the background thread (workers keep running; a later manager adopts them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> JobManager:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def running(self) -> list[int]:
        return [r["id"] for r in self.store.runs("running")]

    def spawned(self, run_id: int) -> bool:
        """Whether this manager started a worker for the run that is still alive (the worker
        marks the run "running" itself a moment later)."""
        proc = self._procs.get(int(run_id))
        return proc is not None and proc.poll() is None

    def wait(self, run_ids, timeout: float = 600.0, interval: float = 0.1) -> list[dict]:
        """Poll until every run in `run_ids` (an id or a list) is final or interrupted; returns
        their rows. A JobError after `timeout` seconds (a guard against a hang)."""
        ids = [run_ids] if isinstance(run_ids, int) else list(run_ids)
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            rows = [self.store.run(i) for i in ids]
            if all(r["status"] in (*TERMINAL, "interrupted") for r in rows):
                return rows
            if time.monotonic() > deadline:
                states = ", ".join(f"{r['id']}: {r['status']}" for r in rows)
                raise JobError(f"runs still not done after {timeout:g} s ({states})")
            time.sleep(interval)


def _resume_note(run: dict) -> str:
    if run["checkpoint_update"] is not None and has_checkpoint(run["model_path"]):
        return f"resumed from the checkpoint at update {run['checkpoint_update']}"
    return "restarted from the beginning (no checkpoint was written)"
