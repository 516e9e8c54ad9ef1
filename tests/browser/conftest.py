"""Browser tests: the dashboard served as production serves it (`crbm serve`, which runs
`python -m panel serve app/main.py --liveness ...`, in a subprocess with CRBM_DATA_DIR set) on a
store with one finished tiny run, driven by headless Debian Chromium through pytest-playwright.

Every test collects the page's console errors and uncaught exceptions, and fails on a Python
Traceback in the server log: an error inside a Panel app can draw a blank page while the
browser reports success (TESTING.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.trained_run import trained_store

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
STARTUP_SECONDS = 120  # a guard against a server that never comes up, not a timing check
# Guards against a hang, not timing checks: the first session after start-up and a machine whose
# two cores are busy training can take several seconds to draw.
expect.set_options(timeout=20_000)
PAGE_TIMEOUT_MS = 30_000


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's chromium (never `playwright install`), with the flags that work here."""
    return {**browser_type_launch_args, "executable_path": "/usr/bin/chromium", "args": LAUNCH_ARGS}


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the tests save a screenshot of every view ($CRBM_SCREENSHOTS, else beside them)."""
    path = Path(os.environ.get("CRBM_SCREENSHOTS", ROOT / "tests" / "browser" / "screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running dashboard: its URL, data directory, store, the finished run and its log."""

    def __init__(self, url: str, data_dir: Path, store, run_id: int, log_path: Path):
        self.url, self.data_dir, self.store, self.run_id = url, data_dir, store, run_id
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    data_dir = tmp_path_factory.mktemp("dashboard-data")
    store, run_id = trained_store(data_dir)
    port = _free_port()
    log_path = data_dir / "server.log"
    env = {
        **os.environ,
        "CRBM_DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "NUMBA_NUM_THREADS": "1",
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "crbm_core.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    srv = Server(f"{url}/main", data_dir, store, run_id, log_path)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the dashboard server exited ({proc.returncode}):\n{srv.log()}")
            try:
                with urllib.request.urlopen(f"{url}/liveness", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard server did not come up:\n{srv.log()}")
            time.sleep(0.3)
        yield srv
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        # training runs started by the tests run in their own sessions: stop them too
        for run in store.runs(("queued", "running")):
            if run["pid"]:
                try:
                    os.killpg(int(run["pid"]), signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def page_errors(page, server):
    """The page's console errors and uncaught exceptions; after the test, none may be there and
    the server log may hold no Traceback."""
    errors: list[str] = []
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    start = len(server.log())
    yield errors
    log = server.log()[start:]
    assert "Traceback" not in log, f"server log has a traceback:\n{log}"
    assert not errors, "\n".join(errors)
