"""One training job in its own process: `python -m app.job_worker --store DIR --run ID`.

The worker claims its queued run (queued → running, with its pid), trains it as `crbm train`
does (the train/test split chosen by `choose_split`, kept in the model file), writes every
progress event to the store as it happens and a checkpoint into `runs/<id>/model.h5`, analyses
the final model into `runs/<id>/model.report.h5` (`crbm evaluate`'s report), and ends the run
itself: finished / not converged, cancelled (the cancel flag, or SIGTERM/SIGINT with the
flag set), interrupted (SIGTERM/SIGINT without it, e.g. a machine shutting down: resumable),
or failed with the error and its traceback. A run whose model file holds a checkpoint continues
from it (`load_checkpoint`), bit-for-bit the run that was never stopped.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np

CANCEL_POLL_SECONDS = 0.5  # how often the store's cancel flag is read during training


def _inputs(store, run: dict):
    """(training inputs, config) of `run`: a new one, or resumed from its model file."""
    from crbm_core.errors import CrbmError
    from crbm_core.modelfile import has_checkpoint
    from crbm_core.recording import read_recording
    from crbm_core.run_inputs import training_inputs
    from crbm_core.train import TrainConfig

    rec_row = store.recording(run["recording_id"])
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


def _write_report(store, run_id: int, model_path: Path) -> str:
    """Analyse the final model into its report file (what the dashboard and the sweep table
    show) before the run is marked done; returns "" or a note of why there is no report, which
    does not fail a run whose model is good (`crbm evaluate` can retry it)."""
    from crbm_core.errors import CrbmError
    from crbm_core.report import evaluate_model_file

    rec_path = store.recording(store.run(run_id)["recording_id"])["path"]
    try:
        path, _ = evaluate_model_file(model_path, rec_path)
    except (CrbmError, ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        return f"; no report ({type(exc).__name__}: {exc})"
    store.set_report_path(run_id, path)
    return ""


def run_job(store, run_id: int) -> str:
    """Train run `run_id` of `store` to its end; returns the final status."""
    from crbm_core.modelfile import save_checkpoint
    from crbm_core.run_inputs import save_result
    from crbm_core.train import train

    if not store.set_status(run_id, "running", pid=os.getpid(), only_from=("queued",)):
        return "not claimed"  # cancelled, or claimed by another manager's worker: nothing to do
    signalled = {"now": False}

    def on_signal(signum, frame):
        signalled["now"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        run = store.run(run_id)
        inputs, config = _inputs(store, run)
        state = inputs.state
        if state is not None:
            store.set_resumed_from(run_id, state.update)
        out = Path(run["model_path"])
        polled = {"t": 0.0, "cancel": False}

        def should_stop() -> bool:
            now = time.monotonic()
            if signalled["now"]:
                return True
            if now - polled["t"] >= CANCEL_POLL_SECONDS:
                polled["t"] = now
                polled["cancel"] = store.cancel_requested(run_id)
            return polled["cancel"]

        def checkpoint(st, cfg):
            save_checkpoint(out, st, config, cfg, provenance=inputs.provenance, split=inputs.split)
            store.set_checkpoint(run_id, st.update)

        result = train(
            inputs.data,
            config,
            state=state,
            callback=lambda event: store.add_progress(run_id, event),
            checkpoint=checkpoint,
            should_stop=should_stop,
        )
        if result.status == "stopped":
            cancel = store.cancel_requested(run_id)
            status = "cancelled" if cancel else "interrupted"
            why = "cancelled" if cancel else "stopped by a signal"
            store.set_status(
                run_id, status, message=f"{why} at update {result.state.update}; resumable"
            )
            return status
        save_result(out, result, config, inputs)
        store.set_checkpoint(run_id, result.state.update)
        notes = [result.message, inputs.note]
        message = "; ".join(n for n in notes if n) + _write_report(store, run_id, out)
        store.set_status(run_id, result.status, message=message)
        return result.status
    except Exception as exc:
        from crbm_core.errors import CrbmError

        message = str(exc) if isinstance(exc, CrbmError) else f"{type(exc).__name__}: {exc}"
        store.set_status(run_id, "failed", message=message, traceback=traceback.format_exc())
        return "failed"


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
