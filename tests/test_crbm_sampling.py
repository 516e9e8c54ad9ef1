"""'crbm'-mode virtual fish: samples are exact draws of the cRBM's P(v) (exact enumeration), and
the planted units are jumpy, calibrated and unsaturated."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats
from scipy.integrate import quad

from crbm_core.crbm_sampling import _log_prior, hidden_marginal, sample_crbm, unit_modes
from crbm_core.errors import ParameterError
from crbm_core.layers import drelu_cgf, drelu_params
from crbm_core.synthetic import generate_virtual_fish, load_truth, save_virtual_fish


def _tiny_model():
    w = np.zeros((8, 2))
    w[0:4, 0] = [1.2, 0.8, 1.0, -0.6]  # a double-well unit with an opposite-sign member
    w[4:7, 1] = [0.7, 1.1, 0.9]  # neuron 7 has no hidden unit
    return {
        "weights": w,
        "fields": np.array([-2.0, -1.5, -2.5, -1.0, -2.0, -1.8, -2.2, -1.2]),
        "gamma": np.array([1.0, 0.8]),
        "theta": np.array([0.3, -0.2]),
        "delta": np.array([-1.0, 0.6]),
        "eta": np.array([0.2, -0.3]),
    }


def _exact_pv(model):
    states = np.array(list(itertools.product([0, 1], repeat=8)), dtype=np.float64)
    params = drelu_params(model["gamma"], model["theta"], model["delta"], model["eta"])
    logp = states @ model["fields"] + drelu_cgf(states @ model["weights"], *params).sum(axis=1)
    p = np.exp(logp - logp.max())
    return states, p / p.sum()


def test_samples_follow_the_exact_marginal_of_v():
    model = _tiny_model()
    states, p = _exact_pv(model)
    n = 100_000
    spikes, _, _ = sample_crbm(model, n, np.random.default_rng(3))
    codes = spikes @ (1 << np.arange(7, -1, -1))
    observed = np.bincount(codes, minlength=256)
    expected = p * n
    big = expected >= 5  # chi-square validity; the rest pooled in one bin
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    assert stats.chisquare(obs, exp).pvalue > 1e-3


def test_exact_sampling_refuses_overlapping_units():
    model = _tiny_model()
    model["weights"][0, 1] = 0.5
    with pytest.raises(ParameterError, match="at most one hidden unit"):
        sample_crbm(model, 10, np.random.default_rng(0))


def test_crbm_mode_virtual_fish_stores_its_true_model(tmp_path):
    fish = generate_virtual_fish(1500, 1000, 12, seed=4, mode="crbm")
    truth = load_truth(save_virtual_fish(fish, tmp_path / "f.h5"))
    assert truth.mode == "crbm"
    w = truth.model["weights"]
    assert w.shape == (1500, 12) and ((w != 0).sum(axis=1) <= 1).all()
    assert set(truth.model) == {"weights", "fields", "gamma", "theta", "delta", "eta"}
    np.testing.assert_array_equal(truth.weights, w)
    assert truth.activity.shape == (1000, 12)
    # members of a unit co-fire more than chance: the model carries the planted structure
    s = fish.recording.spike_array().astype(float)
    k = int(np.argmax((w > 0).sum(axis=0)))
    members = np.flatnonzero(w[:, k] > 0)
    members = members[s[:, members].sum(axis=0) > 0]
    c = np.corrcoef(s[:, members].T)
    assert np.nanmean(c[np.triu_indices(members.size, 1)]) > 0.005


def test_hidden_marginal_finds_a_stiff_mode_far_from_zero():
    # a stiff on-well at h ≈ 2 lies beyond 40/√γ: the grid must follow the provable support
    w, g = np.array([3.0, 2.0, -1.0]), np.array([-4.0, -3.0, -2.0])
    gp, gm, tp, tm = 2000.0, 500.0, -4000.0, -20.0

    def logp(h):
        prior = _log_prior(np.array([h]), gp, gm, tp, tm)[0]
        return prior + np.logaddexp(0.0, g + w * h).sum()

    peak = max(logp(x) for x in np.linspace(-1, 4, 5001))
    mass = [
        quad(lambda h, k=k: h**k * np.exp(logp(h) - peak), -1, 4, points=[0, 2], limit=200)[0]
        for k in (0, 1)
    ]
    grid, cdf = hidden_marginal(w, g, gp, gm, tp, tm)
    mean = np.sum(0.5 * (grid[1:] + grid[:-1]) * np.diff(cdf))
    assert mean == pytest.approx(mass[1] / mass[0], rel=1e-4)
    assert 1.9 < mean < 2.1


def _unit_statistics(fish):
    """Per planted unit: true P(on), sampled on-fraction, middle-band share, members' median
    firing probability on/off, their 90th percentile on, mean pairwise correlation, whether the
    marginal has an off-mode < 0 < on-mode, number of positive members."""
    model, act = fish.truth.model, fish.truth.activity
    s = fish.recording.spike_array().astype(np.float64)
    w = model["weights"]
    params = drelu_params(model["gamma"], model["theta"], model["delta"], model["eta"])
    modes = unit_modes(model)
    rows = []
    for mu in range(w.shape[1]):
        off, on_mode = modes[mu]
        mid = 0.5 * (off + on_mode)
        members = np.flatnonzero(w[:, mu])
        grid, cdf = hidden_marginal(
            w[members, mu], model["fields"][members], *(p[mu] for p in params)
        )
        on = act[:, mu] > mid
        band = np.mean(np.abs(act[:, mu] - mid) < 0.25 * (on_mode - off))
        pos = s[:, w[:, mu] > 0]
        p_on, p_off = pos[on].mean(axis=0), pos[~on].mean(axis=0)
        x = pos[:, pos.std(axis=0) > 0]
        c = np.corrcoef(x.T)[np.triu_indices(x.shape[1], 1)]
        rows.append(
            (
                1 - np.interp(mid, grid, cdf),
                on.mean(),
                band,
                np.median(p_on),
                np.median(p_off),
                np.percentile(p_on, 90),
                c.mean(),
                off < 0 < on_mode,
                pos.shape[1],
            )
        )
    return np.array(rows, dtype=np.float64)


@pytest.mark.parametrize(
    "n, t, k, seed", [(2000, 4000, 30, 2), (3000, 3000, 24, 1), (5000, 4000, 40, 3)]
)
def test_planted_units_are_jumpy_unsaturated_and_calibrated(n, t, k, seed):
    fish = generate_virtual_fish(n, t, k, seed=seed, mode="crbm")
    model = fish.truth.model
    assert (model["delta"] < 0).all()  # double wells
    stats_ = _unit_statistics(fish)
    true_on, on, band, p_on, p_off, p90, corr, two_modes, n_pos = stats_.T
    assert two_modes.all()
    # exact marginal: each unit on (h above the midpoint between its modes) 12–28 % of the time
    assert ((true_on > 0.11) & (true_on < 0.29)).all()
    # sampled E[h|v]: bimodal (few frames between the wells), on 10–30 % of frames
    assert band.mean() < 0.05 and band.max() < 0.2
    assert ((on > 0.07) & (on < 0.33)).all() and 0.14 < on.mean() < 0.26
    # members fire well above baseline when on, but do not saturate (units with < 10 members are
    # pushed to ≥ 4 expected spikes per on-frame, and frames called "on" favour their spikes)
    assert ((p_on > 0.1) & (p_on < 0.7)).all() and 0.15 < np.median(p_on) < 0.35
    assert (p_on[n_pos >= 10] < 0.5).all()
    assert (p_on > 5 * p_off).all() and (p90 < 0.95).all()
    # co-firing inside assemblies: clear but far from locked
    assert (corr > 0.03).all() and 0.05 < corr.mean() < 0.3
    assert 0.03 < fish.recording.spike_array().mean() < 0.04
