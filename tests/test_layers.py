"""dReLU and Bernoulli layers: every moment against direct numerical integration, exact sampling
(KS tests, deep tails included) and reproducibility of the random draws."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from scipy import integrate, stats
from scipy import special as sc

from crbm_core import layers
from crbm_core.special import rng_init

REPO_ROOT = Path(__file__).resolve().parents[1]

# Each KS (and binomial) test uses a fixed seed and p > 0.001. Under a correct sampler the chance
# that any of the 29 such tests in this file fails is ≤ 29 × 0.001 = 2.9 % (Bonferroni,
# family-wise); with fixed seeds the outcome is deterministic, so a failure points at a real
# distributional error, not bad luck. (Every KS case also passes at n = 2,000,000.)
KS_ALPHA = 1e-3
KS_N = 20_000

RTOL = 1e-6
# Absolute floor for quantities that are legitimately ~0: a branch whose log-mass is ~700 below
# the other has p ~ e^{-700} ~ 1e-304, at the edge of the subnormal range (2.2e-308) where
# float64 keeps no relative precision, for us or for the reference. 1e-300 is ~1e-294 relative
# to the largest statistic compared, so it cannot hide a real error.
TINY = 1e-300


# --------------------------------------------------------------------------------------------
# Parameter grid and the quad reference
# --------------------------------------------------------------------------------------------

X_VALUES = [-30.0, -10.0, -3.0, -0.5, 0.0, 0.5, 3.0, 10.0, 30.0]
GAMMA_PAIRS = [(0.05, 50.0), (50.0, 0.05), (1.0, 1.0), (0.05, 0.05), (50.0, 50.0)]


def parameter_grid() -> np.ndarray:
    """Rows (I, γ₊, γ₋, θ₊, θ₋): a full x₊ × x₋ × extreme-γ grid plus random sets.

    Sets are specified through the standardized truncation points x± (|x±| ≤ 30) and mapped
    back with θ₊ = I + x₊√γ₊, θ₋ = x₋√γ₋ − I."""
    rows = []
    inputs = [-5.0, 0.0, 3.0]
    for xp in X_VALUES:
        for xm in X_VALUES:
            for gp, gm in GAMMA_PAIRS:
                i = inputs[len(rows) % 3]
                rows.append((i, gp, gm, xp, xm))
    rng = np.random.default_rng(20230101)
    for _ in range(200):
        gp, gm = np.exp(rng.uniform(np.log(0.05), np.log(50.0), 2))
        xp, xm = rng.uniform(-30.0, 30.0, 2)
        rows.append((rng.normal(0.0, 5.0), gp, gm, xp, xm))
    p = np.array(rows)
    i, gp, gm, xp, xm = p.T
    return np.stack([i, gp, gm, i + xp * np.sqrt(gp), xm * np.sqrt(gm) - i], axis=1)


def _branch(gamma: float, c: float):
    """One branch in |h| = g ≥ 0 with exponent f(g) = −½γg² − c·g.

    Returns (f*, integral) where integral(w) = ∫ w(g) e^{f(g) − f*} dg, f* the branch maximum, so
    that huge normalizers (e^{±450} at |x| = 30) stay in log space. The interval covers the mode
    ±40σ (interior mode) or the region where f drops by 60 from f(0) (boundary mode)."""
    mode = max(0.0, -c / gamma)
    f_star = -0.5 * gamma * mode * mode - c * mode
    sigma = 1.0 / math.sqrt(gamma)
    if mode > 0:
        lo, hi, points = max(0.0, mode - 40 * sigma), mode + 40 * sigma, [mode]
    else:
        lo, hi, points = 0.0, 120.0 / (c + math.sqrt(c * c + 120.0 * gamma)), None

    def integral(w):
        def f(g):
            return w(g) * math.exp(-0.5 * gamma * g * g - c * g - f_star)

        return integrate.quad(f, lo, hi, points=points, epsabs=0, epsrel=1e-12, limit=400)[0]

    return f_star, integral


def quad_reference(i: float, gp: float, gm: float, tp: float, tm: float) -> dict[str, float]:
    """All layer statistics by direct integration of exp(−U(h) + hI), branch by branch."""
    fp, qp = _branch(gp, tp - i)  # h ≥ 0: −½γ₊h² − θ₊h + hI
    fm, qm = _branch(gm, tm + i)  # h = −g ≤ 0: −½γ₋g² − θ₋g − gI
    z_p, z_m = qp(lambda g: 1.0), qm(lambda g: 1.0)
    log_zp, log_zm = fp + math.log(z_p), fm + math.log(z_m)
    cgf = float(np.logaddexp(log_zp, log_zm))
    pp, pm = math.exp(log_zp - cgf), math.exp(log_zm - cgf)
    ehp = pp * qp(lambda g: g) / z_p
    ehm = pm * qm(lambda g: g) / z_m
    mean = ehp - ehm
    var = pp * qp(lambda g: (g - mean) ** 2) / z_p + pm * qm(lambda g: (g + mean) ** 2) / z_m
    return {
        "cgf": cgf,
        "p_plus": pp,
        "p_minus": pm,
        "mean": mean,
        "var": var,
        "e_hp": ehp,
        "e_hm": ehm,
        "e_hp2": pp * qp(lambda g: g * g) / z_p,
        "e_hm2": pm * qm(lambda g: g * g) / z_m,
    }


def layer_stats(params: np.ndarray, dtype=np.float64) -> dict[str, np.ndarray]:
    """Our statistics for every parameter set (each set is one hidden unit of a 1-row batch)."""
    i, gp, gm, tp, tm = (params[:, k].astype(dtype) for k in range(5))
    row = i[None, :]
    mean, var = layers.drelu_moments(row, gp, gm, tp, tm)
    suff = layers.drelu_sufficient_stats(row, gp, gm, tp, tm)
    return {
        "cgf": layers.drelu_cgf(row, gp, gm, tp, tm)[0],
        "p_plus": layers.drelu_p_plus(row, gp, gm, tp, tm)[0],
        # mirror symmetry h → −h: p₋(I; γ₊, γ₋, θ₊, θ₋) = p₊(−I; γ₋, γ₊, θ₋, θ₊)
        "p_minus": layers.drelu_p_plus(-row, gm, gp, tm, tp)[0],
        "mean": mean[0],
        "var": var[0],
        "e_hp": suff[0][0],
        "e_hm": suff[1][0],
        "e_hp2": suff[2][0],
        "e_hm2": suff[3][0],
    }


@pytest.fixture(scope="module")
def grid() -> np.ndarray:
    return parameter_grid()


@pytest.fixture(scope="module")
def reference(grid) -> dict[str, np.ndarray]:
    rows = [quad_reference(*p) for p in grid]
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def errors(name: str, ours: np.ndarray, ref: dict[str, np.ndarray]) -> np.ndarray:
    """Error of one statistic in units of its tolerance scale (pass: ≤ RTOL)."""
    target = ref[name]
    if name == "cgf":
        # Γ = log Z: an absolute error of Γ is the relative error of Z (and |Γ| > 1: relative).
        return np.abs(ours - target) / np.maximum(1.0, np.abs(target))
    if name == "mean":
        # E[h] = E[h₊] − E[h₋] cancels when the branches balance; any method (quad included)
        # is only accurate relative to the scale of the terms, E|h| = E[h₊] + E[h₋].
        return np.abs(ours - target) / (ref["e_hp"] + ref["e_hm"])
    # positive quantities: plain relative error, with the TINY floor (see above)
    return np.abs(ours - target) / np.maximum(np.abs(target), TINY)


# --------------------------------------------------------------------------------------------
# Moments against quad
# --------------------------------------------------------------------------------------------


def test_grid_is_large_and_reaches_the_tails(grid):
    i, gp, gm, tp, tm = grid.T
    xp, xm = (tp - i) / np.sqrt(gp), (tm + i) / np.sqrt(gm)
    assert len(grid) >= 500
    assert np.isclose(np.abs(xp).max(), 30.0) and np.isclose(np.abs(xm).max(), 30.0)
    assert gp.min() == gm.min() == 0.05 and gp.max() == gm.max() == 50.0


@pytest.mark.parametrize(
    "name", ["cgf", "p_plus", "p_minus", "mean", "var", "e_hp", "e_hm", "e_hp2", "e_hm2"]
)
def test_statistic_matches_quad(name, grid, reference):
    ours = layer_stats(grid)[name]
    assert np.all(np.isfinite(ours)), f"{name}: non-finite values"
    err = errors(name, ours, reference)
    worst = int(np.argmax(err))
    assert err[worst] <= RTOL, (
        f"{name}: error {err[worst]:.3g} at (I, γ₊, γ₋, θ₊, θ₋) = {grid[worst]}: "
        f"ours {ours[worst]!r}, quad {reference[name][worst]!r}"
    )


def test_float32_path_finite_and_matches_float64(grid):
    # float32 inputs are computed in float64 and rounded once, so they must equal the float64
    # results for the same (float32-rounded) inputs to float32 precision. Below float32's
    # smallest normal number (1.2e-38) relative precision is lost, hence the absolute floor.
    rounded = grid.astype(np.float32)
    ours32 = layer_stats(rounded, np.float32)
    ours64 = layer_stats(rounded.astype(np.float64), np.float64)
    for name, values in ours32.items():
        assert values.dtype == np.float32
        assert np.all(np.isfinite(values)), f"{name}: non-finite float32 values"
        np.testing.assert_allclose(values, ours64[name], rtol=2**-23, atol=1.2e-38, err_msg=name)


def test_derivatives_of_cgf():
    # E[h|I] = Γ'(I) and Var[h|I] = E[h|I]' (METHODS §1), by central differences.
    rng = np.random.default_rng(3)
    m = 200
    gp, gm = np.exp(rng.uniform(np.log(0.05), np.log(50.0), (2, m)))
    tp, tm = rng.normal(0.0, 3.0, (2, m))
    i = rng.normal(0.0, 3.0, (1, m))
    eps = 1e-5
    args = (gp, gm, tp, tm)
    mean, var = layers.drelu_moments(i, *args)
    d_cgf = (layers.drelu_cgf(i + eps, *args) - layers.drelu_cgf(i - eps, *args)) / (2 * eps)
    d_mean = (layers.drelu_mean(i + eps, *args) - layers.drelu_mean(i - eps, *args)) / (2 * eps)
    np.testing.assert_allclose(d_cgf, mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d_mean, var, rtol=1e-5, atol=1e-6)


def test_moment_functions_agree_with_each_other():
    rng = np.random.default_rng(4)
    b, m = 7, 31
    gp, gm, tp, tm = layers.drelu_params(
        rng.uniform(0.5, 2, m), rng.normal(size=m), rng.normal(size=m), rng.uniform(-1, 1, m)
    )
    i = rng.normal(0.0, 3.0, (b, m))
    mean, var = layers.drelu_moments(i, gp, gm, tp, tm)
    np.testing.assert_array_equal(layers.drelu_mean(i, gp, gm, tp, tm), mean)
    np.testing.assert_array_equal(layers.drelu_var(i, gp, gm, tp, tm), var)
    ehp, ehm, ehp2, ehm2 = layers.drelu_sufficient_stats(i, gp, gm, tp, tm)
    np.testing.assert_allclose(ehp - ehm, mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ehp2 + ehm2 - mean**2, var, rtol=1e-9, atol=1e-12)
    batch_means = layers.drelu_sufficient_stats_mean(i, gp, gm, tp, tm)
    for full, averaged in zip((ehp, ehm, ehp2, ehm2), batch_means, strict=True):
        np.testing.assert_allclose(full.mean(axis=0), averaged, rtol=1e-12)
    # a single row (M,) gives the same as a 1-row batch
    np.testing.assert_array_equal(
        layers.drelu_cgf(i[2], gp, gm, tp, tm), layers.drelu_cgf(i[2:3], gp, gm, tp, tm)[0]
    )
    # the numba scalar API agrees with the batch API
    cgf, pp, mu, v = layers.drelu_stats_scalar(i[1, 5], gp[5], gm[5], tp[5], tm[5])
    assert cgf == pytest.approx(layers.drelu_cgf(i, gp, gm, tp, tm)[1, 5], rel=1e-14)
    assert (mu, v) == pytest.approx((mean[1, 5], var[1, 5]), rel=1e-13)


def test_extreme_inputs_stay_finite():
    m = 4
    gp, gm = np.array([0.05, 50.0, 1.0, 0.05]), np.array([50.0, 0.05, 1.0, 0.05])
    tp, tm = np.array([0.0, 5.0, -3.0, 100.0]), np.array([0.0, -5.0, -3.0, 100.0])
    i = np.array([[-1e6] * m, [-1e3] * m, [0.0] * m, [1e3] * m, [1e6] * m])
    for f in (layers.drelu_cgf, layers.drelu_mean, layers.drelu_var, layers.drelu_p_plus):
        assert np.all(np.isfinite(f(i, gp, gm, tp, tm))), f.__name__
    assert np.all(layers.drelu_var(i, gp, gm, tp, tm) > 0)
    h = layers.drelu_sample(i, gp, gm, tp, tm, np.random.default_rng(0))
    assert np.all(np.isfinite(h))


def test_nan_inputs_propagate_and_do_not_hang():
    # A diverged model must show NaN (the trainer checks for it), never hang a rejection loop.
    ones = np.ones(3)
    inp = np.array([[np.nan, 0.0, 1.0]])
    for f in (layers.drelu_cgf, layers.drelu_mean, layers.drelu_var, layers.drelu_p_plus):
        out = f(inp, ones, ones, ones, ones)
        assert np.isnan(out[0, 0]) and np.all(np.isfinite(out[0, 1:])), f.__name__
    h = layers.drelu_sample(inp, ones, ones, ones, ones, np.random.default_rng(0))
    assert np.isnan(h[0, 0]) and np.all(np.isfinite(h[0, 1:]))


# --------------------------------------------------------------------------------------------
# Parameterization
# --------------------------------------------------------------------------------------------


def test_drelu_params_formulas_and_clips():
    gamma = np.array([1.0, 2.0, 0.01, 1.0, 1.0])
    theta = np.array([0.0, 0.5, 0.0, -1.0, 0.0])
    delta = np.array([0.0, -1.0, 0.0, 2.0, 0.0])
    eta = np.array([0.0, 0.5, 0.0, 3.0, -3.0])
    gp, gm, tp, tm = layers.drelu_params(gamma, theta, delta, eta)
    assert (gp[0], gm[0], tp[0], tm[0]) == (1.0, 1.0, 0.0, 0.0)  # initial values: symmetric
    assert gp[1] == pytest.approx(2.0 / 1.5) and gm[1] == pytest.approx(2.0 / 0.5)
    assert tp[1] == pytest.approx(0.5 - 1.0 / math.sqrt(1.5))
    assert tm[1] == pytest.approx(-0.5 - 1.0 / math.sqrt(0.5))
    assert gp[2] == gm[2] == 0.05  # γ floored at 0.05
    # η clipped to ±0.95, then γ± floored at 0.05
    assert gp[3] == pytest.approx(1.0 / 1.95) and gm[3] == pytest.approx(1.0 / 0.05)
    assert tp[3] == pytest.approx(-1.0 + 2.0 / math.sqrt(1.95))
    assert gp[4] == pytest.approx(1.0 / 0.05) and gm[4] == pytest.approx(1.0 / 1.95)
    assert all(a.dtype == np.float64 for a in (gp, gm, tp, tm))
    f32 = layers.drelu_params(*(a.astype(np.float32) for a in (gamma, theta, delta, eta)))
    assert all(a.dtype == np.float32 for a in f32)


def test_invalid_arguments_raise_clear_errors():
    ones = np.ones(3)
    with pytest.raises(ValueError, match="units"):
        layers.drelu_cgf(np.zeros((2, 4)), ones, ones, ones, ones)
    with pytest.raises(ValueError, match="> 0"):
        layers.drelu_mean(np.zeros((2, 3)), ones, -ones, ones, ones)
    with pytest.raises(ValueError, match="equal length"):
        layers.drelu_mean(np.zeros((2, 3)), ones, np.ones(2), ones, ones)
    with pytest.raises(TypeError, match="Generator"):
        layers.drelu_sample(np.zeros((2, 3)), ones, ones, ones, ones, 42)
    with pytest.raises(ValueError, match="shape"):
        layers.bernoulli_mean(np.zeros((2, 3, 4)), np.zeros(4))


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------

# (x₊, x₋, γ₊, γ₋): standardized truncation points of the two branches. x = 10…1000 puts the
# branch's truncation point that many σ into the Gaussian tail (naive inverse-CDF samplers
# return 0 or inf there); x ≪ 0 makes the branch a nearly untruncated Gaussian.
KS_CASES = [
    (0.0, 0.0, 1.0, 1.0),  # initial symmetric unit
    (-2.0, 2.0, 1.0, 1.0),  # ReLU-like, active
    (-3.0, -3.0, 1.0, 1.0),  # double well
    (-2.0, -4.0, 0.5, 4.0),  # asymmetric double well
    (2.0, 5.0, 1.0, 1.0),  # thresholded, sparse
    (10.0, 30.0, 1.0, 1.0),  # both branches deep in the tail
    (30.0, 30.0, 1.0, 1.0),  # p₊ = ½ between two 30σ tails
    (20.0, 20.0, 50.0, 0.05),
    (15.0, 25.0, 0.05, 50.0),
    (25.0, -0.2, 0.05, 50.0),  # a 25σ tail mixed with a broad branch, p₊ ≈ 0.46
    (-30.0, 30.0, 1.0, 1.0),  # nearly untruncated Gaussian on h ≥ 0
    (-10.0, 10.0, 0.05, 50.0),
    (0.5, -0.5, 1.0, 1.0),
    (-0.45, -0.44, 1.0, 1.0),  # at the switch between the two rejection samplers
    (-0.46, 12.0, 2.0, 1.0),
    (5.0, 5.0, 1.0, 1.0),
    (12.0, -1.0, 1.0, 1.0),
    (-1.0, 12.0, 1.0, 1.0),
    (100.0, 100.0, 1.0, 1.0),
    (1000.0, 1000.0, 3.0, 0.3),
    (1.0, 1.0, 50.0, 50.0),
    (3.0, -3.0, 0.05, 0.05),
]


def log_mills_ref(x: float) -> float:
    """log Φ(x) from scipy, each formula used where it is accurate."""
    if x >= 0:
        return math.log(math.sqrt(math.pi / 2) * sc.erfcx(x / math.sqrt(2)))
    return sc.log_ndtr(-x) + 0.5 * x * x + 0.5 * math.log(2 * math.pi)


def mixture_cdf(xp: float, xm: float, gp: float, gm: float):
    """Exact CDF of the two-branch truncated Gaussian mixture, in log space."""
    log_zp = log_mills_ref(xp) - 0.5 * math.log(gp)
    log_zm = log_mills_ref(xm) - 0.5 * math.log(gm)
    pp = 1.0 / (1.0 + math.exp(log_zm - log_zp))
    pm = 1.0 / (1.0 + math.exp(log_zp - log_zm))
    lsp, lsm = sc.log_ndtr(-xp), sc.log_ndtr(-xm)

    def cdf(h):
        h = np.asarray(h, dtype=np.float64)
        g = np.abs(h)
        # survival of the branch in standardized units: P(z ≥ x + g√γ | z ≥ x)
        neg = pm * np.exp(sc.log_ndtr(-(xm + g * math.sqrt(gm))) - lsm)
        pos = pm - pp * np.expm1(sc.log_ndtr(-(xp + g * math.sqrt(gp))) - lsp)
        return np.where(h < 0, neg, pos)

    return cdf, pp


@pytest.mark.parametrize("case", KS_CASES, ids=[str(c) for c in KS_CASES])
def test_drelu_sample_ks(case):
    xp, xm, gp, gm = case
    i = 0.7
    m = 200
    params = (
        np.full(m, gp),
        np.full(m, gm),
        np.full(m, i + xp * math.sqrt(gp)),
        np.full(m, xm * math.sqrt(gm) - i),
    )
    seed = 1000 + KS_CASES.index(case)
    h = layers.drelu_sample(np.full((KS_N // m, m), i), *params, np.random.default_rng(seed))
    h = h.ravel()
    assert np.all(np.isfinite(h))
    cdf, pp = mixture_cdf(xp, xm, gp, gm)
    if 1e-3 < pp < 1 - 1e-3:
        assert np.any(h > 0) and np.any(h < 0)
    assert np.count_nonzero(h == 0.0) == 0  # no fallback zeros, even 1000σ into a tail
    assert stats.kstest(h, cdf).pvalue > KS_ALPHA


def test_drelu_sample_scalar_matches_moments():
    # the numba-callable scalar sampler (for fused kernels) draws from the same distribution
    state = rng_init(np.uint64(3), 0)
    args = (0.4, 2.0, 0.5, -0.3, -1.0)  # I, γ₊, γ₋, θ₊, θ₋: an asymmetric double well
    h = np.array([layers.drelu_sample_scalar(*args, state) for _ in range(KS_N)])
    _, _, mean, var = layers.drelu_stats_scalar(*args)
    assert abs(h.mean() - mean) < 5 * math.sqrt(var / KS_N)
    assert h.var() == pytest.approx(var, rel=0.05)


def test_drelu_sample_float32_is_finite_and_shaped():
    gp, gm, tp, tm = (np.full(50, v, dtype=np.float32) for v in (1.0, 1.0, 20.0, 20.0))
    h = layers.drelu_sample(np.zeros((4, 50), np.float32), gp, gm, tp, tm, np.random.default_rng(0))
    assert h.dtype == np.float32 and h.shape == (4, 50)
    assert np.all(np.isfinite(h)) and np.all(h != 0)


# --------------------------------------------------------------------------------------------
# Reproducibility
# --------------------------------------------------------------------------------------------


def _sample_problem():
    rng = np.random.default_rng(99)
    b, m, n = 64, 40, 300
    params = layers.drelu_params(
        rng.uniform(0.5, 2, m), rng.normal(size=m), rng.normal(-1, 2, m), rng.uniform(-1, 1, m)
    )
    return rng.normal(0, 3, (b, m)), params, rng.normal(0, 2, (b, n)), rng.normal(-2, 1, n)


def _draw_all(seed: int) -> tuple[np.ndarray, np.ndarray]:
    inp_h, params, inp_v, g = _sample_problem()
    rng = np.random.default_rng(seed)
    return layers.drelu_sample(inp_h, *params, rng), layers.bernoulli_sample(inp_v, g, rng)


def _digest(arrays) -> str:
    return hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()


def test_same_seed_gives_bit_identical_samples():
    h1, v1 = _draw_all(5)
    h2, v2 = _draw_all(5)
    h3, v3 = _draw_all(6)
    assert np.array_equal(h1, h2) and np.array_equal(v1, v2)
    assert not np.array_equal(h1, h3) and not np.array_equal(v1, v3)
    # successive calls on one Generator continue the stream (new key per call)
    inp_h, params, _, _ = _sample_problem()
    rng = np.random.default_rng(5)
    assert not np.array_equal(
        layers.drelu_sample(inp_h, *params, rng), layers.drelu_sample(inp_h, *params, rng)
    )


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs ≥ 2 numba threads")
def test_samples_do_not_depend_on_thread_count():
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _draw_all(11)
        numba.set_num_threads(2)
        two = _draw_all(11)
    finally:
        numba.set_num_threads(before)
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))


def test_samples_identical_in_a_single_threaded_process():
    code = (
        "import sys; sys.path.insert(0, 'tests'); import test_layers as t; "
        "print(t._digest(t._draw_all(11)))"
    )
    env = dict(os.environ, NUMBA_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == _digest(_draw_all(11))


# --------------------------------------------------------------------------------------------
# Bernoulli visible layer
# --------------------------------------------------------------------------------------------


def test_bernoulli_mean_and_cgf_are_stable():
    x = np.concatenate([np.linspace(-800, 800, 4001), [-1e308, 1e308, 0.0]])
    g = np.zeros(x.size)
    p = layers.bernoulli_mean(x, g)
    # atol: scipy flushes e^{-745…-709} to 0 where we return the subnormal value
    np.testing.assert_allclose(p, sc.expit(x), rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(
        # (x − 1) + 1 ≠ x by ~|x|·eps, and σ'/σ = 1 − σ ≤ 1 carries that into the result
        layers.bernoulli_mean(x[None, :] - 1.0, g + 1.0)[0],
        sc.expit(x),
        rtol=1e-12,
        atol=1e-300,
    )
    sp = layers.bernoulli_cgf(x)
    np.testing.assert_allclose(sp, np.logaddexp(0.0, x), rtol=1e-15, atol=1e-300)
    assert np.all(np.isfinite(sp))
    x32 = x[:-3].astype(np.float32)  # ±1e308 is not a float32
    assert layers.bernoulli_cgf(x32).dtype == np.float32
    assert layers.bernoulli_mean(x32, g[:-3].astype(np.float32)).dtype == np.float32
    assert layers.bernoulli_cgf(np.ones((2, 3))).shape == (2, 3)


def test_bernoulli_sample_frequencies():
    n_rows = 2000
    logits = np.array([-40.0, -3.0, -0.5, 0.0, 0.5, 3.0, 40.0])
    inp = np.tile(logits, (n_rows, 1))
    g = np.zeros(logits.size)
    v = layers.bernoulli_sample(inp, g, np.random.default_rng(21))
    assert set(np.unique(v)) <= {0.0, 1.0} and v.dtype == np.float64
    p = sc.expit(logits)
    counts = v.sum(axis=0)
    for k, c in enumerate(counts):
        assert stats.binomtest(int(c), n_rows, p[k]).pvalue > KS_ALPHA, (logits[k], c)
    v32 = layers.bernoulli_sample(inp.astype(np.float32), g, np.random.default_rng(21))
    assert v32.dtype == np.float32
