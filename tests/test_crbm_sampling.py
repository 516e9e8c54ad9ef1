"""'crbm'-mode virtual fish: samples are exact draws of the cRBM's P(v) (exact enumeration)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from crbm_core.crbm_sampling import sample_crbm
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
