"""Run store: schema, life cycle, errors, real concurrent writer processes on one SQLite file."""

import json
import multiprocessing as mp
import sqlite3

import numpy as np
import pytest

from app.store import SCHEMA_VERSION, RunStore, StatusError, StoreError, UnknownRunError
from crbm_core.modelfile import recording_digest
from crbm_core.recording import Recording

N_WRITERS = 4
RUNS_PER_WRITER = 3
EVENTS_PER_RUN = 150


def _recording(path, seed=0, t=60, n=12):
    spikes = (np.random.default_rng(seed).random((t, n)) < 0.2).astype(np.uint8)
    Recording.from_arrays(spikes, np.zeros((n, 3)), frame_rate=2.0, name=f"fish {seed}").save(path)
    return spikes


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "data")


def test_fresh_store_is_wal_and_versioned(store):
    assert store.path.exists()
    assert store.schema_version() == SCHEMA_VERSION
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_recording_index(store, tmp_path):
    spikes = _recording(tmp_path / "a.h5")
    rid = store.add_recording(tmp_path / "a.h5")
    row = store.recording(rid)
    assert (row["n_frames"], row["n_neurons"], row["name"]) == (60, 12, "fish 0")
    assert row["sha256"] == recording_digest(spikes)
    assert store.add_recording(tmp_path / "a.h5") == rid  # same path: same row
    with pytest.raises(StoreError, match="no recording with id 99"):
        store.recording(99)


def test_run_life_cycle_and_errors(store, tmp_path):
    _recording(tmp_path / "a.h5")
    rid = store.add_recording(tmp_path / "a.h5")
    run_id = store.create_run(rid, json.dumps({"n_hidden": 4}))
    run = store.run(run_id)
    assert run["status"] == "queued"
    assert run["model_path"].endswith(f"runs/{run_id}/model.h5")
    with pytest.raises(StatusError, match="cannot go from 'queued' to 'finished'"):
        store.set_status(run_id, "finished")
    with pytest.raises(StatusError, match="unknown run status 'done'"):
        store.set_status(run_id, "done")
    assert store.set_status(run_id, "running", pid=1234)
    assert store.run(run_id)["pid"] == 1234 and store.run(run_id)["started"] is not None
    assert not store.set_status(run_id, "running", pid=5, only_from=("queued",))  # a lost race
    store.add_progress(run_id, {"update": 10, "rmse_v": 0.5})
    store.add_progress(run_id, {"update": 20, "rmse_v": 0.25})
    store.add_progress(run_id, {"update": 10, "rmse_v": 0.5})  # a resumed run repeats it
    assert [e["update"] for e in store.progress(run_id)] == [10, 20]
    assert [e["update"] for e in store.progress(run_id, after_update=10)] == [20]
    store.set_status(run_id, "finished", message="ok")
    assert store.run(run_id)["ended"] >= store.run(run_id)["started"]
    with pytest.raises(StatusError, match="cannot go from 'finished' to 'queued'"):
        store.set_status(run_id, "queued")
    for call in (store.run, store.progress, store.request_cancel):
        with pytest.raises(UnknownRunError, match="no run with id 42"):
            call(42)
    with pytest.raises(UnknownRunError, match="no run with id 42"):
        store.set_status(42, "running")
    with pytest.raises(StoreError, match="no recording with id 7"):
        store.create_run(7, "{}")


def _set_version(store, version):
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    conn.commit()
    conn.close()


def test_newer_schema_is_refused(store):
    _set_version(store, SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="newer crbm-explorer.*upgrade"):
        RunStore(store.data_dir)


def test_older_schema_without_migration_is_refused(store):
    _set_version(store, 0)
    with pytest.raises(StoreError, match="too old to migrate"):
        RunStore(store.data_dir)


def test_not_a_database(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "runs.sqlite").write_bytes(b"garbage, not SQLite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        RunStore(tmp_path / "d")
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        RunStore(tmp_path / "f")


def _writer(data_dir, recording_id, k, busy_ms, queue):
    """One job-like process: create runs, claim them, append progress, end them."""
    try:
        store = RunStore(data_dir, busy_timeout_ms=busy_ms)
        ids = []
        for r in range(RUNS_PER_WRITER):
            run_id = store.create_run(recording_id, json.dumps({"writer": k, "run": r}))
            store.set_status(run_id, "running", pid=1000 + k)
            for u in range(1, EVENTS_PER_RUN + 1):
                store.add_progress(run_id, {"update": u, "writer": k, "value": u * 0.5})
                if u % 50 == 0:
                    store.set_checkpoint(run_id, u)
            store.set_status(run_id, "finished", message=f"writer {k}")
            ids.append(run_id)
        queue.put((k, ids, None))
    except Exception as exc:  # reported to the parent, which fails the test with it
        queue.put((k, [], repr(exc)))


def test_concurrent_writer_processes_lose_nothing(store, tmp_path):
    _recording(tmp_path / "a.h5")
    rid = store.add_recording(tmp_path / "a.h5")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    # two writers with a 1 ms SQLite busy timeout: their SQLITE_BUSY must be retried by the
    # store itself, not escape as "database is locked"
    procs = [
        ctx.Process(target=_writer, args=(store.data_dir, rid, k, 1 if k < 2 else 5000, queue))
        for k in range(N_WRITERS)
    ]
    for p in procs:
        p.start()
    reads = 0
    while any(p.is_alive() for p in procs):  # the "server" reads while they write
        store.runs()
        reads += 1
    results = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert [err for _, _, err in results] == [None] * N_WRITERS
    runs = store.runs()
    assert len(runs) == N_WRITERS * RUNS_PER_WRITER
    assert all(r["status"] == "finished" and r["checkpoint_update"] == 150 for r in runs)
    by_writer = {k: ids for k, ids, _ in results}
    for k, ids in by_writer.items():
        for run_id in ids:
            events = store.progress(run_id)
            assert [e["update"] for e in events] == list(range(1, EVENTS_PER_RUN + 1))
            assert all(e["writer"] == k and e["value"] == e["update"] * 0.5 for e in events)
            assert json.loads(store.run(run_id)["config"])["writer"] == k
    assert reads > 0


def test_default_data_dir_is_crbm_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CRBM_DATA_DIR", str(tmp_path / "elsewhere"))
    store = RunStore()
    assert store.data_dir == (tmp_path / "elsewhere").resolve()
    assert (tmp_path / "elsewhere" / "runs.sqlite").exists()


def test_older_schema_is_migrated(store, monkeypatch):
    import app.store

    _set_version(store, 0)
    steps = {
        v: (lambda conn, v=v: conn.execute(f"CREATE TABLE migrated_from_{v} (x INTEGER)"))
        for v in range(SCHEMA_VERSION)
    }
    monkeypatch.setattr(app.store, "MIGRATIONS", steps)
    again = RunStore(store.data_dir)
    assert again.schema_version() == SCHEMA_VERSION
    conn = sqlite3.connect(store.path)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'migrated_from_0'").fetchone()
    conn.close()


def test_version_1_store_gains_sweeps_and_keeps_its_runs(store, tmp_path):
    """A real schema-1 store (no sweeps table, no runs.sweep_id) is migrated in place."""
    _recording(tmp_path / "a.h5")
    rec = store.add_recording(tmp_path / "a.h5")
    run_id = store.create_run(rec, "{}")
    store.close()
    conn = sqlite3.connect(store.path)
    conn.execute("ALTER TABLE runs DROP COLUMN sweep_id")
    conn.execute("DROP TABLE sweeps")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    again = RunStore(store.data_dir)
    assert again.schema_version() == SCHEMA_VERSION
    assert again.run(run_id)["sweep_id"] is None and again.run(run_id)["status"] == "queued"
    sweep = again.create_sweep("grid", {"grid": {"l1b": [0.01, 0.02]}})
    in_sweep = again.create_run(rec, "{}", sweep_id=sweep)
    assert [r["id"] for r in again.sweep_runs(sweep)] == [in_sweep]
    assert again.sweep(sweep)["spec"] == {"grid": {"l1b": [0.01, 0.02]}}
    with pytest.raises(StoreError, match="no sweep with id 99"):
        again.create_run(rec, "{}", sweep_id=99)
