"""Region-level connectivity against independent truth: dense N×N brute force on small cases,
the free energy, numpy's covariance/correlation, scipy's statistics, hand-computed averages."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.stats

from crbm_core import atlas
from crbm_core import connectivity as cf
from crbm_core.connectivity import region_mean_abs_coupling
from crbm_core.errors import CrbmError, ParameterError
from crbm_core.layers import drelu_cgf
from crbm_core.model import CRBM
from crbm_core.recording import read_recording
from crbm_core.synthetic import generate_virtual_fish, save_virtual_fish


def _region_mean(j, labels, r):
    """Dense reference: mean over i ∈ a, j ∈ b, i ≠ j of |j_ij| (NaN diagonal entries and
    NaN pairs ignored, NaN where a block has no finite entry), by explicit loops."""
    j = np.abs(np.array(j, dtype=np.float64))
    np.fill_diagonal(j, np.nan)
    out = np.full((r, r), np.nan)
    for a in range(r):
        for b in range(r):
            block = j[np.ix_(labels == a, labels == b)]
            if np.isfinite(block).any():
                out[a, b] = np.nanmean(block)
    return out


def _brute(w, var, labels, r):
    return _region_mean((w * var) @ w.T, labels, r)


def _model(rng, n, m, scale, dtype=np.float64):
    return CRBM(
        (rng.normal(size=(n, m)) * scale).astype(dtype),
        np.full(n, -1.5, dtype),
        rng.uniform(0.7, 1.5, m).astype(dtype),
        rng.normal(0.0, 0.5, m).astype(dtype),
        rng.normal(-0.3, 0.3, m).astype(dtype),
        rng.uniform(-0.4, 0.4, m).astype(dtype),
    )


def _frames(rng, t, n, p=0.2):
    return (rng.random((t, n)) < p).astype(np.uint8)


def _var_by_finite_differences(model, frames, h=1e-4):
    """⟨Γ''(I(v))⟩_t by central differences of Γ: independent of the closed-form variance.
    Error: h²Γ''''/12 ≈ 1e-9 plus rounding ~1e-16·|Γ|/h² ≈ 1e-8 (|Γ| ≲ 10)."""
    inp = frames.astype(np.float64) @ model.weights.astype(np.float64)
    hp = [np.asarray(p, np.float64) for p in model.hidden_params()]
    d2 = drelu_cgf(inp + h, *hp) - 2 * drelu_cgf(inp, *hp) + drelu_cgf(inp - h, *hp)
    return (d2 / h**2).mean(axis=0)


# --------------------------------------------------------------------------------------------
# blocked |J| aggregation


@pytest.mark.parametrize("density", [0.05, 1.0], ids=["sparse", "dense"])
def test_blocked_equals_brute_force(rng, density):
    n, m, r = 300, 7, 6
    w = rng.normal(size=(n, m)) * (rng.random((n, m)) < density)
    var = rng.uniform(0.2, 2.0, m)
    labels = rng.integers(-1, r, n)
    labels[labels == 5] = 4  # region 5 empty → NaN row and column
    got = region_mean_abs_coupling(sp.csr_matrix(w) if density < 1 else w, var, labels, r, block=64)
    np.testing.assert_allclose(got, _brute(w, var, labels, r), rtol=1e-10, equal_nan=True)
    assert np.isnan(got[5]).all()


@pytest.mark.parametrize("block", [1, 7, 64, 1000])
def test_dense_tiles_of_any_size_and_float32(rng, block):
    """Tiles that do not divide N, a single-neuron region (NaN diagonal: no i ≠ j pair), and
    float32 tiles (GEMM and per-run sums in float32: relative error ≲ 1e-6·√terms ≪ 1e-4)."""
    n, m, r = 157, 9, 5
    w = rng.normal(size=(n, m))
    var = rng.uniform(0.2, 2.0, m)
    labels = rng.integers(0, r - 1, n)
    labels[3] = r - 1  # region r-1 has one neuron
    want = _brute(w, var, labels, r)
    got = region_mean_abs_coupling(w, var, labels, r, block=block)
    np.testing.assert_allclose(got, want, rtol=1e-10, equal_nan=True)
    got32 = region_mean_abs_coupling(w.astype(np.float32), var, labels, r, block=block)
    np.testing.assert_allclose(got32, want, rtol=1e-4, equal_nan=True)
    assert np.isnan(got[r - 1, r - 1]) and np.isfinite(got[r - 1, : r - 1]).all()


def test_crbm_region_fc_equals_dense_coupling_matrix(rng):
    """FC from a model and frames = region means of the dense J = W diag(⟨Var⟩) Wᵀ, with the
    variances from finite differences of Γ (rtol 1e-6 covers their ~1e-8 error)."""
    n, m, r = 120, 6, 7
    model = _model(rng, n, m, 0.5)
    frames = _frames(rng, 90, n)
    labels = rng.integers(-1, r, n)
    var = _var_by_finite_differences(model, frames)
    np.testing.assert_allclose(cf.hidden_variance(model, frames, batch=32), var, rtol=1e-6)
    want = _brute(model.weights, var, labels, r)
    np.testing.assert_allclose(
        cf.crbm_region_fc(model, frames, labels, r, block=50), want, rtol=1e-6
    )
    i, j = np.array([0, 5, 17]), np.array([3, 99, 18])
    dense = (model.weights * var) @ model.weights.T
    np.testing.assert_allclose(cf.approx_coupling(model, var, i, j), dense[i, j], rtol=1e-12)


def test_virtual_fish_planted_coupling_equals_dense_computation():
    """GroundTruth.region_coupling (built with region_mean_abs_coupling on sparse planted
    weights) equals mean |J_ij| of the dense planted J = W diag(Var(activity)) Wᵀ."""
    fish = generate_virtual_fish(400, 600, 10, seed=5)
    truth, labels = fish.truth, fish.recording.region_labels
    var = truth.activity.astype(np.float64).var(axis=0)
    want = _brute(truth.weights.astype(np.float64), var, labels, atlas.N_REGIONS)
    # activity is stored in float32: its variance is good to ~1e-7 relative
    np.testing.assert_allclose(truth.region_coupling, want, rtol=1e-5, atol=0, equal_nan=True)
    assert (want[np.isfinite(want)] > 0).sum() >= 10  # the planted couplings are not all 0


# --------------------------------------------------------------------------------------------
# exact Eq. 15 coupling


def _log_odds(model, v, i):
    """log P(v_i=1|v_−i) − log P(v_i=0|v_−i) = F(v; v_i=0) − F(v; v_i=1), P ∝ exp(−F)."""
    on, off = v.copy(), v.copy()
    on[:, i], off[:, i] = 1, 0
    return model.free_energy(off) - model.free_energy(on)


def test_exact_coupling_equals_free_energy_log_odds(rng):
    n, m = 7, 3
    model = _model(rng, n, m, 1.2)  # strong weights: far from the small-coupling regime
    frames = _frames(rng, 25, n, 0.4)
    i, j = np.triu_indices(n, 1)
    want = np.empty(i.size)
    for k, (a, b) in enumerate(zip(i, j, strict=True)):
        on, off = frames.copy(), frames.copy()
        on[:, b], off[:, b] = 1, 0
        want[k] = np.mean(_log_odds(model, on, a) - _log_odds(model, off, a))
    got = cf.exact_coupling(model, frames, i, j, batch=10)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        cf.exact_coupling(model, frames, j, i), got, rtol=1e-12
    )  # J_ij = J_ji


def test_fast_coupling_tracks_exact_for_small_weights(rng):
    """Σ w_iμ w_jμ ⟨Var⟩ is the second-order expansion of Eq. 15: with weights of scale s it
    differs by O(s) relatively (the Γ''' term, and Var taken at I(v) instead of I⁰), so the
    relative error halves with s — a deterministic property, both sides use the same frames."""
    n, m = 30, 5
    base = _model(rng, n, m, 1.0)
    frames = _frames(rng, 300, n)
    i, j = np.triu_indices(n, 1)
    err = {}
    for s in (0.1, 0.05):
        model = base.copy()
        model.weights *= s
        exact = cf.exact_coupling(model, frames, i, j)
        fast = cf.approx_coupling(model, cf.hidden_variance(model, frames), i, j)
        assert scipy.stats.pearsonr(fast, exact).statistic > 0.95
        err[s] = np.linalg.norm(fast - exact) / np.linalg.norm(exact)
    assert err[0.1] < 0.05
    assert 0.35 < err[0.05] / err[0.1] < 0.65


# --------------------------------------------------------------------------------------------
# covariance / correlation baselines


def _dense_spike_fc(x, labels, r):
    x = x.astype(np.float64)
    cov = np.cov(x.T, bias=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        cor = np.corrcoef(x.T)  # NaN rows for silent / always-on neurons
    return _region_mean(cov, labels, r), _region_mean(cor, labels, r)


@pytest.mark.parametrize("block", [1, 13, 128])
def test_spike_fc_equals_dense_numpy(rng, block):
    n, t, r = 260, 150, 6
    x = _frames(rng, t, n, 0.06)
    x[:, 4] = 0  # silent: covariance 0, correlation undefined (left out)
    x[:, 9] = 1  # always on: the same
    x[:40:3, 11] = 1  # a correlated pair
    x[:40:3, 12] = 1
    labels = rng.integers(-1, r, n)
    labels[labels == 2] = 3  # region 2 empty
    got = cf.spike_fc(x, labels, r, block=block)
    cov, cor = _dense_spike_fc(x, labels, r)
    np.testing.assert_allclose(got.covariance, cov, rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(got.correlation, cor, rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(cf.covariance_fc(x, labels, r), got.covariance, rtol=1e-12)
    assert np.isnan(got.covariance[2]).all()


def test_spike_fc_reads_lazy_recording_files(tmp_path):
    """A recording file read lazily (H5Spikes, frames read in batches) gives the in-memory result
    over several batches of frames."""
    fish = generate_virtual_fish(300, 2100, 8, seed=2)
    path = save_virtual_fish(fish, tmp_path / "fish.h5")
    rec = read_recording(path, lazy=True)
    assert not isinstance(rec.spikes, np.ndarray)
    lazy = cf.spike_fc(rec.spikes, rec.region_labels)
    cov, cor = _dense_spike_fc(fish.recording.spike_array(), rec.region_labels, atlas.N_REGIONS)
    np.testing.assert_allclose(lazy.covariance, cov, rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(lazy.correlation, cor, rtol=1e-10, equal_nan=True)


# --------------------------------------------------------------------------------------------
# specimen averaging, region filter, statistics


def test_specimen_average_by_hand():
    r = 3
    fc1 = np.array([[1.0, 2.0, np.nan], [2.0, 3.0, 4.0], [np.nan, 4.0, 5.0]])
    fc2 = np.array([[3.0, 6.0, 7.0], [6.0, np.nan, 8.0], [7.0, 8.0, 9.0]])
    counts = np.array([[10, 20, 0], [30, 0, 5]])
    t = np.array([100, 50])
    got = cf.specimen_average([fc1, fc2], t, counts)
    # w = T·(N_a + N_b): (0,0): 100·20 = 2000 and 50·60 = 3000 → (2000·1 + 3000·3)/5000
    assert got[0, 0] == pytest.approx((2000 * 1 + 3000 * 3) / 5000)
    # (0,1): 100·30 = 3000, 50·30 = 1500
    assert got[0, 1] == pytest.approx((3000 * 2 + 1500 * 6) / 4500)
    assert got[0, 2] == pytest.approx(7.0)  # fish 1 lacks the pair
    assert got[1, 1] == pytest.approx(3.0)  # fish 2 lacks it
    # (1,2): 100·20 = 2000, 50·5 = 250
    assert got[1, 2] == pytest.approx((2000 * 4 + 250 * 8) / 2250)
    # (2,2): fish 1 has N = 0 there (weight 0), fish 2: 50·10
    assert got[2, 2] == pytest.approx(9.0)
    np.testing.assert_allclose(got, got.T)
    assert got.shape == (r, r)
    none = cf.specimen_average([np.full((2, 2), np.nan)], [10], [[3, 4]])
    assert np.isnan(none).all()


def test_bilateral_region_filter():
    counts = np.zeros(atlas.N_REGIONS, int)
    tl, tr = atlas.region_index("Tectum_left"), atlas.region_index("Tectum_right")
    cl, cr = atlas.region_index("Cerebellum_left"), atlas.region_index("Cerebellum_right")
    counts[[tl, tr, cl, cr]] = [5, 9, 40, 4]
    keep = cf.bilateral_regions(counts)
    assert set(np.flatnonzero(keep)) == {tl, tr}
    two = np.stack([counts, counts])
    two[1, tr] = 3
    assert not cf.bilateral_regions(two).any()
    assert set(np.flatnonzero(cf.bilateral_regions(counts, min_neurons=4))) == {tl, tr, cl, cr}
    labels = np.repeat([tl, tr, -1], [5, 9, 3])
    np.testing.assert_array_equal(cf.region_counts(labels)[[tl, tr]], [5, 9])


def test_fc_vs_sc_statistics_match_scipy(rng):
    r = 6
    sc = rng.uniform(0.01, 1.0, (r, r))
    sc = np.triu(sc) + np.triu(sc, 1).T
    sc[0, 1] = sc[1, 0] = 0.0
    sc[2, 4] = sc[4, 2] = 0.0
    sc[3, 3] = 0.0
    fc = rng.uniform(0.1, 2.0, (r, r)) * sc + 0.05
    fc = np.triu(fc) + np.triu(fc, 1).T
    fc[1, 5] = fc[5, 1] = np.nan  # a missing pair
    fc[2, 2] = 0.0  # log10 0 = −inf: dropped
    keep = np.ones(r, bool)
    keep[5] = False
    # by hand: upper triangle with diagonal over regions 0..4
    pos_x, pos_y, zero_y, pairs = [], [], [], []
    for a in range(5):
        for b in range(a, 5):
            if not (np.isfinite(fc[a, b]) and fc[a, b] > 0):
                continue
            if sc[a, b] > 0:
                pos_x.append(np.log10(sc[a, b]))
                pos_y.append(np.log10(fc[a, b]))
                pairs.append((a, b))
            else:
                zero_y.append(np.log10(fc[a, b]))
    res = cf.compare_fc_sc(fc, sc, keep)
    assert res.n_pairs == len(pos_x) == 11 and res.n_sc_zero == 3
    np.testing.assert_array_equal(res.pairs, pairs)
    s = scipy.stats.spearmanr(pos_x, pos_y)
    p = scipy.stats.pearsonr(pos_x, pos_y)
    ks = scipy.stats.ks_2samp(zero_y, pos_y)
    assert res.spearman_r == pytest.approx(s.statistic) and res.spearman_p == pytest.approx(
        s.pvalue
    )
    assert res.pearson_r == pytest.approx(p.statistic) and res.pearson_p == pytest.approx(p.pvalue)
    assert res.ks_statistic == pytest.approx(ks.statistic)
    assert res.ks_pvalue == pytest.approx(ks.pvalue)
    d = res.to_dict()
    assert d["n_pairs"] == 11 and len(d["log_fc"]) == 11
    off_diag = cf.compare_fc_sc(fc, sc, keep, diagonal=False)
    assert off_diag.n_sc_zero == 2  # SC[3, 3] = 0 left out with the diagonal
    few = cf.compare_fc_sc(np.eye(2) + 1, np.eye(2))  # 2 pairs with SC > 0: no correlation
    assert few.n_pairs == 2 and np.isnan(few.spearman_r) and np.isfinite(few.ks_statistic)
    no_zero = cf.compare_fc_sc(np.eye(2) + 1, np.array([[1.0, 2], [2, 3]]))  # no SC = 0: no KS
    assert no_zero.n_pairs == 3 and np.isfinite(no_zero.spearman_r)
    assert np.isnan(no_zero.ks_statistic)


def test_cross_fish_correlation_by_hand(rng):
    r = atlas.N_REGIONS
    base = rng.lognormal(0.0, 1.0, (r, r))
    base = np.triu(base) + np.triu(base, 1).T
    fcs = np.stack([base * rng.lognormal(0, s, (r, r)) for s in (0.1, 0.3, 0.5)])
    fcs = (fcs + fcs.transpose(0, 2, 1)) / 2
    fcs[2, 10, 20] = fcs[2, 20, 10] = np.nan
    counts = np.full((3, r), 10)
    counts[1, 7] = 2  # region 7 fails the filter in fish 1, so do pairs with its twin 6
    res = cf.cross_fish_correlation(fcs, counts)
    a, b = np.triu_indices(r)
    want = np.eye(3)
    for p in range(3):
        for q in range(p + 1, 3):
            ok = np.isfinite(fcs[p][a, b]) & np.isfinite(fcs[q][a, b])
            if 1 in (p, q):
                ok &= ~np.isin(a, [6, 7]) & ~np.isin(b, [6, 7])
            x, y = np.log10(fcs[p][a, b][ok]), np.log10(fcs[q][a, b][ok])
            want[p, q] = want[q, p] = np.corrcoef(x, y)[0, 1]
            assert res.n_pairs[p, q] == ok.sum()
    np.testing.assert_allclose(res.matrix, want, rtol=1e-12)
    assert res.mean == pytest.approx(np.mean(want[np.triu_indices(3, 1)]))
    assert res.matrix[0, 1] > res.matrix[0, 2]  # less noise, more alike
    assert set(res.to_dict()) == {"matrix", "n_pairs", "mean"}


def test_fc_vs_real_structural_connectivity(atlas_reference):
    """The shipped SC loads; the whole comparison runs on a virtual fish's true cRBM."""
    sc = atlas.structural_connectivity()
    assert sc.shape == (atlas.N_REGIONS, atlas.N_REGIONS) and (sc >= 0).all()
    fish = generate_virtual_fish(800, 300, 16, seed=4, mode="crbm")
    rec = fish.recording
    model = CRBM.from_dict(fish.truth.model)
    fc = cf.crbm_region_fc(model, rec.spikes, rec.region_labels)
    # the generator's truth is the same quantity (its variances from float64 inputs)
    np.testing.assert_allclose(fc, fish.truth.region_coupling, rtol=1e-4, equal_nan=True)
    keep = cf.bilateral_regions(cf.region_counts(rec.region_labels))
    res = cf.compare_fc_sc(fc, sc, keep)
    a, b = np.triu_indices(atlas.N_REGIONS)
    sel = keep[a] & keep[b]
    with np.errstate(divide="ignore"):
        finite = np.isfinite(np.log10(fc[a, b])) & sel
    assert res.n_pairs == (finite & (sc[a, b] > 0)).sum() >= 3
    assert res.n_sc_zero == (finite & (sc[a, b] == 0)).sum()
    assert np.isfinite([res.spearman_r, res.pearson_r]).all()
    base = cf.compare_fc_sc(cf.correlation_fc(rec.spikes, rec.region_labels), sc, keep)
    assert base.n_pairs > res.n_pairs  # data correlations are nonzero for (almost) every pair


# --------------------------------------------------------------------------------------------
# bad input


def test_bad_input_raises_clear_errors(rng):
    n, m, r = 20, 3, 4
    model = _model(rng, n, m, 0.3)
    frames = _frames(rng, 10, n)
    labels = rng.integers(0, r, n)
    w, var = model.weights, np.ones(m)
    cases = [
        (lambda: region_mean_abs_coupling(w, var, labels[:-1], r), "shape"),
        (lambda: region_mean_abs_coupling(w, var, labels + r, r), "labels must lie"),
        (lambda: region_mean_abs_coupling(w, var, labels, 0), "n_regions"),
        (lambda: region_mean_abs_coupling(w, np.ones(m + 1), labels, r), "hu_variance"),
        (lambda: region_mean_abs_coupling(w, -var, labels, r), "hu_variance"),
        (lambda: region_mean_abs_coupling(w * np.nan, var, labels, r), "finite"),
        (lambda: region_mean_abs_coupling(w, var, labels + 0.5, r), "integers"),
        (lambda: region_mean_abs_coupling(w, var, labels, r, block=0), "block"),
        (lambda: cf.crbm_region_fc(model, frames[:, :-1], labels, r), "frames"),
        (lambda: cf.crbm_region_fc(model, frames[:0], labels, r), "empty"),
        (lambda: cf.crbm_region_fc(model, frames * 2, labels, r), "not binary"),
        (lambda: cf.hidden_variance(model, frames, batch=0), "batch"),
        (lambda: cf.exact_coupling(model, frames, [1], [1]), "i ≠ j"),
        (lambda: cf.exact_coupling(model, frames, [1, 2], [3]), "pairs"),
        (lambda: cf.exact_coupling(model, frames, [1], [n]), "0..19"),
        (lambda: cf.approx_coupling(model, var[:-1], [1], [2]), "hu_variance"),
        (lambda: cf.spike_fc(np.full((5, n), 0.5), labels, r), "not binary"),
        (lambda: cf.spike_fc(np.zeros(n), labels, r), "spikes"),
        (lambda: cf.specimen_average(np.ones((2, r, r)), [10], np.ones((2, r))), "n_frames"),
        (lambda: cf.specimen_average(np.ones((2, r, r)), [10, 0], np.ones((2, r))), "n_frames"),
        (lambda: cf.specimen_average(np.ones((2, r, r)), [1, 1], np.ones((2, r + 1))), "counts"),
        (lambda: cf.specimen_average(np.ones((r, r)), [1], np.ones((1, r))), "one R×R"),
        (lambda: cf.bilateral_regions(np.ones(r)), "72"),
        (lambda: cf.compare_fc_sc(np.ones((r, r)), -np.ones((r, r))), "SC"),
        (lambda: cf.compare_fc_sc(np.ones((r, r)), np.ones((r, r + 1))), "square"),
        (lambda: cf.compare_fc_sc(np.ones((r, r)), np.ones((r, r)), np.ones(r + 1)), "keep"),
        (lambda: cf.cross_fish_correlation(np.ones((2, r, r)), np.ones((3, r))), "counts"),
    ]
    for call, message in cases:
        with pytest.raises(CrbmError, match=message):
            call()
    with pytest.raises(ParameterError):
        cf.region_counts(np.array([0, 1, 99]))
