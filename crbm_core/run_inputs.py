"""What a training run trains on, for `crbm train` and the job worker alike.

A new run chooses the METHODS §4 split (unless told to use every frame); a resumed one reads the
split and the state from its checkpoint and must be given the very recording it was trained on.
Either way the model file records where its frames came from (`provenance`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import CrbmError
from .modelfile import load_latest_checkpoint, load_split, recording_digest, save_checkpoint
from .recording import Recording
from .split import Split, choose_split
from .train import TrainConfig, TrainResult, TrainState


@dataclass
class TrainingInputs:
    data: np.ndarray  # the training frames (the split's train segments, or all)
    split: dict | None  # `Split.to_dict()` to store in the model file, None for all frames
    provenance: dict  # model-file attributes naming the recording and the split
    state: TrainState | None  # the checkpoint's state when resuming
    config: TrainConfig | None  # the checkpoint's config when resuming
    note: str = ""  # why the resumed checkpoint is the previous one (the latest was damaged)


def check_same_recording(trained_sha256: str | None, digest: str, recording, model) -> None:
    """Refuse a recording whose spikes are not the ones the model was trained on."""
    if trained_sha256 not in (None, digest):
        raise CrbmError(f"{recording} is not the recording {model} was trained on")


def training_inputs(
    rec: Recording,
    recording_file: str | os.PathLike,
    resume_from: str | os.PathLike | None = None,
    all_frames: bool = False,
) -> TrainingInputs:
    """The frames, split and provenance of a new run, or of one resumed from `resume_from`."""
    data = rec.spike_array()
    digest = recording_digest(data)
    state = config = None
    note = ""
    if resume_from is not None:
        state, config, attrs, note = load_latest_checkpoint(resume_from)
        check_same_recording(attrs.get("recording_sha256"), digest, recording_file, resume_from)
        stored = load_split(attrs["checkpoint_file"])
        split = Split.from_dict(stored) if stored is not None else None
    else:
        split = None if all_frames else choose_split(data)
    provenance = {
        "recording": rec.name,
        "recording_file": str(recording_file),
        "recording_sha256": digest,
        "split": "none (all frames)" if split is None else split.describe(),
    }
    if split is not None:
        data = split.apply(data)[0]
    return TrainingInputs(
        data, None if split is None else split.to_dict(), provenance, state, config, note
    )


def save_result(path, result: TrainResult, config: TrainConfig, inputs: TrainingInputs) -> None:
    """The final model file of a run: state, status, message and the sign-swapped model."""
    save_checkpoint(
        path,
        result.state,
        config,
        result.resolved,
        status=result.status,
        message=result.message,
        provenance=inputs.provenance,
        final=result.model,
        split=inputs.split,
    )
