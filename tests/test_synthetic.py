"""Virtual fish realism and ground truth, checked against the real atlas and real-fish figures."""

from __future__ import annotations

import numpy as np
import pytest

from crbm_core import atlas
from crbm_core.cli import main
from crbm_core.errors import ParameterError
from crbm_core.recording import read_recording
from crbm_core.synthetic import generate_virtual_fish, load_truth, save_virtual_fish

N, T, K = 5000, 4000, 40


@pytest.fixture(scope="module")
def fish():
    return generate_virtual_fish(N, T, K, seed=7)


@pytest.fixture(scope="module")
def spikes(fish):
    return fish.recording.spike_array()


def _binomial_tol(p, n, z=4.0):
    return z * np.sqrt(p * (1 - p) / n)


def test_positions_lie_inside_their_atlas_regions(fish, atlas_reference):
    rec = fish.recording
    lab = rec.region_labels >= 0
    assert "atlas volume" in rec.source
    np.testing.assert_array_equal(atlas.region_of_coords(rec.coords[lab]), rec.region_labels[lab])
    # unlabelled neurons sit near the brain, inside the ZBrain box
    assert (rec.coords[~lab].min(axis=0) > -0.05).all()
    assert (rec.coords[~lab].max(axis=0) < [0.55, 1.17, 0.33]).all()


def test_region_shares_match_real_fish(fish):
    geo = atlas.region_geometry()
    labels = fish.recording.region_labels
    share = np.bincount(labels[labels >= 0], minlength=72) / labels.size
    tectum = [atlas.region_index("TeO"), atlas.region_index("teo")]
    assert share[tectum].sum() == pytest.approx(0.289, abs=_binomial_tol(0.289, N))
    assert (labels < 0).mean() == pytest.approx(
        geo.unlabelled_share, abs=_binomial_tol(geo.unlabelled_share, N)
    )
    for name in ("mos1", "MOS1", "ce", "Ce", "pr", "Pr", "mon", "MON"):
        i = atlas.region_index(name)
        assert share[i] == pytest.approx(geo.real_share[i], abs=_binomial_tol(geo.real_share[i], N))
    assert share[[atlas.region_index("Ret"), atlas.region_index("pit")]].sum() == 0  # not imaged


def test_firing_statistics_are_realistic(spikes):
    rates = spikes.mean(axis=0)
    assert 0.02 <= rates.mean() <= 0.05
    assert np.median(rates) < rates.mean()  # skewed: few neurons fire a lot
    x = spikes.astype(np.float64)
    pop = x.sum(axis=1)
    n = x.shape[1]
    # mean connected correlation over all pairs, from the population variance (no N×N matrix)
    mean_cov = (pop.var() - x.var(axis=0).sum()) / (n * (n - 1))
    assert 3e-4 <= mean_cov <= 3e-3  # real fish #3: 1.6e-3


def test_assemblies_are_spatially_localized(fish):
    coords, labels = fish.recording.coords, fish.recording.region_labels
    w, home = fish.truth.weights, fish.truth.assemblies["home_region"]
    ratios = []
    for k in range(K):
        members = np.flatnonzero((w[:, k] > 0) & (labels == home[k]))
        region = np.flatnonzero(labels == home[k])
        spread = lambda idx: np.linalg.norm(coords[idx] - coords[idx].mean(0), axis=1).mean()  # noqa: E731
        ratios.append(spread(members) / spread(region))
    assert np.median(ratios) < 0.6


def test_multi_region_assemblies_follow_structural_connectivity(fish, atlas_reference):
    sc = atlas.structural_connectivity()
    w, table = fish.truth.weights, fish.truth.assemblies
    labels = fish.recording.region_labels
    multi = np.flatnonzero(table["n_regions"] >= 2)
    assert multi.size >= K // 5 and table["n_regions"].max() == 3
    for k in multi:
        regions = np.unique(labels[(w[:, k] > 0) & (labels >= 0)])
        partners = [r for r in regions if r != table["home_region"][k]]
        # partners are drawn ∝ SC: a pair with SC = 0 (half of all pairs) is never chosen
        assert all(sc[table["home_region"][k], r] > 0 for r in partners), (k, partners)


def test_mirrored_pairs_and_opposite_sign_members(fish):
    coords, labels = fish.recording.coords, fish.recording.region_labels
    w, table = fish.truth.weights, fish.truth.assemblies
    pairs = [(k, j) for k, j in enumerate(table["mirror_of"]) if j > k]
    assert len(pairs) >= K // 10
    for k, j in pairs:
        ck = coords[w[:, k] > 0].mean(axis=0)
        cj = coords[w[:, j] > 0].mean(axis=0)
        assert abs((ck[0] - atlas.MIDLINE_X_MM) + (cj[0] - atlas.MIDLINE_X_MM)) < 0.03
        assert np.linalg.norm(ck[1:] - cj[1:]) < 0.05
        assert table["home_region"][j] == atlas.contralateral(table["home_region"][k])
    neg = np.flatnonzero(table["contra_negative"])
    assert neg.size >= 1
    for k in neg:
        home_hemi = atlas.HEMISPHERE[table["home_region"][k]]
        neg_labels = labels[(w[:, k] < 0) & (labels >= 0)]
        assert neg_labels.size > 0
        assert all(atlas.HEMISPHERE[r] != home_hemi for r in neg_labels)


def _runs(x):
    d = np.diff(np.concatenate([[0], x.astype(int), [0]]))
    return np.flatnonzero(d == -1) - np.flatnonzero(d == 1)


def test_assembly_dynamics_are_slow_with_antiphasic_pairs(fish, spikes):
    act = fish.truth.activity > 0
    rate = fish.recording.frame_rate
    dwell_s = np.median(np.concatenate([_runs(act[:, k]) for k in range(K)])) / rate
    assert 2.0 <= dwell_s <= 8.0  # several seconds at ~4 Hz
    anti = [(k, j) for k, j in enumerate(fish.truth.assemblies["antiphase_with"]) if j > k]
    assert anti
    for k, j in anti:
        assert np.corrcoef(fish.truth.activity[:, k], fish.truth.activity[:, j])[0, 1] < -0.5
    # Time constants as the paper defines them (Methods, "Time constant calculation"): the period
    # of a two-state oscillation, one off-run plus the following on-run, pooled over all
    # oscillations — of assembly states, and of neurons (inter-spike interval + spike run).
    cycles = np.concatenate([_periods(act[:, k]) for k in range(K)])
    spikes_periods = np.concatenate([_periods(spikes[:, i]) for i in range(0, N, 5)])
    assert np.median(cycles) > 2 * np.median(spikes_periods)


def _periods(x):
    """Lengths of (off-run + following on-run) of a binary trace."""
    d = np.diff(np.concatenate([[0], x.astype(np.int8), [0]]))
    on_start, on_end = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    off_before = on_start[1:] - on_end[:-1]  # the gap before each on-run but the first
    return off_before + (on_end[1:] - on_start[1:])


def test_ground_truth_round_trips_and_coupling_is_consistent(fish, tmp_path):
    path = save_virtual_fish(fish, tmp_path / "fish.h5")
    rec = read_recording(path, lazy=False)
    np.testing.assert_array_equal(rec.spikes, fish.recording.spikes)
    truth = load_truth(path)
    assert truth.mode == "assemblies"
    assert truth.weights.shape == (N, K) and truth.activity.shape == (T, K)
    np.testing.assert_array_equal(truth.membership, fish.truth.weights != 0)
    c = truth.region_coupling
    assert c.shape == (72, 72)
    np.testing.assert_allclose(c, c.T, equal_nan=True)
    home = truth.assemblies["home_region"]
    assert all(c[h, h] > 0 for h in home)


def test_same_seed_same_fish_other_seed_other_fish():
    a = generate_virtual_fish(600, 200, 6, seed=3)
    b = generate_virtual_fish(600, 200, 6, seed=3)
    c = generate_virtual_fish(600, 200, 6, seed=4)
    np.testing.assert_array_equal(a.recording.spikes, b.recording.spikes)
    np.testing.assert_array_equal(a.truth.weights, b.truth.weights)
    assert not np.array_equal(a.recording.spikes, c.recording.spikes)


def test_without_atlas_files_positions_come_from_the_committed_table(tmp_path, monkeypatch):
    monkeypatch.setenv("CRBM_ATLAS_DIR", str(tmp_path))  # empty: no volume, no SC
    fish = generate_virtual_fish(1500, 200, 10, seed=5)
    rec = fish.recording
    assert "atlas table" in rec.source and "1/distance" in rec.source
    geo = atlas.region_geometry()
    lab = rec.region_labels >= 0
    r = rec.region_labels[lab]
    assert (rec.coords[lab] >= geo.min_mm[r] - 1e-6).all()
    assert (rec.coords[lab] <= geo.max_mm[r] + 1e-6).all()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(n_neurons=10), "at least 50 neurons"),
        (dict(n_frames=3), "at least 10 frames"),
        (dict(n_assemblies=0), "--assemblies 0"),
        (dict(n_neurons=400, n_assemblies=100), "neurons/8"),
        (dict(mode="rbm"), "mode 'rbm'"),
        (dict(frame_rate=-1.0), "--frame-rate"),
        (dict(mean_rate=0.9), "mean rate"),
    ],
)
def test_impossible_parameters_are_refused(kwargs, words):
    with pytest.raises(ParameterError, match=words):
        generate_virtual_fish(**{**dict(n_neurons=500, n_frames=100, n_assemblies=5), **kwargs})


def test_cli_generate_writes_recording_and_truth(tmp_path, capsys):
    out = tmp_path / "fish.h5"
    assert (
        main(
            [
                "generate",
                "--neurons",
                "800",
                "--frames",
                "300",
                "--assemblies",
                "8",
                "--seed",
                "2",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    assert read_recording(out).n_neurons == 800 and load_truth(out).weights.shape == (800, 8)
    assert main(["generate", "--neurons", "5", "-o", str(tmp_path / "x.h5")]) == 2
    assert "at least 50 neurons" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()
