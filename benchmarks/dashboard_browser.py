"""Dashboard speed in a real browser (issue 6, item 10): first render of the assemblies map,
HU switch, and server memory with several open sessions, on a large virtual fish.

Builds (once, reused) a data directory with an N-neuron virtual fish and one short run with its
report by the real worker path, serves it with `crbm serve` and drives headless Chromium:

- first render: `page.goto(...?tab=assemblies)` until the map's source holds N points and the
  canvas was painted (one warm-up load first, then the median of `--repeats` loads);
- HU switch: choose another HU in the picker until the map's weight column has changed and the
  browser has painted the next frame (median of `--repeats` switches);
- memory: the server's resident memory (its process tree, workers excluded) with `--sessions`
  pages open at once.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/dashboard_browser.py --neurons 50000
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMN_LEN_JS = """([name, col]) => {
  if (!window.Bokeh || !Bokeh.documents.length) return 0;
  for (const m of Bokeh.documents[0].all_models)
    if (m.name === name && m.data !== undefined && col in m.data) return m.data[col].length;
  return 0;
}"""
FIRST_JS = """([name, col]) => {
  if (!window.Bokeh || !Bokeh.documents.length) return null;
  for (const m of Bokeh.documents[0].all_models)
    if (m.name === name && m.data !== undefined && col in m.data) return m.data[col][0];
  return null;
}"""
PAINTED_JS = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
LAUNCH = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def build(data_dir: Path, neurons: int, frames: int, hidden: int, updates: int) -> None:
    from app.job_worker import run_job
    from app.store import RunStore
    from crbm_core.synthetic import generate_virtual_fish, save_virtual_fish
    from crbm_core.train import TrainConfig

    store = RunStore(data_dir)
    if any(r["report_path"] for r in store.runs()):
        return
    fish = data_dir / f"fish_{neurons}.h5"
    t = time.perf_counter()
    if not fish.exists():
        save_virtual_fish(
            generate_virtual_fish(neurons, frames, max(10, hidden // 2), seed=0, name="big fish"),
            fish,
        )
    print(f"fish: {time.perf_counter() - t:.1f} s", flush=True)
    cfg = TrainConfig(n_hidden=hidden, n_updates=updates, progress_every=10, seed=0)
    run_id = store.create_run(store.add_recording(fish), cfg.to_json())
    t = time.perf_counter()
    status = run_job(store, run_id)
    print(f"train + report: {time.perf_counter() - t:.1f} s ({status})", flush=True)


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children (panel serve runs under crbm serve)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(
                next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1]
            )
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (OSError, StopIteration):
            continue
        todo += [int(c) for c in children]
    return total / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--neurons", type=int, default=50_000)
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--updates", type=int, default=50)
    p.add_argument("--data", default="/tmp/crbm-dashboard-bench")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sessions", type=int, default=5)
    p.add_argument("--skip-sessions", action="store_true", help="no memory measurement")
    args = p.parse_args()
    data_dir = Path(args.data) / str(args.neurons)
    data_dir.mkdir(parents=True, exist_ok=True)
    build(data_dir, args.neurons, args.frames, args.hidden, args.updates)

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(data_dir / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "crbm_core.cli", "serve", "--port", str(port)]
        + ["--data-dir", str(data_dir)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/main?tab=assemblies"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        print(f"server up; RSS {rss_mb(server.pid):.0f} MB; load {os.getloadavg()}", flush=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=LAUNCH)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            name = "map:assembly map"

            def load() -> float:
                t = time.perf_counter()
                page.goto(url)
                page.wait_for_function(
                    f"([n, c, k]) => ({COLUMN_LEN_JS})([n, c]) >= k",
                    arg=[name, "value", args.neurons],
                )
                page.evaluate(PAINTED_JS)
                return time.perf_counter() - t

            print(f"first load (cold): {load():.2f} s", flush=True)
            loads = [load() for _ in range(args.repeats)]
            print(
                f"first render, warm: median {statistics.median(loads):.2f} s {loads}", flush=True
            )

            picker = page.locator('.bk-input-group:has(label:has-text("Hidden unit")) select')
            options = picker.locator("option").all_text_contents()
            switches, arrivals = [], []
            for k in range(args.repeats):
                before = page.evaluate(FIRST_JS, [name, "weight"])
                t = time.perf_counter()
                picker.select_option(label=options[(k + 1) % len(options)])
                page.wait_for_function(
                    f"([n, c, w]) => ({FIRST_JS})([n, c]) !== w",
                    arg=[name, "weight", before],
                    polling=20,
                )
                arrivals.append(time.perf_counter() - t)
                page.evaluate(PAINTED_JS)
                switches.append(time.perf_counter() - t)
            ms = [round(1000 * s) for s in switches]
            print(f"HU switch: median {1000 * statistics.median(switches):.0f} ms {ms}", flush=True)
            ms = [round(1000 * s) for s in arrivals]
            print(f"  of which new colours in the browser: {ms} ms", flush=True)

            if args.skip_sessions:
                return
            pages = [page] + [browser.new_page() for _ in range(args.sessions - 1)]
            for extra in pages[1:]:
                extra.set_default_timeout(120_000)
                extra.goto(url)
                extra.wait_for_function(
                    f"([n, c, k]) => ({COLUMN_LEN_JS})([n, c]) >= k",
                    arg=[name, "value", args.neurons],
                )
            time.sleep(2)
            print(
                f"server RSS with {args.sessions} sessions: {rss_mb(server.pid):.0f} MB", flush=True
            )
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
