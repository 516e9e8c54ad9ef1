"""Import of the LJP/Fishualizer layout: orientation, neuron selection, labels, streaming."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from bad_files import good_ljp_arrays, write_ljp

from crbm_core import atlas
from crbm_core.cli import main
from crbm_core.ljp import BLOCK_BYTES, import_ljp, inspect_ljp, read_ljp
from crbm_core.recording import read_recording


@pytest.fixture
def arrays():
    return good_ljp_arrays(seed=3, n_frames=120, n_cells=80)


def _expected_keep(arrays):
    return np.flatnonzero(arrays["labels"].any(axis=1))


@pytest.mark.parametrize("transpose", [False, True], ids=["time_x_cells", "cells_x_time"])
def test_import_keeps_labelled_neurons_in_order(tmp_path, arrays, transpose):
    src = write_ljp(tmp_path / "fish.h5", arrays, transpose=transpose)
    rec = read_recording(import_ljp(src, tmp_path / "rec.h5"), lazy=False)
    keep = _expected_keep(arrays)
    assert keep.size == 78  # two cells have no ZBrain label and are dropped, as in the paper
    np.testing.assert_array_equal(rec.spikes, arrays["spikes"][:, keep].astype(np.uint8))
    np.testing.assert_allclose(rec.coords, arrays["zbrain"][keep])
    assert rec.frame_rate == pytest.approx(3.9)
    assert rec.coords_unit == "mm" and rec.atlas == "zbrain"
    assert "2 cells without ZBrain label dropped" in rec.source


def test_import_streams_in_blocks(tmp_path, monkeypatch, arrays):
    monkeypatch.setattr("crbm_core.ljp.BLOCK_BYTES", 80 * 4 * 7)  # 7 frames per block
    src = write_ljp(tmp_path / "fish.h5", arrays, transpose=True)
    rec = read_recording(import_ljp(src, tmp_path / "rec.h5"), lazy=False)
    np.testing.assert_array_equal(rec.spikes, arrays["spikes"][:, _expected_keep(arrays)])
    assert BLOCK_BYTES > 0


def test_side_file_labels_follow_the_authors_convention(tmp_path, arrays):
    src = write_ljp(tmp_path / "fish.h5", arrays)
    side = np.arange(78) % 73  # 0 = unlabelled, r ≥ 1 = region r − 1
    np.save(tmp_path / "labels.npy", side.astype(np.float64))
    rec = read_recording(
        import_ljp(src, tmp_path / "rec.h5", region_labels=tmp_path / "labels.npy")
    )
    np.testing.assert_array_equal(rec.region_labels, side - 1)
    assert rec.region_names[int(rec.region_labels[1])] == "Anterior_reticular_formation_left"


def test_side_file_with_one_entry_per_cell_is_accepted(tmp_path, arrays):
    src = write_ljp(tmp_path / "fish.h5", arrays)
    side = np.arange(80) % 73
    np.save(tmp_path / "labels.npy", side)
    rec = read_ljp(src, region_labels=tmp_path / "labels.npy")
    np.testing.assert_array_equal(rec.region_labels, side[_expected_keep(arrays)] - 1)


def test_real_fish_label_file_attaches(tmp_path, atlas_reference):
    """A real per-neuron label file (20190503_Run04, 10,469 neurons) on a recording of its size."""
    real = np.load(next((atlas_reference / "baier_atlas_labels").glob("*20190503_Run04*.npy")))
    n = real.size
    a = good_ljp_arrays(seed=4, n_frames=20, n_cells=n)
    a["labels"][[3, 7]] = 1.0  # every cell labelled: the file has one entry per whole-brain neuron
    src = write_ljp(tmp_path / "fish.h5", a)
    rec = read_ljp(
        src,
        region_labels=next((atlas_reference / "baier_atlas_labels").glob("*20190503_Run04*.npy")),
    )
    assert rec.n_neurons == n
    np.testing.assert_array_equal(rec.region_labels, real.astype(int) - 1)
    share_unlabelled = (rec.region_labels < 0).mean()
    assert 0.13 <= share_unlabelled <= 0.19  # the README: 13–19 % unlabelled per fish
    tectum = [atlas.region_index("Tectum_left"), atlas.region_index("Tectum_right")]
    assert np.isin(rec.region_labels, tectum).mean() > 0.15


def test_labels_from_the_atlas_volume_when_no_side_file(tmp_path, atlas_reference):
    vox = atlas.region_voxel_coords_mm(atlas.region_index("Cerebellum_right"))[:50]
    a = good_ljp_arrays(seed=5, n_frames=30, n_cells=50)
    a["zbrain"] = vox.astype(np.float32)
    a["labels"][[3, 7]] = 1.0
    rec = read_ljp(write_ljp(tmp_path / "fish.h5", a))
    assert (rec.region_labels == atlas.region_index("Cerebellum_right")).all()
    assert "atlas volume" in rec.source


def test_aliases_and_missing_times(tmp_path, arrays):
    """Datasets found by their Fishualizer alias anywhere; no times → frame rate required."""
    with h5py.File(tmp_path / "alias.h5", "w") as f:
        f["rec/spike_data"] = arrays["spikes"]
        f["rec/zbrain_coords"] = arrays["zbrain"]
        f["rec/zbrainatlas_labels"] = arrays["labels"].T
    layout = inspect_ljp(tmp_path / "alias.h5")
    assert layout.paths["spikes"] == "/rec/spike_data" and layout.times is None
    assert main(["import", str(tmp_path / "alias.h5"), "-o", str(tmp_path / "x.h5")]) == 2
    rec = read_ljp(tmp_path / "alias.h5", frame_rate=2.5)
    assert rec.frame_rate == pytest.approx(2.5) and rec.n_neurons == 78


def test_explicit_orientation_resolves_a_square_recording(tmp_path):
    a = good_ljp_arrays(seed=6, n_frames=40, n_cells=40)
    src = write_ljp(tmp_path / "sq.h5", a, transpose=True)
    rec = read_ljp(src, orientation="cells_x_time")
    np.testing.assert_array_equal(rec.spikes, a["spikes"][:, _expected_keep(a)])


def test_cli_import_and_info(tmp_path, arrays, capsys):
    src = write_ljp(tmp_path / "fish.h5", arrays)
    assert main(["info", str(src)]) == 0
    out = capsys.readouterr().out
    assert "LJP" in out and "whole_brain_neurons" in out and "78" in out
    assert main(["import", str(src), "-o", str(tmp_path / "rec.h5")]) == 0
    assert main(["info", str(tmp_path / "rec.h5")]) == 0
    out = capsys.readouterr().out
    assert "neurons" in out and "78" in out and "mean_rate" in out
