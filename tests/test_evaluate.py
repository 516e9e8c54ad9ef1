"""Evaluation (METHODS §5) and baselines (§8) against exact enumeration, dense brute force and
planted truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit, logsumexp

from crbm_core import evaluate as ev
from crbm_core.baselines import glm_reconstruction, pca
from crbm_core.errors import CrbmError, ParameterError
from crbm_core.layers import drelu_mean, drelu_sample
from crbm_core.model import CRBM
from crbm_core.split import choose_split
from crbm_core.synthetic import generate_virtual_fish
from crbm_core.train import TrainConfig, train


def _random_model(rng, n, m, scale=0.8):
    return CRBM(
        rng.normal(0.0, scale, (n, m)),
        rng.uniform(-2.0, -0.5, n),
        np.ones(m),
        rng.uniform(-0.5, 0.5, m),
        rng.uniform(-0.4, 0.3, m),
        rng.uniform(-0.3, 0.3, m),
    )


def _correlated_frames(rng, t, n, k=3):
    """Binary frames with shared latent drive (so that correlations are not all ~0)."""
    z = rng.random((t, k)) < 0.3
    w = rng.normal(1.5, 0.5, (k, n)) * (rng.random((k, n)) < 0.5)
    return (rng.random((t, n)) < expit(-2.5 + z @ w)).astype(np.uint8)


def _upper_cov(x):
    return np.cov(x, rowvar=False, bias=True)[np.triu_indices(x.shape[1], 1)]


# --------------------------------------------------------------------------------------------
# pairs


def test_pair_index_inverts_the_upper_triangle():
    for n in range(2, 40):
        i, j = np.triu_indices(n, 1)
        pi, pj = ev.pair_index_to_ij(np.arange(ev.n_all_pairs(n)), n)
        np.testing.assert_array_equal(pi, i)
        np.testing.assert_array_equal(pj, j)
    n = 50_000  # far rows, where the float square root must be corrected
    k = np.concatenate(
        [[0, 1, n - 2, n - 1], np.random.default_rng(0).integers(0, ev.n_all_pairs(n), 10**5)]
    )
    k = np.concatenate([k, [ev.n_all_pairs(n) - 1]])
    i, j = ev.pair_index_to_ij(k, n)
    assert np.all((0 <= i) & (i < j) & (j < n))
    np.testing.assert_array_equal(i * n - i * (i + 1) // 2 + j - i - 1, k)


def test_sample_pairs():
    i, j = ev.sample_pairs(30, 1000)
    assert i.size == 435  # all of them
    i, j = ev.sample_pairs(1000, 5000, seed=4)
    assert i.size == 5000 and np.all(i < j)
    assert np.unique(i * 1000 + j).size == 5000
    assert np.all(np.diff(i * 1000 + j) > 0)  # sorted
    i2, j2 = ev.sample_pairs(1000, 5000, seed=4)
    np.testing.assert_array_equal(i, i2)
    with pytest.raises(ParameterError):
        ev.sample_pairs(1, 10)


# --------------------------------------------------------------------------------------------
# the statistics against dense brute force


def test_data_statistics_match_dense_computation(rng):
    model = _random_model(rng, 12, 3)
    v = _correlated_frames(rng, 3000, 12)  # > one streamed block
    hp = model.hidden_params()
    eh = drelu_mean(v.astype(float) @ model.weights, *hp)
    pairs = ev.sample_pairs(12, 20, seed=1)  # a subset of the 66 pairs
    s = ev.data_statistics(model, v, pairs)
    np.testing.assert_allclose(s.v, v.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.h, eh.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s.vh, v.T @ eh / v.shape[0], rtol=1e-10, atol=1e-12)
    full = np.cov(v, rowvar=False, bias=True)
    np.testing.assert_allclose(s.vv, full[pairs], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(s.hh, _upper_cov(eh), rtol=1e-9, atol=1e-12)
    # the engine issue's helper agrees on all pairs
    all_pairs = ev.data_statistics(model, v, ev.sample_pairs(12))
    np.testing.assert_allclose(all_pairs.vv, ev.data_connected_correlations(v), atol=1e-14)


def test_model_statistics_are_the_rao_blackwellized_moments(rng):
    model = _random_model(rng, 10, 3)
    samples = _correlated_frames(rng, 700, 10)
    lam = 0.03
    s = ev.model_statistics(model, samples, np.random.default_rng(5), ev.sample_pairs(10), l1=lam)
    hp = model.hidden_params()
    inp = samples.astype(float) @ model.weights
    eh = drelu_mean(inp, *hp)
    p = expit(model.fields + drelu_sample(inp, *hp, np.random.default_rng(5)) @ model.weights.T)
    np.testing.assert_allclose(s.v, p.mean(0), rtol=1e-9)
    np.testing.assert_allclose(s.h, eh.mean(0), rtol=1e-10, atol=1e-12)
    vh = samples.T @ eh / samples.shape[0] + lam * np.sign(model.weights)
    np.testing.assert_allclose(s.vh, vh, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s.vv, _upper_cov(p), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(s.hh, _upper_cov(eh), rtol=1e-9, atol=1e-12)


def test_model_statistics_agree_with_exact_enumeration():
    """N = 8, M = 3: the five statistics from the paper's sampling protocol against exact sums
    over all 2^8 states (P(v) ∝ e^−F(v); ⟨h_μ h_ν⟩ = Σ_v P(v) E[h_μ|v] E[h_ν|v] since hidden units
    are independent given v). Chains start from exact samples, so the protocol is at equilibrium.

    Tolerance: the 300 chains are independent; the statistics of 30 groups of 10 chains give the
    standard error of the full estimate, s.d.(groups)/√30. 5 s.e. on each of the 10+3+24+28+3
    entries (t with 29 d.o.f.: P(|t| > 5) ≈ 2.5e-5 each, ≈ 2e-3 for all)."""
    rng = np.random.default_rng(11)
    n, m = 8, 3
    model = _random_model(rng, n, m, scale=1.0)
    states = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.uint8)
    logp = -model.free_energy(states)
    p = np.exp(logp - logsumexp(logp))
    eh = drelu_mean(states.astype(float) @ model.weights, *model.hidden_params())
    ev_v, ev_h = p @ states, p @ eh
    exact = {
        "v": ev_v,
        "h": ev_h,
        "vh": states.T @ (p[:, None] * eh),
        "vv": (states.T @ (p[:, None] * states) - np.outer(ev_v, ev_v))[np.triu_indices(n, 1)],
        "hh": (eh.T @ (p[:, None] * eh) - np.outer(ev_h, ev_h))[np.triu_indices(m, 1)],
    }
    start = states[rng.choice(2**n, size=3000, p=p)]
    samples = ev.model_samples(model, start, rng)
    assert samples.shape == (15_000, n)
    pairs = ev.sample_pairs(n)
    full = ev.model_statistics(model, samples, rng, pairs)
    chain = np.arange(samples.shape[0]) % 300
    groups = [ev.model_statistics(model, samples[chain // 10 == g], rng, pairs) for g in range(30)]
    for k in ev.STATISTICS:
        se = np.std([g[k].ravel() for g in groups], axis=0, ddof=1) / np.sqrt(30)
        err = np.abs(full[k].ravel() - exact[k].ravel())
        assert np.all(err <= 5 * se), (k, err / se)
        assert se.max() < 0.1 * np.abs(exact[k]).max(), k  # the check has power


# --------------------------------------------------------------------------------------------
# nRMSE


@pytest.fixture(scope="module")
def fish_sources():
    """A small virtual fish, a model made of its planted weights, and the split's statistics.

    The units are thresholded (δ = 2: E[h|I] ≈ 0 until |I| ≈ 2): with θ = δ = η = 0 a dReLU
    unit is a Gaussian with E[h|I] = I, whose mean no frame shuffle can change."""
    fish = generate_virtual_fish(200, 2000, 8, seed=5)
    truth = fish.truth
    n, k = truth.weights.shape
    model = CRBM(
        truth.weights.astype(np.float64),
        truth.baseline_logit.astype(np.float64),
        np.ones(k),
        np.zeros(k),
        np.full(k, 2.0),
        np.zeros(k),
    )
    data = fish.recording.spike_array()
    train_v, test_v = choose_split(data).apply(data)
    pairs = ev.sample_pairs(n)
    return (
        model,
        train_v,
        test_v,
        pairs,
        {
            "train": ev.data_statistics(model, train_v, pairs),
            "test": ev.data_statistics(model, test_v, pairs),
        },
    )


def test_nrmse_is_zero_when_the_model_has_the_training_statistics(fish_sources):
    model, train_v, _, pairs, src = fish_sources
    shuf = ev.shuffled_statistics(model, train_v, np.random.default_rng(0), pairs)
    for k in ev.STATISTICS:
        c = ev.compare(k, src["train"][k], src["train"][k], src["test"][k], shuf[k])
        assert c.nrmse == 0.0, k
        assert c.rmse_shuffled > c.rmse_train, k  # the shuffled reference is worse


def test_nrmse_is_one_for_shuffled_statistics(fish_sources):
    """A "model" with the statistics of another independent shuffle of the training data has
    nRMSE = 1 + (R₁ − R₀)/(R₀ − R_opt), R_s = RMSE(shuffle s, test); R₁ − R₀ has s.d. √2·s.d.(R),
    estimated from 8 more shuffles: 5 such s.d. around 1."""
    model, train_v, _, pairs, src = fish_sources
    shuffles = [
        ev.shuffled_statistics(model, train_v, np.random.default_rng(s), pairs) for s in range(10)
    ]
    test, trn = src["test"], src["train"]
    for k in ev.STATISTICS:
        r = np.array([ev.rmse(s[k], test[k]) for s in shuffles[2:]])
        den = ev.rmse(shuffles[0][k], test[k]) - ev.rmse(trn[k], test[k])
        nr = ev.nrmse(shuffles[1][k], trn[k], test[k], shuffles[0][k])
        assert abs(nr - 1.0) <= 5 * np.sqrt(2) * r.std(ddof=1) / den, (k, nr)


def test_shuffled_statistics_destroy_correlations(fish_sources):
    model, train_v, _, pairs, src = fish_sources
    shuf = ev.shuffled_statistics(model, train_v, np.random.default_rng(3), pairs)
    # independent columns: connected correlations are sampling noise, s.d. ≈ √(p_i p_j)/√T
    p = src["train"].v
    sd = np.sqrt(p[pairs[0]] * p[pairs[1]] / train_v.shape[0])
    firing = sd > 0
    w = model.weights != 0
    same = firing & (w[pairs[0]] & w[pairs[1]]).any(axis=1)  # members of one planted assembly
    for sel in (firing, same):
        assert np.sqrt(np.mean((shuf.vv[sel] / sd[sel]) ** 2)) < 1.2
    assert np.sqrt(np.mean((src["train"].vv[same] / sd[same]) ** 2)) > 3  # planted: not noise
    np.testing.assert_allclose(np.sort(shuf.v), np.sort(p), rtol=1e-12)  # neurons permuted


def test_pair_subset_standard_error_is_calibrated(fish_sources):
    """The bootstrap s.e. of a 2,000-pair subset against the spread of 60 independent subsets
    around the all-pairs nRMSE of ⟨v_i v_j⟩ (19,900 pairs; "model" = another shuffle, nRMSE ≈ 1).
    The s.d. of 60 draws is itself uncertain by ≳ 9 % (more for heavy tails): a factor 1.6."""
    model, train_v, _, pairs, src = fish_sources
    shuf = ev.shuffled_statistics(model, train_v, np.random.default_rng(1), pairs)
    ref = ev.shuffled_statistics(model, train_v, np.random.default_rng(2), pairs)
    mix = shuf.vv
    vecs = (mix, src["train"].vv, src["test"].vv, ref.vv)
    full = ev.nrmse(*vecs)
    sub_rng = np.random.default_rng(9)
    vals, ses = [], []
    for b in range(60):
        k = np.sort(sub_rng.choice(mix.size, size=2000, replace=False))
        c = ev.compare("vv", *(a[k] for a in vecs), n_total=mix.size, n_bootstrap=100, seed=b)
        assert c.n == 2000 and c.n_total == mix.size
        vals.append(c.nrmse)
        ses.append(c.nrmse_se)
    vals, ses = np.array(vals), np.array(ses)
    assert 0.5 < full < 1.5
    assert np.all(np.abs(vals - full) < 4 * ses)
    assert 1 / 1.6 < vals.std(ddof=1) / ses.mean() < 1.6


# --------------------------------------------------------------------------------------------
# reconstruction


def test_independent_model_has_zero_nllh(rng):
    v = _correlated_frames(rng, 800, 15)
    train_v, test_v = v[:500], v[500:]
    p = train_v.mean(0)
    assert p.min() > 0
    m = 2
    indep = CRBM(np.zeros((15, m)), np.log(p / (1 - p)), np.ones(m), *np.zeros((3, m)))
    rec = ev.reconstruction(indep, test_v, p)
    np.testing.assert_allclose(rec.nllh, 0.0, atol=1e-9)
    assert rec.median_nllh == pytest.approx(0.0, abs=1e-9)


def test_reconstruction_llh_matches_dense_computation(rng):
    model = _random_model(rng, 9, 3)
    v = _correlated_frames(rng, 400, 9)
    p = expit(
        model.fields + drelu_mean(v @ model.weights, *model.hidden_params()) @ model.weights.T
    )
    llh = np.mean(np.log(p * v + (1 - p) * (1 - v)), axis=0)
    np.testing.assert_allclose(ev.reconstruction_llh(model, v), llh, rtol=1e-10)
    q = v.mean(0)
    np.testing.assert_allclose(
        ev.independent_llh(v, q), np.mean(np.log(q * v + (1 - q) * (1 - v)), axis=0), rtol=1e-12
    )


def test_silent_training_neuron_gives_finite_nllh(rng):
    v = _correlated_frames(rng, 300, 6)
    v[:200, 2] = 0
    v[250, 2] = 1  # fires only in the test part
    model = _random_model(rng, 6, 2)
    rec = ev.reconstruction(model, v[200:], v[:200].mean(0))
    assert np.all(np.isfinite(rec.nllh))


# --------------------------------------------------------------------------------------------
# a trained model and the GLM on a virtual fish


@pytest.fixture(scope="module")
def trained():
    fish = generate_virtual_fish(300, 3000, 10, seed=3)
    data = fish.recording.spike_array()
    split = choose_split(data)
    train_v, test_v = split.apply(data)
    result = train(train_v, TrainConfig(n_updates=300, seed=0))
    members = fish.truth.membership.any(axis=1)
    return result, train_v, test_v, members


def test_briefly_trained_model_beats_the_independent_model(trained):
    result, train_v, test_v, members = trained
    rec = ev.reconstruction(result.model, test_v, train_v.mean(0))
    assert rec.median_nllh > 0
    # planted assembly members are what the bottleneck can reconstruct
    assert np.median(rec.nllh[members]) > np.median(rec.nllh[~members])
    assert np.median(rec.nllh[members]) > 0.02


def test_full_evaluation_result(trained):
    result, train_v, test_v, _ = trained
    model = result.model.copy()
    model.weights[:5, 0] = 0.0  # excluded from ⟨v_i h_μ⟩
    model.meta["resolved"] = json.dumps(result.resolved)
    e = ev.evaluate(
        model,
        train_v,
        test_v,
        np.random.default_rng(0),
        n_pairs=10_000,
        sampling=dict(n_chains=50, burn_in=20, n_saved=10, spacing=5),
    )
    n, m = model.weights.shape
    assert e.n_samples == 500
    assert e.settings["l1"] == result.resolved["l1"]
    sizes = {"v": n, "h": m, "vh": n * m - 5, "vv": 10_000, "hh": m * (m - 1) // 2}
    for k, c in e.statistics.items():
        assert c.n == sizes[k] and c.counts.sum() == sizes[k] and c.counts.shape == (50, 50)
        assert c.edges[0] <= c.edges[-1]
    vv = e.statistics["vv"]
    assert vv.n_total == n * (n - 1) // 2 and vv.nrmse_se > 0 and vv.rmse_model_se > 0
    assert e.statistics["v"].nrmse_se == 0.0
    finite = [1 - c.nrmse for c in e.statistics.values() if np.isfinite(c.nrmse)]
    assert e.score == min(finite)
    d = json.loads(json.dumps(e.to_dict()))
    assert set(d["statistics"]) == set(ev.STATISTICS)
    assert d["reconstruction"]["median_nllh"] == pytest.approx(e.reconstruction.median_nllh)


def test_glm_reconstructs_planted_members(trained):
    _, train_v, test_v, members = trained
    pick = np.random.default_rng(0)
    mem = pick.choice(np.flatnonzero(members), 15, replace=False)
    other = pick.choice(np.flatnonzero(~members), 15, replace=False)
    g_mem = glm_reconstruction(train_v, test_v, neurons=mem)
    g_other = glm_reconstruction(train_v, test_v, neurons=other)
    assert g_mem.C == 1e-3 and g_mem.fitted.all()
    assert g_mem.median_nllh > 0
    assert g_mem.median_nllh > g_other.median_nllh
    json.dumps(g_mem.to_dict())


def test_glm_silent_neuron_falls_back_to_the_independent_model(rng):
    v = _correlated_frames(rng, 400, 8)
    v[:300, 3] = 0
    g = glm_reconstruction(v[:300], v[300:], neurons=[3, 4])
    assert list(g.fitted) == [False, True]
    assert g.nllh[0] == 0.0


# --------------------------------------------------------------------------------------------
# PCA


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_pca_axes_are_the_covariance_eigenvectors(trained, method):
    _, train_v, _, _ = trained
    res = pca(train_v, 10, method=method)
    assert res.weights.shape == (300, 10) and res.method == method
    np.testing.assert_allclose(res.weights.T @ res.weights, np.eye(10), atol=1e-10)
    assert np.all(res.weights.sum(axis=0) >= 0)
    evals, evecs = np.linalg.eigh(np.cov(train_v, rowvar=False))
    evals, evecs = evals[::-1], evecs[:, ::-1]
    # the randomized range finder converges like (σ_{M+p}/σ_i)^(2q+1): 1e-4 after 7 iterations
    rtol = 1e-9 if method == "exact" else 1e-4
    np.testing.assert_allclose(res.explained_variance[:5], evals[:5], rtol=rtol)
    cos = np.abs(np.sum(res.weights[:, :5] * evecs[:, :5], axis=0))
    assert np.all(cos > 0.9999), cos
    np.testing.assert_allclose(res.explained_variance_ratio, res.explained_variance / evals.sum())


# --------------------------------------------------------------------------------------------
# bad input


def test_bad_input(rng):
    model = _random_model(rng, 6, 2)
    v = _correlated_frames(rng, 50, 6)
    with pytest.raises(ParameterError, match="7 neurons, the model 6"):
        ev.data_statistics(model, np.zeros((10, 7), np.uint8))
    bad = v.astype(float)
    bad[3, 1] = np.nan
    with pytest.raises(CrbmError, match="frame 3, neuron 1"):
        ev.evaluate(model, v, bad, rng, l1=0.0)
    with pytest.raises(ParameterError, match="which λ"):
        ev.evaluate(model, v, v, rng)
    with pytest.raises(ParameterError, match="distinct neurons"):
        ev.data_statistics(model, v, (np.array([0, 1]), np.array([1, 1])))
    with pytest.raises(ParameterError, match="pair indices"):
        ev.pair_index_to_ij(np.array([45]), 10)
    with pytest.raises(ParameterError, match="regularization"):
        ev.regularization_gradient(model.weights, 0.1, "l3")
    with pytest.raises(ParameterError, match="differ in size"):
        ev.compare("v", np.zeros(3), np.zeros(3), np.zeros(4), np.zeros(3))
    with pytest.raises(ParameterError, match="n_components"):
        pca(v, 7)
    with pytest.raises(ParameterError, match="C"):
        glm_reconstruction(v, v, neurons=[0], C=0.0)
    with pytest.raises(ParameterError, match="train_mean"):
        ev.reconstruction(model, v, np.zeros(5))
