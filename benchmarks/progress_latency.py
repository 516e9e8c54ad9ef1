"""Progress latency: how long after a training job writes a progress event the server sees it
(printed, not asserted). A real job process writes events into the run store as the trainer
emits them; this process tails the store as the dashboard does, every `--poll` seconds, and
records (time seen − time the event was committed) for every event.

    python benchmarks/progress_latency.py                # poll 0.25 s, 3,000 updates
    python benchmarks/progress_latency.py --poll 1.0

Issue target: ≤ 1 s from job to server.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from app.jobs import JobManager
    from app.store import RunStore
    from crbm_core.recording import Recording

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--poll", type=float, default=0.25, help="server polling interval (s)")
    p.add_argument("--updates", type=int, default=3000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spikes = (np.random.default_rng(0).random((2000, 1000)) < 0.04).astype(np.uint8)
        rec = Path(tmp) / "rec.h5"
        Recording.from_arrays(spikes, np.zeros((1000, 3)), frame_rate=2.0).save(rec)
        store = RunStore(Path(tmp) / "data")
        manager = JobManager(store, max_workers=1)
        cfg = dict(n_hidden=20, n_updates=args.updates, progress_every=10, n_mc=5)
        run_id = manager.submit(rec, cfg)
        conn = sqlite3.connect(store.path)
        seen: dict[int, float] = {}
        lags = []
        while store.run(run_id)["status"] in ("queued", "running"):
            rows = conn.execute(
                'SELECT "update", time FROM progress WHERE run_id = ? AND "update" > ?',
                (run_id, max(seen, default=-1)),
            ).fetchall()
            now = time.time()
            for update, written in rows:
                seen[update] = now
                lags.append(now - written)
            time.sleep(args.poll)
            manager.poll()
        lag = np.array(lags)
        events = len(lag)
        rate = events / (max(seen.values()) - min(seen.values()) + 1e-9)
        print(
            f"{events} events ({rate:.0f}/s) polled every {args.poll:g} s: latency median "
            f"{np.median(lag) * 1e3:.0f} ms, p95 {np.percentile(lag, 95) * 1e3:.0f} ms, "
            f"max {lag.max() * 1e3:.0f} ms"
        )


if __name__ == "__main__":
    main()
