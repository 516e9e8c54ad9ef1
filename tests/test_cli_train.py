"""`crbm train` as a user runs it: a real process, Ctrl-C writes a checkpoint, --resume finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from crbm_core.cli import main
from crbm_core.modelfile import load_history, load_model, load_split
from crbm_core.recording import Recording
from crbm_core.split import Split, choose_split


@pytest.fixture
def recording(tmp_path, rng):
    spikes = (rng.random((400, 120)) < 0.05).astype(np.uint8)
    spikes[:, :20] |= (rng.random((400, 1)) < 0.2).astype(np.uint8)  # one shared assembly
    return Recording.from_arrays(spikes, rng.uniform(0, 0.4, (120, 3)), frame_rate=4.0).save(
        tmp_path / "rec.h5"
    )


def test_train_writes_a_model_with_config_history_and_provenance(recording, tmp_path, capsys):
    out = tmp_path / "model.h5"
    argv = [
        "train",
        str(recording),
        "-o",
        str(out),
        "--n-updates",
        "60",
        "--n-hidden",
        "4",
        "--progress-every",
        "20",
        "--seed",
        "3",
        "--quiet",
    ]
    assert main(argv) == 0
    assert "60 updates" in capsys.readouterr().out
    model = load_model(out)
    assert model.weights.shape == (120, 4)
    assert model.meta["status"] in ("finished", "not converged")
    assert '"seed": 3' in model.meta["config"] and len(model.meta["recording_sha256"]) == 64
    np.testing.assert_array_equal(load_history(out)["update"], [20, 40, 60])
    assert (model.weights.sum(axis=0) >= 0).all()  # sign-swapped for analysis
    # METHODS §4 by default: 3 of 10 segments held out, the split of choose_split, stored
    split = Split.from_dict(load_split(out))
    expected = choose_split(Recording.load(recording, lazy=False).spike_array())
    assert split.held_out == expected.held_out and len(split.held_out) == 3
    assert len(split.train) == 280 and len(split.test) == 120
    assert "held out" in model.meta["split"]


def test_all_frames_option_trains_without_a_split(recording, tmp_path):
    out = tmp_path / "model.h5"
    argv = ["train", str(recording), "-o", str(out), "--n-updates", "20", "--n-hidden", "3"]
    assert main([*argv, "--all-frames", "--quiet"]) == 0
    assert load_split(out) is None
    assert load_model(out).meta["split"] == "none (all frames)"


def test_bad_options_and_files_give_one_line_errors(recording, tmp_path, capsys):
    assert main(["train", str(recording)]) == 2
    assert (
        main(["train", str(recording), "-o", str(tmp_path / "m.h5"), "--batch-size", "1000"]) == 2
    )
    assert "batch size 1000 exceeds" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "m.h5")]) == 2
    assert not (tmp_path / "m.h5").exists()


def test_ctrl_c_checkpoints_and_resume_completes(recording, tmp_path):
    out = tmp_path / "model.h5"
    cmd = [
        sys.executable,
        "-m",
        "crbm_core.cli",
        "train",
        str(recording),
        "-o",
        str(out),
        "--n-updates",
        "100000",
        "--n-hidden",
        "4",
        "--checkpoint-every",
        "50",
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not out.exists() and time.time() < deadline:  # first periodic checkpoint
        time.sleep(0.2)
    assert out.exists(), "no checkpoint within 120 s"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    stopped = load_model(out).meta
    split_before = load_split(out)
    assert stopped["status"] == "stopped" and stopped["updates"] >= 50
    done_at = int(stopped["updates"]) + 30
    assert (
        main(
            ["train", str(recording), "--resume", str(out), "--n-updates", str(done_at), "--quiet"]
        )
        == 0
    )
    assert int(load_model(out).meta["updates"]) == done_at
    np.testing.assert_array_equal(load_split(out)["train"], split_before["train"])
