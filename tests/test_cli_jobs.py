"""`crbm jobs list|submit|cancel|resume` drive the same job manager as the dashboard: real worker
processes, the real run store under $CRBM_DATA_DIR."""

from __future__ import annotations

import time

import numpy as np
import pytest

from app.store import RunStore
from crbm_core.cli import main
from crbm_core.recording import Recording


@pytest.fixture
def data_dir(tmp_path, monkeypatch, rng):
    monkeypatch.setenv("CRBM_DATA_DIR", str(tmp_path))
    spikes = (rng.random((400, 120)) < 0.05).astype(np.uint8)
    spikes[:, :20] |= (rng.random((400, 1)) < 0.2).astype(np.uint8)
    Recording.from_arrays(spikes, rng.uniform(0, 0.4, (120, 3)), frame_rate=4.0).save(
        tmp_path / "rec.h5"
    )
    return tmp_path


def wait_for(store: RunStore, run_id: int, statuses, timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = store.run(run_id)
        if run["status"] in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {store.run(run_id)['status']} after {timeout} s")


def test_submit_list_cancel_resume(data_dir, capsys):
    rec = str(data_dir / "rec.h5")
    small = ["--n-hidden", "3", "--progress-every", "10", "--checkpoint-every", "50"]
    assert main(["jobs", "--max-workers", "1", "submit", rec, "--n-updates", "200", *small]) == 0
    assert "run 1: started" in capsys.readouterr().out
    store = RunStore(data_dir)
    wait_for(store, 1, ("running", "finished", "not converged"))  # its worker claimed it
    # a second run waits for the only slot; cancelling it while queued is immediate
    assert main(["jobs", "--max-workers", "1", "submit", rec, "--n-updates", "200", *small]) == 0
    assert "run 2: queued" in capsys.readouterr().out
    assert main(["jobs", "cancel", "2"]) == 0
    assert "run 2: cancelled" in capsys.readouterr().out
    done = wait_for(store, 1, ("finished", "not converged"))
    assert done["checkpoint_update"] == 200
    assert main(["jobs", "list"]) == 0
    table = capsys.readouterr().out
    assert "cancelled" in table and done["status"] in table
    # the cancelled run resumes (from scratch: it never wrote a checkpoint) and finishes
    assert main(["jobs", "resume", "2"]) == 0
    assert wait_for(store, 2, ("finished", "not converged"))["checkpoint_update"] == 200
    assert [e["update"] for e in store.progress(2)][-1] == 200


def test_bad_requests_give_one_line_errors(data_dir, capsys):
    assert main(["jobs", "cancel", "7"]) == 2
    assert "no run with id 7" in capsys.readouterr().err
    bad = data_dir / "bad.h5"
    bad.write_bytes(b"garbage")
    assert main(["jobs", "submit", str(bad)]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err
    assert RunStore(data_dir).runs() == []
