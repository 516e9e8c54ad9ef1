"""Dask backend of the job manager: training runs as tasks on a Dask cluster's workers.

`JobManager` uses it when given `scheduler=` or when `CRBM_DASK_SCHEDULER=tcp://host:port` is
set. The run store stays the single record, written only by managers: a task never opens the
SQLite file (SQLite on a network volume is unsafe). Instead each task posts what happens to its
run (started on worker W, resumed from update k, progress events, checkpoints, report path, final
status with message and traceback) to one `distributed.Queue` per store on the scheduler, and
every `poll()` drains that queue into the store, so the dashboard reads runs exactly as it does
for local workers. The queue lives on the scheduler, so a run submitted by a short-lived
`crbm jobs submit` (whose task is `fire_and_forget`) reports to whichever manager polls next.

- Starting: `poll()` claims a queued run in the store (queued → running, host "dask:<scheduler>";
  the atomic claim keeps two managers from submitting it twice) and submits `run_task` with a key
  made of the run id, the store's id and the time it was queued (a resumed run gets a new key).
  The concurrency limit is the cluster's: runs are submitted while this store has fewer running
  runs than the workers have threads (and than `max_workers`, when given); the rest stay
  "queued" in the store, FIFO, and a cancel of them is immediate.
- Cancel: a `distributed.Event` per task that the task's `should_stop` reads every
  CANCEL_POLL_SECONDS; the task writes a final checkpoint and ends "cancelled".
- A dead worker: the scheduler reruns the task on another worker (up to
  `distributed.scheduler.allowed-failures` times; `retries` covers exceptions raised by the task
  itself). The rerun finds the checkpoint in the run's model file and continues from it, exactly
  as a local resume does; repeated progress updates overwrite by update. A task the scheduler no
  longer knows, or that erred, leaves its run "interrupted" (or "failed"), resumable.
- Several managers (the server, `crbm jobs` calls) may poll one store: a `distributed.Lock` per
  store lets one drain and submit at a time.

Shared volume (required): workers read the recording at the path indexed in the store and write
the model and report files under `<data_dir>/runs/<id>/`, so the recordings and the data
directory must be mounted at the same paths on the workers as on the server (e.g. one NFS or
bind-mounted volume). The SQLite file itself is only read and written by managers. Workers must
be able to import this project (`app`, `crbm_core`): install it in the workers' environment or
set PYTHONPATH; start them with OMP_NUM_THREADS=1 and NUMBA_NUM_THREADS set to the cores per
worker thread (see `app.jobs.worker_env`). The connect timeout is Dask's own
`distributed.comm.timeouts.connect` (env DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import weakref
from contextlib import contextmanager
from traceback import format_exception

from distributed import Client, Event, Future, Lock, Queue, fire_and_forget, get_worker

from .job_worker import train_run
from .jobs import DASK_SCHEDULER_ENV, JobError
from .store import RunStore, StoreError

log = logging.getLogger(__name__)

TASK_RETRIES = 2  # reruns of a task that raised (a dead worker is governed by allowed-failures)
LOCK_WAIT_SECONDS = 5.0  # how long a poll waits for another manager's poll of the same store
SUBMIT_CONFIRM_SECONDS = 10.0  # wait for the scheduler to know a task just submitted
# task states in which the task will still run (or is running); others mean it ended or is gone
ALIVE = {"released", "waiting", "no-worker", "queued", "processing"}


def task_key(store_id: str, run: dict) -> str:
    """The Dask key of the task running `run` now: new for every queueing (a resume)."""
    return f"crbm-run-{run['id']}-{store_id[:12]}-{round(float(run['queued']) * 1e6)}"


def _cancel_name(key: str) -> str:
    return f"crbm-cancel-{key}"


class TaskSink:
    """The run sink of a Dask task (see `job_worker.RunSink`): every call becomes one message
    on the store's event queue; cancel is the task's Dask event."""

    def __init__(self, queue: Queue, cancel: Event, run_id: int, key: str):
        self.queue, self.cancel, self.run_id, self.key = queue, cancel, int(run_id), key

    def post(self, kind: str, **data) -> None:
        self.queue.put({"run": self.run_id, "key": self.key, "kind": kind, **data})

    def add_progress(self, run_id: int, event: dict) -> None:
        self.post("progress", event=json.loads(json.dumps(event)))  # what the store would keep

    def set_checkpoint(self, run_id: int, update: int) -> None:
        self.post("checkpoint", update=int(update))

    def set_resumed_from(self, run_id: int, update: int) -> None:
        self.post("resumed", update=int(update))

    def set_report_path(self, run_id: int, path) -> None:
        self.post("report", path=str(path))

    def set_status(self, run_id: int, status: str, *, message=None, traceback=None) -> bool:
        self.post("status", status=status, message=message, traceback=traceback)
        return True

    def cancel_requested(self, run_id: int) -> bool:
        return bool(self.cancel.is_set())


def run_task(run: dict, recording: dict, key: str, queue_name: str) -> str:
    """The Dask task of one run (`run` and `recording` are its store rows): train it with the
    local worker's code, reporting through the store's event queue; returns the final status.
    Runs on a worker, so it must live in an importable module."""
    worker = get_worker()
    sink = TaskSink(Queue(queue_name), Event(_cancel_name(key)), run["id"], key)
    sink.post("started", worker=worker.address, hostname=socket.gethostname(), pid=os.getpid())
    _repost_history(sink, run)
    return train_run(sink, run, recording)


def _repost_history(sink: TaskSink, run: dict) -> None:
    """Post again the progress events kept in the run's checkpoint: events that never reached
    the store (a scheduler that restarted lost its queue) come back; the rest overwrite
    themselves with the same values."""
    path = run["model_path"]
    if not os.path.exists(path):
        return
    from crbm_core.errors import CrbmError
    from crbm_core.modelfile import load_checkpoint

    try:
        state, _, _ = load_checkpoint(path)
    except (CrbmError, OSError, KeyError):
        return  # train_run reports an unreadable checkpoint
    events = [e for e in state.history if "event" not in e]  # not the retry markers
    if events:
        sink.post("history", events=json.loads(json.dumps(events)))


class DaskBackend:
    """Submit, follow and cancel the runs of `store` on the Dask scheduler at `address`."""

    def __init__(self, store: RunStore, address: str):
        self.store = store
        try:
            self.client = Client(address, set_as_default=False)  # Dask's connect timeout
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise JobError(
                f"cannot reach the Dask scheduler at {address!r} ({DASK_SCHEDULER_ENV}): {exc}"
            ) from None
        self.address = self.client.scheduler_info(n_workers=0)["address"]
        self.host = f"dask:{self.address}"  # the store's host column of runs sent to it
        self.store_id = store.store_id()
        self.queue_name = f"crbm-events-{self.store_id}"
        self.queue = Queue(self.queue_name, client=self.client)
        self._lock = Lock(
            f"crbm-manager-{self.store_id}",
            scheduler_rpc=self.client.scheduler,
            loop=self.client.loop,
        )
        self.futures: dict[int, Future] = {}
        # an orderly disconnect at exit flushes the fire-and-forget requests of a short-lived
        # `crbm jobs submit` (the client is not Dask's default one, which Dask closes itself)
        weakref.finalize(self, self.client.close)

    def close(self) -> None:
        self.futures.clear()
        self.client.close()

    # -- the poll --------------------------------------------------------------------------------
    def poll(self, limit: int | None) -> list[int]:
        """Drain events into the store, mark lost tasks' runs, submit queued runs into free
        worker threads (FIFO, at most `limit` running when given); returns the ids submitted."""
        with self._reachable(), self._locked() as got:
            if not got:
                return []
            self._sync()
            return self._start_queued(limit)

    def recover(self) -> list[int]:
        """Drain events, then mark runs whose task is gone "interrupted"; returns their ids."""
        with self._reachable(), self._locked() as got:
            return self._sync() if got else []

    @contextmanager
    def _reachable(self):
        """A scheduler that went away is a JobError naming it (after Dask's connect timeout)."""
        try:
            yield
        except (OSError, TimeoutError) as exc:
            raise JobError(f"lost the Dask scheduler at {self.address}: {exc}") from None

    @contextmanager
    def _locked(self):
        """Hold the store's manager lock (True), or give up after LOCK_WAIT_SECONDS (False)."""
        got = self._lock.acquire(timeout=LOCK_WAIT_SECONDS)
        try:
            yield got
        finally:
            if got:
                self._lock.release()

    def _mine(self) -> list[dict]:
        return [r for r in self.store.runs("running") if r["host"] == self.host]

    def _sync(self) -> list[int]:
        mine = self._mine()
        keys = {r["id"]: task_key(self.store_id, r) for r in mine}
        # the scheduler's view first: a task that is gone by now has posted all it will post,
        # so after draining, a run still "running" with such a task is lost
        states = self.client.sync(self.client.scheduler.get_task_status, keys=list(keys.values()))
        for event in self.queue.get(batch=True):
            try:
                self._apply(event)
            except StoreError as exc:
                log.warning("Dask event %s not recorded: %s", event.get("kind"), exc)
        lost = []
        for run_id, key in keys.items():
            state = states.get(key)
            if state in ALIVE or self.store.run(run_id)["status"] != "running":
                continue
            status, message, tb = self._why_lost(run_id, state)
            if self.store.set_status(
                run_id, status, message=message, traceback=tb, only_from=("running",)
            ):
                lost.append(run_id)
        for run_id in list(self.futures):
            if self.store.run(run_id)["status"] != "running":
                del self.futures[run_id]  # releases the key: the result is not needed
        return lost

    def _why_lost(self, run_id: int, state: str | None) -> tuple[str, str, str | None]:
        future = self.futures.get(run_id)
        if state == "erred" and future is not None:
            exc = future.exception(timeout=10)
            if type(exc).__name__ == "KilledWorker":
                return "interrupted", f"its Dask workers kept dying ({exc}); resumable", None
            tb = "".join(format_exception(exc))
            return "failed", f"its Dask task failed: {type(exc).__name__}: {exc}", tb
        if state == "erred":
            return "interrupted", "its Dask task erred (see the Dask dashboard); resumable", None
        if state == "memory":
            return "interrupted", "its Dask task ended without reporting how; resumable", None
        return (
            "interrupted",
            f"its Dask task is gone from the scheduler at {self.address} (restarted, or the "
            "task's workers kept dying); resumable",
            None,
        )

    def _apply(self, event: dict) -> None:
        """Record one task event, unless it is stale (an earlier queueing of the run)."""
        run_id, kind = int(event["run"]), event["kind"]
        try:
            run = self.store.run(run_id)
        except StoreError:
            return  # not this store's run (or deleted)
        if run["status"] != "running" or event["key"] != task_key(self.store_id, run):
            log.debug("stale Dask event %s of run %s ignored", kind, run_id)
            return
        if kind == "progress":
            self.store.add_progress(run_id, event["event"])
        elif kind == "history":
            for progress in event["events"]:
                self.store.add_progress(run_id, progress)
        elif kind == "checkpoint":
            self.store.set_checkpoint(run_id, event["update"])
        elif kind == "started":
            self.store.set_message(
                run_id,
                f"running on Dask worker {event['worker']} "
                f"(pid {event['pid']} on {event['hostname']})",
            )
        elif kind == "resumed":
            self.store.set_resumed_from(run_id, event["update"])
            note = f"; resumed from the checkpoint at update {event['update']}"
            self.store.set_message(run_id, run["message"] + note)
        elif kind == "report":
            self.store.set_report_path(run_id, event["path"])
        elif kind == "status":
            self.store.set_status(
                run_id,
                event["status"],
                message=event["message"],
                traceback=event["traceback"],
                only_from=("running",),
            )
            Event(_cancel_name(event["key"]), client=self.client).clear()  # frees it
        else:
            log.warning("unknown Dask event %r of run %s", kind, run_id)

    def _start_queued(self, limit: int | None) -> list[int]:
        threads = sum(self.client.nthreads().values())
        cap = threads if limit is None else min(threads, limit)
        busy = len(self._mine())
        started = []
        for run in self.store.runs("queued"):
            if busy >= cap:
                break
            if not self.store.set_status(
                run["id"],
                "running",
                host=self.host,
                message=f"sent to the Dask scheduler at {self.address}; waiting for a worker",
                only_from=("queued",),
            ):
                continue  # cancelled meanwhile
            key = task_key(self.store_id, run)
            try:
                recording = self.store.recording(run["recording_id"])
                future = self.client.submit(
                    run_task,
                    run,
                    recording,
                    key,
                    self.queue_name,
                    key=key,
                    retries=TASK_RETRIES,
                    pure=False,
                )
                fire_and_forget(future)  # runs to its end even if this process exits
            except Exception as exc:
                self.store.set_status(
                    run["id"],
                    "interrupted",
                    message=f"could not submit to the Dask scheduler at {self.address}: {exc}",
                    only_from=("running",),
                )
                continue
            self.futures[run["id"]] = future
            started.append(run["id"])
            busy += 1
        self._confirm([task_key(self.store_id, self.store.run(i)) for i in started])
        return started

    def _confirm(self, keys: list[str]) -> None:
        """Wait until the scheduler knows the tasks just submitted, so that another manager's
        next poll never takes them for lost."""
        deadline = time.monotonic() + SUBMIT_CONFIRM_SECONDS
        while keys and time.monotonic() < deadline:
            states = self.client.sync(self.client.scheduler.get_task_status, keys=keys)
            keys = [k for k in keys if states.get(k) is None]
            if keys:
                time.sleep(0.01)

    # -- requests -------------------------------------------------------------------------------
    def owns(self, run: dict) -> bool:
        return run["host"] == self.host

    def cancel(self, run: dict) -> None:
        """Ask the run's task to stop at its next update (it checkpoints and ends cancelled)."""
        with self._reachable():
            Event(_cancel_name(task_key(self.store_id, run)), client=self.client).set()

    def submitted(self, run_id: int) -> bool:
        future = self.futures.get(int(run_id))
        return future is not None and not future.done()
