"""Run store: a SQLite index of recordings, training runs and their progress, under a data folder.

The database (`runs.sqlite`, WAL mode) is written by one server process and by every job process
at once, so each write is one short `BEGIN IMMEDIATE` transaction (the write lock is taken up
front: a deferred transaction that upgrades its lock can fail with SQLITE_BUSY without waiting)
and a busy database is retried with back-off instead of raising "database is locked". Bulk data
never goes into SQLite: each run owns a folder `runs/<run_id>/` with one HDF5 model file (the
checkpoint, then the final model), written atomically by `crbm_core.modelfile`.

The schema is versioned (`meta.schema_version`): a store written by a newer crbm-explorer is
refused with a message to upgrade, an older one is migrated in place (MIGRATIONS).
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from crbm_core.errors import CrbmError

SCHEMA_VERSION = 2
DB_NAME = "runs.sqlite"
STATUSES = (
    "queued",
    "running",
    "finished",
    "not converged",
    "failed",
    "cancelled",
    "interrupted",
)
TERMINAL = ("finished", "not converged", "failed", "cancelled")
RESUMABLE = ("interrupted", "cancelled", "failed")
# Allowed status changes. A run is queued, claimed by its worker (running), and ends; an
# interrupted, cancelled or failed run can be queued again (resume).
TRANSITIONS = {
    "queued": {"running", "cancelled", "failed"},
    "running": {"finished", "not converged", "failed", "cancelled", "interrupted"},
    "interrupted": {"queued", "cancelled"},
    "cancelled": {"queued"},
    "failed": {"queued"},
    "finished": set(),
    "not converged": set(),
}
RETRY_SECONDS = 60.0  # give up on a busy database after this long (a stuck writer, not load)

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE recordings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    n_neurons INTEGER NOT NULL,
    n_frames INTEGER NOT NULL,
    added REAL NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recording_id INTEGER NOT NULL REFERENCES recordings(id),
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    traceback TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    queued REAL NOT NULL,
    started REAL,
    ended REAL,
    pid INTEGER,
    host TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    checkpoint_update INTEGER,
    resumed_from INTEGER,
    model_path TEXT NOT NULL DEFAULT '',
    report_path TEXT NOT NULL DEFAULT '',
    sweep_id INTEGER REFERENCES sweeps(id)
);
CREATE INDEX runs_status ON runs(status, queued);
CREATE TABLE sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE progress (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    "update" INTEGER NOT NULL,
    time REAL NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (run_id, "update")
) WITHOUT ROWID;
"""


def _add_sweeps(conn) -> None:
    """1 → 2: model-selection sweeps (a grid of runs submitted together)."""
    conn.execute(
        "CREATE TABLE sweeps (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
        "spec TEXT NOT NULL, created REAL NOT NULL)"
    )
    conn.execute("ALTER TABLE runs ADD COLUMN sweep_id INTEGER REFERENCES sweeps(id)")


# from_version -> function(connection) bringing the schema to from_version + 1
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _add_sweeps}


class StoreError(CrbmError):
    """The run store cannot do what was asked; says which store and why."""


class UnknownRunError(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class StatusError(StoreError):
    """A status change the run's life cycle does not allow (e.g. finished → running)."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class RunStore:
    """The run store in `data_dir` (default: `crbm_core.cli.data_dir()`), created if absent.

    One object per process; each thread gets its own connection. `busy_timeout_ms` is SQLite's
    own wait for a lock; past it the store retries with jittered back-off for RETRY_SECONDS.
    """

    def __init__(self, data_dir: str | os.PathLike | None = None, *, busy_timeout_ms: int = 5000):
        if data_dir is None:
            from crbm_core.cli import data_dir as default_dir

            data_dir = default_dir()
        self.data_dir = Path(data_dir).resolve()
        self.path = self.data_dir / DB_NAME
        self.runs_dir = self.data_dir / "runs"
        self.busy_timeout_ms = int(busy_timeout_ms)
        self._local = threading.local()
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise StoreError(f"{self.data_dir}: data directory is a file, not a folder")
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._open_schema()

    def __repr__(self) -> str:
        return f"RunStore({str(self.data_dir)!r})"

    # -- connections, transactions -------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            try:
                conn = sqlite3.connect(
                    self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None
                )
                conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
                conn.execute("PRAGMA foreign_keys = ON")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                    raise
                raise StoreError(f"{self.path}: not a usable SQLite database ({exc})") from None
            if mode.lower() != "wal":
                raise StoreError(f"{self.path}: cannot use WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL-safe
            conn.row_factory = sqlite3.Row
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _retry(self, fn: Callable[[], object]):
        """Run fn, retrying while the database is busy (never lets 'locked' escape early)."""
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.001
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise StoreError(f"{self.path}: {exc}") from None
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.1)

    def _write(self, fn: Callable[[sqlite3.Connection], object]):
        """fn(conn) inside one short write transaction, retried whole when busy."""

        def attempt():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return out

        return self._retry(attempt)

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self._retry(lambda: self._conn().execute(sql, args).fetchall())

    def _open_schema(self) -> None:
        def setup(conn):
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if not tables:
                conn.executescript(_SCHEMA)  # statement by statement, inside the transaction
                conn.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
                return
            if "meta" not in tables:
                raise StoreError(f"{self.path}: not a crbm-explorer run store (no meta table)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: run store schema version {version} was written by a newer "
                    f"crbm-explorer (this one reads up to {SCHEMA_VERSION}); upgrade crbm-explorer"
                )
            while version < SCHEMA_VERSION:
                if version not in MIGRATIONS:
                    raise StoreError(
                        f"{self.path}: run store schema version {version} is too old to "
                        f"migrate (this crbm-explorer reads {SCHEMA_VERSION}); move the data "
                        "folder aside and start a new store"
                    )
                MIGRATIONS[version](conn)
                version += 1
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),)
                )

        self._write(lambda conn: setup(_NoScript(conn)))

    def schema_version(self) -> int:
        return int(self._read("SELECT value FROM meta WHERE key = 'schema_version'")[0][0])

    # -- recordings -----------------------------------------------------------------------------
    def add_recording(self, path: str | os.PathLike) -> int:
        """Index a recording file (read and validated now); re-adding a path refreshes its row."""
        from crbm_core.modelfile import recording_digest
        from crbm_core.recording import read_recording

        path = Path(path).resolve()
        rec = read_recording(path)
        digest = recording_digest(rec.spike_array())
        values = (rec.name, digest, rec.n_neurons, rec.n_frames, time.time(), str(path))

        def add(conn):
            row = conn.execute("SELECT id FROM recordings WHERE path = ?", (str(path),)).fetchone()
            if row:
                conn.execute(
                    "UPDATE recordings SET name=?, sha256=?, n_neurons=?, n_frames=?, added=? "
                    "WHERE path=?",
                    values,
                )
                return int(row[0])
            cur = conn.execute(
                "INSERT INTO recordings (name, sha256, n_neurons, n_frames, added, path) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )
            return int(cur.lastrowid)

        return self._write(add)

    def recording(self, recording_id: int) -> dict:
        rows = self._read("SELECT * FROM recordings WHERE id = ?", (int(recording_id),))
        if not rows:
            raise StoreError(f"{self.path}: no recording with id {recording_id}")
        return dict(rows[0])

    def recordings(self) -> list[dict]:
        return [dict(r) for r in self._read("SELECT * FROM recordings ORDER BY id")]

    # -- runs -----------------------------------------------------------------------------------
    def create_run(self, recording_id: int, config_json: str, sweep_id: int | None = None) -> int:
        """A new queued run of `recording_id` with TrainConfig JSON `config_json`, optionally
        part of sweep `sweep_id`."""
        json.loads(config_json)  # a malformed config never enters the store
        self.recording(recording_id)
        if sweep_id is not None:
            self.sweep(sweep_id)
        now = time.time()

        def create(conn):
            cur = conn.execute(
                "INSERT INTO runs (recording_id, config, status, created, queued, sweep_id) "
                "VALUES (?, ?, 'queued', ?, ?, ?)",
                (int(recording_id), config_json, now, now, sweep_id),
            )
            run_id = int(cur.lastrowid)
            model = self.runs_dir / str(run_id) / "model.h5"
            conn.execute("UPDATE runs SET model_path = ? WHERE id = ?", (str(model), run_id))
            return run_id

        run_id = self._write(create)
        (self.runs_dir / str(run_id)).mkdir(parents=True, exist_ok=True)
        return run_id

    # -- sweeps ---------------------------------------------------------------------------------
    def create_sweep(self, name: str, spec: dict) -> int:
        """A new sweep row; `spec` (JSON-able: recordings, base config, grid, repeats) says how
        its runs were made."""
        text = json.dumps(spec)
        now = time.time()
        return self._write(
            lambda c: int(
                c.execute(
                    "INSERT INTO sweeps (name, spec, created) VALUES (?, ?, ?)",
                    (str(name), text, now),
                ).lastrowid
            )
        )

    def sweep(self, sweep_id: int) -> dict:
        rows = self._read("SELECT * FROM sweeps WHERE id = ?", (int(sweep_id),))
        if not rows:
            raise StoreError(f"{self.path}: no sweep with id {sweep_id}")
        out = dict(rows[0])
        out["spec"] = json.loads(out["spec"])
        return out

    def sweeps(self) -> list[dict]:
        return [self.sweep(r[0]) for r in self._read("SELECT id FROM sweeps ORDER BY id")]

    def sweep_runs(self, sweep_id: int) -> list[dict]:
        self.sweep(sweep_id)
        rows = self._read("SELECT * FROM runs WHERE sweep_id = ? ORDER BY id", (int(sweep_id),))
        return [dict(r) for r in rows]

    def run(self, run_id: int) -> dict:
        rows = self._read("SELECT * FROM runs WHERE id = ?", (int(run_id),))
        if not rows:
            raise UnknownRunError(f"{self.path}: no run with id {run_id}")
        return dict(rows[0])

    def runs(self, status: str | tuple[str, ...] | None = None) -> list[dict]:
        """Runs (oldest first), optionally only those with the given status(es)."""
        if status is None:
            return [dict(r) for r in self._read("SELECT * FROM runs ORDER BY id")]
        wanted = (status,) if isinstance(status, str) else tuple(status)
        for s in wanted:
            _check_status(s)
        marks = ",".join("?" * len(wanted))
        sql = f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY queued, id"
        return [dict(r) for r in self._read(sql, wanted)]

    def set_status(
        self,
        run_id: int,
        status: str,
        *,
        message: str | None = None,
        traceback: str | None = None,
        pid: int | None = None,
        only_from: tuple[str, ...] | None = None,
    ) -> bool:
        """Change a run's status atomically; True if changed.

        With `only_from`, a run whose current status is not in it is left alone (False): for
        races such as "claim this run if it is still queued". Otherwise a change the life cycle
        forbids raises StatusError. Entering running records pid, host and start time; a final
        status records the end time; queued again clears the end, pid and cancel flag.
        """
        _check_status(status)
        now = time.time()

        def change(conn):
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (int(run_id),)).fetchone()
            if row is None:
                raise UnknownRunError(f"{self.path}: no run with id {run_id}")
            current = row[0]
            if only_from is not None and current not in only_from:
                return False
            if status not in TRANSITIONS[current]:
                raise StatusError(f"run {run_id}: cannot go from {current!r} to {status!r}")
            sets = {"status": status}
            if message is not None:
                sets["message"] = message
            if traceback is not None:
                sets["traceback"] = traceback
            if status == "running":
                sets.update(pid=pid, host=socket.gethostname(), started=now, ended=None)
            elif status == "queued":
                sets.update(queued=now, ended=None, pid=None, cancel_requested=0, traceback="")
            else:
                sets.update(ended=now)
            cols = ", ".join(f"{k} = ?" for k in sets)
            conn.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*sets.values(), int(run_id)))
            return True

        return self._write(change)

    def request_cancel(self, run_id: int) -> None:
        """Flag a running run for cancellation (its worker polls the flag)."""
        self.run(run_id)
        self._write(
            lambda c: c.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (int(run_id),))
        )

    def cancel_requested(self, run_id: int) -> bool:
        return bool(self.run(run_id)["cancel_requested"])

    def set_checkpoint(self, run_id: int, update: int) -> None:
        """Record that the run's model file now holds a checkpoint at `update`."""
        self._write(
            lambda c: c.execute(
                "UPDATE runs SET checkpoint_update = ? WHERE id = ?", (int(update), int(run_id))
            )
        )

    def set_resumed_from(self, run_id: int, update: int) -> None:
        """Record the checkpoint update a worker continued the run from."""
        self._write(
            lambda c: c.execute(
                "UPDATE runs SET resumed_from = ? WHERE id = ?", (int(update), int(run_id))
            )
        )

    def set_report_path(self, run_id: int, path: str | os.PathLike) -> None:
        self.run(run_id)
        self._write(
            lambda c: c.execute(
                "UPDATE runs SET report_path = ? WHERE id = ?", (str(path), int(run_id))
            )
        )

    # -- progress -------------------------------------------------------------------------------
    def add_progress(self, run_id: int, event: dict) -> None:
        """Append one progress event (keyed by its update: a resumed run that repeats updates
        since its last checkpoint overwrites them with the identical continuation)."""
        text = json.dumps(event)
        update = int(event["update"])

        def add(conn):
            try:
                conn.execute(
                    'INSERT OR REPLACE INTO progress (run_id, "update", time, event) '
                    "VALUES (?, ?, ?, ?)",
                    (int(run_id), update, time.time(), text),
                )
            except sqlite3.IntegrityError:
                raise UnknownRunError(f"{self.path}: no run with id {run_id}") from None

        self._write(add)

    def progress(self, run_id: int, after_update: int = -1) -> list[dict]:
        """Every progress event of a run (after `after_update`, to tail it), in update order."""
        self.run(run_id)
        rows = self._read(
            'SELECT event FROM progress WHERE run_id = ? AND "update" > ? ORDER BY "update"',
            (int(run_id), int(after_update)),
        )
        return [json.loads(r[0]) for r in rows]


class _NoScript:
    """Runs the schema DDL statement by statement (executescript would COMMIT the open
    transaction, letting two processes both create the schema)."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def execute(self, *args):
        return self._conn.execute(*args)

    def executescript(self, script: str):
        for statement in script.split(";"):
            if statement.strip():
                self._conn.execute(statement)


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise StatusError(f"unknown run status {status!r}; one of {', '.join(STATUSES)}")
