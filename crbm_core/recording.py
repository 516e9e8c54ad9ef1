"""Recordings: binarized whole-brain activity with neuron positions and region labels.

`Recording` holds spikes (T×N, 0/1), coordinates (N×3), per-neuron 72-region labels (−1 =
unlabelled), frame times and a name. Our HDF5 format (documented in the README) stores spikes
bit-packed along neurons and compressed, so a 50k-neuron recording takes a few tens of MB and can be
read lazily, a block of frames at a time. Every read is validated and every problem is reported
with the dataset it concerns, because a misread recording silently spoils every analysis after it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .errors import RecordingError
from .h5io import atomic_h5, open_h5, read_str_attr

FORMAT = "crbm-explorer/recording"
FORMAT_VERSION = 1
MAX_FRAMES = 5_000_000  # guards against absurd declared sizes (a real recording has < 100k)
MAX_NEURONS = 5_000_000
COORD_UNITS = ("mm", "um", "unknown")
CHUNK_FRAMES = 512


def default_region_names() -> tuple[str, ...]:
    from .atlas import REGION_NAMES

    return tuple(REGION_NAMES)


# --------------------------------------------------------------------------------------------
# validation helpers: each names the dataset and the problem


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_binary_block(block: np.ndarray, dataset: str, path=None, frame0: int = 0) -> np.ndarray:
    """Return `block` as uint8 0/1, or raise naming the first NaN / non-binary entry."""
    if block.dtype == np.uint8 or block.dtype == bool:
        if block.dtype == bool:
            return block.view(np.uint8)
        bad = block > 1
    elif np.issubdtype(block.dtype, np.integer):
        bad = (block != 0) & (block != 1)
    elif np.issubdtype(block.dtype, np.floating):
        nan = ~np.isfinite(block)
        if nan.any():
            t, i = _first_index(nan)
            raise RecordingError(
                f"contains {block[t, i]} at frame {t + frame0}, neuron {i}; spikes must be 0 or 1",
                path=path,
                dataset=dataset,
            )
        bad = (block != 0) & (block != 1)
    else:
        raise RecordingError(
            f"has dtype {block.dtype}; expected binary numbers (uint8, bool, int or float 0/1)",
            path=path,
            dataset=dataset,
        )
    if bad.any():
        t, i = _first_index(bad)
        raise RecordingError(
            f"is not binary: value {float(block[t, i]):g} at frame {t + frame0}, neuron {i} "
            "(spikes must be 0 or 1; is this ΔF/F or inferred spikes, not thresholded ones?)",
            path=path,
            dataset=dataset,
        )
    return block.astype(np.uint8, copy=False)


def check_shape_size(n_frames: int, n_neurons: int, dataset: str, path=None) -> None:
    if n_frames == 0:
        raise RecordingError("has no frames (empty recording)", path=path, dataset=dataset)
    if n_neurons == 0:
        raise RecordingError("has no neurons", path=path, dataset=dataset)
    if n_frames > MAX_FRAMES or n_neurons > MAX_NEURONS:
        raise RecordingError(
            f"declares {n_frames:,} frames × {n_neurons:,} neurons, beyond the supported "
            f"{MAX_FRAMES:,} × {MAX_NEURONS:,}; the file is probably damaged",
            path=path,
            dataset=dataset,
        )


def check_coords(coords: np.ndarray, n_neurons: int, dataset: str, path=None) -> np.ndarray:
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise RecordingError(
            f"has shape {coords.shape}; expected (N, 3) with N = {n_neurons:,}",
            path=path,
            dataset=dataset,
        )
    if coords.shape[0] != n_neurons:
        raise RecordingError(
            f"has {coords.shape[0]:,} rows but the spikes have {n_neurons:,} neurons",
            path=path,
            dataset=dataset,
        )
    if coords.dtype.kind not in "biuf":
        raise RecordingError(
            f"has dtype {coords.dtype}; expected real numbers", path=path, dataset=dataset
        )
    bad = ~np.isfinite(coords)
    if bad.any():
        i, _ = _first_index(bad)
        raise RecordingError(
            f"contains NaN/inf for neuron {i} ({bad.any(axis=1).sum():,} neurons affected)",
            path=path,
            dataset=dataset,
        )
    return coords.astype(np.float32)


def check_labels(labels: np.ndarray, n_neurons: int, n_regions: int, dataset: str, path=None):
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n_neurons:
        raise RecordingError(
            f"has shape {labels.shape}; expected ({n_neurons:,},), one label per neuron",
            path=path,
            dataset=dataset,
        )
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise RecordingError("contains non-integer values", path=path, dataset=dataset)
    elif not np.issubdtype(labels.dtype, np.integer):
        raise RecordingError(
            f"has dtype {labels.dtype}; expected integers", path=path, dataset=dataset
        )
    labels = labels.astype(np.int64)
    bad = (labels < -1) | (labels >= n_regions)
    if bad.any():
        i = int(np.argmax(bad))
        raise RecordingError(
            f"has label {labels[i]} for neuron {i}; labels must be −1 (unlabelled) or "
            f"0..{n_regions - 1} ({n_regions} regions)",
            path=path,
            dataset=dataset,
        )
    return labels.astype(np.int16)


def check_times(times: np.ndarray, n_frames: int, dataset: str, path=None) -> np.ndarray:
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if times.shape[0] != n_frames:
        raise RecordingError(
            f"has {times.shape[0]:,} entries but the spikes have {n_frames:,} frames",
            path=path,
            dataset=dataset,
        )
    if not np.all(np.isfinite(times)):
        raise RecordingError("contains NaN/inf", path=path, dataset=dataset)
    if n_frames > 1 and np.any(np.diff(times) <= 0):
        i = int(np.argmax(np.diff(times) <= 0))
        raise RecordingError(
            f"is not strictly increasing (frame {i + 1}: {times[i + 1]} after {times[i]})",
            path=path,
            dataset=dataset,
        )
    return times


def check_frame_rate(frame_rate: float, dataset: str = "frame_rate", path=None) -> float:
    rate = float(frame_rate)
    if not np.isfinite(rate) or rate <= 0:
        raise RecordingError(
            f"is {frame_rate}; must be a positive number of frames per second",
            path=path,
            dataset=dataset,
        )
    return rate


def check_fields(
    coords, labels, times, coords_unit: str, n_frames: int, n_neurons: int, n_regions: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the per-neuron and per-frame fields of an in-memory recording."""
    if coords_unit not in COORD_UNITS:
        raise RecordingError(f"coords unit {coords_unit!r} is not one of {COORD_UNITS}")
    return (
        check_coords(coords, n_neurons, "coords"),
        check_labels(labels, n_neurons, n_regions, "region_labels"),
        check_times(times, n_frames, "times"),
    )


# --------------------------------------------------------------------------------------------
# lazy spikes


class H5Spikes:
    """Spikes inside one of our recording files, read a block of frames at a time.

    Indexing with frames (an int, a slice or an index array), optionally followed by neurons,
    returns uint8 arrays. Each read opens the file briefly, so the object can be pickled and used
    from another process.
    """

    ndim = 2
    dtype = np.dtype(np.uint8)

    def __init__(self, path: str | os.PathLike, n_frames: int, n_neurons: int, encoding: str):
        self.path = str(path)
        self.shape = (int(n_frames), int(n_neurons))
        self.encoding = encoding

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"H5Spikes({self.path!r}, frames={self.shape[0]}, neurons={self.shape[1]})"

    def _read_frames(self, frames) -> np.ndarray:
        try:
            with h5py.File(self.path, "r") as f:
                ds = f["spikes"]
                if isinstance(frames, np.ndarray):  # h5py needs sorted unique fancy indices
                    uniq, inverse = np.unique(frames, return_inverse=True)
                    raw = ds[uniq][inverse]
                else:
                    raw = ds[frames]
        except OSError as exc:  # damaged chunk, file replaced or removed since opening
            raise RecordingError(
                f"could not be read ({exc})", path=self.path, dataset="/spikes"
            ) from None
        if self.encoding == "bitpacked":
            raw = np.unpackbits(np.atleast_2d(raw), axis=-1, count=self.shape[1])
            if isinstance(frames, (int, np.integer)):
                raw = raw[0]
        return np.ascontiguousarray(raw, dtype=np.uint8)

    def __getitem__(self, key) -> np.ndarray:
        frames, neurons = key if isinstance(key, tuple) else (key, slice(None))
        if isinstance(frames, (list, np.ndarray)):
            frames = np.asarray(frames)
            if frames.dtype == bool:
                frames = np.flatnonzero(frames)
            frames = np.where(frames < 0, frames + self.shape[0], frames)
        out = self._read_frames(frames)
        return out[..., neurons] if neurons != slice(None) else out

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def iter_blocks(self, chunk: int = CHUNK_FRAMES) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first frame, block) pairs covering all frames in order."""
        for t0 in range(0, self.shape[0], chunk):
            yield t0, self[t0 : t0 + chunk]


def iter_blocks(spikes, chunk: int = CHUNK_FRAMES) -> Iterator[tuple[int, np.ndarray]]:
    """Blocks of frames of an in-memory or lazy spike matrix."""
    if isinstance(spikes, H5Spikes):
        yield from spikes.iter_blocks(chunk)
    else:
        for t0 in range(0, spikes.shape[0], chunk):
            yield t0, np.asarray(spikes[t0 : t0 + chunk])


# --------------------------------------------------------------------------------------------
# the Recording


@dataclass(eq=False)
class Recording:
    """A binarized recording: what the cRBM is trained on and what the views display.

    spikes: T×N 0/1 (uint8 array, or `H5Spikes` when read lazily); coords: N×3 in `coords_unit`
    in the space of `atlas`; region_labels: N ints indexing `region_names` (−1 = unlabelled);
    times: T seconds.
    """

    spikes: np.ndarray | H5Spikes
    coords: np.ndarray
    region_labels: np.ndarray
    times: np.ndarray
    name: str = "recording"
    coords_unit: str = "mm"
    atlas: str = "zbrain"
    region_names: tuple[str, ...] = field(default_factory=default_region_names)
    species: str = "Danio rerio"
    source: str = ""

    def __post_init__(self):
        if not isinstance(self.spikes, H5Spikes):
            spikes = np.asarray(self.spikes)
            if spikes.ndim != 2:
                raise RecordingError(
                    f"has shape {spikes.shape}; expected 2-D frames × neurons", dataset="spikes"
                )
            check_shape_size(*spikes.shape, dataset="spikes")
            self.spikes = check_binary_block(spikes, "spikes")
        n_frames, n_neurons = self.spikes.shape
        self.region_names = tuple(str(n) for n in self.region_names)
        self.coords, self.region_labels, self.times = check_fields(
            self.coords,
            self.region_labels,
            self.times,
            self.coords_unit,
            n_frames,
            n_neurons,
            len(self.region_names),
        )
        if n_frames < 2:
            raise RecordingError("a recording needs at least 2 frames", dataset="spikes")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls, spikes, coords, region_labels=None, *, frame_rate=None, times=None, **kwargs
    ) -> Recording:
        """Build from arrays; give `times` or `frame_rate` (times then start at 0)."""
        spikes = np.asarray(spikes)
        if times is None:
            if frame_rate is None:
                raise RecordingError("give either frame times or a frame rate")
            times = np.arange(spikes.shape[0]) / check_frame_rate(frame_rate)
        if region_labels is None:
            region_labels = np.full(spikes.shape[1] if spikes.ndim == 2 else 0, -1)
        return cls(spikes, coords, region_labels, times, **kwargs)

    # -- basic properties ---------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return int(self.spikes.shape[0])

    @property
    def n_neurons(self) -> int:
        return int(self.spikes.shape[1])

    @property
    def frame_rate(self) -> float:
        """Frames per second, 1 / mean frame interval (as the LJP tools compute it)."""
        return float(1.0 / np.mean(np.diff(self.times)))

    @property
    def duration(self) -> float:
        return float(self.times[-1] - self.times[0] + 1.0 / self.frame_rate)

    def coords_mm(self) -> np.ndarray:
        return self.coords / 1000.0 if self.coords_unit == "um" else self.coords

    def spike_array(self) -> np.ndarray:
        """All spikes in memory as a T×N uint8 array."""
        return np.asarray(self.spikes)

    def firing_rates(self) -> np.ndarray:
        """Mean spike probability per frame of every neuron (read block by block)."""
        total = np.zeros(self.n_neurons, dtype=np.int64)
        for _, block in iter_blocks(self.spikes):
            total += block.sum(axis=0, dtype=np.int64)
        return total / self.n_frames

    def region_counts(self) -> np.ndarray:
        """Neurons per region (length len(region_names)); unlabelled ones are not counted."""
        lab = self.region_labels[self.region_labels >= 0]
        return np.bincount(lab, minlength=len(self.region_names))

    def summary(self) -> dict:
        """Numbers a person checks first: size, rate, firing statistics, region coverage."""
        rates = self.firing_rates()
        counts = self.region_counts()
        top = np.argsort(counts)[::-1][:5]
        return {
            "name": self.name,
            "neurons": self.n_neurons,
            "frames": self.n_frames,
            "frame_rate_hz": self.frame_rate,
            "duration_s": self.duration,
            "mean_rate": float(rates.mean()),
            "median_rate": float(np.median(rates)),
            "silent_neurons": int((rates == 0).sum()),
            "labelled_fraction": float((self.region_labels >= 0).mean()),
            "top_regions": {self.region_names[i]: int(counts[i]) for i in top if counts[i] > 0},
            "coords_unit": self.coords_unit,
            "atlas": self.atlas,
            "source": self.source,
        }

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write in our HDF5 format, atomically."""
        return write_recording(
            path,
            iter_blocks(self.spikes),
            n_frames=self.n_frames,
            n_neurons=self.n_neurons,
            coords=self.coords,
            region_labels=self.region_labels,
            times=self.times,
            name=self.name,
            coords_unit=self.coords_unit,
            atlas=self.atlas,
            region_names=self.region_names,
            species=self.species,
            source=self.source,
        )

    @classmethod
    def load(cls, path: str | os.PathLike, lazy: bool = True) -> Recording:
        return read_recording(path, lazy=lazy)


def is_recording_file(path: str | os.PathLike) -> bool:
    with open_h5(path) as f:
        return read_str_attr(f, "format") == FORMAT


def write_recording(
    path: str | os.PathLike,
    blocks: Iterable[tuple[int, np.ndarray]],
    *,
    n_frames: int,
    n_neurons: int,
    coords: np.ndarray,
    region_labels: np.ndarray,
    times: np.ndarray,
    name: str,
    coords_unit: str = "mm",
    atlas: str = "zbrain",
    region_names: tuple[str, ...] | None = None,
    species: str = "",
    source: str = "",
    extra: Callable[[h5py.File], None] | None = None,
) -> Path:
    """Write a recording to `path` atomically, spikes streamed as (first frame, T_b×N) blocks.

    `extra(f)` may add more groups (a virtual fish's ground truth) before the file is closed.

    Everything is validated as it goes, so a bad block or field aborts the write and leaves
    nothing behind (and an existing file at `path` untouched).
    """
    path = Path(path)
    region_names = tuple(region_names or default_region_names())
    check_shape_size(n_frames, n_neurons, "spikes")
    coords, region_labels, times = check_fields(
        coords, region_labels, times, coords_unit, n_frames, n_neurons, len(region_names)
    )
    n_bytes = (n_neurons + 7) // 8
    with atomic_h5(path) as f:
        f.attrs.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            name=name,
            frame_rate=float(1.0 / np.mean(np.diff(times))) if n_frames > 1 else np.nan,
            species=species,
            source=source,
        )
        ds = f.create_dataset(
            "spikes",
            shape=(n_frames, n_bytes),
            dtype=np.uint8,
            chunks=(min(n_frames, CHUNK_FRAMES), n_bytes),
            compression="gzip",
            compression_opts=4,
        )
        ds.attrs.update(encoding="bitpacked", n_neurons=n_neurons, bitorder="big")
        written = 0
        for t0, block in blocks:
            if t0 != written or block.ndim != 2 or block.shape[1] != n_neurons:
                raise RecordingError(
                    f"spike block at frame {t0} has shape {block.shape}; "
                    f"expected frames × {n_neurons}",
                    dataset="spikes",
                )
            block = check_binary_block(block, "spikes", frame0=t0)
            ds[t0 : t0 + block.shape[0]] = np.packbits(block, axis=1)
            written += block.shape[0]
        if written != n_frames:
            raise RecordingError(
                f"got {written} frames of spikes, expected {n_frames}", dataset="spikes"
            )
        c = f.create_dataset("coords", data=coords)
        c.attrs.update(unit=coords_unit, atlas=atlas)
        f.create_dataset("region_labels", data=region_labels)
        f.create_dataset("region_names", data=np.array(region_names, dtype=h5py.string_dtype()))
        f.create_dataset("times", data=times).attrs["unit"] = "s"
        if extra is not None:
            extra(f)
    return path


def _require(f: h5py.File, name: str, path: str) -> h5py.Dataset:
    obj = f.get(name)
    if obj is None:
        raise RecordingError("dataset is missing", path=path, dataset=f"/{name}")
    if not isinstance(obj, h5py.Dataset):
        raise RecordingError("is a group, expected a dataset", path=path, dataset=f"/{name}")
    return obj


def read_recording(
    path: str | os.PathLike,
    lazy: bool = True,
    validate_spikes: bool = True,
) -> Recording:
    """Read one of our recording files, validating every dataset.

    With `lazy`, spikes stay on disk (an `H5Spikes`); a uint8-encoded file is still scanned once
    for non-binary values unless `validate_spikes` is False.
    """
    path = str(path)
    with open_h5(path) as f:
        fmt = read_str_attr(f, "format")
        if fmt != FORMAT:
            if "Data" in f:
                raise RecordingError(
                    "is in the LJP/Fishualizer layout; convert it first with `crbm import`",
                    path=path,
                )
            raise RecordingError(
                f"is not a crbm-explorer recording (format attribute {fmt!r})", path=path
            )
        version = int(f.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise RecordingError(
                f"was written by a newer crbm-explorer (format version {version},"
                f" this one reads ≤ {FORMAT_VERSION}); upgrade",
                path=path,
            )
        ds = _require(f, "spikes", path)
        encoding = read_str_attr(ds, "encoding", "uint8")
        if ds.ndim != 2:
            raise RecordingError(
                f"has shape {ds.shape}; expected 2-D", path=path, dataset="/spikes"
            )
        if encoding == "bitpacked":
            n_neurons = int(ds.attrs.get("n_neurons", -1))
            if ds.dtype != np.uint8 or not (ds.shape[1] * 8 - 7 <= n_neurons <= ds.shape[1] * 8):
                raise RecordingError(
                    f"bit-packed spikes of shape {ds.shape} ({ds.dtype}) do not hold "
                    f"n_neurons = {n_neurons}",
                    path=path,
                    dataset="/spikes",
                )
        elif encoding == "uint8":
            n_neurons = ds.shape[1]
        else:
            raise RecordingError(f"has unknown encoding {encoding!r}", path=path, dataset="/spikes")
        n_frames = ds.shape[0]
        check_shape_size(n_frames, n_neurons, "/spikes", path)
        if ds.chunks is None and ds.id.get_storage_size() < ds.size * ds.dtype.itemsize:
            raise RecordingError(
                "is cut short (fewer bytes stored than declared)", path=path, dataset="/spikes"
            )

        names_ds = f.get("region_names")
        region_names = (
            tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names_ds[()])
            if names_ds is not None
            else default_region_names()
        )
        coords_ds = _require(f, "coords", path)
        coords = check_coords(coords_ds[()], n_neurons, "/coords", path)
        unit = read_str_attr(coords_ds, "unit", "unknown")
        if unit not in COORD_UNITS:
            raise RecordingError(
                f"unit attribute {unit!r} is not one of {COORD_UNITS}", path=path, dataset="/coords"
            )
        labels = check_labels(
            _require(f, "region_labels", path)[()],
            n_neurons,
            len(region_names),
            "/region_labels",
            path,
        )
        if "times" in f:
            times = check_times(f["times"][()], n_frames, "/times", path)
        else:
            rate = check_frame_rate(f.attrs.get("frame_rate", np.nan), "frame_rate attribute", path)
            times = np.arange(n_frames) / rate
        if n_frames < 2:
            raise RecordingError(
                "a recording needs at least 2 frames", path=path, dataset="/spikes"
            )
        meta = dict(
            name=read_str_attr(f, "name", Path(path).stem),
            coords_unit=unit,
            atlas=read_str_attr(coords_ds, "atlas", "unknown"),
            region_names=region_names,
            species=read_str_attr(f, "species", ""),
            source=read_str_attr(f, "source", ""),
        )
        if not lazy:
            try:
                raw = ds[()]
            except OSError as exc:
                raise RecordingError(
                    f"could not be read ({exc})", path=path, dataset="/spikes"
                ) from None
    spikes = H5Spikes(path, n_frames, n_neurons, encoding)
    if not lazy:
        spikes = (
            np.unpackbits(raw, axis=1, count=n_neurons)
            if encoding == "bitpacked"
            else check_binary_block(raw, "/spikes", path)
        )
    elif encoding == "uint8" and validate_spikes:
        for t0, block in spikes.iter_blocks():
            check_binary_block(block, "/spikes", path, frame0=t0)
    rec = Recording.__new__(Recording)  # fields are validated above; skip the in-memory checks
    rec.__dict__.update(spikes=spikes, coords=coords, region_labels=labels, times=times, **meta)
    return rec
