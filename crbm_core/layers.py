"""Bernoulli visible layer and dReLU hidden layer (METHODS §1–2), numba kernels.

dReLU unit with input I: P(h|I) ∝ exp(−U(h) + hI), U(h) = ½γ₊h₊² + θ₊h₊ + ½γ₋h₋² + θ₋h₋, with
h₊ = max(h, 0) and h₋ = max(−h, 0). With x₊ = (θ₊ − I)/√γ₊ and x₋ = (θ₋ + I)/√γ₋ the branch
masses are Z± = Φ(x±)/√γ± (``crbm_core.special``), Γ(I) = log(Z₊ + Z₋) and p₊ = Z₊/(Z₊ + Z₋).
Branch means and variances are r(x±)/√γ± and v(x±)/γ± (r, v from ``special.mills_stats``), and

    Var[h|I] = p₊v₊/γ₊ + p₋v₋/γ₋ + p₊p₋(r₊/√γ₊ + r₋/√γ₋)²      (law of total variance)

which, unlike E[h²] − E[h]², is a sum of positive terms and keeps full relative precision.
p₊ and p₋ are both formed from the log-mass difference, so neither is 1 − (the other).

Arrays: inputs I have shape (B, M) (a single (M,) row is accepted and returned as (M,)); unit
parameters have shape (M,). Outputs have I's dtype (float32 or float64; anything else is treated
as float64); arithmetic is float64 inside the kernels, so float32 results are float64 results
rounded once. Kernels run ``parallel=True`` over batch rows.

Randomness: a sampling function takes a ``numpy.random.Generator`` and draws a single uint64 key
from it per call. The kernel gives batch row b its own xoshiro256** stream seeded from (key, b)
(``special.rng_init``), so a draw depends only on the Generator state and the row, never on the
number of numba threads or on scheduling: same Generator state → bit-identical samples.

Numba callers (e.g. a fused Gibbs sweep) can use ``drelu_unit_constants`` with the
``*_kernel`` functions, or the scalar ``drelu_stats_scalar`` / ``drelu_sample_scalar``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from crbm_core.special import log_mills, mills_stats, rng_init, rng_uniform, tn_sample_excess

__all__ = [
    "GAMMA_MIN",
    "ETA_MAX",
    "drelu_params",
    "drelu_unit_constants",
    "drelu_cgf",
    "drelu_p_plus",
    "drelu_mean",
    "drelu_var",
    "drelu_moments",
    "drelu_sufficient_stats",
    "drelu_sufficient_stats_mean",
    "drelu_sample",
    "drelu_stats_scalar",
    "drelu_sample_scalar",
    "drelu_cgf_kernel",
    "drelu_p_plus_kernel",
    "drelu_moments_kernel",
    "drelu_sufficient_stats_kernel",
    "drelu_sufficient_stats_mean_kernel",
    "drelu_sample_kernel",
    "bernoulli_mean_kernel",
    "bernoulli_sample_kernel",
    "bernoulli_mean",
    "bernoulli_sample",
    "bernoulli_cgf",
]

GAMMA_MIN = 0.05  # floor of γ and γ± (METHODS §2)
ETA_MAX = 0.95  # |η| ≤ 0.95 (METHODS §2)

# Rows of the table returned by drelu_unit_constants.
_TP, _TM, _SGP, _SGM, _LSGP, _LSGM = range(6)


# --------------------------------------------------------------------------------------------
# dReLU parameterization
# --------------------------------------------------------------------------------------------


def drelu_params(
    gamma: np.ndarray, theta: np.ndarray, delta: np.ndarray, eta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(γ, θ, δ, η) → (γ₊, γ₋, θ₊, θ₋) of METHODS §2, with its clips.

    γ₊ = γ/(1+η), γ₋ = γ/(1−η), θ₊ = θ + δ/√(1+η), θ₋ = −θ + δ/√(1−η); η is clipped to
    [−0.95, 0.95] and γ, γ₊, γ₋ are floored at 0.05, so the result is always a valid dReLU.
    """
    gamma, theta, delta, eta = np.broadcast_arrays(*map(np.asarray, (gamma, theta, delta, eta)))
    dtype = np.result_type(gamma, theta, delta, eta, np.float32)
    gamma = np.maximum(gamma.astype(dtype), GAMMA_MIN)
    eta = np.clip(eta.astype(dtype), -ETA_MAX, ETA_MAX)
    gamma_plus = np.maximum(gamma / (1 + eta), GAMMA_MIN).astype(dtype)
    gamma_minus = np.maximum(gamma / (1 - eta), GAMMA_MIN).astype(dtype)
    theta_plus = (theta + delta / np.sqrt(1 + eta)).astype(dtype)
    theta_minus = (-theta + delta / np.sqrt(1 - eta)).astype(dtype)
    return gamma_plus, gamma_minus, theta_plus, theta_minus


def drelu_unit_constants(
    gamma_plus: np.ndarray, gamma_minus: np.ndarray, theta_plus: np.ndarray, theta_minus: np.ndarray
) -> np.ndarray:
    """Per-unit float64 table (6, M) used by the kernels: θ₊, θ₋, √γ₊, √γ₋, log√γ₊, log√γ₋.

    Raises ValueError on mismatched shapes or γ± ≤ 0 (which would silently give NaN)."""
    gp, gm, tp, tm = (
        np.asarray(a, dtype=np.float64) for a in (gamma_plus, gamma_minus, theta_plus, theta_minus)
    )
    if not (gp.ndim == 1 and gp.shape == gm.shape == tp.shape == tm.shape):
        raise ValueError(
            "dReLU parameters must be 1-D arrays of equal length (M,), got shapes "
            f"{gp.shape}, {gm.shape}, {tp.shape}, {tm.shape}"
        )
    if not (np.all(gp > 0) and np.all(gm > 0)):
        raise ValueError("dReLU gamma_plus and gamma_minus must be > 0 (use drelu_params)")
    sgp, sgm = np.sqrt(gp), np.sqrt(gm)
    return np.ascontiguousarray(np.stack([tp, tm, sgp, sgm, np.log(sgp), np.log(sgm)]))


# --------------------------------------------------------------------------------------------
# Scalar cores
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _log_masses(i: float, tp: float, tm: float, sgp: float, sgm: float, lsgp: float, lsgm: float):
    """(log Z₊, log Z₋, x₊, x₋) at input i."""
    xp = (tp - i) / sgp
    xm = (tm + i) / sgm
    return log_mills(xp) - lsgp, log_mills(xm) - lsgm, xp, xm


@njit(cache=True, nogil=True)
def _branch_probs(log_zp: float, log_zm: float) -> tuple[float, float, float]:
    """(Γ, p₊, p₋) from the log branch masses, as a log-add-exp (no overflow, no 1 − p)."""
    d = log_zp - log_zm
    if d >= 0.0:
        e = math.exp(-d)
        return log_zp + math.log1p(e), 1.0 / (1.0 + e), e / (1.0 + e)
    e = math.exp(d)
    return log_zm + math.log1p(e), e / (1.0 + e), 1.0 / (1.0 + e)


@njit(cache=True, nogil=True)
def _element_stats(
    i: float, tp: float, tm: float, sgp: float, sgm: float, lsgp: float, lsgm: float
):
    """(Γ, p₊, p₋, μ₊, μ₋, σ₊², σ₋²): branch probabilities, branch means of h₊ and h₋ (both ≥ 0)
    and branch variances."""
    xp = (tp - i) / sgp
    xm = (tm + i) / sgm
    lp, rp, vp = mills_stats(xp)
    lm, rm, vm = mills_stats(xm)
    cgf, pp, pm = _branch_probs(lp - lsgp, lm - lsgm)
    return cgf, pp, pm, rp / sgp, rm / sgm, vp / (sgp * sgp), vm / (sgm * sgm)


@njit(cache=True, nogil=True)
def _mean_var(pp: float, pm: float, mup: float, mum: float, varp: float, varm: float):
    s = mup + mum
    return pp * mup - pm * mum, pp * varp + pm * varm + pp * pm * s * s


@njit(cache=True, nogil=True)
def drelu_stats_scalar(i: float, gp: float, gm: float, tp: float, tm: float):
    """(Γ, p₊, E[h|I], Var[h|I]) of one dReLU unit at input i (for use inside numba code)."""
    sgp, sgm = math.sqrt(gp), math.sqrt(gm)
    cgf, pp, pm, mup, mum, varp, varm = _element_stats(
        i, tp, tm, sgp, sgm, math.log(sgp), math.log(sgm)
    )
    mean, var = _mean_var(pp, pm, mup, mum, varp, varm)
    return cgf, pp, mean, var


@njit(cache=True, nogil=True)
def _sample_element(
    i: float, tp: float, tm: float, sgp: float, sgm: float, lsgp: float, lsgm: float, s: np.ndarray
) -> float:
    log_zp, log_zm, xp, xm = _log_masses(i, tp, tm, sgp, sgm, lsgp, lsgm)
    pp = 1.0 / (1.0 + math.exp(log_zm - log_zp))
    if rng_uniform(s) < pp:
        # h√γ₊ + x₊ ~ N(0,1) truncated to [x₊, ∞)
        return tn_sample_excess(xp, s) / sgp
    return -tn_sample_excess(xm, s) / sgm


@njit(cache=True, nogil=True)
def drelu_sample_scalar(
    i: float, gp: float, gm: float, tp: float, tm: float, s: np.ndarray
) -> float:
    """One draw h ~ P(h|I=i) using the xoshiro256** state ``s`` (``special.rng_init``)."""
    sgp, sgm = math.sqrt(gp), math.sqrt(gm)
    return _sample_element(i, tp, tm, sgp, sgm, math.log(sgp), math.log(sgm), s)


# --------------------------------------------------------------------------------------------
# Batch kernels (numba-callable; c is the drelu_unit_constants table)
# --------------------------------------------------------------------------------------------


@njit(parallel=True, cache=True, nogil=True)
def drelu_cgf_kernel(inp: np.ndarray, c: np.ndarray, out: np.ndarray) -> None:
    """out[b, j] = Γ_j(inp[b, j])."""
    for b in prange(inp.shape[0]):
        for j in range(inp.shape[1]):
            log_zp, log_zm, _, _ = _log_masses(
                inp[b, j], c[_TP, j], c[_TM, j], c[_SGP, j], c[_SGM, j], c[_LSGP, j], c[_LSGM, j]
            )
            out[b, j] = _branch_probs(log_zp, log_zm)[0]


@njit(parallel=True, cache=True, nogil=True)
def drelu_p_plus_kernel(inp: np.ndarray, c: np.ndarray, out: np.ndarray) -> None:
    """out[b, j] = P(h ≥ 0 | I = inp[b, j])."""
    for b in prange(inp.shape[0]):
        for j in range(inp.shape[1]):
            log_zp, log_zm, _, _ = _log_masses(
                inp[b, j], c[_TP, j], c[_TM, j], c[_SGP, j], c[_SGM, j], c[_LSGP, j], c[_LSGM, j]
            )
            out[b, j] = _branch_probs(log_zp, log_zm)[1]


@njit(parallel=True, cache=True, nogil=True)
def drelu_moments_kernel(
    inp: np.ndarray, c: np.ndarray, mean_out: np.ndarray, var_out: np.ndarray
) -> None:
    """mean_out, var_out = E[h|I], Var[h|I]; either output may be a (0, 0) array to skip it."""
    want_mean = mean_out.size > 0
    want_var = var_out.size > 0
    for b in prange(inp.shape[0]):
        for j in range(inp.shape[1]):
            _, pp, pm, mup, mum, varp, varm = _element_stats(
                inp[b, j], c[_TP, j], c[_TM, j], c[_SGP, j], c[_SGM, j], c[_LSGP, j], c[_LSGM, j]
            )
            mean, var = _mean_var(pp, pm, mup, mum, varp, varm)
            if want_mean:
                mean_out[b, j] = mean
            if want_var:
                var_out[b, j] = var


@njit(parallel=True, cache=True, nogil=True)
def drelu_sufficient_stats_kernel(inp: np.ndarray, c: np.ndarray, out: np.ndarray) -> None:
    """out[k, b, j] for k = E[h₊], E[h₋], E[h₊²], E[h₋²] (h₋ = max(−h, 0) ≥ 0)."""
    for b in prange(inp.shape[0]):
        for j in range(inp.shape[1]):
            _, pp, pm, mup, mum, varp, varm = _element_stats(
                inp[b, j], c[_TP, j], c[_TM, j], c[_SGP, j], c[_SGM, j], c[_LSGP, j], c[_LSGM, j]
            )
            out[0, b, j] = pp * mup
            out[1, b, j] = pm * mum
            out[2, b, j] = pp * (varp + mup * mup)
            out[3, b, j] = pm * (varm + mum * mum)


@njit(parallel=True, cache=True, nogil=True)
def drelu_sufficient_stats_mean_kernel(inp: np.ndarray, c: np.ndarray, out: np.ndarray) -> None:
    """out[k, j] = batch mean of the k-th sufficient statistic (float64 accumulation)."""
    n = inp.shape[0]
    for j in prange(inp.shape[1]):
        a0 = a1 = a2 = a3 = 0.0
        for b in range(n):
            _, pp, pm, mup, mum, varp, varm = _element_stats(
                inp[b, j], c[_TP, j], c[_TM, j], c[_SGP, j], c[_SGM, j], c[_LSGP, j], c[_LSGM, j]
            )
            a0 += pp * mup
            a1 += pm * mum
            a2 += pp * (varp + mup * mup)
            a3 += pm * (varm + mum * mum)
        out[0, j] = a0 / n
        out[1, j] = a1 / n
        out[2, j] = a2 / n
        out[3, j] = a3 / n


@njit(parallel=True, cache=True, nogil=True)
def drelu_sample_kernel(inp: np.ndarray, c: np.ndarray, key: np.uint64, out: np.ndarray) -> None:
    """out[b, j] ~ P(h | I = inp[b, j]); row b uses stream (key, b), so threads do not matter."""
    for b in prange(inp.shape[0]):
        s = rng_init(key, b)
        for j in range(inp.shape[1]):
            out[b, j] = _sample_element(
                inp[b, j], c[_TP, j], c[_TM, j], c[_SGP, j], c[_SGM, j], c[_LSGP, j], c[_LSGM, j], s
            )


# --------------------------------------------------------------------------------------------
# Python API
# --------------------------------------------------------------------------------------------


def _as_batch(inp: np.ndarray, m: int | None = None) -> tuple[np.ndarray, bool]:
    """(C-contiguous 2-D float32/float64 view of inp, whether the input was a single row)."""
    inp = np.asarray(inp)
    if inp.dtype not in (np.float32, np.float64):
        inp = inp.astype(np.float64)
    single = inp.ndim == 1
    if single:
        inp = inp[None, :]
    if inp.ndim != 2:
        raise ValueError(f"inputs must have shape (B, M) or (M,), got {inp.shape}")
    if m is not None and inp.shape[1] != m:
        raise ValueError(f"inputs have {inp.shape[1]} units but the parameters have {m}")
    return np.ascontiguousarray(inp), single


def _prepare(inp, gp, gm, tp, tm) -> tuple[np.ndarray, np.ndarray, bool]:
    c = drelu_unit_constants(gp, gm, tp, tm)
    inp, single = _as_batch(inp, c.shape[1])
    return inp, c, single


def _finish(out: np.ndarray, single: bool) -> np.ndarray:
    return out[..., 0, :] if single else out


def drelu_cgf(
    inp: np.ndarray,
    gamma_plus: np.ndarray,
    gamma_minus: np.ndarray,
    theta_plus: np.ndarray,
    theta_minus: np.ndarray,
) -> np.ndarray:
    """Γ(I) = log ∫ exp(−U(h) + hI) dh, element-wise; never overflows for finite inputs."""
    inp, c, single = _prepare(inp, gamma_plus, gamma_minus, theta_plus, theta_minus)
    out = np.empty_like(inp)
    drelu_cgf_kernel(inp, c, out)
    return _finish(out, single)


def drelu_p_plus(
    inp: np.ndarray,
    gamma_plus: np.ndarray,
    gamma_minus: np.ndarray,
    theta_plus: np.ndarray,
    theta_minus: np.ndarray,
) -> np.ndarray:
    """p₊ = P(h ≥ 0 | I), element-wise."""
    inp, c, single = _prepare(inp, gamma_plus, gamma_minus, theta_plus, theta_minus)
    out = np.empty_like(inp)
    drelu_p_plus_kernel(inp, c, out)
    return _finish(out, single)


def drelu_moments(
    inp: np.ndarray,
    gamma_plus: np.ndarray,
    gamma_minus: np.ndarray,
    theta_plus: np.ndarray,
    theta_minus: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(E[h|I], Var[h|I]) in one pass (the two share all special-function evaluations)."""
    inp, c, single = _prepare(inp, gamma_plus, gamma_minus, theta_plus, theta_minus)
    mean, var = np.empty_like(inp), np.empty_like(inp)
    drelu_moments_kernel(inp, c, mean, var)
    return _finish(mean, single), _finish(var, single)


def drelu_mean(
    inp: np.ndarray,
    gamma_plus: np.ndarray,
    gamma_minus: np.ndarray,
    theta_plus: np.ndarray,
    theta_minus: np.ndarray,
) -> np.ndarray:
    """E[h|I] = Γ'(I), element-wise."""
    inp, c, single = _prepare(inp, gamma_plus, gamma_minus, theta_plus, theta_minus)
    mean = np.empty_like(inp)
    drelu_moments_kernel(inp, c, mean, np.empty((0, 0), dtype=inp.dtype))
    return _finish(mean, single)


def drelu_var(
    inp: np.ndarray,
    gamma_plus: np.ndarray,
    gamma_minus: np.ndarray,
    theta_plus: np.ndarray,
    theta_minus: np.ndarray,
) -> np.ndarray:
    """Var[h|I] = Γ''(I), element-wise (always > 0)."""
    inp, c, single = _prepare(inp, gamma_plus, gamma_minus, theta_plus, theta_minus)
    var = np.empty_like(inp)
    drelu_moments_kernel(inp, c, np.empty((0, 0), dtype=inp.dtype), var)
    return _finish(var, single)


def drelu_sufficient_stats(
    inp: np.ndarray,
    gamma_plus: np.ndarray,
    gamma_minus: np.ndarray,
    theta_plus: np.ndarray,
    theta_minus: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(E[h₊|I], E[h₋|I], E[h₊²|I], E[h₋²|I]) with h₋ = max(−h, 0) ≥ 0, each shaped like I.

    These are the statistics whose data-minus-model differences give the θ± and γ± gradients."""
    inp, c, single = _prepare(inp, gamma_plus, gamma_minus, theta_plus, theta_minus)
    out = np.empty((4,) + inp.shape, dtype=inp.dtype)
    drelu_sufficient_stats_kernel(inp, c, out)
    return tuple(_finish(out[k], single) for k in range(4))


def drelu_sufficient_stats_mean(
    inp: np.ndarray,
    gamma_plus: np.ndarray,
    gamma_minus: np.ndarray,
    theta_plus: np.ndarray,
    theta_minus: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batch means (M,) of the four sufficient statistics, without B×M temporaries."""
    inp, c, _ = _prepare(inp, gamma_plus, gamma_minus, theta_plus, theta_minus)
    out = np.empty((4, inp.shape[1]), dtype=np.float64)
    drelu_sufficient_stats_mean_kernel(inp, c, out)
    out = out.astype(inp.dtype, copy=False)
    return out[0], out[1], out[2], out[3]


def drelu_sample(
    inp: np.ndarray,
    gamma_plus: np.ndarray,
    gamma_minus: np.ndarray,
    theta_plus: np.ndarray,
    theta_minus: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """h ~ P(h|I), element-wise and exact in any tail; draws one uint64 key from ``rng``."""
    inp, c, single = _prepare(inp, gamma_plus, gamma_minus, theta_plus, theta_minus)
    out = np.empty_like(inp)
    drelu_sample_kernel(inp, c, _draw_key(rng), out)
    return _finish(out, single)


def _draw_key(rng: np.random.Generator) -> np.uint64:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng.integers(0, 2**64, dtype=np.uint64)


# --------------------------------------------------------------------------------------------
# Bernoulli visible layer
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _sigmoid(x: float) -> float:
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(parallel=True, cache=True, nogil=True)
def bernoulli_mean_kernel(inp: np.ndarray, g: np.ndarray, out: np.ndarray) -> None:
    """out[b, i] = σ(g[i] + inp[b, i])."""
    for b in prange(inp.shape[0]):
        for i in range(inp.shape[1]):
            out[b, i] = _sigmoid(float(g[i]) + float(inp[b, i]))


@njit(parallel=True, cache=True, nogil=True)
def bernoulli_sample_kernel(
    inp: np.ndarray, g: np.ndarray, key: np.uint64, out: np.ndarray
) -> None:
    """out[b, i] = 1{u < σ(g[i] + inp[b, i])}; row b uses stream (key, b)."""
    for b in prange(inp.shape[0]):
        s = rng_init(key, b)
        for i in range(inp.shape[1]):
            out[b, i] = 1.0 if rng_uniform(s) < _sigmoid(float(g[i]) + float(inp[b, i])) else 0.0


@njit(cache=True, nogil=True)
def _softplus_kernel(x: np.ndarray, out: np.ndarray) -> None:
    for k in range(x.size):
        v = float(x[k])
        out[k] = v + math.log1p(math.exp(-v)) if v > 0.0 else math.log1p(math.exp(v))


def _visible_prepare(inp: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    g = np.asarray(g)
    if g.ndim != 1:
        raise ValueError(f"visible fields g must have shape (N,), got {g.shape}")
    inp, single = _as_batch(inp, g.shape[0])
    return inp, np.ascontiguousarray(g, dtype=inp.dtype), single


def bernoulli_mean(inp: np.ndarray, g: np.ndarray) -> np.ndarray:
    """P(v=1 | I) = σ(g + I), stable for any |g + I|; I (B, N) or (N,), g (N,)."""
    inp, g, single = _visible_prepare(inp, g)
    out = np.empty_like(inp)
    bernoulli_mean_kernel(inp, g, out)
    return _finish(out, single)


def bernoulli_sample(inp: np.ndarray, g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """v ~ Bernoulli(σ(g + I)) as 0/1 in I's dtype; draws one uint64 key from ``rng``."""
    inp, g, single = _visible_prepare(inp, g)
    out = np.empty_like(inp)
    bernoulli_sample_kernel(inp, g, _draw_key(rng), out)
    return _finish(out, single)


def bernoulli_cgf(x: np.ndarray) -> np.ndarray:
    """log(1 + eˣ) (softplus), stable for any x; any shape, float32/float64 preserved."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _softplus_kernel(x.reshape(-1), out.reshape(-1))
    return out
