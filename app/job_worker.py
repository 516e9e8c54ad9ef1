"""One training job in its own process: `python -m app.job_worker --store DIR --run ID`.

The worker claims its queued run (queued → running, with its pid), trains it as `crbm train`
does (the train/test split chosen by `choose_split`, kept in the model file), writes every
progress event to the store as it happens and a checkpoint into `runs/<id>/model.h5`, analyses
the final model into `runs/<id>/model.report.h5` (`crbm evaluate`'s report), and ends the run
itself: finished / not converged, cancelled (the cancel flag, or SIGTERM/SIGINT with the
flag set), interrupted (SIGTERM/SIGINT without it, e.g. a machine shutting down: resumable),
or failed with the error and its traceback. A run whose model file holds a checkpoint continues
from it (`load_checkpoint`), bit-for-bit the run that was never stopped.
`train_run` is the training itself, reporting to a `RunSink`; the Dask backend
(app/dask_backend.py) runs the same function in its tasks.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

CANCEL_POLL_SECONDS = 0.5  # how often the cancel flag (store or Dask event) is read in training


class RunSink(Protocol):
    """Where a training run reports what happens to it: the RunStore itself (a local worker
    process) or a proxy that forwards each call to the manager (a Dask task, which must not
    touch the SQLite file). The method signatures are RunStore's."""

    def add_progress(self, run_id: int, event: dict) -> None: ...
    def set_checkpoint(self, run_id: int, update: int) -> None: ...
    def set_resumed_from(self, run_id: int, update: int) -> None: ...
    def set_report_path(self, run_id: int, path: str | os.PathLike) -> None: ...
    def set_status(self, run_id: int, status: str, *, message=None, traceback=None) -> bool: ...
    def cancel_requested(self, run_id: int) -> bool: ...


def _inputs(run: dict, rec_row: dict):
    """(training inputs, config) of `run`: a new one, or resumed from its model file."""
    from crbm_core.errors import CrbmError
    from crbm_core.modelfile import has_checkpoint
    from crbm_core.recording import read_recording
    from crbm_core.run_inputs import training_inputs
    from crbm_core.train import TrainConfig

    model_path = Path(run["model_path"])
    resume = model_path if has_checkpoint(model_path) else None
    inputs = training_inputs(read_recording(rec_row["path"]), rec_row["path"], resume)
    if inputs.provenance["recording_sha256"] != rec_row["sha256"]:
        raise CrbmError(
            f"{rec_row['path']}: the recording changed since it was added to the store "
            "(its spikes no longer match the indexed SHA-256); add it again as a new recording"
        )
    inputs.provenance["run_id"] = int(run["id"])
    return inputs, TrainConfig.from_json(run["config"])


def _write_report(sink: RunSink, run_id: int, model_path: Path, rec_path: str) -> str:
    """Analyse the final model into its report file (what the dashboard and the sweep table
    show) before the run is marked done; returns "" or a note of why there is no report, which
    does not fail a run whose model is good (`crbm evaluate` can retry it)."""
    from crbm_core.errors import CrbmError
    from crbm_core.report import evaluate_model_file

    try:
        path, _ = evaluate_model_file(model_path, rec_path)
    except (CrbmError, ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        return f"; no report ({type(exc).__name__}: {exc})"
    sink.set_report_path(run_id, path)
    return ""


def _fail(sink: RunSink, run_id: int, exc: Exception) -> str:
    from crbm_core.errors import CrbmError

    message = str(exc) if isinstance(exc, CrbmError) else f"{type(exc).__name__}: {exc}"
    sink.set_status(run_id, "failed", message=message, traceback=traceback.format_exc())
    return "failed"


def train_run(
    sink: RunSink, run: dict, recording: dict, signalled: Callable[[], bool] = lambda: False
) -> str:
    """Train the claimed run `run` (its store row) on `recording` (its store row) to its end,
    reporting to `sink`; returns the final status. Shared by both backends: a local worker
    process (sink = the RunStore) and a Dask task (sink = a proxy posting to the manager).
    `signalled()` says a signal asked the process to stop (local workers only)."""
    from crbm_core.modelfile import save_checkpoint
    from crbm_core.run_inputs import save_result
    from crbm_core.train import train

    run_id = int(run["id"])
    try:
        inputs, config = _inputs(run, recording)
        state = inputs.state
        if state is not None:
            sink.set_resumed_from(run_id, state.update)
        out = Path(run["model_path"])
        polled = {"t": 0.0, "cancel": False}

        def should_stop() -> bool:
            now = time.monotonic()
            if signalled():
                return True
            if now - polled["t"] >= CANCEL_POLL_SECONDS:
                polled["t"] = now
                polled["cancel"] = sink.cancel_requested(run_id)
            return polled["cancel"]

        def checkpoint(st, cfg):
            save_checkpoint(out, st, config, cfg, provenance=inputs.provenance, split=inputs.split)
            sink.set_checkpoint(run_id, st.update)

        result = train(
            inputs.data,
            config,
            state=state,
            callback=lambda event: sink.add_progress(run_id, event),
            checkpoint=checkpoint,
            should_stop=should_stop,
        )
        if result.status == "stopped":
            cancel = sink.cancel_requested(run_id)
            status = "cancelled" if cancel else "interrupted"
            why = "cancelled" if cancel else "stopped by a signal"
            sink.set_status(
                run_id, status, message=f"{why} at update {result.state.update}; resumable"
            )
            return status
        save_result(out, result, config, inputs)
        sink.set_checkpoint(run_id, result.state.update)
        notes = "; ".join(n for n in (result.message, inputs.note) if n)
        message = notes + _write_report(sink, run_id, out, recording["path"])
        sink.set_status(run_id, result.status, message=message)
        return result.status
    except Exception as exc:
        return _fail(sink, run_id, exc)


def run_job(store, run_id: int) -> str:
    """Claim queued run `run_id` of `store` for this process and train it to its end; returns
    the final status."""
    if not store.set_status(run_id, "running", pid=os.getpid(), only_from=("queued",)):
        return "not claimed"  # cancelled, or claimed by another manager's worker: nothing to do
    signalled = {"now": False}

    def on_signal(signum, frame):
        signalled["now"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        run = store.run(run_id)
        recording = store.recording(run["recording_id"])
    except Exception as exc:
        return _fail(store, run_id, exc)
    return train_run(store, run, recording, lambda: signalled["now"])


def main(argv: list[str] | None = None) -> int:
    from app.store import RunStore

    p = argparse.ArgumentParser(prog="python -m app.job_worker", description=__doc__)
    p.add_argument("--store", required=True, help="data directory of the run store")
    p.add_argument("--run", required=True, type=int, help="run id")
    args = p.parse_args(argv)
    status = run_job(RunStore(args.store), args.run)
    print(f"run {args.run}: {status}", file=sys.stderr)
    return 0 if status in ("finished", "not converged", "cancelled", "not claimed") else 1


if __name__ == "__main__":
    sys.exit(main())
