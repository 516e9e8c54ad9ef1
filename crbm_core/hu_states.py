"""Active/inactive state of each hidden unit over time, for its time constant (METHODS §6).

E[h_μ|v(t)] of a learned HU is a noisy read-out of a two-state process: while an assembly is
active, how many of its neurons fire in a frame is binomial, so the trace drops below any fixed
threshold many times per active period (on a virtual fish the active-state spread is as large as
the gap between the two peaks). A threshold, even with hysteresis, then counts each dip as a
cycle and halves the time constants. A two-state Gaussian hidden Markov model per HU, started
from the HU's 2-component mixture (`dynamics.fit_bimodal`) and fitted by Baum–Welch, weighs each
frame against how long states last; its Viterbi path is the HU's state sequence. On the virtual
fish of `tests/test_truth.py` the median cycle of the HU best matching each planted assembly
follows the planted one (e.g. 12.1 s for a planted 11.9 s, where hysteresis gave 4.6 s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from .errors import ParameterError

MAX_ITER = 100
TOL = 1e-6  # relative change of the log-likelihood that ends Baum–Welch
_SD_FLOOR = 1e-3  # emission std floor, relative to the trace's std (a constant trace stays put)


@dataclass
class HUStates:
    """Per HU: the decoded states (T×M uint8, 1 = active, the higher-mean state), the fitted
    probabilities of staying inactive/active from one frame to the next (M×2), the state means
    and standard deviations (M×2, inactive first) and the Baum–Welch iterations."""

    states: np.ndarray
    stay: np.ndarray
    means: np.ndarray
    stds: np.ndarray
    n_iter: np.ndarray

    def mean_dwell_frames(self) -> np.ndarray:
        """Expected frames per visit of each state, 1/(1 − stay) (M×2)."""
        return 1.0 / (1.0 - self.stay)


def decode_hu_states(traces, bimodal, max_iter: int = MAX_ITER, tol: float = TOL) -> HUStates:
    """Fit a two-state Gaussian HMM to each HU trace (columns of T×M), initialised from
    `bimodal` (a `dynamics.Bimodality` of the same traces), and decode its Viterbi path."""
    x = np.ascontiguousarray(np.asarray(traces, dtype=np.float64).T)  # M×T: one row per HU
    if x.ndim != 2 or x.shape[1] < 2 or not np.all(np.isfinite(x)):
        raise ParameterError("HU traces must be a finite T×M array with at least 2 frames")
    m = x.shape[0]
    means, stds, weights = (
        np.asarray(a, dtype=np.float64) for a in (bimodal.means, bimodal.stds, bimodal.weights)
    )
    if means.shape != (m, 2):
        raise ParameterError(f"mixture of {means.shape[0]} HUs for traces of {m} HUs")
    if int(max_iter) < 1 or not tol > 0:
        raise ParameterError("max_iter must be ≥ 1 and tol > 0")
    floor = np.maximum(_SD_FLOOR * x.std(axis=1), 1e-12)
    states = np.empty(x.shape, dtype=np.uint8)
    stay = np.empty((m, 2))
    mu_out, sd_out = np.empty((m, 2)), np.empty((m, 2))
    n_iter = np.empty(m, dtype=np.int64)
    _fit_decode(
        x,
        means,
        stds,
        weights,
        floor,
        int(max_iter),
        float(tol),
        states,
        stay,
        mu_out,
        sd_out,
        n_iter,
    )
    return HUStates(np.ascontiguousarray(states.T), stay, mu_out, sd_out, n_iter)


@njit(parallel=True, cache=True, nogil=True)
def _fit_decode(x, means, stds, weights, floor, max_iter, tol, states, stay, mu_out, sd_out, n_it):
    m, t_len = x.shape
    for j in prange(m):
        _one(
            x[j],
            means[j],
            stds[j],
            weights[j],
            floor[j],
            max_iter,
            tol,
            states[j],
            stay[j],
            mu_out[j],
            sd_out[j],
            n_it,
            j,
        )


@njit(cache=True, nogil=True)
def _one(x, mu0, sd0, w0, floor, max_iter, tol, states, stay, mu_out, sd_out, n_it, j):
    """Baum–Welch (scaled forward–backward) then Viterbi for one HU; state 0 = lower mean."""
    t_len = x.shape[0]
    mu = mu0.copy()
    sd = np.maximum(sd0.copy(), floor)
    pi = np.maximum(w0.copy(), 1e-6)
    pi /= pi.sum()
    a = np.array([[0.9, 0.1], [0.1, 0.9]])
    b = np.empty((t_len, 2))
    alpha = np.empty((t_len, 2))
    beta = np.empty((t_len, 2))
    scale = np.empty(t_len)
    prev = -np.inf
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (it is the count reported)
        for t in range(t_len):  # emission densities (a common factor per frame drops out)
            for k in range(2):
                z = (x[t] - mu[k]) / sd[k]
                b[t, k] = np.exp(-0.5 * z * z) / sd[k]
            if b[t, 0] + b[t, 1] <= 0.0:  # far from both: the nearer state, by log density
                z0 = (x[t] - mu[0]) / sd[0]
                z1 = (x[t] - mu[1]) / sd[1]
                if -0.5 * z0 * z0 - np.log(sd[0]) >= -0.5 * z1 * z1 - np.log(sd[1]):
                    b[t, 0], b[t, 1] = 1.0, 0.0
                else:
                    b[t, 0], b[t, 1] = 0.0, 1.0
        loglik = 0.0
        for t in range(t_len):
            for k in range(2):
                if t == 0:
                    alpha[t, k] = pi[k] * b[t, k]
                else:
                    alpha[t, k] = (alpha[t - 1, 0] * a[0, k] + alpha[t - 1, 1] * a[1, k]) * b[t, k]
            s = alpha[t, 0] + alpha[t, 1]
            if s <= 0.0:
                s = 1e-300
            scale[t] = s
            alpha[t, 0] /= s
            alpha[t, 1] /= s
            loglik += np.log(s)
        beta[t_len - 1, 0] = beta[t_len - 1, 1] = 1.0
        for t in range(t_len - 2, -1, -1):
            for k in range(2):
                beta[t, k] = (
                    a[k, 0] * b[t + 1, 0] * beta[t + 1, 0] + a[k, 1] * b[t + 1, 1] * beta[t + 1, 1]
                ) / scale[t + 1]
        g_sum = np.zeros(2)
        g_x = np.zeros(2)
        g_xx = np.zeros(2)
        xi = np.zeros((2, 2))
        for t in range(t_len):
            g0 = alpha[t, 0] * beta[t, 0]
            g1 = alpha[t, 1] * beta[t, 1]
            gs = g0 + g1
            if gs <= 0.0:
                continue
            g0 /= gs
            g1 /= gs
            if t == 0:
                pi[0], pi[1] = max(g0, 1e-6), max(g1, 1e-6)
            g_sum[0] += g0
            g_sum[1] += g1
            g_x[0] += g0 * x[t]
            g_x[1] += g1 * x[t]
            if t < t_len - 1:
                for k in range(2):
                    for q in range(2):
                        xi[k, q] += (
                            alpha[t, k] * a[k, q] * b[t + 1, q] * beta[t + 1, q] / scale[t + 1]
                        )
        for k in range(2):
            if g_sum[k] > 1e-9:
                mu[k] = g_x[k] / g_sum[k]
        for t in range(t_len):
            g0 = alpha[t, 0] * beta[t, 0]
            g1 = alpha[t, 1] * beta[t, 1]
            gs = g0 + g1
            if gs <= 0.0:
                continue
            g_xx[0] += g0 / gs * (x[t] - mu[0]) ** 2
            g_xx[1] += g1 / gs * (x[t] - mu[1]) ** 2
        for k in range(2):
            if g_sum[k] > 1e-9:
                sd[k] = max(np.sqrt(g_xx[k] / g_sum[k]), floor)
            row = xi[k, 0] + xi[k, 1]
            if row > 0.0:
                for q in range(2):
                    a[k, q] = min(max(xi[k, q] / row, 1e-6), 1.0 - 1e-6)
        pi /= pi.sum()
        if loglik - prev <= tol * abs(loglik):
            break
        prev = loglik
    # Viterbi in log space
    la = np.log(a)
    d0 = np.log(pi[0]) + _logpdf(x[0], mu[0], sd[0])
    d1 = np.log(pi[1]) + _logpdf(x[0], mu[1], sd[1])
    back = np.empty((t_len, 2), dtype=np.uint8)
    for t in range(1, t_len):
        s00, s10 = d0 + la[0, 0], d1 + la[1, 0]
        s01, s11 = d0 + la[0, 1], d1 + la[1, 1]
        back[t, 0] = 0 if s00 >= s10 else 1
        back[t, 1] = 0 if s01 >= s11 else 1
        n0 = max(s00, s10) + _logpdf(x[t], mu[0], sd[0])
        n1 = max(s01, s11) + _logpdf(x[t], mu[1], sd[1])
        d0, d1 = n0, n1
    s = 0 if d0 >= d1 else 1
    hi = 1 if mu[1] >= mu[0] else 0
    for t in range(t_len - 1, -1, -1):
        states[t] = 1 if s == hi else 0
        if t > 0:
            s = back[t, s]
    lo = 1 - hi
    stay[0], stay[1] = a[lo, lo], a[hi, hi]
    mu_out[0], mu_out[1] = mu[lo], mu[hi]
    sd_out[0], sd_out[1] = sd[lo], sd[hi]
    n_it[j] = it


@njit(cache=True, nogil=True)
def _logpdf(x, mu, sd):
    z = (x - mu) / sd
    return -0.5 * z * z - np.log(sd)
