"""Data downloads of the views: CSV (columns) and HDF5 (arrays + attributes), built in memory
when the user clicks, so every figure's data can leave the dashboard without a notebook."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import h5py
import numpy as np
import panel as pn


def csv_bytes(columns: dict[str, np.ndarray], header: str = "") -> io.BytesIO:
    """Equal-length 1-D columns as CSV (a header row of the names; `header` lines first, each
    prefixed with '# ')."""
    cols = {k: np.asarray(v) for k, v in columns.items()}
    lengths = {k: v.shape for k, v in cols.items()}
    n = {v.shape[0] for v in cols.values()}
    if len(n) > 1 or any(len(s) != 1 for s in lengths.values()):
        raise ValueError(f"CSV columns must be 1-D of one length, got {lengths}")
    out = io.StringIO()
    for line in header.splitlines():
        out.write(f"# {line}\n")
    out.write(",".join(cols) + "\n")
    rows = zip(*(v.tolist() for v in cols.values()), strict=True)
    for r in rows:
        out.write(",".join("" if x is None else _cell(x) for x in r) + "\n")
    return io.BytesIO(out.getvalue().encode("utf-8"))


def _cell(x) -> str:
    if isinstance(x, float):
        return "nan" if x != x else repr(x)
    s = str(x)
    return f'"{s}"' if ("," in s or '"' in s) and not s.startswith('"') else s


def hdf5_bytes(arrays: dict[str, np.ndarray], attrs: dict | None = None) -> io.BytesIO:
    """An HDF5 file in memory: one dataset per array (string lists as UTF-8), `attrs` as file
    attributes (non-scalars as JSON)."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for k, v in arrays.items():
            a = np.asarray(v)
            if a.dtype.kind in "UO":
                a = np.asarray([str(x) for x in a.ravel()], dtype=h5py.string_dtype()).reshape(
                    a.shape
                )
            f.create_dataset(k, data=a)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v if np.isscalar(v) else json.dumps(v)
    buf.seek(0)
    return buf


def download_buttons(
    stem: str,
    csv: Callable[[], io.BytesIO],
    h5: Callable[[], io.BytesIO] | None = None,
    label: str = "data",
) -> tuple[pn.widgets.FileDownload, ...]:
    """FileDownload buttons (CSV, and HDF5 if `h5`) named f"{stem}.csv" / f"{stem}.h5"; each
    calls its function on click, so the file reflects the state at that moment."""

    def button(callback, suffix: str, kind: str) -> pn.widgets.FileDownload:
        return pn.widgets.FileDownload(
            callback=callback, filename=f"{stem}.{suffix}", label=f"{label} ({kind})",
            color="light", embed=False,
        )  # fmt: skip

    return (button(csv, "csv", "CSV"),) + ((button(h5, "h5", "HDF5"),) if h5 is not None else ())
