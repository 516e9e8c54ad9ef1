"""The CRBM by exact enumeration on tiny models (float64): free energy against numerical
integration over h, Gibbs chains against the exact P(v) (chi-square), the sign swap, the sparse
input path, reproducibility of the draws and finiteness for extreme parameters."""

from __future__ import annotations

import itertools
import math

import numba
import numpy as np
import pytest
from scipy import integrate, stats

from crbm_core.model import CRBM

# Each statistical test uses a fixed seed and p > 1e-3 (chi-square) or |z| < 5 (means); with
# fixed seeds the outcome is deterministic, so a failure points at a real error, not bad luck.
CHI2_ALPHA = 1e-3
Z_MAX = 5.0


# --------------------------------------------------------------------------------------------
# Helpers: state enumeration, the METHODS §1–2 potential written out independently, quad
# --------------------------------------------------------------------------------------------


def all_states(n: int) -> np.ndarray:
    """All 2^n binary vectors (uint8), row k is the binary expansion of k (MSB first)."""
    return np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.uint8)


def state_index(v: np.ndarray) -> np.ndarray:
    n = v.shape[1]
    return v.astype(np.int64) @ (1 << np.arange(n - 1, -1, -1, dtype=np.int64))


def spec_params(model: CRBM) -> np.ndarray:
    """(M, 4) rows (γ₊, γ₋, θ₊, θ₋) from METHODS §2 (clips included), independent of layers.py."""
    rows = []
    for gamma, theta, delta, eta in zip(
        model.gamma, model.theta, model.delta, model.eta, strict=True
    ):
        gamma, eta = max(float(gamma), 0.05), min(max(float(eta), -0.95), 0.95)
        rows.append(
            (
                max(gamma / (1 + eta), 0.05),
                max(gamma / (1 - eta), 0.05),
                float(theta) + float(delta) / math.sqrt(1 + eta),
                -float(theta) + float(delta) / math.sqrt(1 - eta),
            )
        )
    return np.array(rows)


def spec_energy(model: CRBM, v: np.ndarray, h: np.ndarray) -> np.ndarray:
    """E(v,h) = −Σ g_i v_i + Σ_μ U_μ(h_μ) − Σ w_iμ v_i h_μ, written from METHODS §1."""
    gp, gm, tp, tm = spec_params(model).T
    v, h = v.astype(np.float64), h.astype(np.float64)
    hp, hm = np.maximum(h, 0.0), np.maximum(-h, 0.0)
    u = 0.5 * gp * hp**2 + tp * hp + 0.5 * gm * hm**2 + tm * hm
    return -(v @ model.fields) + u.sum(axis=1) - ((v @ model.weights) * h).sum(axis=1)


def _branch_log_integral(gamma: float, c: float, f=None) -> float:
    """log ∫_0^∞ exp(−½γg² − c·g) dg by quad (or of exp(f(g)) if f is given, with the same
    integration window; f must equal −½γg² − c·g up to a constant for the window to be right).

    The integrand is shifted by its analytic maximum f* so that e^{±1000} stays in log space; the
    window is the mode ±40σ (interior mode) or where the exponent drops by ≥ 60 (mode at 0)."""
    mode = max(0.0, -c / gamma)
    f_star = -0.5 * gamma * mode * mode - c * mode
    if mode > 0:
        sigma = 1.0 / math.sqrt(gamma)
        lo, hi, points = max(0.0, mode - 40 * sigma), mode + 40 * sigma, [mode]
    else:
        lo, hi, points = 0.0, 120.0 / (c + math.sqrt(c * c + 120.0 * gamma)), None
    if f is None:

        def integrand(g):
            return math.exp(-0.5 * gamma * g * g - c * g - f_star)

    else:
        shift = f(mode)

        def integrand(g):
            return math.exp(f(g) - shift)

        f_star = shift
    val = integrate.quad(integrand, lo, hi, points=points, epsabs=0, epsrel=1e-13, limit=400)[0]
    return f_star + math.log(val)


def quad_log_partition(model: CRBM, v: np.ndarray) -> np.ndarray:
    """log ∫ exp(−E(v,h)) dh^M for every row of v, unit by unit (E is separable in h given v):
    Σ_i g_i v_i + Σ_μ log[∫_{h≥0} + ∫_{h≤0}] exp(−U_μ(h) + h I_μ) dh."""
    params = spec_params(model)
    inputs = v.astype(np.float64) @ model.weights
    out = v.astype(np.float64) @ model.fields
    for b in range(v.shape[0]):
        for mu, (gp, gm, tp, tm) in enumerate(params):
            i = inputs[b, mu]
            out[b] += np.logaddexp(
                _branch_log_integral(gp, tp - i),  # h ≥ 0: −½γ₊h² − θ₊h + hI
                _branch_log_integral(gm, tm + i),  # h = −g ≤ 0: −½γ₋g² − θ₋g − gI
            )
    return out


def make_model(
    seed: int,
    n: int,
    m: int,
    *,
    w_scale: float = 0.8,
    field_mean: float = -0.5,
    field_scale: float = 0.8,
    gamma=(0.7, 1.5),
    delta=(-0.5, 1.0),
    eta=(-0.5, 0.5),
    theta_scale: float = 0.5,
) -> CRBM:
    r = np.random.default_rng(seed)
    return CRBM(
        r.normal(0.0, w_scale, (n, m)),
        r.normal(field_mean, field_scale, n),
        r.uniform(*gamma, m),
        r.normal(0.0, theta_scale, m),
        r.uniform(*delta, m),
        r.uniform(*eta, m),
    )


def exact_log_p(model: CRBM, v: np.ndarray) -> np.ndarray:
    neg_f = -model.free_energy(v)
    return neg_f - np.logaddexp.reduce(neg_f)


# Models of test 1 (N = 10, M = 3 unless stated): every hidden-unit shape of METHODS §2.
FREE_ENERGY_MODELS = {
    "mixed": dict(seed=1),
    "double_well": dict(seed=2, delta=(-3.0, -1.5), eta=(-0.7, 0.7)),
    "sparse_threshold": dict(seed=3, delta=(1.0, 3.0), eta=(-0.8, 0.8), theta_scale=1.5),
    "strongly_asymmetric": dict(seed=4, delta=(-2.0, 2.0), eta=(0.85, 0.95)),
    "large_weights": dict(seed=5, w_scale=4.0, gamma=(0.3, 1.0), field_scale=4.0),
    "large_weights_double_well": dict(seed=6, w_scale=3.0, delta=(-6.0, -3.0), gamma=(0.2, 0.5)),
    "at_the_clips": dict(seed=7, gamma=(0.01, 0.06), eta=(-0.99, 0.99), w_scale=1.5),
}


# --------------------------------------------------------------------------------------------
# 1. Free energy = log of the integral of exp(−E) over h
# --------------------------------------------------------------------------------------------


def test_energy_matches_the_spec_and_is_separable_in_h():
    """CRBM.energy is the METHODS §1 energy (so the quad potentials below are the model's)."""
    rng = np.random.default_rng(10)
    for kw in FREE_ENERGY_MODELS.values():
        model = make_model(n=10, m=3, **kw)
        v = all_states(10)
        h = rng.normal(0.0, 3.0, (v.shape[0], 3))
        h[::7, 1] = 0.0
        e = model.energy(v, h)
        ref = spec_energy(model, v, h)
        np.testing.assert_allclose(e, ref, rtol=1e-12, atol=1e-10)
        # separable: E(v,h) − E(v,0) = Σ_μ [E(v, h_μ e_μ) − E(v,0)]
        e0 = model.energy(v, np.zeros_like(h))
        parts = sum(model.energy(v, h * (np.arange(3) == mu)) - e0 for mu in range(3))
        np.testing.assert_allclose(e - e0, parts, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("name", list(FREE_ENERGY_MODELS))
def test_free_energy_equals_log_integral_over_h(name):
    model = make_model(n=10, m=3, **FREE_ENERGY_MODELS[name])
    v = all_states(10)
    neg_f = -model.free_energy(v)
    ref = quad_log_partition(model, v)
    assert np.all(np.isfinite(neg_f))
    # absolute 1e-8 on log-weights up to |−F| ~ 10³ (large-weight models)
    np.testing.assert_allclose(neg_f, ref, rtol=0, atol=1e-8)


def test_free_energy_against_quad_of_crbm_energy_itself():
    """Same check with the integrand evaluated by CRBM.energy (no re-derived potential)."""
    model = make_model(11, 4, 3, delta=(-2.5, 1.5), eta=(-0.8, 0.8), w_scale=1.5)
    params = spec_params(model)  # used only to place the integration windows
    v = all_states(4)
    neg_f = -model.free_energy(v)
    for b in range(v.shape[0]):
        vb = v[b : b + 1]
        e0 = float(model.energy(vb, np.zeros((1, 3)))[0])
        inputs = vb.astype(np.float64) @ model.weights
        log_z = -e0
        for mu, (gp, gm, tp, tm) in enumerate(params):
            i = float(inputs[0, mu])

            def f(g, mu=mu, sign=1.0, vb=vb, e0=e0):
                h = np.zeros((1, 3))
                h[0, mu] = sign * g
                return e0 - float(model.energy(vb, h)[0])

            log_z += np.logaddexp(
                _branch_log_integral(gp, tp - i, f=f),
                _branch_log_integral(gm, tm + i, f=lambda g, f=f: f(g, sign=-1.0)),
            )
        assert abs(neg_f[b] - log_z) < 1e-8, (b, neg_f[b], log_z)


def test_free_energy_of_binary_inputs_in_any_dtype():
    model = make_model(12, 10, 3)
    v = all_states(10)
    ref = model.free_energy(v)
    for dtype in (bool, np.int64, np.float64, np.float32):
        np.testing.assert_array_equal(model.free_energy(v.astype(dtype)), ref)
    np.testing.assert_array_equal(model.free_energy(v[5]), ref[5:6])


# --------------------------------------------------------------------------------------------
# 2. Gibbs chains against the exact P(v)
# --------------------------------------------------------------------------------------------

N_GIBBS, M_GIBBS = 8, 3
N_CHAINS, BURN_IN, N_SNAPSHOTS, THIN = 10_000, 150, 5, 30

GIBBS_MODELS = {
    "unimodal": dict(seed=2),
    # δ ∈ [−2.5, −1.5]: double wells; two units are bimodal under P(v) (checked below)
    "bimodal": dict(seed=3, delta=(-2.5, -1.5)),
    # the training precision: h → v draws use the float32 polynomial exp of the fused sweep
    "bimodal_float32": dict(seed=3, delta=(-2.5, -1.5)),
}


def pooled_chi_square(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Chi-square goodness of fit, pooling every state with expected count < 5 into one bin
    (merged with the smallest remaining bin if the pool itself stays below 5)."""
    n = counts.sum()
    expected = probs * n
    small = expected < 5
    obs = list(counts[~small])
    exp = list(expected[~small])
    if small.any():
        pool_o, pool_e = counts[small].sum(), expected[small].sum()
        if pool_e < 5:
            k = int(np.argmin(exp))
            obs[k] += pool_o
            exp[k] += pool_e
        else:
            obs.append(pool_o)
            exp.append(pool_e)
    obs, exp = np.array(obs, dtype=np.float64), np.array(exp)
    return float(stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue), len(obs)


def run_chains(model: CRBM, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(snapshots of v, S×C×N; a draw of h at each snapshot, S×C×M).

    Chains start from exact draws of P(v): a correct kernel leaves them exact at every sweep,
    while a wrong kernel drifts to its own stationary law during the burn-in (which mixes in
    ~30 sweeps at stationarity here). Starting from uniform v instead, the double-well model
    escapes its metastable states with a time constant of ~50 sweeps, and a burn-in bias of
    that kind would make the chi-square test fail for a correct sampler."""
    rng = np.random.default_rng(seed)
    states = all_states(model.n_visible)
    probs = np.exp(exact_log_p(model, states))
    v = states[rng.choice(len(states), N_CHAINS, p=probs / probs.sum())]
    v = model.gibbs(v, BURN_IN, rng)
    vs, hs = [], []
    for _ in range(N_SNAPSHOTS):
        v = model.gibbs(v, THIN, rng)
        vs.append(v)
        hs.append(model.sample_hidden(v, rng))
    return np.array(vs), np.array(hs)


@pytest.fixture(scope="module", params=list(GIBBS_MODELS))
def gibbs_run(request):
    model = make_model(n=N_GIBBS, m=M_GIBBS, **GIBBS_MODELS[request.param])
    if request.param.endswith("float32"):  # P(v) is then exactly that of the rounded model
        model = CRBM(*(a.astype(np.float32) for a in model.to_dict().values()))
    vs, hs = run_chains(model, seed=100 + len(request.param))
    return request.param, model, vs, hs


def test_bimodal_gibbs_model_really_has_bimodal_units():
    from crbm_core.layers import drelu_p_plus

    model = make_model(n=N_GIBBS, m=M_GIBBS, **GIBBS_MODELS["bimodal"])
    v = all_states(N_GIBBS)
    p = np.exp(exact_log_p(model, v))
    p_plus = drelu_p_plus(model.hidden_input(v), *model.hidden_params())
    mean_p_plus = p @ p_plus
    # a unit is bimodal under P(v) if both branches carry ≥ 10 % of the mass
    assert np.sum((mean_p_plus > 0.1) & (mean_p_plus < 0.9)) >= 1, mean_p_plus
    assert np.all(model.delta < 0)


def test_gibbs_distribution_matches_exact_p(gibbs_run):
    name, model, vs, _ = gibbs_run
    states = all_states(N_GIBBS)
    probs = np.exp(exact_log_p(model, states))
    counts = np.bincount(state_index(vs.reshape(-1, N_GIBBS)), minlength=len(states))
    pvalue, n_bins = pooled_chi_square(counts, probs)
    assert n_bins >= 20, n_bins
    assert pvalue > CHI2_ALPHA, (name, pvalue, n_bins)
    # single-unit marginals as well (a second, coarser view of the same samples)
    freq = vs.reshape(-1, N_GIBBS).mean(axis=0)
    exact = probs @ states
    se = np.sqrt(exact * (1 - exact) / N_CHAINS / N_SNAPSHOTS) * 2  # ×2: snapshot correlation
    assert np.all(np.abs(freq - exact) < Z_MAX * se), (freq, exact)


def test_gibbs_hidden_means_match_exact(gibbs_run):
    name, model, vs, hs = gibbs_run
    states = all_states(N_GIBBS)
    probs = np.exp(exact_log_p(model, states))
    exact = probs @ model.mean_hidden(states)
    # per-chain averages over the snapshots are independent across chains: exact standard error
    rao_blackwell = np.mean([model.mean_hidden(v) for v in vs], axis=0)  # C×M
    for per_chain in (rao_blackwell, hs.mean(axis=0)):
        est = per_chain.mean(axis=0)
        se = per_chain.std(axis=0, ddof=1) / math.sqrt(per_chain.shape[0])
        assert np.all(np.abs(est - exact) < Z_MAX * se), (name, est, exact, se)


# --------------------------------------------------------------------------------------------
# 3. Sign swap
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mixed", "double_well", "strongly_asymmetric", "at_the_clips"])
def test_sign_swap_keeps_p_and_flips_negative_units(name):
    kw = dict(FREE_ENERGY_MODELS[name])
    model = make_model(n=10, m=6, **kw)
    model.weights[:, :3] -= 0.3  # make sure some columns sum < 0 and some > 0
    model.weights[:, 3:] += 0.3
    before = model.copy()
    col = model.weights.sum(axis=0)
    flip = col < 0
    assert flip.any() and (~flip).any()

    swapped = model.sign_swapped()
    for k in ("weights", "fields", "gamma", "theta", "delta", "eta"):  # original untouched
        np.testing.assert_array_equal(getattr(model, k), getattr(before, k))
    np.testing.assert_array_equal(swapped.weights[:, flip], -model.weights[:, flip])
    np.testing.assert_array_equal(swapped.weights[:, ~flip], model.weights[:, ~flip])
    assert np.all(swapped.weights.sum(axis=0) >= 0)
    np.testing.assert_array_equal(swapped.fields, model.fields)
    np.testing.assert_array_equal(swapped.gamma, model.gamma)
    np.testing.assert_array_equal(swapped.delta, model.delta)
    # the flipped units' potentials are mirrored: (γ₊, θ₊) ↔ (γ₋, θ₋)
    p, q = spec_params(model), spec_params(swapped)
    np.testing.assert_allclose(q[flip], p[flip][:, [1, 0, 3, 2]], rtol=1e-14, atol=1e-14)
    np.testing.assert_array_equal(q[~flip], p[~flip])

    v = all_states(10)
    f0, f1 = model.free_energy(v), swapped.free_energy(v)
    assert np.max(np.abs(f0 - f1)) <= 1e-12
    sign = np.where(flip, -1.0, 1.0)
    np.testing.assert_allclose(
        swapped.mean_hidden(v), sign * model.mean_hidden(v), rtol=1e-12, atol=1e-12
    )

    rng = np.random.default_rng(3)
    h = rng.normal(0.0, 2.0, (v.shape[0], 6))
    np.testing.assert_allclose(
        model.energy(v, h), swapped.energy(v, h * sign), rtol=1e-13, atol=1e-12
    )
    # swapping twice is a no-op (all sums are ≥ 0 now)
    again = swapped.sign_swapped()
    np.testing.assert_array_equal(again.weights, swapped.weights)
    np.testing.assert_array_equal(again.theta, swapped.theta)
    np.testing.assert_array_equal(again.eta, swapped.eta)


# --------------------------------------------------------------------------------------------
# 4. Transforms and reproducibility
# --------------------------------------------------------------------------------------------


def test_hidden_input_sparse_path_equals_dense_product():
    model = make_model(20, 10, 3, w_scale=2.0)
    rng = np.random.default_rng(21)
    v = np.concatenate([all_states(10), rng.integers(0, 2, (500, 10), dtype=np.uint8)])
    dense = v.astype(np.float64) @ model.weights
    for dtype in (np.uint8, bool, np.int64, np.float64, np.float32):
        np.testing.assert_allclose(
            model.hidden_input(v.astype(dtype)), dense, rtol=1e-13, atol=1e-13
        )
    np.testing.assert_allclose(model.hidden_input(v[3]), dense[3:4], rtol=1e-13, atol=1e-13)
    # Fortran-ordered / non-contiguous arguments take the same path
    np.testing.assert_allclose(model.hidden_input(np.asfortranarray(v)), dense, atol=1e-13)
    np.testing.assert_allclose(model.hidden_input(v[::2]), dense[::2], atol=1e-13)


def test_hidden_input_non_binary_falls_back_to_dense():
    model = make_model(22, 10, 3)
    rng = np.random.default_rng(23)
    x = rng.uniform(0.0, 1.0, (50, 10))
    np.testing.assert_array_equal(model.hidden_input(x), x @ model.weights)
    x2 = all_states(10).astype(np.float64)
    x2[::3, 0] = 0.5  # one non-binary entry anywhere in the batch
    np.testing.assert_allclose(model.hidden_input(x2), x2 @ model.weights, rtol=1e-13)
    xi = rng.integers(0, 3, (50, 10))  # integer counts > 1
    np.testing.assert_allclose(model.hidden_input(xi), xi @ model.weights, rtol=1e-13)


def test_visible_input_and_dtypes():
    model = make_model(24, 10, 3)
    h = np.random.default_rng(25).normal(size=(40, 3))
    np.testing.assert_array_equal(model.visible_input(h), h @ model.weights.T)
    m32 = CRBM(*(a.astype(np.float32) for a in model.to_dict().values()))
    v = all_states(10)
    assert m32.hidden_input(v).dtype == np.float32
    assert m32.visible_input(h).dtype == np.float32
    np.testing.assert_allclose(m32.hidden_input(v), model.hidden_input(v), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m32.free_energy(v), model.free_energy(v), rtol=1e-5, atol=1e-4)
    out = m32.gibbs(v, 3, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == v.shape


def _draws(model: CRBM, seed: int):
    rng = np.random.default_rng(seed)
    v0 = all_states(10)
    h = model.sample_hidden(v0, rng)
    return h, model.sample_visible(h, rng), model.gibbs(v0, 5, rng)


def test_sampling_is_bit_reproducible():
    model = make_model(26, 10, 3, delta=(-2.0, 1.0))
    a, b, c = _draws(model, 7), _draws(model, 7), _draws(model, 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    h = a[0]
    v1 = model.sample_visible(h, np.random.default_rng(3))
    v2 = model.sample_visible(h, np.random.default_rng(3))
    assert v1.dtype == np.uint8 and np.array_equal(v1, v2)
    # one gibbs call of k sweeps = k calls of one sweep on the same Generator
    r1, r2 = np.random.default_rng(4), np.random.default_rng(4)
    v = all_states(10)
    w = v
    for _ in range(4):
        w = model.gibbs(w, 1, r2)
    assert np.array_equal(model.gibbs(v, 4, r1), w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [7, 131, 300])
def test_visible_draws_follow_sigmoid_at_every_neuron(n, dtype):
    """P(v_i = 1 | h) = σ(g_i + I_i(h)) for each neuron (z-test on 40,000 draws), for N odd or
    not a multiple of the sweep's 128-neuron blocks (the odd neuron of the last block draws
    alone), and the hidden input returned with v equals I(v) computed afresh."""
    rng = np.random.default_rng(50 + n)
    model = make_model(51, n, 4, w_scale=1.0, field_mean=0.0, field_scale=2.0)
    model = CRBM(*(a.astype(dtype) for a in model.to_dict().values()))
    h = np.repeat(rng.normal(0.0, 1.0, (1, 4)), 40_000, axis=0).astype(dtype)
    v, inp = model._visible_sweep(h, rng)
    p = model.mean_visible(h[:1])[0].astype(np.float64)
    se = np.sqrt(p * (1 - p) / h.shape[0])
    assert np.all(np.abs(v.mean(axis=0) - p) < Z_MAX * se + 1e-12)
    assert 0.1 < p.mean() < 0.9
    np.testing.assert_array_equal(inp, model.hidden_input(v))


def test_lane_generator_is_xoshiro():
    """The chains' vectorized generator in the sweep is exactly special.rng_next per stream."""
    from crbm_core.model import _MASK24, _U24, _draw_pair
    from crbm_core.special import rng_init, rng_next

    s = np.stack([rng_init(np.uint64(9), c) for c in range(5)], axis=1)
    ref = [rng_init(np.uint64(9), c) for c in range(5)]
    # u < σ(x) ⟺ u(1 + e^−x) < 1: e^−x just below 1/u − 1 fires, just above does not
    f = np.zeros((2, 5), np.uint8)
    for _ in range(3):
        r = np.array([rng_next(st) for st in ref], dtype=np.uint64)
        u0 = ((r >> np.uint64(40)).astype(np.float32) + np.float32(0.5)) * _U24
        u1 = (((r >> np.uint64(8)) & _MASK24).astype(np.float32) + np.float32(0.5)) * _U24
        lo0, lo1 = (1 / u0.astype(np.float64) - 1) * 0.999, (1 / u1.astype(np.float64) - 1) * 0.999
        keep = s.copy()
        _draw_pair(s, np.stack([lo0, lo1]), f)
        assert f.all()
        s[:] = keep
        _draw_pair(s, np.stack([lo0, lo1]) / 0.998, f)
        assert not f.any()
    np.testing.assert_array_equal(s, np.stack(ref, axis=1))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs ≥ 2 numba threads")
def test_sampling_does_not_depend_on_thread_count():
    model = make_model(27, 10, 3, delta=(-2.0, 1.0))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _draws(model, 9)
        numba.set_num_threads(2)
        two = _draws(model, 9)
    finally:
        numba.set_num_threads(before)
    assert all(np.array_equal(x, y) for x, y in zip(one, two, strict=True))


# --------------------------------------------------------------------------------------------
# 5. Extreme parameters
# --------------------------------------------------------------------------------------------


def extreme_model(seed: int) -> CRBM:
    r = np.random.default_rng(seed)
    n, m = 10, 3
    w = r.choice([-20.0, 20.0], (n, m)) * r.uniform(0.5, 1.0, (n, m))
    w[0] = [20.0, -20.0, 20.0]
    fields = r.choice([-30.0, 30.0], n)
    return CRBM(
        w,
        fields,
        np.array([0.05, 0.0500001, 0.04]),  # at, just above and below the floor
        np.array([30.0, -30.0, 0.0]),
        np.array([-20.0, 20.0, -5.0]),
        np.array([0.95, -0.95, 0.99]),
    )


@pytest.mark.parametrize("seed", [30, 31])
def test_extreme_parameters_stay_finite_and_exact(seed):
    model = extreme_model(seed)
    v = all_states(10)
    f = model.free_energy(v)
    assert np.all(np.isfinite(f))
    assert np.isfinite(np.logaddexp.reduce(-f))
    # still the exact integral (|F| up to ~10⁶ here, so relative 1e-12)
    ref = quad_log_partition(model, v)
    np.testing.assert_allclose(-f, ref, rtol=1e-12, atol=1e-8)

    mean, var = model.mean_hidden(v), model.var_hidden(v)
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var > 0)

    rng = np.random.default_rng(seed)
    h = model.sample_hidden(np.repeat(v, 4, axis=0), rng)
    assert np.all(np.isfinite(h))
    vv = model.sample_visible(h, rng)
    assert vv.dtype == np.uint8 and set(np.unique(vv)) <= {0, 1}
    # where g_i + I_i(h) is beyond ±40 the draw is certain
    x = model.visible_input(h) + model.fields
    assert np.all(vv[x > 40] == 1) and np.all(vv[x < -40] == 0)
    chains = model.gibbs(v, 20, rng)
    assert set(np.unique(chains)) <= {0, 1}
    assert np.all(np.isfinite(model.free_energy(chains)))
    assert np.all(np.isfinite(model.sample_hidden(chains, rng)))
    # huge hidden values still give valid visible draws
    big = np.array([[1e6, -1e6, 1e6], [np.finfo(np.float64).max / 1e3, 0.0, 0.0]])
    assert set(np.unique(model.sample_visible(big, rng))) <= {0, 1}
