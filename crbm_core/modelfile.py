"""Model files (HDF5): a trained cRBM with how it was made, and the state to resume training.

Layout: attrs `format = "crbm-explorer/model"`, `format_version`, `status`, `message`,
`config` (TrainConfig as JSON), `resolved` (settings with data-dependent defaults filled in),
provenance (`recording`, `recording_sha256`, `package_version`); `/model/*` (the sign-swapped
model to analyse), `/state/model/*` (the raw training model), `/state/*` (chains, RMSprop
moments, RNG state, batch order, schedule position, centring input), `/history/*` (one column per
progress statistic), `/split/*` (the train/test split, `split.Split.to_dict`, when one was used).
Every write is atomic, so a crash mid-write keeps the previous checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .errors import CrbmError
from .h5io import atomic_h5, previous_path, read_str_attr
from .model import CRBM
from .train import TrainConfig, TrainState

FORMAT = "crbm-explorer/model"
FORMAT_VERSION = 1


class ModelFileError(CrbmError):
    """A model file that cannot be used; names the file and the problem."""


def recording_digest(data: np.ndarray) -> str:
    """SHA-256 of the training frames, so a model knows which data it was trained on."""
    return hashlib.sha256(np.ascontiguousarray(data, dtype=np.uint8).tobytes()).hexdigest()


def _dataset(group: h5py.Group, name: str, data, **kwargs) -> None:
    """A dataset with a Fletcher-32 checksum (where HDF5 allows one: chunkable, non-empty), so
    damaged bytes fail loudly on read instead of resuming from garbage."""
    a = np.asarray(data)
    checked = a.ndim > 0 and a.size > 0
    group.create_dataset(name, data=a, fletcher32=checked, **kwargs)


def _write_model(group: h5py.Group, model: CRBM) -> None:
    for k, v in model.to_dict().items():
        _dataset(group, k, v)


def _read_model(group: h5py.Group) -> CRBM:
    return CRBM.from_dict({k: group[k][()] for k in group})


def save_checkpoint(
    path: str | os.PathLike,
    state: TrainState,
    config: TrainConfig,
    resolved: dict,
    *,
    status: str = "running",
    message: str = "",
    provenance: dict | None = None,
    final: CRBM | None = None,
    split: dict | None = None,
) -> Path:
    """Write model + full training state atomically (temp file, fsync, rename). A checkpoint
    keeps the one it replaces as `previous_path(path)` (`load_latest_checkpoint` falls back to
    it); the final model (`final` given) ends the run and removes it."""
    path = Path(path)
    with atomic_h5(path, keep_previous=final is None) as f:
        f.attrs.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            status=status,
            message=message,
            config=config.to_json(),
            resolved=json.dumps(resolved),
            package_version=__version__,
            updates=state.update,
            elapsed_s=state.elapsed,
        )
        for k, v in (provenance or {}).items():
            f.attrs[k] = v
        _write_model(f.create_group("model"), final or state.model.sign_swapped())
        s = f.create_group("state")
        _write_model(s.create_group("model"), state.model)
        _dataset(s, "chains", state.chains, compression="gzip")
        mom = s.create_group("moments")
        for k, v in state.moments.items():
            _dataset(mom, k, v)
        _dataset(s, "order", state.order)
        _dataset(s, "mean_input", state.mean_input)
        if state.stat_idx is not None:
            _dataset(s, "stat_idx", state.stat_idx)
        s.attrs.update(
            position=state.position,
            update=state.update,
            elapsed=state.elapsed,
            lr_scale=state.lr_scale,
            rng_state=json.dumps(state.rng.bit_generator.state),
        )
        h = f.create_group("history")
        events = [e for e in state.history if "event" not in e]
        for key in events[0] if events else {}:
            _dataset(h, key, np.array([e.get(key, np.nan) for e in events], float))
        h.attrs["events"] = json.dumps([e for e in state.history if "event" in e])
        if split is not None:
            g = f.create_group("split")
            for k, v in split.items():
                if np.ndim(v):
                    g.create_dataset(k, data=v)
                else:
                    g.attrs[k] = v
    if final is not None:
        previous_path(path).unlink(missing_ok=True)
    return path


def _open(path) -> h5py.File:
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, FileNotFoundError) as exc:
        raise ModelFileError(f"{path}: not a readable model file ({exc})") from None
    fmt = read_str_attr(f, "format")
    if fmt != FORMAT:
        f.close()
        raise ModelFileError(f"{path}: not a crbm-explorer model file (format {fmt!r})")
    version = int(f.attrs.get("format_version", 0))
    if version > FORMAT_VERSION:
        f.close()
        raise ModelFileError(
            f"{path}: written by a newer crbm-explorer (format version {version}); upgrade"
        )
    return f


def load_model(path: str | os.PathLike) -> CRBM:
    """The model to analyse (sign-swapped), with its status and config in `meta`."""
    with _open(path) as f:
        model = _read_model(f["model"])
        model.meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return model


def load_split(path: str | os.PathLike) -> dict | None:
    """The stored train/test split (`split.Split.from_dict` input), or None if all frames."""
    with _open(path) as f:
        if "split" not in f:
            return None
        g = f["split"]
        return {**{k: v[()] for k, v in g.items()}, **dict(g.attrs)}


def load_history(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with _open(path) as f:
        return {k: v[()] for k, v in f["history"].items()}


def load_checkpoint(path: str | os.PathLike) -> tuple[TrainState, TrainConfig, dict]:
    """(state, config, file attributes) to continue training exactly where it stopped."""
    with _open(path) as f:
        try:
            s = f["state"]
            rng = np.random.default_rng()
            rng.bit_generator.state = json.loads(s.attrs["rng_state"])
            h = f["history"]
            keys = list(h)
            n = len(h[keys[0]]) if keys else 0
            history = [{k: float(h[k][i]) for k in keys} for i in range(n)]
            for k in ("update", "n_updates"):
                for e in history:
                    if k in e:
                        e[k] = int(e[k])
            state = TrainState(
                model=_read_model(s["model"]),
                chains=s["chains"][()],
                moments={k: v[()] for k, v in s["moments"].items()},
                rng=rng,
                order=s["order"][()],
                position=int(s.attrs["position"]),
                update=int(s.attrs["update"]),
                mean_input=s["mean_input"][()],
                elapsed=float(s.attrs["elapsed"]),
                lr_scale=float(s.attrs["lr_scale"]),
                history=history,
                stat_idx=s["stat_idx"][()] if "stat_idx" in s else None,
            )
            state.history += json.loads(h.attrs.get("events", "[]"))
            config = TrainConfig.from_json(read_str_attr(f, "config"))
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        except (KeyError, OSError, ValueError) as exc:
            raise ModelFileError(f"{path}: damaged training state ({exc})") from None
    return state, config, attrs


def has_checkpoint(path: str | os.PathLike) -> bool:
    """Whether a run writing `path` left a checkpoint there or a previous one beside it."""
    return Path(path).exists() or previous_path(path).exists()


def load_latest_checkpoint(
    path: str | os.PathLike,
) -> tuple[TrainState, TrainConfig, dict, str]:
    """`load_checkpoint` of `path`, or, when it is missing or damaged, of the previous
    checkpoint kept beside it. attrs["checkpoint_file"] is the file used; the fourth value says
    why it is not `path` ("" when it is)."""
    path = Path(path)
    try:
        state, config, attrs = load_checkpoint(path)
        return state, config, {**attrs, "checkpoint_file": str(path)}, ""
    except ModelFileError as exc:
        previous = previous_path(path)
        if not previous.exists():
            raise
        first = exc
    state, config, attrs = load_checkpoint(previous)
    note = f"{first}; resumed from the previous checkpoint (update {state.update})"
    return state, config, {**attrs, "checkpoint_file": str(previous)}, note
