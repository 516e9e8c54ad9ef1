"""Job manager, Dask backend: real clusters (a LocalCluster, and separately started `dask
scheduler` / `dask worker` processes on 127.0.0.1), real SQLite, real HDF5 files, real kills."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster, Queue

from app.jobs import JobError, JobManager, worker_env
from app.store import RunStore
from crbm_core.modelfile import load_checkpoint, load_model
from crbm_core.recording import Recording
from crbm_core.report import file_digest, load_report
from crbm_core.split import choose_split
from crbm_core.train import TrainConfig, train

T, N = 400, 120
SMALL = dict(n_hidden=4, batch_size=20, n_chains=20, n_mc=2, progress_every=10, seed=3)
TIMEOUT = 120.0  # a guard against a hung test, not a speed requirement
DONE = ("finished", "not converged")


def _spikes(seed=0):
    return (np.random.default_rng(seed).random((T, N)) < 0.05).astype(np.uint8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(condition, what, timeout=TIMEOUT, poll=None):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if poll is not None:
            poll()
        time.sleep(0.02)


def _assert_progress_matches_model(store, run):
    """The store's progress events are the model file's own history, update for update."""
    events = store.progress(run["id"])
    state, _, _ = load_checkpoint(run["model_path"])
    history = [e for e in state.history if "event" not in e]
    assert [e["update"] for e in events] == [e["update"] for e in history]
    assert [e["rmse_v"] for e in events] == pytest.approx([e["rmse_v"] for e in history])
    return events


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "fish.h5"
    Recording.from_arrays(_spikes(), np.zeros((N, 3)), frame_rate=2.0, name="tiny").save(path)
    return path


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "data")


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as c:
        yield c


@pytest.fixture(scope="module")
def observer(cluster):
    """A client of our own, to ask the scheduler what it sees."""
    with Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture
def manager(cluster, store, monkeypatch):
    monkeypatch.delenv("CRBM_DASK_SCHEDULER", raising=False)
    with JobManager(store, scheduler=cluster.scheduler_address) as m:
        yield m


# -- a LocalCluster --------------------------------------------------------------------------------
def test_runs_finish_on_the_cluster_with_progress_and_report(manager, store, recording, cluster):
    ids = [
        manager.submit(recording, dict(SMALL, n_updates=300, checkpoint_every=100, seed=s))
        for s in (3, 4)
    ]
    assert all(manager.spawned(i) for i in ids)  # both submitted: the cluster has 2 threads
    runs = manager.wait(ids, timeout=TIMEOUT)
    for run in runs:
        assert run["status"] in DONE, run["message"] + run["traceback"]
        assert run["host"] == f"dask:{cluster.scheduler_address}" and run["pid"] is None
        assert int(load_model(run["model_path"]).meta["updates"]) == 300
        assert run["checkpoint_update"] == 300 and run["resumed_from"] is None
        events = _assert_progress_matches_model(store, run)
        assert [e["update"] for e in events] == list(range(10, 301, 10))
        report = load_report(run["report_path"])
        assert report["attrs"]["model_sha256"] == file_digest(run["model_path"])
    # the two seeds trained two different models, each the one `train` makes in-process
    data = choose_split(_spikes()).apply(_spikes())[0]
    reference = train(data, TrainConfig(**dict(SMALL, n_updates=300, checkpoint_every=100, seed=4)))
    np.testing.assert_array_equal(
        load_model(runs[1]["model_path"]).weights, reference.model.weights
    )


def test_cancel_on_the_cluster(cluster, store, recording, monkeypatch):
    monkeypatch.delenv("CRBM_DASK_SCHEDULER", raising=False)
    with JobManager(store, max_workers=1, scheduler=cluster.scheduler_address) as manager:
        long_id = manager.submit(recording, dict(SMALL, n_updates=10**6, checkpoint_every=10**5))
        queued_id = manager.submit(recording, dict(SMALL, n_updates=100))
        # max_workers caps the cluster's 2 threads: the second run waits in the store
        assert store.run(queued_id)["status"] == "queued"
        assert manager.cancel(queued_id) == "cancelled"
        _until(lambda: store.progress(long_id), "progress", poll=manager.poll)
        assert "running on Dask worker tcp://" in store.run(long_id)["message"]
        # a local-mode manager on the same store leaves the Dask run alone and cannot cancel it
        local = JobManager(store, max_workers=1)
        assert store.run(long_id)["status"] == "running"
        with pytest.raises(JobError, match="runs on the Dask cluster"):
            local.cancel(long_id)
        assert manager.cancel(long_id) == "running"
        (run,) = manager.wait(long_id, timeout=TIMEOUT)
        assert run["status"] == "cancelled" and "cancelled at update" in run["message"]
        assert run["cancel_requested"] == 1
        state, _, _ = load_checkpoint(run["model_path"])
        assert state.update == run["checkpoint_update"] > 0
        assert store.progress(long_id)[-1]["update"] <= state.update < 10**6
        # the cancelled queued run resumes as a new Dask task (from scratch) and finishes
        manager.resume(queued_id)
        (run,) = manager.wait(queued_id, timeout=TIMEOUT)
        assert run["status"] in DONE and run["checkpoint_update"] == 100
        assert [e["update"] for e in store.progress(queued_id)] == list(range(10, 101, 10))


def test_failed_task_keeps_the_manager_working(manager, store, recording, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(recording.read_bytes())
    rec_id = store.add_recording(bad)
    bad.write_bytes(os.urandom(5000))  # damaged after it was indexed: the task fails reading it
    bad_id = manager.submit(rec_id, dict(SMALL, n_updates=50))
    good_id = manager.submit(recording, dict(SMALL, n_updates=50))
    bad_run, good_run = manager.wait([bad_id, good_id], timeout=TIMEOUT)
    assert bad_run["status"] == "failed"
    assert "bad.h5" in bad_run["message"] and "not an HDF5 file" in bad_run["message"]
    assert "Traceback" in bad_run["traceback"] and "RecordingError" in bad_run["traceback"]
    assert good_run["status"] in DONE
    again = manager.submit(recording, dict(SMALL, n_updates=20))
    assert manager.wait(again, timeout=TIMEOUT)[0]["status"] in DONE


def test_a_task_whose_workers_keep_dying_is_interrupted_and_resumes(
    manager, store, recording, cluster, observer
):
    """Past the scheduler's allowed failures (0 here) a killed worker's task errs: its run ends
    "interrupted" with the reason, and resumes from its last checkpoint as a new task. Events
    that never reached the store (here taken off the queue by another client, as a restarted
    scheduler would lose them) come back from the checkpoint's history."""
    cfg = dict(SMALL, n_updates=1000, checkpoint_every=50)
    run_id = manager.submit(recording, cfg)  # submitted; the manager is not polled until the kill
    thief = Queue(manager._dask.queue_name, client=observer)
    taken = []

    def took_a_checkpoint():
        taken.extend(thief.get(batch=True))
        return any(e["kind"] == "checkpoint" and e["update"] >= 100 for e in taken)

    _until(took_a_checkpoint, "a checkpoint")
    (busy,) = [w for w, keys in observer.processing().items() if keys]
    allowed, cluster.scheduler.allowed_failures = cluster.scheduler.allowed_failures, 0
    try:
        pid = observer.run(os.getpid, workers=[busy])[busy]
        os.kill(pid, signal.SIGKILL)  # its nanny starts a new worker process
        (run,) = manager.wait(run_id, timeout=TIMEOUT)
    finally:
        cluster.scheduler.allowed_failures = allowed
    assert run["status"] == "interrupted" and "Dask workers kept dying" in run["message"]
    assert all(e["update"] > 100 for e in store.progress(run_id))  # 10 … 100 were taken
    kept = load_checkpoint(run["model_path"])[0].update
    assert kept >= 100
    manager.resume(run_id)
    (run,) = manager.wait(run_id, timeout=TIMEOUT)
    assert run["status"] in DONE, run["message"] + run["traceback"]
    assert run["resumed_from"] == kept and run["checkpoint_update"] == 1000
    events = _assert_progress_matches_model(store, run)
    assert [e["update"] for e in events] == list(range(10, 1001, 10))


def test_an_unreachable_scheduler_is_a_clear_error(store):
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with pytest.raises(JobError, match=f"cannot reach the Dask scheduler at '{address}'"):
            JobManager(store, scheduler=address)


def test_a_scheduler_that_goes_away_is_a_clear_error(store, recording, monkeypatch):
    monkeypatch.delenv("CRBM_DASK_SCHEDULER", raising=False)
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        lone = LocalCluster(n_workers=0, processes=False, dashboard_address=":0")
        manager = JobManager(store, scheduler=lone.scheduler_address)
        run_id = manager.submit(recording, dict(SMALL, n_updates=20))
        assert store.run(run_id)["status"] == "queued"  # no worker threads: nothing submitted
        lone.close()
        with pytest.raises(JobError, match=f"lost the Dask scheduler at {lone.scheduler_address}"):
            manager.poll()
        manager.close()
    assert store.run(run_id)["status"] == "queued"  # the store is untouched


# -- separately started scheduler and workers ------------------------------------------------------
@pytest.fixture(scope="module")
def dask_processes(tmp_path_factory):
    """`dask scheduler` and two single-thread `dask worker`s (no nanny: the worker process is
    the one to kill) on 127.0.0.1; yields (address, {worker pid: Popen})."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask-logs")
    env = worker_env()  # thread limits, this project importable
    procs = []

    def start(name, *args):
        with open(logs / f"{name}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "dask", *args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port))
        for i in range(2):
            start(f"worker{i}", "worker", address, "--nthreads", "1", "--no-nanny")
        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
            pids = client.run(os.getpid)  # {worker address: its process id}
        by_pid = {p.pid: p for p in procs[1:]}
        assert sorted(pids.values()) == sorted(by_pid)
        yield address, by_pid
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.slow
def test_separate_processes_short_lived_submit_and_worker_killed_mid_task(
    dask_processes, store, recording, monkeypatch
):
    address, workers = dask_processes
    monkeypatch.setenv("CRBM_DASK_SCHEDULER", address)
    # `crbm jobs submit` in its own process, which exits at once: its task runs on regardless
    cli = subprocess.run(
        [sys.executable, "-m", "crbm_core.cli", "jobs", "submit", str(recording)]
        + ["--n-updates", "200", "--n-hidden", "4", "--progress-every", "10", "--seed", "5"],
        env={**worker_env(), "CRBM_DATA_DIR": str(store.data_dir)},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip() == "run 1: started"
    with JobManager(store) as manager:  # picks the scheduler up from CRBM_DASK_SCHEDULER
        (run,) = manager.wait(1, timeout=TIMEOUT)
        assert run["status"] in DONE, run["message"] + run["traceback"]
        assert run["host"] == f"dask:{address}"
        assert [e["update"] for e in store.progress(1)] == list(range(10, 201, 10))

        # a longer run; its worker is SIGKILLed after the second checkpoint
        cfg = dict(SMALL, n_updates=1000, checkpoint_every=50)
        run_id = manager.submit(recording, cfg)
        _until(
            lambda: (store.run(run_id)["checkpoint_update"] or 0) >= 100,
            "a checkpoint",
            poll=manager.poll,
        )
        with Client(address, set_as_default=False) as observer:
            (busy,) = [w for w, keys in observer.processing().items() if keys]
            pid = observer.run(os.getpid, workers=[busy])[busy]
        assert busy in store.run(run_id)["message"]
        os.killpg(workers[pid].pid, signal.SIGKILL)
        workers[pid].wait()
        checkpointed = store.run(run_id)["checkpoint_update"]
        # the scheduler reruns the task on the other worker, which resumes from the checkpoint
        (run,) = manager.wait(run_id, timeout=TIMEOUT)
    assert run["status"] in DONE, run["message"] + run["traceback"]
    assert checkpointed <= run["resumed_from"] < 1000
    assert run["checkpoint_update"] == 1000
    assert int(load_model(run["model_path"]).meta["updates"]) == 1000
    events = _assert_progress_matches_model(store, run)
    assert [e["update"] for e in events] == list(range(10, 1001, 10))
    assert load_report(run["report_path"])["attrs"]["model_sha256"] == file_digest(
        run["model_path"]
    )
    # independent truth: the same run trained in one go, in this process, is identical
    data = choose_split(_spikes()).apply(_spikes())[0]
    reference = train(data, TrainConfig(**cfg))
    np.testing.assert_array_equal(load_model(run["model_path"]).weights, reference.model.weights)
