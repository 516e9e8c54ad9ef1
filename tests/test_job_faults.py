"""Fault tests of the job system with real processes and real kills: the server SIGKILLed while
two jobs run, and a checkpoint damaged on disk. Nothing in the store may be lost or left
inconsistent; resumed runs are bit-for-bit the runs that were never stopped."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from app.jobs import PROJECT_ROOT, JobManager, pid_alive, worker_env
from app.store import RunStore
from crbm_core.modelfile import load_model
from crbm_core.recording import Recording
from crbm_core.report import file_digest, load_report
from crbm_core.split import choose_split
from crbm_core.train import TrainConfig, train

T, N = 400, 120
SMALL = dict(n_hidden=4, batch_size=20, n_chains=20, n_mc=2, progress_every=10, seed=3)
TIMEOUT = 180.0  # a guard against a hung test, not a speed requirement


def _spikes():
    return (np.random.default_rng(0).random((T, N)) < 0.05).astype(np.uint8)


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "fish.h5"
    Recording.from_arrays(_spikes(), np.zeros((N, 3)), frame_rate=2.0, name="tiny").save(path)
    return path


def _until(condition, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _uninterrupted(cfg) -> np.ndarray:
    """Independent truth: the same run trained in one go in this process."""
    data = choose_split(_spikes()).apply(_spikes())[0]
    return train(data, TrainConfig(**cfg)).model.weights


def _store_is_consistent(store: RunStore) -> None:
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()


SERVER = textwrap.dedent(
    """
    import json, sys, time
    from app.jobs import JobManager
    manager = JobManager(sys.argv[1], max_workers=2).start(interval=0.1)
    short = manager.submit(sys.argv[2], json.loads(sys.argv[3]))
    long = manager.submit(sys.argv[2], json.loads(sys.argv[4]))
    print(short, long, flush=True)
    while True:
        time.sleep(1)
    """
)


@pytest.mark.slow
def test_server_sigkilled_while_two_jobs_run(tmp_path, recording):
    """The server dies by SIGKILL while two jobs run; one job finishes meanwhile, the other's
    worker dies with its machine (SIGKILL, as a container stop does). On restart both runs are
    found: the finished one intact, the other interrupted and resumable."""
    data_dir = tmp_path / "data"
    short_cfg = dict(SMALL, n_updates=100)
    long_cfg = dict(SMALL, n_updates=1500, checkpoint_every=100, seed=4)
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(data_dir), str(recording)]
        + [TrainConfig(**short_cfg).to_json(), TrainConfig(**long_cfg).to_json()],
        stdout=subprocess.PIPE,
        text=True,
        env=worker_env(),
        cwd=str(PROJECT_ROOT),
    )
    try:
        short_id, long_id = map(int, server.stdout.readline().split())
        store = RunStore(data_dir)
        _until(lambda: store.run(short_id)["status"] in ("finished", "not converged"), "short")
        _until(lambda: (store.run(long_id)["checkpoint_update"] or 0) >= 200, "a checkpoint")
        assert store.run(long_id)["status"] == "running"
    finally:
        server.kill()
        server.wait()
    worker = store.run(long_id)["pid"]
    os.kill(worker, signal.SIGKILL)
    _until(lambda: not pid_alive(worker), "the worker to die")
    finished = store.run(short_id)
    model_digest = file_digest(finished["model_path"])
    checkpointed = store.run(long_id)["checkpoint_update"]
    reached = store.progress(long_id)[-1]["update"]

    restarted = JobManager(store, max_workers=2)  # the server's restart
    assert store.run(short_id) == finished  # untouched, its files intact
    assert file_digest(finished["model_path"]) == model_digest
    assert load_report(finished["report_path"])["attrs"]["model_sha256"] == model_digest
    assert [e["update"] for e in store.progress(short_id)] == list(range(10, 101, 10))
    assert store.run(long_id)["status"] == "interrupted"
    restarted.resume(long_id)
    (run,) = restarted.wait(long_id, timeout=TIMEOUT)
    assert run["status"] in ("finished", "not converged"), run["message"] + run["traceback"]
    assert run["resumed_from"] >= checkpointed and reached - run["resumed_from"] <= 100
    assert [e["update"] for e in store.progress(long_id)] == list(range(10, 1501, 10))
    np.testing.assert_array_equal(load_model(run["model_path"]).weights, _uninterrupted(long_cfg))
    _store_is_consistent(store)


def _flip_weights(path) -> None:
    """Damage the stored training weights in place, as a bad sector would."""
    with h5py.File(path, "r") as f:
        d = f["state/model/weights"]
        offset, size = d.id.get_chunk_info(0).byte_offset, d.id.get_storage_size()
    with open(path, "r+b") as fh:
        fh.seek(offset + size // 2)
        fh.write(b"\xff" * 8)


def test_damaged_checkpoint_resumes_from_the_previous_one(tmp_path, recording):
    store = RunStore(tmp_path / "data")
    cfg = dict(SMALL, n_updates=600, checkpoint_every=100)
    manager = JobManager(store, max_workers=1)
    run_id = manager.submit(recording, cfg)
    _until(lambda: (store.run(run_id)["checkpoint_update"] or 0) >= 200, "two checkpoints")
    pid = store.run(run_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    _until(lambda: not pid_alive(pid), "the worker to die")
    latest = store.run(run_id)["checkpoint_update"]
    _flip_weights(store.run(run_id)["model_path"])
    restarted = JobManager(store, max_workers=1)
    restarted.resume(run_id)
    (run,) = restarted.wait(run_id, timeout=TIMEOUT)
    assert run["status"] in ("finished", "not converged"), run["message"] + run["traceback"]
    assert run["resumed_from"] == latest - 100  # the previous good checkpoint
    assert "damaged" in run["message"] and "previous checkpoint" in run["message"]
    assert [e["update"] for e in store.progress(run_id)] == list(range(10, 601, 10))
    np.testing.assert_array_equal(load_model(run["model_path"]).weights, _uninterrupted(cfg))
    _store_is_consistent(store)
