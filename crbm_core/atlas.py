"""Brain-region tables of the larval zebrafish atlas, and the structural connectome.

Why this module exists: every analysis that speaks of "regions" (per-region activity, functional
vs structural connectivity, virtual fish with realistic anatomy) needs one agreed region index.
We use the 72 mapzebrain/MPIN regions (36 regions x left/right) of van der Plas, Tubiana et al.,
eLife 2023;12:e83139, in *list-36 order* (Python-sorted names), with index ``2*i`` = left and
``2*i + 1`` = right. The small tables (names, abbreviations, display order) are hard-coded here.

The large reference files (label volume, structural connectivity CSV, ZBrain names, per-fish
labels) come from the authors' repository github.com/vdplasthijs/zf-rbm (MIT licence) and are
*not* shipped: :func:`fetch` (``crbm atlas fetch``) downloads them at a pinned commit and checks
their SHA-256, or ``CRBM_ATLAS_DIR`` points at a copy. Everything else works without them; the
functions that need one raise :class:`AtlasFileMissing`, which says what to do.

Two traps of the reference data are handled here, by name and not by position:

* the connectivity CSV is sorted case-insensitively, so ``medial_octavolateral_nucleus`` comes
  before ``MO_stripe_1..5`` (the authors' loader ignored the header and swapped them), and it
  misspells ``posterior_teberculum``;
* the label volume is flipped in x and z with respect to the recordings' ZBrain coordinates, and
  the hemisphere is decided by the flipped voxel x (``> 310`` = right, i.e. data x < ~0.248 mm).

Region geometry (centroids, extents) and the real fish's neuron share per region are committed
in ``crbm_core/tables/region_geometry.csv`` (derived numbers with attribution), so virtual fish
get realistic anatomy even without the label volume.
"""

from __future__ import annotations

import csv
import difflib
import functools
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CrbmError

__all__ = [
    "ATLAS_COMMIT",
    "ATLAS_DIR_ENV",
    "ATLAS_FILES",
    "ATLAS_REPOSITORY",
    "ATLAS_SHAPE",
    "DISPLAY_ORDER",
    "HEMISPHERE",
    "MIDLINE_X_MM",
    "N_REGIONS",
    "N_ZBRAIN",
    "REGIONS_36",
    "REGION_ABBREVS",
    "REGION_NAMES",
    "VOXEL_SIZE_UM",
    "AtlasFetchError",
    "AtlasFile",
    "AtlasFileMissing",
    "AtlasFormatError",
    "RegionGeometry",
    "UnknownRegionError",
    "atlas_dir",
    "available",
    "build_region_geometry_table",
    "contralateral",
    "default_atlas_dir",
    "fetch",
    "label_volume",
    "missing_message",
    "read_connectivity_csv",
    "region_geometry",
    "region_index",
    "region_of_coords",
    "region_voxel_coords_mm",
    "sample_region_positions",
    "structural_connectivity",
    "write_region_geometry_table",
    "zbrain_region_names",
]

# --------------------------------------------------------------------------------------------
# Region tables (hard-coded; checked against the reference files by tests/test_atlas.py)
# --------------------------------------------------------------------------------------------

#: The 36 mapzebrain/MPIN region names in list-36 order (Python ``sorted``, case-sensitive).
REGIONS_36: tuple[str, ...] = (
    "Anterior_reticular_formation",
    "Caudal_hypothalamus",
    "Cerebellum",
    "Glossopharyngeal_ganglion",
    "Habenula",
    "Inferior_olive",
    "Intermediate_hypothalamus",
    "Intermediate_reticular_formation",
    "Interpeduncular_nucleus",
    "MO_stripe_1",
    "MO_stripe_2",
    "MO_stripe_3",
    "MO_stripe_4",
    "MO_stripe_5",
    "Medial_octavolateral_nucleus",
    "Octaval_ganglion",
    "Olfactory_bulb",
    "Olfactory_epithelium",
    "Pallium",
    "Pituitary",
    "Posterior_reticular_formation",
    "Posterior_tuberculum",
    "Preoptic_region",
    "Pretectum",
    "Raphe_nucleus",
    "Retina",
    "Rostral_hypothalamus",
    "Subpallium",
    "Tectum",
    "Tegmentum",
    "Thalamus",
    "Torus_longitudinalis",
    "Torus_semicircularis",
    "Trigeminal_ganglion",
    "Vagal_region",
    "Vagus_motor_neurons",
)

# (left, right) abbreviations from region_names_baier_abbreviations.txt, in list-36 order.
_ABBREV_PAIRS: tuple[tuple[str, str], ...] = (
    ("arf", "aRF"),
    ("hc", "Hc"),
    ("ce", "Ce"),
    ("gg", "GG"),
    ("ha", "Ha"),
    ("io", "IO"),
    ("hi", "Hi"),
    ("irf", "iRF"),
    ("nln", "Nln"),
    ("mos1", "MOS1"),
    ("mos2", "MOS2"),
    ("mos3", "MOS3"),
    ("mos4", "MOS4"),
    ("mos5", "MOS5"),
    ("mon", "MON"),
    ("og", "OG"),
    ("ob", "OB"),
    ("oe", "OE"),
    ("p", "P"),
    ("pit", "Pit"),
    ("prf", "pRF"),
    ("pt", "PT"),
    ("po", "Po"),
    ("pr", "Pr"),
    ("r", "R"),
    ("ret", "Ret"),
    ("hr", "Hr"),
    ("s", "S"),
    ("teo", "TeO"),
    ("t", "T"),
    ("th", "TH"),
    ("tl", "TL"),
    ("ts", "TS"),
    ("tg", "TG"),
    ("vr", "VR"),
    ("nx", "NX"),
)

# The paper's matrix display order (Kunst et al.), from order_baier_regions_kunstetal.txt
# (the paper's plots also invert the x-axis).
_DISPLAY_ORDER_ABBREVS: tuple[str, ...] = tuple(
    (
        "th ts t mos1 TH TS T MOS1 MOS5 mos4 MOS4 mos5 mon MON Ce ce MOS3 mos3 Pr pr Hi Nln Hc hc "
        "hi nln Po po PT pt P p S s mos2 MOS2 vr OG TG tg gg GG OE oe VR og IO nx NX io Ret tl TL "
        "ret pit Pit Hr hr TeO teo OB ob ha Ha irf prf r R iRF pRF arf aRF"
    ).split()
)

N_REGIONS = 72
N_ZBRAIN = 294
#: ``<Name>_left`` / ``<Name>_right``; index 2i = left, 2i+1 = right of ``REGIONS_36[i]``.
REGION_NAMES: tuple[str, ...] = tuple(
    f"{r}_{side}" for r in REGIONS_36 for side in ("left", "right")
)
#: Abbreviations: lower-case = left, capitalised = right (``teo`` / ``TeO``).
REGION_ABBREVS: tuple[str, ...] = tuple(a for pair in _ABBREV_PAIRS for a in pair)
#: ``'L'`` or ``'R'`` per 72-region index.
HEMISPHERE: tuple[str, ...] = tuple("LR"[i % 2] for i in range(N_REGIONS))

_ABBREV_TO_INDEX = {a: i for i, a in enumerate(REGION_ABBREVS)}
_NAME_TO_INDEX = {n.lower(): i for i, n in enumerate(REGION_NAMES)}

#: 72-region indices in the paper's display order (read-only).
DISPLAY_ORDER: np.ndarray = np.array([_ABBREV_TO_INDEX[a] for a in _DISPLAY_ORDER_ABBREVS])
DISPLAY_ORDER.setflags(write=False)

# ZBrain atlas grid (recordings' ``zbrain_coords`` are in mm in this space).
MIDLINE_X_MM = 0.248
VOXEL_SIZE_UM: tuple[float, float, float] = (0.798, 0.798, 2.0)
ATLAS_SHAPE: tuple[int, int, int] = (621, 1406, 138)
_RIGHT_IF_GRID_X_ABOVE = ATLAS_SHAPE[0] // 2  # 310, the authors' int(0.5 * 621)

ATTRIBUTION = (
    "Derived from the reference data of github.com/vdplasthijs/zf-rbm (MIT licence, (c) the "
    "authors): van der Plas, Tubiana et al., 'Neural assemblies uncovered by generative modeling "
    "explain whole-brain activity statistics and reflect structural connectivity', "
    "eLife 2023;12:e83139. Atlas: Kunst et al. 2019 (mapzebrain); Randlett et al. 2015 (ZBrain)."
)


class UnknownRegionError(CrbmError, ValueError):
    """A region name or abbreviation that is not one of the 72 regions."""


class AtlasFormatError(CrbmError, ValueError):
    """A reference file exists but does not have the expected content."""


class AtlasFetchError(CrbmError, RuntimeError):
    """Downloading the reference files failed (offline, HTTP error, checksum mismatch)."""


class AtlasFileMissing(CrbmError, FileNotFoundError):
    """A reference file is not in the atlas folder; the message says how to get it."""

    def __init__(self, path: Path, description: str = "") -> None:
        what = f" ({description})" if description else ""
        super().__init__(
            f"Atlas reference file missing: {path}{what}. Run `crbm atlas fetch` to download the "
            f"reference files from github.com/{ATLAS_REPOSITORY}, or set {ATLAS_DIR_ENV} to a "
            "folder that has them (same relative paths as in that repository)."
        )
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.args[0])


# --------------------------------------------------------------------------------------------
# Region names
# --------------------------------------------------------------------------------------------


def region_index(name_or_abbrev: str) -> int:
    """72-region index of a full name (case-insensitive) or an abbreviation (case-sensitive).

    >>> region_index("Tectum_right"), region_index("teo"), region_index("TeO")
    (57, 56, 57)
    """
    key = str(name_or_abbrev).strip()
    if key in _ABBREV_TO_INDEX:
        return _ABBREV_TO_INDEX[key]
    low = key.lower().replace("teberculum", "tuberculum")
    if low in _NAME_TO_INDEX:
        return _NAME_TO_INDEX[low]
    candidates = {n.lower(): n for n in REGION_NAMES} | {a.lower(): a for a in REGION_ABBREVS}
    close = difflib.get_close_matches(low, list(candidates), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(candidates[c] for c in close)}?" if close else ""
    raise UnknownRegionError(
        f"Unknown region {name_or_abbrev!r}: expected one of the 72 names such as "
        f"'Tectum_left' (any case) or an abbreviation such as 'teo'/'TeO' (exact case).{hint}"
    )


def contralateral(index: int) -> int:
    """Index of the same region in the other hemisphere."""
    i = int(index)
    if not 0 <= i < N_REGIONS:
        raise IndexError(f"region index {index} outside 0..{N_REGIONS - 1}")
    return i ^ 1


# --------------------------------------------------------------------------------------------
# Reference files: where they are, which ones, what is missing
# --------------------------------------------------------------------------------------------

ATLAS_DIR_ENV = "CRBM_ATLAS_DIR"
ATLAS_REPOSITORY = "vdplasthijs/zf-rbm"
#: Pinned commit of the reference snapshot ("update cite file"); files are SHA-256 checked.
ATLAS_COMMIT = "b5df4e3"
# A full commit id of the same repository whose data files are the same blobs (every data file
# below has a single version in the repository's history); used if the short id does not resolve.
_ATLAS_COMMIT_FULL = "0e433f3d08e646a2415cd9457656d606f638ea12"
DEFAULT_BASE_URLS: tuple[str, ...] = tuple(
    f"https://raw.githubusercontent.com/{ATLAS_REPOSITORY}/{c}"
    for c in (ATLAS_COMMIT, _ATLAS_COMMIT_FULL)
)


@dataclass(frozen=True)
class AtlasFile:
    """One reference file: its key, path relative to the atlas folder, size and SHA-256."""

    key: str
    relpath: str
    size: int
    sha256: str
    description: str
    optional: bool = False


_FISH_RUNS: tuple[tuple[str, int, str], ...] = (
    ("20181206_Run03", 360784, "249a1973451e6c222ed635ba8136b232d54d0a2088d923f4e772d649468f6c14"),
    ("20181206_Run05", 187696, "25677ba50aeda926cf5ec6243abf254a839917db6774223ad525b3eced765f7b"),
    ("20181218_Run02", 338568, "f0ef7b4314b23abb37f04dbc4fb575c26a195f5c45ad95da1a310f0bcc6451be"),
    ("20190102_Run01", 202200, "483a6773d2e676ae1572a944f58c1ffa7c32e2bd0402686bae62ecf761f20a86"),
    ("20190108_Run05", 199640, "b0196b3c3652cbbd8bcda0c537d91832e00def3949f5a1d6ac6d9feed4f1f539"),
    ("20190109_Run04", 210952, "08990bd30c029f74872ad2375961b690bddb5a64c7f2fd484260ff98257efb24"),
    ("20190130_Run03", 239432, "b008ce5aab50c5d4fb709dbb1ac15613f6edff4226616d4a5cc2f11e107bbfbe"),
    ("20190425_Run04", 84784, "23a83452b7bb0608b1312278078ded76dc5d1b91561da7d7557699296b90ea79"),
    ("20190502_Run04", 99104, "3d42a441765a853494bca892ba0bf9dd4ecdbc563cfea895bf7ac8409533e49f"),
    ("20190503_Run04", 83880, "d69614f08b0fc6dc3672a15ae9f2ca21f4ae88ac1034a9449aa39ac5a97772f5"),
    ("20191126_Run02", 120000, "45c3966ca6dcfe7337672b2c980169fa11983051812570b84e2a29e6db2bb61e"),
)

ATLAS_FILES: tuple[AtlasFile, ...] = (
    AtlasFile(
        "connectivity",
        "atlas_data/connectivity_matrix.csv",
        61019,
        "fc55930d71735e6c7f3128b5b6ca88a8e47a57bf1947cd739ae75e1e1df6021d",
        "72x72 structural connectivity, Kunst et al. 2019",
    ),
    AtlasFile(
        "label_volume",
        "atlas_data/Combined_regions_MPIN_to_zbrain_labeled_matfile.mat",
        1538891,
        "f88cb65b19636a337fb76ac1e33efa1bf4a1a111b2c3f0163f8c60c6f942554a",
        "label volume of the 36 regions on the ZBrain grid",
    ),
    AtlasFile(
        "zbrain_names",
        "Content/RegionLabels.txt",
        11306,
        "f943a155164007ba54dce5e2071ea0e268f3783c83d6e024e574a1fb606649c3",
        "names of the 294 ZBrain regions",
    ),
    AtlasFile(
        "abbreviations",
        "baier_atlas_labels/region_names_baier_abbreviations.txt",
        1848,
        "ad6cd4a8d4d38895bc14dfaa0779bd1a6a0877bc2d41969a59bbab8b37f947f0",
        "72 region names and abbreviations",
    ),
    AtlasFile(
        "display_order",
        "baier_atlas_labels/order_baier_regions_kunstetal.txt",
        244,
        "6fe34bc0095df7c06c0ff81141dfcba1e523b4d9850ec0f12fd0b33cad8c8a40",
        "the paper's display order of the 72 regions",
    ),
) + tuple(
    AtlasFile(
        f"fish_labels/{run}",
        f"baier_atlas_labels/baier_rl-region-labels__{run}__labelled-2020-10-15.npy",
        size,
        sha,
        f"72-region label of every neuron of real fish {run}",
        optional=True,
    )
    for run, size, sha in _FISH_RUNS
)
_FILES = {f.key: f for f in ATLAS_FILES}
_FISH_KEYS = tuple(f"fish_labels/{run}" for run, _, _ in _FISH_RUNS)

#: What each user-facing capability needs (for :func:`available` / :func:`missing_message`).
_NEEDS: dict[str, tuple[str, ...]] = {
    "connectivity": ("connectivity",),
    "label_volume": ("label_volume",),
    "zbrain_names": ("zbrain_names",),
    "abbreviations": ("abbreviations",),
    "display_order": ("display_order",),
    "fish_labels": _FISH_KEYS,
}


def default_atlas_dir() -> Path:
    """Per-user folder for the reference files: ``$XDG_CACHE_HOME/crbm-explorer/atlas``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "crbm-explorer" / "atlas"


def atlas_dir() -> Path:
    """Folder of the reference files: ``$CRBM_ATLAS_DIR`` if set, else :func:`default_atlas_dir`."""
    env = os.environ.get(ATLAS_DIR_ENV)
    return Path(env).expanduser().resolve() if env else default_atlas_dir()


def _path(key: str) -> Path:
    return atlas_dir() / _FILES[key].relpath


def _require(key: str) -> Path:
    path = _path(key)
    if not path.is_file():
        raise AtlasFileMissing(path, _FILES[key].description)
    return path


def available() -> dict[str, bool]:
    """Which reference files are present (by existence, not checksum), per capability."""
    return {what: all(_path(k).is_file() for k in keys) for what, keys in _NEEDS.items()}


def missing_message(what: str) -> str | None:
    """A user-facing sentence on what is missing for ``what`` (a key of :func:`available`).

    Returns None when everything ``what`` needs is present.
    """
    if what not in _NEEDS:
        raise KeyError(f"unknown atlas capability {what!r}; expected one of {sorted(_NEEDS)}")
    missing = [_path(k) for k in _NEEDS[what] if not _path(k).is_file()]
    if not missing:
        return None
    flag = " --with-fish-labels" if what == "fish_labels" else ""
    shown = ", ".join(str(p) for p in missing[:3]) + (" ..." if len(missing) > 3 else "")
    return (
        f"Atlas data '{what}' is not available: missing {shown}. "
        f"Run `crbm atlas fetch{flag}` or set {ATLAS_DIR_ENV} to a folder with the files of "
        f"github.com/{ATLAS_REPOSITORY}."
    )


def _stamp(path: Path) -> tuple[str, int, int]:
    """Cache key of a file: path, modification time and size (a re-fetched file reloads)."""
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


# --------------------------------------------------------------------------------------------
# ZBrain names and structural connectivity
# --------------------------------------------------------------------------------------------


def zbrain_region_names() -> list[str]:
    """The 294 ZBrain region names; item k names column k of a recording's ``Labels`` matrix."""
    return list(_read_zbrain_names(*_stamp(_require("zbrain_names"))))


@functools.lru_cache(maxsize=2)
def _read_zbrain_names(path: str, _mtime: int, _size: int) -> tuple[str, ...]:
    with open(path, encoding="utf-8") as fh:
        names = [line.rstrip("\r\n") for line in fh]
    while names and not names[-1].strip():
        names.pop()
    if len(names) != N_ZBRAIN:
        raise AtlasFormatError(
            f"{path}: expected {N_ZBRAIN} ZBrain region names, found {len(names)}"
        )
    return tuple(names)


def _csv_name_to_index(name: str) -> int | None:
    key = name.strip().lower().replace("teberculum", "tuberculum")
    return _NAME_TO_INDEX.get(key)


def read_connectivity_csv(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a 72x72 connectivity CSV and return it in our 72-index order, matched BY NAME.

    Header names (``tectum_RIGHT``, ...) are matched case-insensitively to :data:`REGION_NAMES`,
    with the CSV's ``teberculum`` read as ``tuberculum``. Raises :class:`AtlasFormatError` unless
    the file is square, named identically on rows and columns, names every region exactly once,
    is finite and symmetric.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh) if r]
    if not rows:
        raise AtlasFormatError(f"{path}: empty connectivity file")
    header = [h.strip() for h in rows[0][1:]]
    body = rows[1:]
    if len(header) != N_REGIONS or len(body) != N_REGIONS:
        raise AtlasFormatError(
            f"{path}: expected a {N_REGIONS}x{N_REGIONS} matrix with a header row and a name "
            f"column, found {len(body)} rows and {len(header)} named columns"
        )
    row_names = [r[0].strip() for r in body]
    if row_names != header:
        bad = next(i for i, (a, b) in enumerate(zip(row_names, header, strict=True)) if a != b)
        raise AtlasFormatError(
            f"{path}: row names differ from column names (position {bad}: "
            f"{row_names[bad]!r} vs {header[bad]!r})"
        )
    perm = [_csv_name_to_index(h) for h in header]
    unknown = [h for h, p in zip(header, perm, strict=True) if p is None]
    if unknown:
        raise AtlasFormatError(f"{path}: unknown region names in header: {unknown}")
    if len(set(perm)) != N_REGIONS:
        seen: dict[int, str] = {}
        dup = [h for h, p in zip(header, perm, strict=True) if seen.setdefault(p, h) != h]
        raise AtlasFormatError(f"{path}: regions named more than once in header: {dup}")
    try:
        values = np.array([[float(x) for x in r[1:]] for r in body], dtype=np.float64)
    except ValueError as exc:
        raise AtlasFormatError(f"{path}: non-numeric entry ({exc})") from exc
    if values.shape != (N_REGIONS, N_REGIONS):
        raise AtlasFormatError(f"{path}: ragged rows, matrix shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise AtlasFormatError(f"{path}: NaN or infinite entries")
    asym = float(np.max(np.abs(values - values.T)))
    if asym > 1e-12 * max(1.0, float(np.max(np.abs(values)))):
        raise AtlasFormatError(f"{path}: matrix is not symmetric (max |A - A^T| = {asym:.3g})")
    idx = np.asarray(perm)
    out = np.empty_like(values)
    out[np.ix_(idx, idx)] = values
    return out


def structural_connectivity() -> np.ndarray:
    """The 72x72 structural connectivity (Kunst et al. 2019) in our 72-index order (read-only).

    This is the matrix of the repository (the paper's final figure used a re-derived one that is
    not public); its diagonal is 0. Cached per process.
    """
    return _load_sc(*_stamp(_require("connectivity")))


@functools.lru_cache(maxsize=2)
def _load_sc(path: str, _mtime: int, _size: int) -> np.ndarray:
    sc = read_connectivity_csv(path)
    sc.setflags(write=False)
    return sc


# --------------------------------------------------------------------------------------------
# Label volume and coordinates
# --------------------------------------------------------------------------------------------


def label_volume() -> np.ndarray:
    """uint8 label volume (621, 1406, 138) on the ZBrain grid; value k = ``REGIONS_36[k-1]``.

    0 is outside every region. Axes are the atlas grid (x flipped and z flipped with respect to
    the recordings' mm coordinates; see :func:`region_of_coords`). Read-only, cached.
    """
    return _load_volume(*_stamp(_require("label_volume")))


@functools.lru_cache(maxsize=1)
def _load_volume(path: str, _mtime: int, _size: int) -> np.ndarray:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=["imageStack"])
    except Exception as exc:  # scipy raises several types for a damaged file
        raise AtlasFormatError(f"{path}: cannot read MATLAB file ({exc})") from exc
    if "imageStack" not in mat:
        raise AtlasFormatError(f"{path}: no variable 'imageStack'")
    vol = np.asarray(mat["imageStack"])
    if vol.shape != ATLAS_SHAPE or vol.dtype != np.uint8:
        raise AtlasFormatError(
            f"{path}: expected a uint8 volume of shape {ATLAS_SHAPE}, found {vol.dtype} {vol.shape}"
        )
    if int(vol.max()) > len(REGIONS_36):
        raise AtlasFormatError(f"{path}: label values above {len(REGIONS_36)}")
    vol.setflags(write=False)
    return vol


def _grid_of_coords(coords_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Authors' rule: grid = round(c*1000/voxel), then flip x (621 - x) and z (138 - z)."""
    c = np.asarray(coords_mm, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"coords_mm must have shape (N, 3), got {c.shape}")
    finite = np.all(np.isfinite(c), axis=1)
    vox = np.rint(np.where(finite[:, None], c, 0.0) * 1000.0 / np.asarray(VOXEL_SIZE_UM))
    vox = np.clip(vox, -(2**30), 2**30).astype(np.int64)
    gx = ATLAS_SHAPE[0] - vox[:, 0]
    gy = vox[:, 1]
    gz = ATLAS_SHAPE[2] - vox[:, 2]
    inside = (
        finite
        & (gx >= 0)
        & (gx < ATLAS_SHAPE[0])
        & (gy >= 0)
        & (gy < ATLAS_SHAPE[1])
        & (gz >= 0)
        & (gz < ATLAS_SHAPE[2])
    )
    return gx, gy, gz, inside


def region_of_coords(coords_mm: np.ndarray, volume: np.ndarray | None = None) -> np.ndarray:
    """72-region index of each ZBrain coordinate in mm (N, 3); -1 outside every region or the box.

    Follows the authors' labelling exactly: voxel = round(c * 1000 / (0.798, 0.798, 2)), grid x =
    621 - voxel x, grid z = 138 - voxel z, k = volume[grid]; right hemisphere if grid x > 310
    (data x below ~0.2478 mm, the voxel-rounded version of the 0.248 mm midline); index =
    2*(k-1) + right. ``volume`` defaults to :func:`label_volume`.
    """
    vol = label_volume() if volume is None else volume
    gx, gy, gz, inside = _grid_of_coords(coords_mm)
    out = np.full(gx.shape[0], -1, dtype=np.int64)
    k = vol[gx[inside], gy[inside], gz[inside]].astype(np.int64)
    right = (gx[inside] > _RIGHT_IF_GRID_X_ABOVE).astype(np.int64)
    out[inside] = np.where(k > 0, 2 * (k - 1) + right, -1)
    return out


def _grid_to_mm(gx: np.ndarray, gy: np.ndarray, gz: np.ndarray) -> np.ndarray:
    """Voxel centres of grid indices in data mm (inverse of the labelling rule)."""
    sx, sy, sz = (v / 1000.0 for v in VOXEL_SIZE_UM)
    return np.column_stack(
        ((ATLAS_SHAPE[0] - gx) * sx, gy * sy, (ATLAS_SHAPE[2] - gz) * sz)
    ).astype(np.float64)


@functools.lru_cache(maxsize=1)
def _voxel_index(path: str, _mtime: int, _size: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat Fortran-order grid indices (int32) of all labelled voxels grouped by 72-region, and
    the 73 group offsets. About 110 MB for the 27 M labelled voxels; built once in ~1 s."""
    flat = np.ravel(_load_volume(path, _mtime, _size), order="F")  # a view: loadmat gives F order
    parts: list[list[np.ndarray]] = [[] for _ in range(N_REGIONS)]
    step = 1 << 21  # chunks keep the temporary arrays small
    for start in range(0, flat.size, step):
        chunk = flat[start : start + step]
        idx = np.flatnonzero(chunk)
        if idx.size == 0:
            continue
        k = chunk[idx].astype(np.int16)
        idx += start
        region = 2 * (k - 1) + (idx % ATLAS_SHAPE[0] > _RIGHT_IF_GRID_X_ABOVE)
        order = np.argsort(region, kind="stable")
        bounds = np.searchsorted(region[order], np.arange(N_REGIONS + 1))
        sorted_idx = idx.astype(np.int32)[order]
        for r in np.flatnonzero(np.diff(bounds)):
            parts[r].append(sorted_idx[bounds[r] : bounds[r + 1]])
    chunks = [np.concatenate(p) if p else np.empty(0, np.int32) for p in parts]
    offsets = np.concatenate(([0], np.cumsum([len(c) for c in chunks])))
    flat_all = np.concatenate(chunks)
    flat_all.setflags(write=False)
    return flat_all, offsets


def _region_grid(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i = int(index)
    if not 0 <= i < N_REGIONS:
        raise IndexError(f"region index {index} outside 0..{N_REGIONS - 1}")
    flat, offsets = _voxel_index(*_stamp(_require("label_volume")))
    f = flat[offsets[i] : offsets[i + 1]].astype(np.int64)
    nx, ny = ATLAS_SHAPE[0], ATLAS_SHAPE[1]
    return f % nx, (f // nx) % ny, f // (nx * ny)


def region_voxel_coords_mm(index: int) -> np.ndarray:
    """Voxel centres (n, 3) of a 72-region in data mm: x = (621 - gx)*0.000798, y = gy*0.000798,
    z = (138 - gz)*0.002. Empty (0, 3) for regions absent from the volume (ARF)."""
    return _grid_to_mm(*_region_grid(index))


def sample_region_positions(
    index: int,
    n: int,
    rng: np.random.Generator,
    *,
    source: str = "auto",
) -> np.ndarray:
    """``n`` random positions (n, 3, data mm) inside a 72-region, for virtual fish.

    ``source="volume"`` draws voxels of the label volume uniformly (with a sub-voxel jitter that
    keeps each point in its voxel), so :func:`region_of_coords` returns ``index`` for every point.
    ``source="table"`` draws from a normal distribution with the region's centroid and spread
    from the committed geometry table, clipped to its bounding box (no reference files needed).
    ``"auto"`` uses the volume when it is available.
    """
    if source not in ("auto", "volume", "table"):
        raise ValueError(f"source must be 'auto', 'volume' or 'table', got {source!r}")
    if source == "auto":
        source = "volume" if available()["label_volume"] else "table"
    n = int(n)
    if source == "volume":
        gx, gy, gz = _region_grid(index)
        if gx.size == 0:
            raise ValueError(f"region {REGION_NAMES[index]} has no voxels in the atlas volume")
        pick = rng.integers(0, gx.size, size=n)
        pos = _grid_to_mm(gx[pick], gy[pick], gz[pick])
        half = 0.49 * np.asarray(VOXEL_SIZE_UM) / 1000.0
        return pos + rng.uniform(-half, half, size=(n, 3))
    geom = region_geometry()
    if geom.n_voxels[index] == 0:
        raise ValueError(f"region {REGION_NAMES[index]} has no voxels in the atlas volume")
    pos = rng.normal(geom.centroid_mm[index], geom.std_mm[index], size=(n, 3))
    return np.clip(pos, geom.min_mm[index], geom.max_mm[index])


# --------------------------------------------------------------------------------------------
# Region geometry table (committed, derived from the reference files)
# --------------------------------------------------------------------------------------------

TABLES_DIR = Path(__file__).resolve().parent / "tables"
_GEOMETRY_CSV = "region_geometry.csv"
_GEOMETRY_JSON = "region_geometry.json"
_AXES = ("x", "y", "z")
_GEOMETRY_COLUMNS = (
    ("index", "name", "abbrev", "hemisphere", "n_voxels")
    + tuple(f"{stat}_{a}_mm" for stat in ("centroid", "std", "min", "max") for a in _AXES)
    + ("real_share", "real_share_labelled")
)


@dataclass(frozen=True)
class RegionGeometry:
    """Per 72-region anatomy (data mm, ZBrain space) and the real fish's neuron shares.

    ``real_share[i]``: mean over the real fish of the fraction of *all* whole-brain neurons in
    region i; ``unlabelled_share``: the same for neurons outside every region (the two sum to 1).
    ``real_share_labelled[i]``: mean fraction among region-labelled neurons only (sums to 1).
    Regions absent from the volume have ``n_voxels == 0`` and NaN geometry.
    """

    n_voxels: np.ndarray
    centroid_mm: np.ndarray
    std_mm: np.ndarray
    min_mm: np.ndarray
    max_mm: np.ndarray
    real_share: np.ndarray
    real_share_labelled: np.ndarray
    unlabelled_share: float
    n_fish: int


def _fish_shares(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray, float]:
    share_all, share_lab = [], []
    for p in paths:
        rl = np.load(p)
        if rl.ndim != 1 or np.any((rl < 0) | (rl > N_REGIONS) | (rl != np.round(rl))):
            raise AtlasFormatError(f"{p}: expected a 1-D array of integer labels 0..{N_REGIONS}")
        counts = np.bincount(rl.astype(np.int64), minlength=N_REGIONS + 1)
        share_all.append(counts / counts.sum())
        share_lab.append(counts[1:] / max(1, counts[1:].sum()))
    mean_all = np.mean(share_all, axis=0)
    return mean_all[1:], np.mean(share_lab, axis=0), float(mean_all[0])


def build_region_geometry_table() -> RegionGeometry:
    """Compute the geometry table from the label volume and the 11 real fish label files."""
    stats = np.full((4, N_REGIONS, 3), np.nan)
    n_vox = np.zeros(N_REGIONS, dtype=np.int64)
    for i in range(N_REGIONS):
        gx, gy, gz = _region_grid(i)
        n_vox[i] = gx.size
        if gx.size:
            # the mm map is affine per axis: compute moments on integers, then transform
            xyz = _grid_to_mm(
                np.array([gx.mean(), gx.max(), gx.min()]),
                np.array([gy.mean(), gy.min(), gy.max()]),
                np.array([gz.mean(), gz.max(), gz.min()]),
            )
            stats[0, i], stats[2, i], stats[3, i] = xyz
            stats[1, i] = np.array([gx.std(), gy.std(), gz.std()]) * np.asarray(VOXEL_SIZE_UM) / 1e3
    fish = [_require(k) for k in _FISH_KEYS]
    share, share_lab, unlabelled = _fish_shares(fish)
    return RegionGeometry(
        n_voxels=n_vox,
        centroid_mm=stats[0],
        std_mm=stats[1],
        min_mm=stats[2],
        max_mm=stats[3],
        real_share=share,
        real_share_labelled=share_lab,
        unlabelled_share=unlabelled,
        n_fish=len(fish),
    )


def write_region_geometry_table(
    geom: RegionGeometry | None = None, directory: str | os.PathLike[str] | None = None
) -> Path:
    """Write ``region_geometry.csv`` (+ ``.json`` metadata) into ``directory`` (default: the
    package's ``tables/``); computes the table from the reference files when ``geom`` is None."""
    geom = build_region_geometry_table() if geom is None else geom
    out_dir = Path(directory) if directory is not None else TABLES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# {ATTRIBUTION}",
        "# Geometry: voxels of the label volume Combined_regions_MPIN_to_zbrain_labeled_matfile.mat"
        " in data mm (x = (621 - gx)*0.000798, y = gy*0.000798, z = (138 - gz)*0.002); right ="
        " grid x > 310. std is the population standard deviation of voxel centres.",
        f"# Shares: mean over {geom.n_fish} real fish (baier_rl-region-labels__*.npy) of the"
        " fraction of all whole-brain neurons (real_share) or of region-labelled neurons"
        " (real_share_labelled) in each region; unlabelled share in region_geometry.json.",
        f"# Generated by crbm_core.atlas.write_region_geometry_table() from {ATLAS_REPOSITORY}"
        f" at commit {ATLAS_COMMIT}.",
    ]

    def fmt(v: float) -> str:
        return "nan" if not np.isfinite(v) else f"{v:.9g}"

    rows = [",".join(_GEOMETRY_COLUMNS)]
    for i in range(N_REGIONS):
        nums = [geom.centroid_mm[i], geom.std_mm[i], geom.min_mm[i], geom.max_mm[i]]
        cells = [str(i), REGION_NAMES[i], REGION_ABBREVS[i], HEMISPHERE[i], str(geom.n_voxels[i])]
        cells += [fmt(v) for arr in nums for v in arr]
        cells += [fmt(geom.real_share[i]), fmt(geom.real_share_labelled[i])]
        rows.append(",".join(cells))
    csv_path = out_dir / _GEOMETRY_CSV
    csv_path.write_text("\n".join(lines + rows) + "\n", encoding="utf-8")
    meta = {
        "attribution": ATTRIBUTION,
        "source_repository": f"https://github.com/{ATLAS_REPOSITORY}",
        "source_commit": ATLAS_COMMIT,
        "license_of_source": "MIT",
        "citation": "van der Plas, Tubiana et al., eLife 2023;12:e83139, doi:10.7554/eLife.83139",
        "n_fish": geom.n_fish,
        "fish": [run for run, _, _ in _FISH_RUNS],
        "unlabelled_share": round(geom.unlabelled_share, 9),
        "units": "mm, ZBrain atlas space as in the recordings' zbrain_coords",
    }
    (out_dir / _GEOMETRY_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return csv_path


def region_geometry(directory: str | os.PathLike[str] | None = None) -> RegionGeometry:
    """Load the committed geometry table (no reference files needed)."""
    d = Path(directory) if directory is not None else TABLES_DIR
    return _read_geometry(str(d))


@functools.lru_cache(maxsize=2)
def _read_geometry(directory: str) -> RegionGeometry:
    csv_path = Path(directory) / _GEOMETRY_CSV
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(line for line in fh if not line.startswith("#")))
    if tuple(rows[0]) != _GEOMETRY_COLUMNS or len(rows) != N_REGIONS + 1:
        raise AtlasFormatError(f"{csv_path}: unexpected columns or number of rows")
    body = rows[1:]
    for i, r in enumerate(body):
        if (int(r[0]), r[1], r[2], r[3]) != (i, REGION_NAMES[i], REGION_ABBREVS[i], HEMISPHERE[i]):
            raise AtlasFormatError(f"{csv_path}: row {i} does not describe {REGION_NAMES[i]}")
    num = np.array([[float(x) for x in r[5:]] for r in body])
    meta = json.loads((Path(directory) / _GEOMETRY_JSON).read_text(encoding="utf-8"))
    arrays = [num[:, 3 * j : 3 * j + 3] for j in range(4)] + [num[:, 12], num[:, 13]]
    for a in arrays:
        a.setflags(write=False)
    n_vox = np.array([int(r[4]) for r in body])
    n_vox.setflags(write=False)
    return RegionGeometry(
        n_voxels=n_vox,
        centroid_mm=arrays[0],
        std_mm=arrays[1],
        min_mm=arrays[2],
        max_mm=arrays[3],
        real_share=arrays[4],
        real_share_labelled=arrays[5],
        unlabelled_share=float(meta["unlabelled_share"]),
        n_fish=int(meta["n_fish"]),
    )


# --------------------------------------------------------------------------------------------
# Fetching the reference files
# --------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _offline_error(
    url: str, reason: object, dest: Path, what: str = "could not reach"
) -> AtlasFetchError:
    return AtlasFetchError(
        f"{what} {url} ({reason}); copy the files by hand into {dest} (same relative "
        f"paths as in https://github.com/{ATLAS_REPOSITORY}, commit {ATLAS_COMMIT}: "
        f"{', '.join(f.relpath for f in ATLAS_FILES if not f.optional)}) "
        f"or set {ATLAS_DIR_ENV} to a folder that has them"
    )


def _open_first(relpath: str, bases: Sequence[str], dest: Path, timeout: float):
    """Open ``<base>/<relpath>`` for the first base that does not answer HTTP 404."""
    for n, base in enumerate(bases):
        url = f"{base.rstrip('/')}/{relpath}"
        try:
            return url, urllib.request.urlopen(url, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and n + 1 < len(bases):
                continue
            raise AtlasFetchError(f"{url} answered HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise _offline_error(url, getattr(exc, "reason", exc), dest) from exc
    raise AtlasFetchError("no base URL given")


def _download(f: AtlasFile, bases: Sequence[str], target: Path, dest: Path, timeout: float) -> None:
    """Download one file to ``target`` atomically (temporary file, checksum, rename)."""
    url, response = _open_first(f.relpath, bases, dest, timeout)
    with response:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        except OSError as exc:
            raise AtlasFetchError(f"cannot write into {target.parent}: {exc}") from exc
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                while block := response.read(1 << 16):
                    h.update(block)
                    out.write(block)
            if h.hexdigest() != f.sha256:
                raise AtlasFetchError(
                    f"checksum mismatch for {url}: SHA-256 {h.hexdigest()}, expected {f.sha256}; "
                    "the file was not saved"
                )
            os.replace(tmp, target)
        except OSError as exc:
            raise _offline_error(url, exc, dest, "could not download") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def fetch(
    dest: str | os.PathLike[str] | None = None,
    timeout: float = 30,
    *,
    fish_labels: bool = False,
    base_url: str | Sequence[str] | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> Path:
    """Download the reference files into ``dest`` (default :func:`atlas_dir`) and return it.

    Files come from ``raw.githubusercontent.com/vdplasthijs/zf-rbm/<pinned commit>/<path>``
    (``base_url`` replaces that prefix, or gives several to try in turn on HTTP 404), keep the
    repository's relative paths, are verified against hard-coded SHA-256 sums, and are written
    atomically (temporary file + rename). Files already present with the right checksum are
    skipped. ``fish_labels=True`` (CLI ``--with-fish-labels``) also fetches the 11 real fish
    label files (2 MB). ``progress(relpath, status)`` is called per file with status
    ``"present"`` or ``"downloaded"``. Raises :class:`AtlasFetchError` when offline or on a
    bad download.
    """
    dest_path = Path(dest).expanduser() if dest is not None else atlas_dir()
    bases = [base_url] if isinstance(base_url, str) else list(base_url or DEFAULT_BASE_URLS)
    for f in ATLAS_FILES:
        if f.optional and not fish_labels:
            continue
        target = dest_path / f.relpath
        if target.is_file() and target.stat().st_size == f.size and _sha256(target) == f.sha256:
            status = "present"
        else:
            _download(f, bases, target, dest_path, timeout)
            status = "downloaded"
        if progress is not None:
            progress(f.relpath, status)
    return dest_path
