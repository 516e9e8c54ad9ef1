"""A dashboard session's state: one `param.Parameterized` shared by every view.

Views read and set these parameters and keep no selection of their own, so selecting an HU or a
region anywhere selects it everywhere. `URL_PARAMS` are mirrored into the page URL
(`pn.state.location.sync`) so a reload or a shared link restores the view. The loaded run
(recording, model, report, HU order) is one `LoadedRun` that changes only when `run_id` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import param

from crbm_core.assemblies import VIEW_THRESHOLD
from crbm_core.errors import CrbmError
from crbm_core.model import CRBM
from crbm_core.recording import Recording

from .store import RunStore

URL_PARAMS = ("recording_id", "run_id", "hu", "region", "region_pair", "threshold", "tab")


@dataclass
class LoadedRun:
    """What the views of one run display. `report` is None until the run's report exists."""

    run: dict
    recording: Recording
    model: CRBM | None
    report: dict | None
    hu_order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_hidden(self) -> int:
        return 0 if self.model is None else self.model.n_hidden


def _stamp(path: str) -> tuple[str, float]:
    p = Path(path) if path else None
    return (path, p.stat().st_mtime) if p is not None and p.exists() else (path, -1.0)


@lru_cache(maxsize=4)
def _load(recording_path: str, model: tuple[str, float], report: tuple[str, float]):
    from crbm_core.modelfile import load_model
    from crbm_core.recording import read_recording
    from crbm_core.report import load_report

    rec = read_recording(recording_path)
    mdl = load_model(model[0]) if model[1] >= 0 else None
    rep = load_report(report[0]) if report[1] >= 0 else None
    return rec, mdl, rep


def load_run(store: RunStore, run_id: int) -> LoadedRun:
    """The run's recording, final model (or latest checkpoint's model) and report; cached by
    file modification time, so a report written later is picked up on the next call."""
    run = store.run(run_id)
    rec_path = store.recording(run["recording_id"])["path"]
    rec, model, report = _load(rec_path, _stamp(run["model_path"]), _stamp(run["report_path"]))
    if report is not None:
        order = np.asarray(report["dynamics"]["ward_order"], dtype=np.int64)
    else:
        order = np.arange(0 if model is None else model.n_hidden)
    return LoadedRun(run, rec, model, report, order)


class ExplorerState(param.Parameterized):
    """The selection every view shares. HU indices are model indices; views list HUs in
    `loaded.hu_order` (Ward order) everywhere."""

    recording_id = param.Integer(None, allow_None=True, doc="selected recording (store id)")
    run_id = param.Integer(None, allow_None=True, doc="selected training run (store id)")
    hu = param.Integer(0, bounds=(0, None), doc="selected hidden unit (model index)")
    region = param.Integer(None, allow_None=True, doc="selected region (recording region index)")
    region_pair = param.List(
        default=[], item_type=int, doc="selected FC/SC matrix cell: [row region, column region]"
    )
    threshold = param.Number(
        VIEW_THRESHOLD, bounds=(0, None), doc="|weight| above which a neuron is in an assembly"
    )
    tab = param.String("data", doc="the view on show")
    loaded = param.ClassSelector(
        class_=LoadedRun, allow_None=True, constant=True, doc="the selected run, loaded"
    )
    error = param.String("", doc="the last user-facing error (shown by the app, never raised)")

    def __init__(self, store: RunStore | str | os.PathLike | None = None, **params):
        super().__init__(**params)
        self.store = store if isinstance(store, RunStore) else RunStore(store)
        self._load()

    @param.depends("run_id", watch=True)
    def _load(self) -> None:
        loaded = None
        if self.run_id is not None:
            try:
                loaded = load_run(self.store, self.run_id)
            except CrbmError as exc:
                self.error = str(exc)
        with param.edit_constant(self):
            self.loaded = loaded
        if loaded is not None:
            if self.hu >= max(loaded.n_hidden, 1):
                self.hu = int(loaded.hu_order[0]) if len(loaded.hu_order) else 0
            if self.recording_id != loaded.run["recording_id"]:
                self.recording_id = int(loaded.run["recording_id"])

    def refresh(self) -> None:
        """Reload the selected run (e.g. after its report was written)."""
        self._load()
