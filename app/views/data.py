"""Data view: the store's recordings, adding one (a path under the data directory, or an
upload), and a look at the selected one: summary numbers, a raster of every neuron × frame
(datashader, so 50k × 12k stays a screen-sized image) sortable by region, and the neuron map
coloured by region or firing rate.

An added file is validated by `read_recording` before the store indexes it; a bad one gives the
reader's message (naming the file, dataset and problem) in the app's error area and leaves the
store as it was.
"""

from __future__ import annotations

import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path

import holoviews as hv
import numpy as np
import panel as pn
import param
from holoviews.operation.datashader import rasterize

from crbm_core.errors import CrbmError
from crbm_core.recording import Recording, iter_blocks, read_recording

from ..state import ExplorerState
from ..store import RunStore
from .brain_map import BrainMap
from .linked import bind_select, on_click, watch_state

UPLOAD_DIR = "uploads"
ORDERS = {"Recording order": "index", "By region": "region"}
COLOURS = {"Region": "region", "Firing rate": "rate"}
MAX_BINS = 2000  # raster image size cap per axis before datashader (zooming stays exact below)


class AddRecordingError(CrbmError):
    """A recording that cannot be added from the dashboard (e.g. a path outside the data
    directory); the message says what and why."""


def resolve_in_data_dir(store: RunStore, text: str) -> Path:
    """The file `text` names (relative to the data directory, or absolute), refusing anything
    that resolves outside the data directory (`..`, absolute paths, symlinks out)."""
    text = text.strip()
    if not text:
        raise AddRecordingError("give the path of a recording file under the data directory")
    root = store.data_dir.resolve()
    path = Path(text).expanduser()
    path = (path if path.is_absolute() else root / path).resolve()
    if not path.is_relative_to(root):
        raise AddRecordingError(f"{text}: outside the data directory {root}; only files under it")
    if not path.is_file():
        raise AddRecordingError(f"{text}: no such file under the data directory {root}")
    return path


def import_path(store: RunStore, text: str) -> int:
    """Index the recording at `text` (see `resolve_in_data_dir`); returns its recording id."""
    return store.add_recording(resolve_in_data_dir(store, text))


def _safe_name(filename: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename or "upload").name).strip("._")
    return stem if stem.endswith((".h5", ".hdf5")) else f"{stem or 'upload'}.h5"


def save_upload(store: RunStore, filename: str, data: bytes) -> int:
    """Write uploaded bytes to a temporary file in the data directory, validate it as a
    recording, then move it to `uploads/<name>` (never overwriting) and index it."""
    folder = store.data_dir / UPLOAD_DIR
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".h5")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data or b"")
        try:
            read_recording(tmp)
        except CrbmError as exc:
            raise AddRecordingError(str(exc).replace(str(tmp), filename or "the upload")) from None
        name = _safe_name(filename)
        target = folder / name
        k = 1
        while target.exists():
            target = folder / f"{Path(name).stem}-{k}.h5"
            k += 1
        os.replace(tmp, target)
        return store.add_recording(target)
    finally:
        tmp.unlink(missing_ok=True)


@lru_cache(maxsize=8)
def _summary(path: str, mtime: float) -> tuple[dict, np.ndarray]:
    rec = read_recording(path)
    return rec.summary(), rec.firing_rates()


def recording_summary(path: str) -> tuple[dict, np.ndarray]:
    """(Recording.summary(), firing rates), cached while the file is unchanged."""
    return _summary(str(path), Path(path).stat().st_mtime)


def neuron_order(rec: Recording, how: str) -> np.ndarray:
    """Raster rows: recording order, or by region (unlabelled last, stable within a region)."""
    if how == "region":
        labels = rec.region_labels.astype(np.int64)
        key = np.where(labels < 0, len(rec.region_names), labels)
        return np.argsort(key, kind="stable")
    return np.arange(rec.n_neurons)


def binned_spikes(rec: Recording, order: np.ndarray, max_bins: int = MAX_BINS) -> np.ndarray:
    """Mean firing of (neuron rows in `order`) × (frames), block-averaged to at most
    `max_bins` per axis, float32, read block by block: a 50k × 12k recording would take 2.4 GB
    as float32 (and datashader's mean of uint8 is wrong), this takes ≤ 16 MB."""
    n, t = rec.n_neurons, rec.n_frames
    fn, ft = -(-n // max_bins), -(-t // max_bins)
    nn, nt = -(-n // fn), -(-t // ft)
    sums = np.zeros((nt, nn), dtype=np.float32)
    for t0, block in iter_blocks(rec.spikes):
        b = np.zeros((block.shape[0], nn * fn), dtype=np.float32)
        b[:, :n] = block[:, order]
        np.add.at(sums, (t0 + np.arange(block.shape[0])) // ft, b.reshape(-1, nn, fn).sum(axis=2))
    cells = np.outer(
        np.diff(np.minimum(np.arange(nt + 1) * ft, t)),
        np.diff(np.minimum(np.arange(nn + 1) * fn, n)),
    )
    return (sums / cells).T


def raster(rec: Recording, order: np.ndarray) -> hv.DynamicMap:
    """Every neuron (rows, in `order`) × frame, aggregated to the screen by datashader."""
    image = binned_spikes(rec, order)
    t_end = rec.n_frames / rec.frame_rate
    img = hv.Image(
        np.ascontiguousarray(image[::-1]),  # row 0 of an hv.Image is the top: keep neuron 0 low
        bounds=(0, 0, t_end, rec.n_neurons),
        kdims=["time (s)", "neuron (row)"],
        vdims=["spiking"],
    )
    top = float(np.quantile(image, 0.995)) if image.size else 1.0
    return rasterize(img, aggregator="mean").opts(
        cmap="gray_r",
        clim=(0.0, max(top, 1e-3)),  # 2–5 % of neurons fire: a 0–1 scale would look empty
        responsive=True,
        height=360,
        title=f"{rec.n_neurons} neurons × {rec.n_frames} frames",
        tools=["hover"],
    )


class DataView(pn.viewable.Viewer):
    """The recordings of the store and what is in them."""

    state = param.ClassSelector(class_=ExplorerState)

    def __init__(self, **params):
        super().__init__(**params)
        state = self.state
        self.recordings = pn.widgets.Select(label="Recording", width=360)
        self.table = pn.pane.DataFrame(None, index=False, sizing_mode="stretch_width")
        self.path = pn.widgets.TextInput(
            label="Import a file under the data directory", placeholder="e.g. my_fish.h5"
        )
        self.import_button = pn.widgets.Button(label="Import", color="primary")
        on_click(self.import_button, lambda: self._import())
        self.upload = pn.widgets.FileInput(accept=".h5,.hdf5", label="Upload a recording")
        self.upload.param.watch(lambda *_: self._upload(), "value")
        self.summary = pn.pane.DataFrame(None, index=False, width=420)
        self.order = pn.widgets.RadioButtonGroup(label="Rows", options=list(ORDERS))
        self.colour = pn.widgets.RadioButtonGroup(label="Colour", options=list(COLOURS))
        self.raster = pn.pane.HoloViews(None, sizing_mode="stretch_width", min_height=360)
        self.map = BrainMap("neurons", weight_label="firing rate")
        self.order.param.watch(lambda *_: self._draw_raster(), "value")
        self.colour.param.watch(lambda *_: self._colour(), "value")
        self._rec: Recording | None = None
        self._rates = np.zeros(0)
        self._list()
        bind_select(self.recordings, state, "recording_id")
        watch_state(state, self._show, "recording_id")

    def _list(self) -> None:
        rows = self.state.store.recordings()
        self.recordings.options = {
            f"{r['id']}: {r['name']} ({r['n_neurons']} × {r['n_frames']})": r["id"] for r in rows
        }
        import pandas as pd

        cols = ["id", "name", "n_neurons", "n_frames", "path"]
        self.table.object = pd.DataFrame([{k: r[k] for k in cols} for r in rows], columns=cols)
        if self.state.recording_id is None and rows:
            self.state.recording_id = rows[-1]["id"]

    def _import(self) -> None:
        try:
            rec_id = import_path(self.state.store, self.path.value)
        except CrbmError as exc:
            self.state.error = str(exc)
            return
        self._added(rec_id)

    def _upload(self) -> None:
        if self.upload.value is None:
            return
        try:
            rec_id = save_upload(self.state.store, self.upload.filename, self.upload.value)
        except CrbmError as exc:
            self.state.error = str(exc)
            return
        self._added(rec_id)

    def _added(self, rec_id: int) -> None:
        self.state.error = ""
        self._list()
        self.state.recording_id = rec_id

    def _show(self) -> None:
        rec_id = self.state.recording_id
        if rec_id is None:
            return
        import pandas as pd

        try:
            path = self.state.store.recording(rec_id)["path"]
            self._rec = read_recording(path)
            summary, self._rates = recording_summary(path)
        except CrbmError as exc:
            self.state.error = str(exc)
            return
        rows = []
        for key, value in summary.items():
            if isinstance(value, float):
                value = f"{value:.4g}"
            elif isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            rows.append({"": key.replace("_", " "), "value": str(value)})
        self.summary.object = pd.DataFrame(rows)
        rec = self._rec
        self.map.set_neurons(rec.coords_mm(), rec.region_labels, rec.region_names)
        self._colour()
        self._draw_raster()

    def _draw_raster(self) -> None:
        if self._rec is not None:
            order = neuron_order(self._rec, ORDERS[self.order.value])
            self.raster.object = raster(self._rec, order)

    def _colour(self) -> None:
        if self._rec is None:
            return
        labels = self._rec.region_labels
        if COLOURS[self.colour.value] == "region":
            self.map.show(
                np.where(labels >= 0, labels, np.nan), mode="categorical", weight=self._rates
            )
        else:
            self.map.show(self._rates, mode="sequential", weight=self._rates, label="rate")

    def __panel__(self):
        add = pn.Column(
            "### Add a recording",
            pn.Row(self.path, self.import_button),
            self.upload,
            pn.pane.Markdown(
                "Files are validated before they are added; LJP/Fishualizer files are converted "
                "first with `crbm import`.",
                styles={"font-size": "0.85em"},
            ),
            width=420,
        )
        return pn.Column(
            pn.Row(pn.Column("### Recordings", self.recordings, self.table), add),
            pn.Row(
                pn.Column("### Summary", self.summary),
                pn.Column(self.colour, self.map.top, self.map.side),
            ),
            pn.Row(self.order),
            self.raster,
            sizing_mode="stretch_width",
        )
