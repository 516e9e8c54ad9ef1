"""HU dynamics (METHODS §6) against closed forms, planted truth and independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.spatial.distance import pdist, squareform

from crbm_core.dynamics import (
    compositional_phase,
    correlation_distance,
    fit_bimodal,
    hu_time_constants,
    hu_traces,
    neuron_time_constants,
    state_time_constants,
    trace_pca,
    ward_order,
)
from crbm_core.errors import CrbmError, ParameterError
from crbm_core.hu_states import decode_hu_states
from crbm_core.layers import drelu_params
from crbm_core.model import CRBM
from crbm_core.recording import H5Spikes, Recording
from crbm_core.synthetic import generate_virtual_fish


@pytest.fixture(scope="module")
def fish():
    return generate_virtual_fish(600, 2000, 8, seed=11)


def _random_crbm(rng, n=150, m=5, dtype=np.float64) -> CRBM:
    return CRBM(
        rng.normal(0, 0.3, (n, m)).astype(dtype),
        rng.normal(-2, 0.5, n).astype(dtype),
        rng.uniform(0.5, 2.0, m).astype(dtype),
        rng.normal(0, 0.5, m).astype(dtype),
        rng.normal(-0.5, 0.5, m).astype(dtype),
        rng.uniform(-0.5, 0.5, m).astype(dtype),
    )


# --------------------------------------------------------------------------------------------
# traces


def _quad_mean(inp, gp, gm, tp, tm):
    """E[h|I] by numerical integration of exp(−U(h) + hI) over both branches."""

    def dens(h):
        u = 0.5 * gp * h * h + tp * h if h >= 0 else 0.5 * gm * h * h - tm * h
        return np.exp(-u + h * inp)

    z = quad(dens, -np.inf, 0)[0] + quad(dens, 0, np.inf)[0]
    mom = quad(lambda h: h * dens(h), -np.inf, 0)[0] + quad(lambda h: h * dens(h), 0, np.inf)[0]
    return mom / z


def test_batched_traces_equal_the_model_and_quadrature(rng):
    model = _random_crbm(rng)
    spikes = (rng.random((333, 150)) < 0.1).astype(np.uint8)
    got = hu_traces(model, spikes, batch=50)  # 6 full batches and a partial one
    np.testing.assert_allclose(got, model.mean_hidden(spikes), rtol=1e-12, atol=1e-14)
    gp, gm, tp, tm = drelu_params(model.gamma, model.theta, model.delta, model.eta)
    for t, mu in [(0, 0), (17, 3), (200, 4), (332, 1)]:
        inp = float(spikes[t].astype(np.float64) @ model.weights[:, mu])
        assert got[t, mu] == pytest.approx(_quad_mean(inp, gp[mu], gm[mu], tp[mu], tm[mu]), 1e-7)


def test_traces_from_a_lazy_recording(rng, tmp_path):
    model = _random_crbm(rng, dtype=np.float32)
    spikes = (rng.random((700, 150)) < 0.1).astype(np.uint8)
    labels = rng.integers(-1, 72, 150)
    rec = Recording.from_arrays(spikes, rng.random((150, 3)), labels, frame_rate=4.0)
    lazy = Recording.load(rec.save(tmp_path / "r.h5"), lazy=True)
    assert isinstance(lazy.spikes, H5Spikes)
    got = hu_traces(model, lazy, batch=256)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, model.mean_hidden(spikes), rtol=1e-6, atol=1e-6)


def test_traces_bad_input(rng):
    model = _random_crbm(rng)
    with pytest.raises(ParameterError, match="149 neurons"):
        hu_traces(model, np.zeros((10, 149), np.uint8))
    with pytest.raises(ParameterError, match="batch"):
        hu_traces(model, np.zeros((10, 150), np.uint8), batch=0)
    bad = np.zeros((10, 150))
    bad[3, 7] = np.nan
    with pytest.raises(CrbmError, match="frame 3"):
        hu_traces(model, bad, batch=4)
    with pytest.raises(ParameterError, match="shape"):
        hu_traces(model, np.zeros((0, 150), np.uint8))


# --------------------------------------------------------------------------------------------
# bimodality


MIXTURES = [  # (w_active, μ_inactive, μ_active, σ_inactive, σ_active)
    (0.2, -1.0, 2.0, 0.3, 0.5),
    (0.5, 0.0, 1.0, 0.15, 0.15),
    (0.05, 3.0, 10.0, 1.0, 2.0),
]
N_GMM = 20000


def _bimodal(rng):
    cols = []
    for w1, m0, m1, s0, s1 in MIXTURES:
        on = rng.random(N_GMM) < w1
        cols.append(np.where(on, rng.normal(m1, s1, N_GMM), rng.normal(m0, s0, N_GMM)))
    return np.stack(cols, axis=1)


def test_gmm_recovers_the_modes_within_sampling_error(rng):
    fit = fit_bimodal(_bimodal(rng))
    assert fit.converged.all()
    for j, (w1, m0, m1, s0, s1) in enumerate(MIXTURES):
        n0, n1 = N_GMM * (1 - w1), N_GMM * w1
        # modes ≥ 3.5 σ apart: the MLE is ≈ the per-component sample moments, so
        # SE(mean) = σ/√n_k, SE(std) = σ/√(2 n_k), SE(weight) = √(w(1−w)/N); 5 SE tolerances
        se0, se1 = s0 / np.sqrt(n0), s1 / np.sqrt(n1)
        assert fit.means[j] == pytest.approx([m0, m1], abs=5 * max(se0, se1))
        assert fit.stds[j] == pytest.approx([s0, s1], abs=5 * max(se0, se1) / np.sqrt(2))
        assert fit.weights[j, 1] == pytest.approx(w1, abs=5 * np.sqrt(w1 * (1 - w1) / N_GMM))
        assert fit.transition[j] == pytest.approx((m0 + m1) / 2, abs=5 * np.hypot(se0, se1) / 2)
        assert m0 < fit.transition[j] < m1
        assert fit.inactive_peak[j] == fit.means[j, 0]


def test_gmm_equals_scikit_learn_maximum_likelihood(rng):
    mixture = pytest.importorskip("sklearn.mixture")
    x = _bimodal(rng)[:5000]
    fit = fit_bimodal(x, tol=1e-14)  # both stopped where EM's steps are at rounding level
    for j in range(x.shape[1]):
        col = x[:, j : j + 1]
        ref = mixture.GaussianMixture(
            2, tol=1e-14, max_iter=5000, reg_covar=1e-6 * col.var(), random_state=0
        ).fit(col)
        order = np.argsort(ref.means_[:, 0])
        sd = col.std()
        np.testing.assert_allclose(fit.means[j], ref.means_[order, 0], atol=1e-6 * sd)
        np.testing.assert_allclose(
            fit.stds[j], np.sqrt(ref.covariances_[order, 0, 0]), atol=1e-6 * sd
        )
        np.testing.assert_allclose(fit.weights[j], ref.weights_[order], atol=1e-6)


@pytest.mark.filterwarnings("error")
def test_gmm_of_a_constant_trace():
    x = np.column_stack([np.full(50, 0.1), np.r_[np.zeros(25), np.ones(25)]])
    fit = fit_bimodal(x)
    assert fit.transition[0] == 0.1 and (fit.stds[0] == 0).all() and fit.converged[0]
    assert fit.means[1] == pytest.approx([0, 1], abs=1e-9)  # two exact values: point masses
    np.testing.assert_allclose(fit.center(x)[:, 1], x[:, 1] - 0.5, atol=1e-9)


def test_planted_activity_is_split_at_its_on_state(fish):
    act = fish.truth.activity  # 0 when off, episode amplitude 0.7–1.3 when on
    fit = fit_bimodal(act)
    np.testing.assert_allclose(fit.inactive_peak, 0.0, atol=1e-9)
    assert ((fit.means[:, 1] > 0.7) & (fit.means[:, 1] < 1.3)).all()
    np.testing.assert_array_equal(act > fit.transition, act > 0)


# --------------------------------------------------------------------------------------------
# time constants


def test_time_constant_by_hand():
    # t:    0  1  2  3  4  5  6  7  8  9 10 11 12 13 14
    seq = [1, 1, 0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 1, 0]
    # onsets at 5, 7, 13 (frame 0 is not an onset: the run started before) → cycles 2, 6
    states = np.column_stack([seq, np.zeros(15), np.eye(15)[4]]).astype(np.uint8)
    tc = neuron_time_constants(states, frame_rate=2.0)
    assert tc.period_frames[0] == 4.0 and tc.n_cycles[0] == 2 and tc.period_s[0] == 2.0
    assert np.isnan(tc.period_frames[1:]).all() and (tc.n_cycles[1:] == 0).all()
    assert tc.median_s() == 2.0


MARKOV = [(4.0, 10.0), (1.5, 30.0), (20.0, 20.0)]  # mean (on, off) dwell in frames
T_MARKOV = 60000


def _two_state(rng, on_mean, off_mean):
    """A two-state Markov chain built from its runs (geometric dwell times), starting off;
    returns the states and the lengths of the complete cycles (on run + following off run)."""
    n = int(3 * T_MARKOV / (on_mean + off_mean)) + 10
    on, off = rng.geometric(1 / on_mean, n), rng.geometric(1 / off_mean, n + 1)
    runs = np.ravel(np.column_stack([off[:n], on]))
    states = np.repeat(np.tile([0, 1], n), runs)[:T_MARKOV].astype(np.uint8)
    starts = off[0] + np.concatenate([[0], np.cumsum(on + off[1:])])
    complete = int((starts < T_MARKOV).sum()) - 1  # onsets inside the recording, minus one
    return states, (on + off[1:])[:complete]


def _period_quantile(on_mean, off_mean, p):
    """p-quantile of on + off for independent geometric dwell times (exact pmf, convolved)."""
    d = np.arange(1, 3000)
    pmf = np.convolve(
        (1 / on_mean) * (1 - 1 / on_mean) ** (d - 1), (1 / off_mean) * (1 - 1 / off_mean) ** (d - 1)
    )
    return 2 + np.searchsorted(np.cumsum(pmf), p)  # the sum's support starts at 2


def test_time_constant_of_two_state_markov_traces(rng):
    cols = [_two_state(rng, a, b) for a, b in MARKOV]
    states = np.column_stack([c[0] for c in cols])
    traces = np.where(states, 1.0, -1.0) + rng.uniform(-0.5, 0.5, states.shape)
    tc_hu = hu_time_constants(traces, np.zeros(len(MARKOV)), frame_rate=4.0)
    tc_neuron = neuron_time_constants(states, frame_rate=4.0)  # read in blocks of 512 frames
    for j, (on_mean, off_mean) in enumerate(MARKOV):
        cycles = cols[j][1]
        assert tc_hu.n_cycles[j] == tc_neuron.n_cycles[j] == cycles.size
        assert tc_hu.period_frames[j] == tc_neuron.period_frames[j] == np.median(cycles)
        # The sample median leaves [q(½ − 4s), q(½ + 4s)], s = ½/√n, only if a binomial count of
        # cycles below / above that quantile is 4 SD off its mean: a 4σ event.
        s = 0.5 / np.sqrt(cycles.size)
        lo, hi = (_period_quantile(on_mean, off_mean, p) for p in (0.5 - 4 * s, 0.5 + 4 * s))
        assert lo <= tc_hu.period_frames[j] <= hi
    np.testing.assert_allclose(tc_hu.period_s, tc_hu.period_frames / 4.0)


def test_hmm_decoding_recovers_noisy_two_state_dynamics(rng):
    """Two-state Markov activity seen through Gaussian noise (sd 0.3 of a unit gap: a threshold
    misreads ~5 % of frames, each misread a spurious cycle). Baum–Welch is the maximum-likelihood
    fit of exactly this model, so its stay probabilities must match the truth within sampling
    error: 5 × the complete-data standard error √(p(1−p)/frames in the state) (the hidden-state
    error is a little larger; decoding is ≥ 97 % right here). Viterbi then gives cycles close to
    the true ones (missed 1–2-frame excursions merge a few: within 20 %), where the threshold's
    are a third too short or worse."""
    cols = [_two_state(rng, a, b) for a, b in MARKOV]
    states = np.column_stack([c[0] for c in cols])
    x = states + rng.normal(0.0, 0.3, states.shape)
    fit = fit_bimodal(x)
    decoded = decode_hu_states(x, fit)
    by_hmm = state_time_constants(decoded.states, 4.0)
    by_threshold = hu_time_constants(x, fit.transition, 4.0)
    for j, (on_mean, off_mean) in enumerate(MARKOV):
        truth = np.array([1 - 1 / off_mean, 1 - 1 / on_mean])
        frames = np.array([(states[:, j] == 0).sum(), states[:, j].sum()])
        se = np.sqrt(truth * (1 - truth) / frames)
        assert np.all(np.abs(decoded.stay[j] - truth) <= 5 * se), (decoded.stay[j], truth, se)
        assert (decoded.states[:, j] == states[:, j]).mean() >= 0.97
        true_median = np.median(cols[j][1])
        assert abs(by_hmm.period_frames[j] / true_median - 1) <= 0.2
        assert by_threshold.period_frames[j] <= 0.75 * true_median
    np.testing.assert_allclose(decoded.means[:, 1] - decoded.means[:, 0], 1.0, atol=0.02)


def test_hmm_decoding_of_degenerate_traces():
    flat = np.zeros((200, 2))
    flat[:, 1] = 3.0
    decoded = decode_hu_states(flat, fit_bimodal(flat))
    assert decoded.states.shape == (200, 2)
    assert (decoded.states == decoded.states[0]).all()  # a constant trace never switches
    assert (state_time_constants(decoded.states, 2.0).n_cycles == 0).all()
    with pytest.raises(ParameterError, match="finite"):
        decode_hu_states(np.full((10, 2), np.nan), fit_bimodal(flat))
    with pytest.raises(ParameterError, match="mixture of 2 HUs for traces of 3"):
        decode_hu_states(np.zeros((10, 3)), fit_bimodal(flat))
    with pytest.raises(ParameterError, match="0/1"):
        state_time_constants(np.full((5, 2), 2), 1.0)


def test_planted_assemblies_are_slower_than_neurons(fish):
    act = fish.truth.activity
    hu = hu_time_constants(act, fit_bimodal(act).transition, fish.recording.frame_rate)
    neurons = neuron_time_constants(fish.recording)
    assert (hu.n_cycles > 0).all()
    assert hu.median_s() > neurons.median_s()


# --------------------------------------------------------------------------------------------
# order, PCA, compositional phase


def test_ward_order_groups_correlated_traces(rng):
    t, sizes = 600, [4, 3, 5]
    latent = rng.normal(size=(t, len(sizes)))
    group = np.repeat(np.arange(len(sizes)), sizes)
    traces = latent[:, group] + 0.4 * rng.normal(size=(t, group.size))
    perm = rng.permutation(group.size)
    traces, group = traces[:, perm], group[perm]
    order, z = ward_order(traces)
    assert sorted(order) == list(range(group.size)) and z.shape == (group.size - 1, 4)
    labels = group[order]
    assert (np.diff(labels) != 0).sum() == len(sizes) - 1  # each group is one contiguous run
    d = correlation_distance(traces)
    np.testing.assert_allclose(d, squareform(pdist(traces.T, "correlation")), atol=1e-12)


@pytest.mark.filterwarnings("error")
def test_correlation_distance_of_a_constant_trace(rng):
    x = np.column_stack([rng.normal(size=50), np.full(50, 2.0), rng.normal(size=50)])
    d = correlation_distance(x)
    assert d[1, 0] == d[1, 2] == 1.0 and d[1, 1] == 0.0
    order, _ = ward_order(x)
    assert sorted(order) == [0, 1, 2]


def test_pca_of_k_latent_factors(rng):
    t, m, k = 500, 10, 3
    traces = rng.normal(size=(t, k)) @ rng.normal(size=(k, m)) + rng.normal(size=m)
    pca = trace_pca(traces)
    assert pca.cumulative[k - 1] == pytest.approx(1.0, abs=1e-12)
    assert pca.cumulative[k - 2] < 0.999
    eig = np.linalg.eigvalsh(np.cov(traces.T))[::-1]
    np.testing.assert_allclose(pca.explained_variance_ratio, eig / eig.sum(), atol=1e-12)
    assert pca.components.shape == (m, m)


@pytest.mark.filterwarnings("error")
def test_compositional_phase_counts_equally_active_units(rng):
    t, m, amp = 400, 20, 1.7
    base = rng.normal(0, 1, m)  # each HU's inactive peak
    k = rng.integers(0, m + 1, t)
    active = np.argsort(rng.random((t, m)), axis=1) < k[:, None]  # k_t random units per frame
    traces = base - np.abs(rng.normal(0, 0.5, (t, m)))  # inactive units at or below their peak
    traces[active] = (base + amp)[np.nonzero(active)[1]]
    phase = compositional_phase(traces, base)
    np.testing.assert_allclose(phase.m, k, rtol=1e-12, atol=0)
    assert (k == 0).any()  # frames with no active unit: m = 0, without a 0/0 warning
    assert phase.median_fraction == pytest.approx(np.median(k) / m)


def test_compositional_phase_of_planted_activity(fish):
    act = fish.truth.activity.astype(np.float64)
    m = compositional_phase(act, fit_bimodal(act).inactive_peak).m
    n_on = (act > 0).sum(axis=1)  # ≥ 1: one of an antiphasic pair is always on
    assert (n_on == 1).any() and (n_on == 2).any() and (n_on > 2).any()
    np.testing.assert_allclose(m[n_on == 1], 1.0, atol=1e-9)
    two = np.sort(act[n_on == 2], axis=1)[:, -2:]  # amplitudes a, b: (a² + b²)² / (a⁴ + b⁴)
    a, b = two[:, 0], two[:, 1]
    np.testing.assert_allclose(m[n_on == 2], (a**2 + b**2) ** 2 / (a**4 + b**4), rtol=1e-6)
    assert (m <= n_on + 1e-9).all()


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: fit_bimodal(x[:, 0]), "shape"),
        (lambda x: fit_bimodal(x[:1]), "at least 2"),
        (lambda x: fit_bimodal(np.where(x > 2, np.nan, x)), "NaN"),
        (lambda x: fit_bimodal(x, max_iter=0), "max_iter"),
        (lambda x: hu_time_constants(x, np.zeros(2), 4.0), r"\(2,\)"),
        (lambda x: hu_time_constants(x, np.full(3, np.nan), 4.0), "transition contains NaN"),
        (lambda x: hu_time_constants(x, np.zeros(3), 0.0), "frame rate"),
        (lambda x: neuron_time_constants((x > 0).astype(np.uint8)), "frame rate"),
        (lambda x: neuron_time_constants(np.full((4, 3), 2, np.uint8), 4.0), "spikes"),
        (lambda x: compositional_phase(x, np.zeros(4)), "inactive peak"),
        (lambda x: trace_pca(np.ones((5, 3))), "constant"),
        (lambda x: ward_order(np.zeros((5, 0))), "shape"),
    ],
)
def test_bad_input_is_named(rng, call, match):
    x = rng.normal(size=(30, 3))
    with pytest.raises(CrbmError, match=match):
        call(x)
