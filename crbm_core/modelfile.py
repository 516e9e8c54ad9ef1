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
from .h5io import atomic_h5, read_str_attr
from .model import CRBM
from .train import TrainConfig, TrainState

FORMAT = "crbm-explorer/model"
FORMAT_VERSION = 1


class ModelFileError(CrbmError):
    """A model file that cannot be used; names the file and the problem."""


def recording_digest(data: np.ndarray) -> str:
    """SHA-256 of the training frames, so a model knows which data it was trained on."""
    return hashlib.sha256(np.ascontiguousarray(data, dtype=np.uint8).tobytes()).hexdigest()


def _write_model(group: h5py.Group, model: CRBM) -> None:
    for k, v in model.to_dict().items():
        group.create_dataset(k, data=v)


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
    """Write model + full training state atomically (temp file, fsync, rename)."""
    path = Path(path)
    with atomic_h5(path) as f:
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
        s.create_dataset("chains", data=state.chains, compression="gzip")
        mom = s.create_group("moments")
        for k, v in state.moments.items():
            mom.create_dataset(k, data=v)
        s.create_dataset("order", data=state.order)
        s.create_dataset("mean_input", data=state.mean_input)
        if state.stat_idx is not None:
            s.create_dataset("stat_idx", data=state.stat_idx)
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
            h.create_dataset(key, data=np.array([e.get(key, np.nan) for e in events], float))
        h.attrs["events"] = json.dumps([e for e in state.history if "event" in e])
        if split is not None:
            g = f.create_group("split")
            for k, v in split.items():
                if np.ndim(v):
                    g.create_dataset(k, data=v)
                else:
                    g.attrs[k] = v
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
