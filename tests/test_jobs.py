"""Job manager: real worker processes, real SQLite, real HDF5 files, real kills."""

import os
import signal
import time

import numpy as np
import pytest

from app.jobs import JobError, JobManager, pid_alive
from app.store import RunStore, UnknownRunError
from crbm_core.errors import ParameterError, RecordingError
from crbm_core.modelfile import load_checkpoint, load_model, load_split
from crbm_core.recording import Recording
from crbm_core.report import file_digest, load_report
from crbm_core.split import choose_split
from crbm_core.train import TrainConfig, train

T, N = 400, 120
SMALL = dict(n_hidden=4, batch_size=20, n_chains=20, n_mc=2, progress_every=10, seed=3)
TIMEOUT = 120.0  # a guard against a hung test, not a speed requirement


def _spikes(seed=0):
    return (np.random.default_rng(seed).random((T, N)) < 0.05).astype(np.uint8)


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "fish.h5"
    Recording.from_arrays(_spikes(), np.zeros((N, 3)), frame_rate=2.0, name="tiny").save(path)
    return path


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "data")


def _until(condition, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_submit_runs_to_the_end(store, recording):
    manager = JobManager(store, max_workers=2)
    run_id = manager.submit(recording, dict(SMALL, n_updates=300, checkpoint_every=100))
    (run,) = manager.wait(run_id, timeout=TIMEOUT)
    assert run["status"] in ("finished", "not converged"), run["message"] + run["traceback"]
    model = load_model(run["model_path"])
    assert int(model.meta["updates"]) == 300 and model.weights.shape == (N, 4)
    assert model.meta["status"] == run["status"]
    # the split is the one `crbm train` would choose, kept in the model file
    split = load_split(run["model_path"])
    expected = choose_split(_spikes())
    np.testing.assert_array_equal(split["train"], expected.train)
    np.testing.assert_array_equal(split["test"], expected.test)
    # every progress event is in the store, as in the model file's own history
    events = store.progress(run_id)
    assert [e["update"] for e in events] == list(range(10, 301, 10))
    state, _, _ = load_checkpoint(run["model_path"])
    history = [e for e in state.history if "event" not in e]
    assert [e["rmse_v"] for e in events] == pytest.approx([e["rmse_v"] for e in history])
    assert run["pid"] is not None and run["started"] <= run["ended"]
    # the worker analysed the final model before ending the run: its report is there and says so
    report = load_report(run["report_path"])
    assert report["attrs"]["model_sha256"] == file_digest(run["model_path"])
    assert report["assemblies"]["strongest_hu"].shape == (N,)


def test_concurrency_limit_and_fifo(store, recording):
    manager = JobManager(store, max_workers=1)
    ids = [manager.submit(recording, dict(SMALL, n_updates=60, seed=s)) for s in range(3)]
    most = 0
    while not all(store.run(i)["status"] not in ("queued", "running") for i in ids):
        manager.poll()
        most = max(most, len(manager.running()))
        time.sleep(0.02)
    runs = manager.wait(ids, timeout=TIMEOUT)
    assert most <= 1
    assert all(r["status"] in ("finished", "not converged") for r in runs)
    # one at a time, in submission order: each starts after the previous one ended
    for before, after in zip(runs, runs[1:], strict=False):
        assert after["started"] >= before["ended"]


def test_cancel_queued_and_running(store, recording):
    manager = JobManager(store, max_workers=1)
    long_id = manager.submit(recording, dict(SMALL, n_updates=10**6, checkpoint_every=10**5))
    queued_id = manager.submit(recording, dict(SMALL, n_updates=100))
    assert store.run(queued_id)["status"] == "queued"
    assert manager.cancel(queued_id) == "cancelled"
    assert store.run(queued_id)["status"] == "cancelled"
    # progress streams into the store while the job runs
    _until(
        lambda: store.run(long_id)["status"] == "running" and store.progress(long_id), "progress"
    )
    assert manager.cancel(long_id) == "running"
    (run,) = manager.wait(long_id, timeout=TIMEOUT)
    assert run["status"] == "cancelled" and "cancelled at update" in run["message"]
    # the final checkpoint holds where it stopped, and the store says so
    state, _, _ = load_checkpoint(run["model_path"])
    assert state.update == run["checkpoint_update"] > 0
    assert store.progress(long_id)[-1]["update"] <= state.update < 10**6
    assert manager.poll() == []  # the cancelled queued run never starts
    with pytest.raises(JobError, match="only queued or running runs cancel"):
        manager.cancel(long_id)


def test_failed_job_keeps_the_manager_working(store, recording, tmp_path):
    manager = JobManager(store, max_workers=1)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(open(recording, "rb").read())
    rec_id = store.add_recording(bad)
    bad.write_bytes(os.urandom(5000))  # the file is damaged after it was indexed
    bad_id = manager.submit(rec_id, dict(SMALL, n_updates=50))
    good_id = manager.submit(recording, dict(SMALL, n_updates=50))
    bad_run, good_run = manager.wait([bad_id, good_id], timeout=TIMEOUT)
    assert bad_run["status"] == "failed"
    assert "bad.h5" in bad_run["message"] and "not an HDF5 file" in bad_run["message"]
    assert "Traceback" in bad_run["traceback"] and "RecordingError" in bad_run["traceback"]
    assert good_run["status"] in ("finished", "not converged")
    # a bad file given at submission is refused there and creates no run
    with pytest.raises(RecordingError, match="not an HDF5 file"):
        manager.submit(bad, dict(SMALL, n_updates=50))
    assert len(store.runs()) == 2
    with pytest.raises(JobError, match="only interrupted, cancelled, failed runs resume"):
        manager.resume(good_id)


def test_sigkill_restart_resume_loses_at_most_one_checkpoint_interval(store, recording):
    cfg = dict(SMALL, n_updates=2000, checkpoint_every=100)
    first = JobManager(store, max_workers=1)
    run_id = first.submit(recording, cfg)
    _until(lambda: (store.run(run_id)["checkpoint_update"] or 0) >= 200, "a checkpoint")
    pid = store.run(run_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    _until(lambda: not pid_alive(pid), "the worker to die")
    reached = store.progress(run_id)[-1]["update"]
    checkpointed = store.run(run_id)["checkpoint_update"]
    assert checkpointed < 2000 and store.run(run_id)["status"] == "running"
    # the "server" restarts: a new manager on the same store finds the run interrupted
    second = JobManager(store, max_workers=1)
    assert store.run(run_id)["status"] == "interrupted"
    second.resume(run_id)
    (run,) = second.wait(run_id, timeout=TIMEOUT)
    assert run["status"] in ("finished", "not converged"), run["message"] + run["traceback"]
    assert run["resumed_from"] >= checkpointed
    assert reached - run["resumed_from"] <= cfg["checkpoint_every"]
    assert int(load_model(run["model_path"]).meta["updates"]) == 2000
    assert [e["update"] for e in store.progress(run_id)] == list(range(10, 2001, 10))
    # independent truth: the same run trained in one go, in this process, is identical
    data = choose_split(_spikes()).apply(_spikes())[0]
    reference = train(data, TrainConfig(**cfg))
    np.testing.assert_array_equal(load_model(run["model_path"]).weights, reference.model.weights)


def test_worker_killed_under_a_live_manager_is_interrupted(store, recording):
    manager = JobManager(store, max_workers=1)
    run_id = manager.submit(recording, dict(SMALL, n_updates=10**6, checkpoint_every=50))
    _until(lambda: (store.run(run_id)["checkpoint_update"] or 0) >= 50, "a checkpoint")
    os.kill(store.run(run_id)["pid"], signal.SIGKILL)
    (run,) = manager.wait(run_id, timeout=TIMEOUT)
    assert run["status"] == "interrupted" and "signal 9" in run["message"]


def test_background_thread_starts_queued_runs(store, recording):
    with JobManager(store, max_workers=1).start(interval=0.05) as manager:
        ids = [manager.submit(recording, dict(SMALL, n_updates=30, seed=s)) for s in range(2)]
        # no poll() from here on: the second run is started by the thread once a slot frees
        _until(
            lambda: all(
                store.run(i)["status"] == "finished" or store.run(i)["status"] == "not converged"
                for i in ids
            ),
            "both runs",
        )
    assert int(load_model(store.run(ids[1])["model_path"]).meta["updates"]) == 30


def test_auto_resume_requeues_runs_of_a_dead_server(store, recording):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rec_id = store.add_recording(recording)
    run_id = store.create_run(rec_id, TrainConfig(**SMALL, n_updates=30).to_json())
    store.set_status(run_id, "running", pid=dead.pid)  # its worker died with the server
    manager = JobManager(store, max_workers=1, auto_resume=True)
    (run,) = manager.wait(run_id, timeout=TIMEOUT)
    assert run["status"] in ("finished", "not converged")
    assert run["resumed_from"] is None  # no checkpoint had been written: it started over


def test_bad_requests(store, recording):
    manager = JobManager(store, max_workers=1)
    with pytest.raises(ParameterError, match="n_hidden"):
        manager.submit(recording, dict(n_hidden=0))
    with pytest.raises(ParameterError, match="foo"):
        manager.submit(recording, dict(foo=1))
    with pytest.raises(ParameterError, match="max_workers"):
        JobManager(store, max_workers=0)
    for call in (manager.cancel, manager.resume):
        with pytest.raises(UnknownRunError, match="no run with id 77"):
            call(77)
    assert store.runs() == []


def test_a_reused_pid_is_not_taken_for_the_worker(store, recording):
    rec_id = store.add_recording(recording)
    run_id = store.create_run(rec_id, TrainConfig(**SMALL, n_updates=30).to_json())
    store.set_status(run_id, "running", pid=os.getpid())  # alive, but not a worker
    JobManager(store, max_workers=1)
    assert store.run(run_id)["status"] == "interrupted"


def test_two_managers_starting_the_same_run_do_not_disturb_it(store, recording):
    """Two managers (the server and a `crbm jobs` call) may both start a worker for one queued
    run before either worker has claimed it. One claims it; the other exits at once, and
    reaping it must not mark the healthy run interrupted."""
    rec_id = store.add_recording(recording)
    run_id = store.create_run(rec_id, TrainConfig(**SMALL, n_updates=300).to_json())
    first, second = (JobManager(store, max_workers=1, recover=False) for _ in range(2))
    assert first.poll() == [run_id] and second.poll() == [run_id]  # neither worker claimed yet
    procs = [m._procs[run_id] for m in (first, second)]
    _until(lambda: all(p.poll() is not None for p in procs), "both workers to exit")
    for m in (first, second):
        m.poll()
    run = store.run(run_id)
    assert run["status"] in ("finished", "not converged"), run["message"]
    assert sorted(p.returncode for p in procs) == [0, 0]
