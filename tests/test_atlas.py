"""Tests of crbm_core.atlas against the real reference files (CRBM_ATLAS_DIR)."""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import http.server
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from crbm_core import atlas


def _reference_dir(files: list[atlas.AtlasFile]) -> Path:
    """The atlas folder; skipped only when CRBM_ATLAS_DIR is unset and the files are not found."""
    d = atlas.atlas_dir()
    missing = [f.relpath for f in files if not (d / f.relpath).is_file()]
    if missing:
        if os.environ.get(atlas.ATLAS_DIR_ENV):
            pytest.fail(f"{atlas.ATLAS_DIR_ENV}={d} lacks reference files: {missing}")
        pytest.skip(
            f"atlas reference files not found in {d}: set {atlas.ATLAS_DIR_ENV} "
            "(e.g. ../shared/reference) or run `crbm atlas fetch --with-fish-labels`"
        )
    return d


@pytest.fixture(scope="module")
def ref_dir() -> Path:
    return _reference_dir([f for f in atlas.ATLAS_FILES if not f.optional])


@pytest.fixture(scope="module")
def fish_dir() -> Path:
    """Also needs the 11 real fish label files (optional in `crbm atlas fetch`)."""
    return _reference_dir(list(atlas.ATLAS_FILES))


@pytest.fixture(scope="module")
def volume(ref_dir: Path) -> np.ndarray:
    return atlas.label_volume()


@pytest.fixture(scope="module")
def sc(ref_dir: Path) -> np.ndarray:
    return atlas.structural_connectivity()


def _raw_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0][1:], np.array([[float(x) for x in r[1:]] for r in rows[1:]])


# --- region tables -------------------------------------------------------------------------


def test_region_tables_are_consistent():
    assert len(atlas.REGIONS_36) == 36 and list(atlas.REGIONS_36) == sorted(atlas.REGIONS_36)
    assert atlas.N_REGIONS == len(atlas.REGION_NAMES) == len(atlas.REGION_ABBREVS) == 72
    assert len(set(atlas.REGION_ABBREVS)) == 72
    for i, name in enumerate(atlas.REGION_NAMES):
        side = "left" if i % 2 == 0 else "right"
        assert name == f"{atlas.REGIONS_36[i // 2]}_{side}"
        assert atlas.HEMISPHERE[i] == ("L" if i % 2 == 0 else "R")
        abbrev = atlas.REGION_ABBREVS[i]
        assert (abbrev == abbrev.lower()) == (i % 2 == 0)
    order = atlas.DISPLAY_ORDER
    assert order.shape == (72,) and sorted(order.tolist()) == list(range(72))
    assert not order.flags.writeable


def test_hard_coded_tables_match_reference_files(ref_dir: Path):
    lines = (ref_dir / "baier_atlas_labels/region_names_baier_abbreviations.txt").read_text()
    pairs = [tuple(line.split()) for line in lines.splitlines() if line.strip()]
    assert pairs == list(zip(atlas.REGION_NAMES, atlas.REGION_ABBREVS, strict=True))
    order = (ref_dir / "baier_atlas_labels/order_baier_regions_kunstetal.txt").read_text().split()
    assert order == [atlas.REGION_ABBREVS[i] for i in atlas.DISPLAY_ORDER]


def test_names_round_trip():
    for i, (name, abbrev) in enumerate(zip(atlas.REGION_NAMES, atlas.REGION_ABBREVS, strict=True)):
        assert atlas.region_index(name) == i
        assert atlas.region_index(name.upper()) == i
        assert atlas.region_index(name.lower()) == i
        assert atlas.REGION_NAMES[atlas.region_index(name)] == name
        assert atlas.region_index(abbrev) == i
        assert atlas.REGION_ABBREVS[atlas.region_index(abbrev)] == abbrev
        assert atlas.contralateral(atlas.contralateral(i)) == i != atlas.contralateral(i)
        assert (
            atlas.REGION_NAMES[atlas.contralateral(i)].rsplit("_", 1)[0] == name.rsplit("_", 1)[0]
        )
    assert atlas.region_index("teo") == 56 and atlas.region_index("TeO") == 57
    assert atlas.region_index("posterior_teberculum_RIGHT") == atlas.region_index("PT")


def test_unknown_region_lists_close_matches():
    with pytest.raises(atlas.UnknownRegionError, match="Tectum_left") as info:
        atlas.region_index("Tectum_lft")
    assert isinstance(info.value, ValueError)
    with pytest.raises(atlas.UnknownRegionError):
        atlas.region_index("TEO")  # abbreviations are case-sensitive
    with pytest.raises(IndexError):
        atlas.contralateral(72)


# --- missing files -------------------------------------------------------------------------


def test_missing_files_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(atlas.ATLAS_DIR_ENV, str(tmp_path))
    assert atlas.atlas_dir() == tmp_path.resolve()
    assert not any(atlas.available().values())
    with pytest.raises(atlas.AtlasFileMissing) as info:
        atlas.structural_connectivity()
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "connectivity_matrix.csv" in msg and atlas.ATLAS_DIR_ENV in msg
    assert "crbm atlas fetch" in msg
    for call in (
        atlas.label_volume,
        atlas.zbrain_region_names,
        lambda: atlas.region_of_coords(np.zeros((1, 3))),
    ):
        with pytest.raises(atlas.AtlasFileMissing):
            call()
    note = atlas.missing_message("label_volume")
    assert "crbm atlas fetch" in note and "Combined_regions" in note
    assert "--with-fish-labels" in atlas.missing_message("fish_labels")
    # the committed table still works, and so does sampling from it
    geom = atlas.region_geometry()
    pos = atlas.sample_region_positions(56, 500, np.random.default_rng(0))
    assert np.all(pos >= geom.min_mm[56]) and np.all(pos <= geom.max_mm[56])


def test_default_atlas_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(atlas.ATLAS_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert atlas.atlas_dir() == tmp_path / "crbm-explorer" / "atlas"


def test_available_with_reference(ref_dir: Path):
    assert all(atlas.available().values())
    assert atlas.missing_message("connectivity") is None


# --- ZBrain names and structural connectivity -----------------------------------------------


def test_zbrain_names(ref_dir: Path):
    names = atlas.zbrain_region_names()
    assert len(names) == atlas.N_ZBRAIN == 294
    heads = {0: "Diencephalon -", 93: "Mesencephalon -", 113: "Rhombencephalon -"}
    heads |= {259: "Spinal Cord", 274: "Telencephalon -"}
    for k, name in heads.items():
        assert names[k] == name


def test_sc_is_symmetric_read_only_and_cached(sc):
    assert sc.shape == (72, 72) and sc.dtype == np.float64
    np.testing.assert_array_equal(sc, sc.T)
    assert np.all(np.diag(sc) == 0)
    assert not sc.flags.writeable
    assert atlas.structural_connectivity() is sc


def test_retina_projects_contralaterally(sc):
    ret_l = atlas.region_index("Retina_left")
    for target, value in (("Tectum_right", 0.015), ("Pretectum_right", 0.017)):
        assert sc[ret_l, atlas.region_index(target)] == pytest.approx(value, abs=5e-4)
    assert sc[ret_l, atlas.region_index("Thalamus_right")] == pytest.approx(0.017, abs=5e-4)
    assert sc[ret_l, atlas.region_index("Tectum_left")] == 0
    io_l = atlas.region_index("io")
    assert sc[io_l, atlas.region_index("Ce")] > sc[io_l, atlas.region_index("ce")] > 0


def test_sc_mon_and_mo_stripes_follow_the_header(sc, ref_dir: Path):
    header, raw = _raw_csv(ref_dir / "atlas_data/connectivity_matrix.csv")
    pos = {h: j for j, h in enumerate(header)}

    def by_header(a: str, b: str) -> float:
        return raw[pos[a], pos[b]]

    pairs = [
        ("medial_octavolateral_nucleus_LEFT", "MO_stripe_1_RIGHT"),
        ("MO_stripe_5_LEFT", "medial_octavolateral_nucleus_RIGHT"),
        ("MO_stripe_3_RIGHT", "cerebellum_LEFT"),
        ("medial_octavolateral_nucleus_RIGHT", "tectum_LEFT"),
        ("posterior_teberculum_LEFT", "MO_stripe_2_LEFT"),
    ]
    for a, b in pairs:
        ia, ib = (atlas.region_index(n.replace("teberculum", "tuberculum")) for n in (a, b))
        assert sc[ia, ib] == by_header(a, b)
    # independent check of the whole matrix with the README's position map
    perm36 = [*range(9), 14, 9, 10, 11, 12, 13, *range(15, 36)]
    ours = np.array([2 * perm36[q // 2] + q % 2 for q in range(72)])
    np.testing.assert_array_equal(sc[np.ix_(ours, ours)], raw)
    # reading the CSV by position (the authors' trap) gives a different matrix
    mon = atlas.region_index("mon")
    assert not np.array_equal(raw[mon], sc[mon])


def _write_csv(path: Path, header: list[str], values: np.ndarray, rows: list[str] | None = None):
    rows = header if rows is None else rows
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(["", *header])
        for name, r in zip(rows, values, strict=True):
            w.writerow([name, *r.tolist()])


def test_bad_connectivity_files_raise_clear_errors(tmp_path, ref_dir: Path):
    header, raw = _raw_csv(ref_dir / "atlas_data/connectivity_matrix.csv")
    p = tmp_path / "sc.csv"
    _write_csv(p, header, raw)
    np.testing.assert_array_equal(atlas.read_connectivity_csv(p), atlas.structural_connectivity())

    bad = list(header)
    bad[3] = "caudal_hypothalamus_MIDDLE"
    _write_csv(p, bad, raw)
    with pytest.raises(atlas.AtlasFormatError, match="unknown region names"):
        atlas.read_connectivity_csv(p)
    dup = [h.replace("MO_stripe_2", "MO_stripe_1") for h in header]
    _write_csv(p, dup, raw)
    with pytest.raises(atlas.AtlasFormatError, match="more than once"):
        atlas.read_connectivity_csv(p)
    _write_csv(p, header, raw, rows=header[::-1])
    with pytest.raises(atlas.AtlasFormatError, match="row names differ"):
        atlas.read_connectivity_csv(p)
    asym = raw.copy()
    asym[0, 5] += 1.0
    _write_csv(p, header, asym)
    with pytest.raises(atlas.AtlasFormatError, match="not symmetric"):
        atlas.read_connectivity_csv(p)
    _write_csv(p, header[:-1], raw[:-1, :-1])
    with pytest.raises(atlas.AtlasFormatError, match="72x72"):
        atlas.read_connectivity_csv(p)


# --- label volume and coordinates ----------------------------------------------------------


def test_label_volume(volume):
    assert volume.shape == atlas.ATLAS_SHAPE and volume.dtype == np.uint8
    assert not volume.flags.writeable
    counts = np.bincount(volume[::4, ::4, ::2].ravel(), minlength=37)
    assert counts.size == 37 and counts[1] == 0  # value 1 (ARF) does not occur


def _authors_rule(coords: np.ndarray, vol: np.ndarray) -> np.ndarray:
    """Literal per-neuron version of the labelling notebook (plus bounds checks)."""
    out = np.full(len(coords), -1)
    for n, c in enumerate(coords):
        if not np.all(np.isfinite(c)):
            continue
        g = np.round(c * 1000 / np.array([0.798, 0.798, 2])).astype(int)
        g[0], g[2] = 621 - g[0], 138 - g[2]
        if not (0 <= g[0] < 621 and 0 <= g[1] < 1406 and 0 <= g[2] < 138):
            continue
        label = int(vol[g[0], g[1], g[2]])
        if label:
            out[n] = 2 * label - 1 + int(g[0] > 310) - 1
    return out


def test_region_of_coords_matches_the_authors_rule(volume):
    rng = np.random.default_rng(1)
    coords = rng.uniform([-0.02, -0.02, -0.01], [0.52, 1.15, 0.29], size=(4000, 3))
    coords[:5] = np.nan
    got = atlas.region_of_coords(coords)
    np.testing.assert_array_equal(got, _authors_rule(coords, volume))
    assert (got >= 0).sum() > 500


@pytest.mark.parametrize(
    "name", ["teo", "TeO", "ce", "Ce", "mon", "MON", "mos1", "MOS5", "Ha", "io", "P", "th"]
)
def test_voxel_centres_map_back_to_their_region(volume, name):
    i = atlas.region_index(name)
    xyz = atlas.region_voxel_coords_mm(i)
    assert xyz.shape[1] == 3 and len(xyz) > 0
    sample = xyz[np.random.default_rng(i).choice(len(xyz), size=min(300, len(xyz)), replace=False)]
    assert np.all(atlas.region_of_coords(sample) == i)
    # hemisphere rule: data x < 0.248 mm is the right side
    right = atlas.HEMISPHERE[i] == "R"
    assert np.all((xyz[:, 0] < atlas.MIDLINE_X_MM) == right)


def test_hemisphere_and_outside(volume):
    tect = np.concatenate([atlas.region_voxel_coords_mm(56), atlas.region_voxel_coords_mm(57)])
    sample = tect[np.random.default_rng(3).choice(len(tect), 2000, replace=False)]
    idx = atlas.region_of_coords(sample)
    assert set(np.unique(idx)) == {56, 57}
    np.testing.assert_array_equal(idx == 57, sample[:, 0] < atlas.MIDLINE_X_MM)
    outside = np.array(
        [[-0.1, 0.4, 0.2], [0.2, 1.2, 0.2], [0.2, 0.4, 0.0], [0.2, 0.4, 0.5], [np.nan, 0.4, 0.2]]
    )
    assert np.all(atlas.region_of_coords(outside) == -1)
    with pytest.raises(ValueError):
        atlas.region_of_coords(np.zeros((3, 2)))


def test_region_voxel_counts(volume):
    n = [len(atlas.region_voxel_coords_mm(i)) for i in (0, 1, 56, 57, 4, 5, 10, 11)]
    assert n[:2] == [0, 0]  # ARF is absent from the volume
    assert n[2] + n[3] == 4950670 and n[4] + n[5] == 1322268 and n[6] + n[7] == 17857
    with pytest.raises(IndexError):
        atlas.region_voxel_coords_mm(-1)


def test_sample_region_positions_from_volume(volume):
    rng = np.random.default_rng(7)
    for name in ("teo", "MON", "Ha"):
        i = atlas.region_index(name)
        pos = atlas.sample_region_positions(i, 400, rng, source="volume")
        assert pos.shape == (400, 3)
        assert np.all(atlas.region_of_coords(pos) == i)
    with pytest.raises(ValueError, match="no voxels"):
        atlas.sample_region_positions(0, 10, rng, source="volume")


# --- committed geometry table --------------------------------------------------------------


def test_committed_geometry_table_matches_reference(volume, fish_dir):
    built = atlas.build_region_geometry_table()
    table = atlas.region_geometry()
    np.testing.assert_array_equal(table.n_voxels, built.n_voxels)
    for field in ("centroid_mm", "std_mm", "min_mm", "max_mm", "real_share", "real_share_labelled"):
        np.testing.assert_allclose(
            getattr(table, field), getattr(built, field), rtol=1e-7, atol=1e-12, equal_nan=True
        )
    assert table.unlabelled_share == pytest.approx(built.unlabelled_share, abs=1e-8)
    assert table.n_fish == built.n_fish == 11


def test_geometry_table_shares_like_real_fish():
    g = atlas.region_geometry()
    share = {
        name: g.real_share[2 * k] + g.real_share[2 * k + 1]
        for k, name in enumerate(atlas.REGIONS_36)
    }
    assert share["Tectum"] == pytest.approx(0.289, abs=5e-4)
    assert g.unlabelled_share == pytest.approx(0.156, abs=5e-4)
    assert share["MO_stripe_1"] == pytest.approx(0.069, abs=1e-3)
    assert share["Cerebellum"] == pytest.approx(0.069, abs=1e-3)
    assert g.real_share.sum() + g.unlabelled_share == pytest.approx(1.0)
    assert g.real_share_labelled.sum() == pytest.approx(1.0)
    assert np.all(np.isnan(g.centroid_mm[:2])) and np.all(g.n_voxels[2:] > 0)
    # centroids of the combined tectum and the inferior olive as tabulated in the reference README
    io = (g.centroid_mm[10] * g.n_voxels[10] + g.centroid_mm[11] * g.n_voxels[11]) / g.n_voxels[
        10:12
    ].sum()
    np.testing.assert_allclose(io, [0.245, 0.759, 0.142], atol=1.5e-3)
    assert np.all(g.min_mm[2:] >= 0) and np.all(g.max_mm[2:, 1] <= 1.122)


def test_geometry_table_has_attribution():
    text = (atlas.TABLES_DIR / "region_geometry.csv").read_text()
    assert text.startswith("# ") and "vdplasthijs/zf-rbm" in text and "eLife" in text


# --- fetch ---------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):  # noqa: N802 - http.server API
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serve(directory: Path):
    requests: list[str] = []
    handler = type("H", (_Handler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


def test_fetch_offline_gives_clear_message(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "atlas"
    with pytest.raises(atlas.AtlasFetchError) as info:
        atlas.fetch(dest, timeout=5, base_url=f"http://127.0.0.1:{port}")
    msg = str(info.value)
    assert "could not reach" in msg and str(dest) in msg and atlas.ATLAS_DIR_ENV in msg
    assert not dest.exists() or not any(p.is_file() for p in dest.rglob("*"))


def test_fetch_verifies_and_skips(tmp_path, fish_dir: Path):
    ref_dir = fish_dir
    dest = tmp_path / "atlas"
    stale = dest / "atlas_data/connectivity_matrix.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("not the matrix")
    events: list[tuple[str, str]] = []
    with _serve(ref_dir) as (url, requests):
        out = atlas.fetch(
            dest, fish_labels=True, base_url=url, progress=lambda *e: events.append(e)
        )
        assert out == dest
        assert [s for _, s in events] == ["downloaded"] * len(atlas.ATLAS_FILES)
        for f in atlas.ATLAS_FILES:
            assert _sha(dest / f.relpath) == f.sha256 == _sha(ref_dir / f.relpath)
        assert _leftovers(dest) == []
        n_requests, events[:] = len(requests), []
        atlas.fetch(dest, fish_labels=True, base_url=url, progress=lambda *e: events.append(e))
        assert len(requests) == n_requests  # nothing downloaded again
        assert [s for _, s in events] == ["present"] * len(atlas.ATLAS_FILES)
        # a second base URL is tried when the first answers 404
        dest2 = tmp_path / "atlas2"
        atlas.fetch(dest2, base_url=[f"{url}/no-such-commit", url])
        assert all((dest2 / f.relpath).is_file() for f in atlas.ATLAS_FILES if not f.optional)
        with pytest.raises(atlas.AtlasFetchError, match="HTTP 404"):
            atlas.fetch(tmp_path / "atlas3", base_url=f"{url}/no-such-commit")


def test_fetch_rejects_corrupted_file(tmp_path, ref_dir: Path):
    served = tmp_path / "served"
    for f in atlas.ATLAS_FILES:
        if not f.optional:
            (served / f.relpath).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ref_dir / f.relpath, served / f.relpath)
    bad = served / "atlas_data/connectivity_matrix.csv"
    data = bytearray(bad.read_bytes())
    data[200] ^= 1
    bad.write_bytes(bytes(data))
    dest = tmp_path / "atlas"
    with _serve(served) as (url, _):
        with pytest.raises(atlas.AtlasFetchError, match="checksum mismatch"):
            atlas.fetch(dest, base_url=url)
    assert not (dest / "atlas_data/connectivity_matrix.csv").exists()
    assert _leftovers(dest) == []
