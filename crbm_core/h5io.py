"""Small HDF5 helpers shared by every file format of the project.

Writes are atomic: a file is written under a temporary name in the destination folder and renamed
over the target only when complete, so a crash or an error never leaves a half-written file and
never corrupts the previous good one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import h5py

from .errors import RecordingError


def previous_path(path: str | os.PathLike) -> Path:
    """Where `atomic_h5(..., keep_previous=True)` keeps the file it replaced."""
    path = Path(path)
    return path.with_name(path.stem + ".previous" + path.suffix)


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, keep_previous: bool = False) -> Iterator[h5py.File]:
    """Open a temporary HDF5 file beside `path`; rename it onto `path` only on success. With
    `keep_previous`, the file it replaces becomes `previous_path(path)`: a fallback for when
    the new one is later found damaged (a disk error, a bad copy), not only for a crash while
    writing."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"{path}: folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            yield f
        with open(tmp, "rb+") as fh:  # make the bytes durable before they replace the old file
            os.fsync(fh.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))  # a crash here leaves the previous one
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only, turning h5py's low-level errors into a readable one."""
    path = Path(path)
    if not path.exists():
        raise RecordingError("file does not exist", path=str(path))
    if path.is_dir():
        raise RecordingError("is a folder, not an HDF5 file", path=str(path))
    if not h5py.is_hdf5(path):
        size = path.stat().st_size
        what = "empty file" if size == 0 else f"{size} bytes without an HDF5 signature"
        raise RecordingError(f"not an HDF5 file ({what})", path=str(path))
    try:
        return h5py.File(path, "r")
    except OSError as exc:  # truncated or damaged files pass is_hdf5 and fail here
        raise RecordingError(f"damaged HDF5 file ({exc})", path=str(path)) from None


def read_str_attr(obj: h5py.HLObject, key: str, default: str = "") -> str:
    """An attribute as str, whether h5py stored it as bytes or str."""
    value = obj.attrs.get(key, default)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
