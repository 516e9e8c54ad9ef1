"""Peak memory of training at paper scale and beyond, through the real path (printed, not
asserted): a recording file on disk → `crbm train` (read, METHODS §4 split, initialisation, a few
updates, checkpoint and final save) in a child process whose peak RSS is reported.

    python benchmarks/memory_scale.py                          # N = 100,000, M = 300, T = 10,000
    python benchmarks/memory_scale.py --neurons 40000 --hidden 200 --frames 5000

Issue target: under 8 GB at N = 100,000, M = 300, T = 10,000. The spikes are 1 byte per
neuron and frame (1 GB here); everything else must stay far smaller than a float copy (8 GB).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import fake_data  # noqa: E402


def write_recording(path: Path, n_frames: int, n: int) -> None:
    from crbm_core.recording import Recording

    spikes = fake_data(n_frames, n)
    coords = np.random.default_rng(2).uniform(0, 1, (n, 3))
    Recording.from_arrays(spikes, coords, frame_rate=2.0, name=f"memory {n}x{n_frames}").save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--neurons", type=int, default=100_000)
    p.add_argument("--hidden", type=int, default=300)
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--updates", type=int, default=5)
    p.add_argument("--dir", help="where to write the recording (default: a temporary folder)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rec, model = Path(tmp) / "rec.h5", Path(tmp) / "model.h5"
        t = time.perf_counter()
        write_recording(rec, args.frames, args.neurons)
        print(
            f"wrote {args.neurons} × {args.frames} recording "
            f"({rec.stat().st_size / 2**30:.2f} GB on disk) in {time.perf_counter() - t:.0f} s",
            flush=True,
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "crbm_core.cli", "train", str(rec), "-o", str(model)]
        cmd += ["--n-hidden", str(args.hidden), "--n-updates", str(args.updates), "--quiet"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env)
        wall = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        print(
            f"crbm train N = {args.neurons}, M = {args.hidden}, T = {args.frames}, "
            f"{args.updates} updates: peak RSS {peak:.2f} GB, {wall:.0f} s "
            f"(model file {model.stat().st_size / 2**20:.0f} MB)"
        )


if __name__ == "__main__":
    main()
