"""Import of recordings in the LJP/Fishualizer HDF5 layout (the paper's public data), read-only.

The layout (see the README): `/Data/Brain/Analysis/ThresholdedSpikes` (time × cells as h5py sees
the MATLAB-written files, sometimes cells × time), `/Data/Brain/ZBrainCoordinates` (mm, N×3 or
3×N), `/Data/Brain/Labels` (N×294 ZBrain membership), `/Data/Brain/Times` (s). Like the authors'
loader, datasets are also found by the lower-cased last path component through the Fishualizer
alias table, and the cell count comes from the coordinates. As in the paper, cells with no ZBrain
label are dropped; the rest ("whole-brain neurons", in recording order) form the recording.
72-region labels come from a per-neuron side file (like reference/baier_atlas_labels/*.npy: 0 =
unlabelled, r ≥ 1 → region r − 1) or, when the atlas label volume is installed, from the
coordinates by the authors' rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .errors import RecordingError
from .h5io import open_h5
from .recording import (
    Recording,
    check_binary_block,
    check_coords,
    check_frame_rate,
    check_shape_size,
    check_times,
    write_recording,
)

CANONICAL_PATHS = {
    "spikes": "/Data/Brain/Analysis/ThresholdedSpikes",
    "zbrain_coords": "/Data/Brain/ZBrainCoordinates",
    "coords": "/Data/Brain/Coordinates",
    "labels": "/Data/Brain/Labels",
    "times": "/Data/Brain/Times",
}
# The Fishualizer alias table (Content/data_names_links.json) for the datasets we use.
ALIASES = {
    "spikes": ("spike", "spikes", "spike_data", "thresholdedspikes"),
    "zbrain_coords": ("zbraincoords", "zbrain_coords", "zbrain_coordinates", "zbraincoordinates"),
    "coords": ("coordinates", "coords", "coordinates_raw"),
    "labels": ("labels", "region_labels", "zbrainatlas_labels"),
    "times": ("times", "time", "time_vector"),
}
N_ZBRAIN = 294
BLOCK_BYTES = 64 * 2**20  # spikes are converted in blocks of about this size


@dataclass
class LjpLayout:
    """What was found in an LJP file: dataset paths, sizes, orientation and kept neurons."""

    paths: dict[str, str]
    n_cells: int
    n_frames: int
    cells_first: bool  # True when spikes are stored cells × time
    keep: np.ndarray  # indices of the whole-brain neurons (any ZBrain label), sorted
    coords: np.ndarray  # (n_keep, 3)
    coords_space: str  # "zbrain" or "native"
    times: np.ndarray | None


def find_datasets(f: h5py.File) -> dict[str, str]:
    """Canonical name → dataset path: the standard paths first, then aliases anywhere."""
    found = {k: p for k, p in CANONICAL_PATHS.items() if isinstance(f.get(p), h5py.Dataset)}
    alias_to_name = {a: k for k, names in ALIASES.items() for a in names}

    def visit(name, obj):
        key = alias_to_name.get(name.rsplit("/", 1)[-1].lower())
        if key and isinstance(obj, h5py.Dataset) and key not in found:
            found[key] = "/" + name

    f.visititems(visit)
    return found


def _cells_axis(
    shape: tuple[int, ...], n_cells: int, other: int | None, dataset: str, path: str, what: str
) -> bool:
    """True if axis 0 of a 2-D dataset is the cell axis; explains what is wrong otherwise."""
    if len(shape) != 2:
        raise RecordingError(
            f"has shape {shape}; expected 2-D ({what})", path=path, dataset=dataset
        )
    a, b = shape
    if other is not None:
        if (a, b) == (n_cells, other) and (b, a) != (n_cells, other):
            return True
        if (b, a) == (n_cells, other) and (a, b) != (n_cells, other):
            return False
        if (a, b) == (n_cells, other):
            raise RecordingError(
                f"has shape {shape}, square, so its orientation ({what}) cannot be told from the "
                f"cell count {n_cells}; pass orientation explicitly",
                path=path,
                dataset=dataset,
            )
        raise RecordingError(
            f"has shape {shape}; expected {n_cells} cells × {other} ({what})",
            path=path,
            dataset=dataset,
        )
    if a == n_cells and b != n_cells:
        return True
    if b == n_cells and a != n_cells:
        return False
    if a == b == n_cells:
        raise RecordingError(
            f"has shape {shape}: both axes equal the cell count {n_cells}, so time and cells "
            f"cannot be told apart; pass orientation='time_x_cells' or 'cells_x_time'",
            path=path,
            dataset=dataset,
        )
    raise RecordingError(
        f"has shape {shape}, but the coordinates describe {n_cells:,} cells",
        path=path,
        dataset=dataset,
    )


def _numeric(ds: h5py.Dataset, path: str) -> None:
    if ds.dtype.kind not in "biuf":
        raise RecordingError(f"has dtype {ds.dtype}; expected numbers", path=path, dataset=ds.name)


def inspect_ljp(path: str | os.PathLike, orientation: str = "auto") -> LjpLayout:
    """Read everything but the spikes and decide orientation and the neurons kept."""
    path = str(path)
    if orientation not in ("auto", "time_x_cells", "cells_x_time"):
        raise RecordingError(
            f"orientation {orientation!r} is not auto, time_x_cells or cells_x_time"
        )
    with open_h5(path) as f:
        paths = find_datasets(f)
        if "spikes" not in paths:
            raise RecordingError(
                "no spike dataset: expected /Data/Brain/Analysis/ThresholdedSpikes (or a dataset "
                f"named one of {', '.join(ALIASES['spikes'])})",
                path=path,
            )
        space = "zbrain" if "zbrain_coords" in paths else "native"
        cpath = paths.get("zbrain_coords") or paths.get("coords")
        if cpath is None:
            raise RecordingError(
                "no coordinates: expected /Data/Brain/ZBrainCoordinates", path=path
            )
        cds = f[cpath]
        _numeric(cds, path)
        if cds.ndim != 2 or 3 not in cds.shape:
            raise RecordingError(
                f"has shape {cds.shape}; expected N × 3 or 3 × N", path=path, dataset=cpath
            )
        n_cells = cds.shape[0] if cds.shape[1] == 3 else cds.shape[1]
        sds = f[paths["spikes"]]
        _numeric(sds, path)
        if orientation == "auto":
            cells_first = _cells_axis(sds.shape, n_cells, None, sds.name, path, "spikes")
        else:
            cells_first = orientation == "cells_x_time"
            if sds.ndim != 2 or sds.shape[0 if cells_first else 1] != n_cells:
                raise RecordingError(
                    f"has shape {sds.shape}, not {orientation} with {n_cells:,} cells",
                    path=path,
                    dataset=sds.name,
                )
        n_frames = sds.shape[1] if cells_first else sds.shape[0]
        check_shape_size(n_frames, n_cells, sds.name, path)

        if "labels" in paths:
            lds = f[paths["labels"]]
            _numeric(lds, path)
            lab_first = _cells_axis(
                lds.shape, n_cells, N_ZBRAIN, lds.name, path, f"cells × {N_ZBRAIN} ZBrain regions"
            )
            labels = lds[()] if lab_first else lds[()].T
            if not np.all(np.isfinite(labels)) or np.any(labels < 0):
                raise RecordingError(
                    "contains NaN or negative values; expected 0/1 membership",
                    path=path,
                    dataset=lds.name,
                )
            keep = np.flatnonzero(labels.any(axis=1))
            if keep.size == 0:
                raise RecordingError(
                    "no cell has any ZBrain label, so no neuron is left",
                    path=path,
                    dataset=lds.name,
                )
        else:
            keep = np.arange(n_cells)

        coords = cds[()] if cds.shape[1] == 3 else cds[()].T
        coords = check_coords(coords[keep], keep.size, cpath, path)

        times = None
        if "times" in paths:
            times = f[paths["times"]][()].reshape(-1)
            times = check_times(times, n_frames, paths["times"], path)
    return LjpLayout(paths, n_cells, n_frames, cells_first, keep, coords, space, times)


def read_region_label_file(path: str | os.PathLike, layout: LjpLayout) -> np.ndarray:
    """Per-neuron 72-region labels from a side file: 0 = unlabelled, r ≥ 1 → region r − 1.

    One entry per whole-brain neuron (as the authors' files), or one per cell of the recording.
    """
    path = str(path)
    try:
        raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RecordingError(f"is not a readable .npy array ({exc})", path=path) from None
    raw = np.asarray(raw)
    if raw.ndim != 1 or raw.dtype.kind not in "biuf":
        raise RecordingError(
            f"has shape {raw.shape} and dtype {raw.dtype}; expected a 1-D numeric array", path=path
        )
    if raw.size == layout.n_cells and raw.size != layout.keep.size:
        raw = raw[layout.keep]
    if raw.size != layout.keep.size:
        raise RecordingError(
            f"has {raw.size:,} entries but the recording has {layout.keep.size:,} whole-brain "
            f"neurons (cells with a ZBrain label) and {layout.n_cells:,} cells",
            path=path,
        )
    if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
        raise RecordingError("contains non-integer values", path=path)
    if raw.min() < 0 or raw.max() > 72:
        raise RecordingError(
            f"has values from {raw.min():g} to {raw.max():g}; expected 0 (unlabelled) to 72",
            path=path,
        )
    return raw.astype(np.int16) - 1


def _labels_for(layout: LjpLayout, region_labels) -> tuple[np.ndarray, str]:
    if region_labels is not None:
        return read_region_label_file(region_labels, layout), f"labels: {Path(region_labels).name}"
    if layout.coords_space == "zbrain":
        from . import atlas

        try:
            return atlas.region_of_coords(layout.coords), "labels: atlas volume"
        except atlas.AtlasFileMissing:
            pass
    return np.full(layout.keep.size, -1, dtype=np.int16), "labels: none"


def _spike_blocks(path: str, layout: LjpLayout):
    with h5py.File(path, "r") as f:
        ds = f[layout.paths["spikes"]]
        chunk = max(1, BLOCK_BYTES // max(1, layout.n_cells * ds.dtype.itemsize))
        for t0 in range(0, layout.n_frames, chunk):
            t1 = min(t0 + chunk, layout.n_frames)
            try:
                block = ds[:, t0:t1].T if layout.cells_first else ds[t0:t1, :]
            except OSError as exc:
                raise RecordingError(
                    f"could not be read at frames {t0}–{t1} ({exc})", path=path, dataset=ds.name
                ) from None
            block = check_binary_block(block, ds.name, path, frame0=t0)
            yield t0, block[:, layout.keep]


def _times(layout: LjpLayout, path: str, frame_rate: float | None) -> np.ndarray:
    if frame_rate is not None:
        rate = check_frame_rate(frame_rate)
        return np.arange(layout.n_frames) / rate
    if layout.times is None:
        raise RecordingError(
            "has no /Data/Brain/Times; give the frame rate (--frame-rate)", path=path
        )
    if layout.n_frames < 2:
        raise RecordingError(
            "a recording needs at least 2 frames", path=path, dataset=layout.paths["spikes"]
        )
    return layout.times


def import_ljp(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    region_labels: str | os.PathLike | None = None,
    name: str | None = None,
    frame_rate: float | None = None,
    orientation: str = "auto",
) -> Path:
    """Convert an LJP/Fishualizer file into our format at `out`, streaming the spikes.

    The source is only read. On any error nothing is written (and an existing `out` stays).
    """
    src = str(src)
    layout = inspect_ljp(src, orientation)
    labels, label_source = _labels_for(layout, region_labels)
    times = _times(layout, src, frame_rate)
    dropped = layout.n_cells - layout.keep.size
    return write_recording(
        out,
        _spike_blocks(src, layout),
        n_frames=layout.n_frames,
        n_neurons=layout.keep.size,
        coords=layout.coords,
        region_labels=labels,
        times=times,
        name=name or Path(src).stem,
        coords_unit="mm" if layout.coords_space == "zbrain" else "unknown",
        atlas=layout.coords_space,
        species="Danio rerio",
        source=f"LJP import of {Path(src).name}; {dropped} cells without ZBrain label dropped; "
        f"{label_source}",
    )


def read_ljp(
    src: str | os.PathLike,
    *,
    region_labels=None,
    frame_rate=None,
    orientation: str = "auto",
    name: str | None = None,
) -> Recording:
    """Read an LJP file into an in-memory `Recording` (for small files and tests)."""
    src = str(src)
    layout = inspect_ljp(src, orientation)
    labels, label_source = _labels_for(layout, region_labels)
    spikes = np.concatenate([b for _, b in _spike_blocks(src, layout)], axis=0)
    return Recording(
        spikes,
        layout.coords,
        labels,
        _times(layout, src, frame_rate),
        name=name or Path(src).stem,
        coords_unit="mm" if layout.coords_space == "zbrain" else "unknown",
        atlas=layout.coords_space,
        source=f"LJP file {Path(src).name}; {label_source}",
    )
