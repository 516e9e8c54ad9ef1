"""A corpus of malformed recording files, written fresh by each test session.

Each case is a real file (HDF5, or bytes that pretend to be) with one thing wrong, and the words
the error must contain: the dataset (or file) and the problem. Also used by the UI upload tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from crbm_core.recording import Recording

T, N = 60, 40  # small on purpose: the corpus tests the checks, not the sizes
SPIKES = "/Data/Brain/Analysis/ThresholdedSpikes"


def good_ljp_arrays(seed: int = 0, n_frames: int = T, n_cells: int = N) -> dict[str, np.ndarray]:
    """Arrays of a valid LJP recording: two cells without any ZBrain label (dropped on import)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n_cells, 294)) < 0.02).astype(np.float32)
    labels[:, 5] = 1.0
    labels[[3, 7]] = 0.0
    return {
        "spikes": (rng.random((n_frames, n_cells)) < 0.05).astype(np.float32),
        "zbrain": np.column_stack(
            [
                rng.uniform(0.05, 0.45, n_cells),
                rng.uniform(0.1, 0.9, n_cells),
                rng.uniform(0.08, 0.27, n_cells),
            ]
        ).astype(np.float32),
        "labels": labels,
        "times": (np.arange(n_frames) / 3.9).reshape(-1, 1),
    }


def write_ljp(
    path: Path,
    arrays: dict[str, np.ndarray] | None = None,
    *,
    transpose=False,
    skip: tuple[str, ...] = (),
    **datasets,
) -> Path:
    """Write an LJP/Fishualizer-layout file (time × cells as MATLAB exports appear to h5py)."""
    a = dict(arrays or good_ljp_arrays())
    a.update(datasets)
    with h5py.File(path, "w") as f:
        g = f.create_group("Data/Brain")
        if "spikes" not in skip:
            g.create_dataset(
                "Analysis/ThresholdedSpikes", data=a["spikes"].T if transpose else a["spikes"]
            )
            g.create_dataset("Analysis/DFF", data=np.zeros_like(a["spikes"]))
        if "zbrain" not in skip:
            g.create_dataset("ZBrainCoordinates", data=a["zbrain"].T if transpose else a["zbrain"])
        if "labels" not in skip:
            g.create_dataset("Labels", data=a["labels"])
        if "times" not in skip:
            g.create_dataset("Times", data=a["times"])
        g.create_dataset("TimeDelays", data=np.zeros((a["zbrain"].shape[0], 1)))
    return path


def write_ours(path: Path, **changes) -> Path:
    """A valid file of our format, then `changes` applied as dataset/attribute edits."""
    rng = np.random.default_rng(1)
    rec = Recording.from_arrays(
        (rng.random((T, N)) < 0.05).astype(np.uint8),
        rng.uniform(0, 0.4, (N, 3)),
        rng.integers(-1, 72, N),
        frame_rate=4.0,
        name="ok",
    )
    rec.save(path)
    with h5py.File(path, "r+") as f:
        for key, value in changes.items():
            if key.startswith("@"):
                obj, _, attr = key[1:].rpartition("@")
                (f[obj] if obj else f).attrs[attr] = value
            elif value is None:
                del f[key]
            else:
                attrs = dict(f[key].attrs) if key in f else {}
                if key in f:
                    del f[key]
                f.create_dataset(key, data=value)
                f[key].attrs.update(attrs)
    return path


@dataclass
class BadCase:
    name: str
    make: Callable[[Path], Path]  # writes the file(s) into a folder, returns the file to read
    kind: str  # "ljp", "ours" or "labels" (a bad side file for a good LJP recording)
    expect: tuple[str, ...]  # all must appear in the error message


def _bytes(content: bytes):
    def make(d: Path) -> Path:
        p = d / "file.h5"
        p.write_bytes(content)
        return p

    return make


def _ljp(**kw):
    def make(d: Path) -> Path:
        arrays = good_ljp_arrays()
        arrays.update({k: v for k, v in kw.items() if isinstance(v, np.ndarray)})
        opts = {k: v for k, v in kw.items() if not isinstance(v, np.ndarray)}
        return write_ljp(d / "ljp.h5", arrays, **opts)

    return make


def _mutate(key: str, fn):
    def make(d: Path) -> Path:
        arrays = good_ljp_arrays()
        arrays[key] = fn(arrays[key].copy())
        return write_ljp(d / "ljp.h5", arrays)

    return make


def _set(a, idx, value):
    a[idx] = value
    return a


def _truncated(d: Path) -> Path:
    p = write_ljp(d / "ljp.h5")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _huge(d: Path) -> Path:
    p = write_ljp(d / "ljp.h5", skip=("spikes",))
    with h5py.File(p, "r+") as f:
        f.create_dataset(SPIKES, shape=(50_000_000, N), dtype=np.uint8, chunks=(1024, N))
    return p


def _string_spikes(d: Path) -> Path:
    p = write_ljp(d / "ljp.h5", skip=("spikes",))
    with h5py.File(p, "r+") as f:
        f.create_dataset(SPIKES, data=np.full((T, N), "1", dtype="S1"))
    return p


def _side_file(values) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        write_ljp(d / "ljp.h5")
        np.save(d / "labels.npy", values)
        return d / "labels.npy"

    return make


def _ours(**changes):
    return lambda d: write_ours(d / "ours.h5", **changes)


KEPT = N - 2  # neurons with a ZBrain label in good_ljp_arrays

CASES = [
    BadCase(
        "not_hdf5",
        _bytes(b"time,neuron,spike\n0,1,1\n" * 50),
        "ljp",
        ("file.h5", "not an HDF5 file"),
    ),
    BadCase("empty_file", _bytes(b""), "ljp", ("file.h5", "empty file")),
    BadCase("truncated", _truncated, "ljp", ("ljp.h5", "damaged HDF5 file")),
    BadCase("missing_spikes", _ljp(skip=("spikes",)), "ljp", ("ThresholdedSpikes", "no spike")),
    BadCase(
        "missing_coordinates",
        _ljp(skip=("zbrain",)),
        "ljp",
        ("ZBrainCoordinates", "no coordinates"),
    ),
    BadCase(
        "spikes_wrong_shape",
        _ljp(spikes=np.zeros((T, N + 3), np.float32)),
        "ljp",
        (SPIKES, f"{N:,} cells"),
    ),
    BadCase(
        "orientation_ambiguous",
        _ljp(spikes=np.zeros((N, N), np.float32), times=np.arange(N)[:, None] / 4.0),
        "ljp",
        (SPIKES, "cannot be told apart"),
    ),
    BadCase(
        "spikes_not_binary",
        _mutate("spikes", lambda a: a * 0.37 + 0.1),
        "ljp",
        (SPIKES, "not binary"),
    ),
    BadCase(
        "spikes_nan",
        _mutate("spikes", lambda a: _set(a, (4, 9), np.nan)),
        "ljp",
        (SPIKES, "nan at frame 4, neuron 9"),
    ),
    BadCase("spikes_text", _string_spikes, "ljp", (SPIKES, "dtype")),
    BadCase(
        "empty_recording",
        _ljp(spikes=np.zeros((0, N), np.float32), times=np.zeros((0, 1))),
        "ljp",
        (SPIKES, "no frames"),
    ),
    BadCase(
        "zero_neurons",
        _ljp(
            spikes=np.zeros((T, 0), np.float32),
            zbrain=np.zeros((0, 3), np.float32),
            labels=np.zeros((0, 294), np.float32),
        ),
        "ljp",
        (SPIKES, "no neurons"),
    ),
    BadCase(
        "coordinates_nan",
        _mutate("zbrain", lambda a: _set(a, (10, 1), np.nan)),
        "ljp",
        ("ZBrainCoordinates", "NaN"),
    ),
    BadCase(
        "labels_wrong_width",
        _ljp(labels=np.ones((N, 290), np.float32)),
        "ljp",
        ("/Data/Brain/Labels", "294"),
    ),
    BadCase(
        "labels_none_set",
        _ljp(labels=np.zeros((N, 294), np.float32)),
        "ljp",
        ("/Data/Brain/Labels", "no cell has any ZBrain label"),
    ),
    BadCase(
        "labels_nan",
        _mutate("labels", lambda a: _set(a, (0, 0), np.nan)),
        "ljp",
        ("/Data/Brain/Labels", "NaN"),
    ),
    BadCase(
        "times_length",
        _ljp(times=np.arange(T - 5)[:, None] / 4.0),
        "ljp",
        ("/Data/Brain/Times", f"{T - 5} entries", f"{T} frames"),
    ),
    BadCase(
        "times_not_increasing",
        _mutate("times", lambda a: _set(a, 20, 0.0)),
        "ljp",
        ("/Data/Brain/Times", "not strictly increasing"),
    ),
    BadCase("huge_declared_size", _huge, "ljp", (SPIKES, "50,000,000 frames", "damaged")),
    BadCase(
        "side_labels_wrong_length",
        _side_file(np.ones(KEPT - 1)),
        "labels",
        ("labels.npy", f"{KEPT - 1} entries", f"{KEPT} whole-brain neurons"),
    ),
    BadCase(
        "side_labels_out_of_range",
        _side_file(np.full(KEPT, 80.0)),
        "labels",
        ("labels.npy", "0 (unlabelled) to 72"),
    ),
    BadCase(
        "side_labels_fractional",
        _side_file(np.full(KEPT, 2.5)),
        "labels",
        ("labels.npy", "non-integer"),
    ),
    BadCase("ours_missing_coords", _ours(coords=None), "ours", ("/coords", "missing")),
    BadCase(
        "ours_labels_out_of_range",
        _ours(region_labels=np.full(N, 99, np.int16)),
        "ours",
        ("/region_labels", "label 99"),
    ),
    BadCase(
        "ours_uint8_not_binary",
        _ours(**{"spikes": np.full((T, N), 3, np.uint8), "@spikes@encoding": "uint8"}),
        "ours",
        ("/spikes", "not binary"),
    ),
    BadCase(
        "ours_bitpacked_wrong_count",
        _ours(**{"@spikes@n_neurons": N + 50}),
        "ours",
        ("/spikes", "n_neurons"),
    ),
    BadCase(
        "ours_coords_wrong_rows",
        _ours(coords=np.zeros((N - 1, 3), np.float32)),
        "ours",
        ("/coords", f"{N - 1} rows"),
    ),
    BadCase("ours_times_nan", _ours(times=np.full(T, np.nan)), "ours", ("/times", "NaN")),
    BadCase(
        "ours_newer_version",
        _ours(**{"@format_version": 99}),
        "ours",
        ("ours.h5", "newer crbm-explorer"),
    ),
]
