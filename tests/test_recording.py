"""Our recording format: exact round trip, compact storage, lazy block reads, validation."""

from __future__ import annotations

import numpy as np
import pytest

from crbm_core.errors import RecordingError
from crbm_core.recording import H5Spikes, Recording, read_recording


def _recording(rng, t=300, n=1003, rate=0.03):
    spikes = (rng.random((t, n)) < rate).astype(np.uint8)
    coords = rng.uniform(0, 0.5, (n, 3))
    labels = rng.integers(-1, 72, n)
    return Recording.from_arrays(spikes, coords, labels, frame_rate=3.9, name="test fish")


def test_round_trip_is_exact(tmp_path, rng):
    rec = _recording(rng)
    rec.save(tmp_path / "r.h5")
    back = read_recording(tmp_path / "r.h5", lazy=False)
    np.testing.assert_array_equal(back.spikes, rec.spikes)
    np.testing.assert_array_equal(back.region_labels, rec.region_labels)
    np.testing.assert_allclose(back.coords, rec.coords)
    np.testing.assert_allclose(back.times, rec.times)
    assert back.name == "test fish" and back.region_names == rec.region_names
    assert back.frame_rate == pytest.approx(3.9)
    assert back.coords_unit == "mm" and back.atlas == "zbrain"


def test_spikes_are_stored_compactly(tmp_path, rng):
    rec = _recording(rng, t=2000, n=4000)
    path = rec.save(tmp_path / "r.h5")
    raw_bytes = rec.n_frames * rec.n_neurons
    assert path.stat().st_size < raw_bytes / 8  # bit-packed (8×) and compressed on top


def test_lazy_reads_blocks_without_loading_everything(tmp_path, rng):
    rec = _recording(rng)
    rec.save(tmp_path / "r.h5")
    lazy = read_recording(tmp_path / "r.h5")
    assert isinstance(lazy.spikes, H5Spikes) and lazy.spikes.shape == rec.spikes.shape
    np.testing.assert_array_equal(lazy.spikes[10:20], rec.spikes[10:20])
    np.testing.assert_array_equal(lazy.spikes[7], rec.spikes[7])
    np.testing.assert_array_equal(lazy.spikes[50:60, 100:110], rec.spikes[50:60, 100:110])
    idx = np.array([5, 1, 5, 299])
    np.testing.assert_array_equal(lazy.spikes[idx], rec.spikes[idx])
    np.testing.assert_array_equal(lazy.firing_rates(), rec.spikes.mean(axis=0))
    blocks = list(lazy.spikes.iter_blocks(128))
    assert [t0 for t0, _ in blocks] == [0, 128, 256]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), rec.spikes)


def test_summary_reports_what_a_person_checks(rng):
    rec = _recording(rng)
    s = rec.summary()
    assert s["neurons"] == 1003 and s["frames"] == 300
    assert s["mean_rate"] == pytest.approx(rec.spikes.mean())
    assert s["labelled_fraction"] == pytest.approx((rec.region_labels >= 0).mean())
    assert s["duration_s"] == pytest.approx(300 / 3.9)


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(spikes=np.full((10, 5), 2, np.uint8)), ("spikes", "not binary")),
        (dict(spikes=np.full((10, 5), np.nan)), ("spikes", "nan")),
        (dict(spikes=np.zeros((0, 5), np.uint8)), ("spikes", "no frames")),
        (dict(spikes=np.zeros((10, 0), np.uint8)), ("spikes", "no neurons")),
        (dict(spikes=np.zeros(10, np.uint8)), ("spikes", "2-D")),
        (dict(coords=np.zeros((5, 2))), ("coords", "(N, 3)")),
        (dict(coords=np.full((5, 3), np.inf)), ("coords", "NaN/inf")),
        (dict(region_labels=np.full(5, 72)), ("region_labels", "label 72")),
        (dict(region_labels=np.zeros(4)), ("region_labels", "one label per neuron")),
        (dict(frame_rate=0.0), ("frame_rate", "positive")),
        (dict(frame_rate=float("nan")), ("frame_rate", "positive")),
    ],
)
def test_bad_arrays_are_refused_with_a_named_problem(change, words):
    args = dict(
        spikes=np.zeros((10, 5), np.uint8),
        coords=np.zeros((5, 3)),
        region_labels=np.zeros(5, int),
        frame_rate=4.0,
    )
    args.update(change)
    with pytest.raises(RecordingError) as err:
        Recording.from_arrays(**args)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, rng, monkeypatch):
    path = tmp_path / "r.h5"
    _recording(rng).save(path)
    before = path.read_bytes()
    bad = _recording(rng)
    bad.spikes = bad.spikes.copy()
    bad.spikes[3, 3] = 7  # corrupted after validation: caught again while streaming to disk
    with pytest.raises(RecordingError):
        bad.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5"]


def test_lazy_read_of_a_deleted_file_is_a_clear_error(tmp_path, rng):
    _recording(rng).save(tmp_path / "r.h5")
    lazy = read_recording(tmp_path / "r.h5")
    (tmp_path / "r.h5").unlink()
    with pytest.raises(RecordingError, match="/spikes: could not be read"):
        lazy.spikes[0:5]
