"""`crbm serve` refuses a port in use before anything is set up (the browser tests run the
server itself through this command)."""

import socket
import subprocess
import sys


def test_serve_on_a_busy_port_says_so_and_touches_nothing(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data = tmp_path / "data"
        out = subprocess.run(
            [sys.executable, "-m", "crbm_core.cli", "serve", "--port", str(port)]
            + ["--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2
    assert f"cannot serve on 127.0.0.1:{port}" in out.stderr
    assert not data.exists()  # no demo generated, no run queued
