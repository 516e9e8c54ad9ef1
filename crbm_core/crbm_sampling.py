"""Exact samples of a known cRBM, for virtual fish in "crbm" mode.

When every neuron belongs to at most one hidden unit (disjoint assemblies), the cRBM factorizes:

    P(v, h) ∝ Π_μ exp(−U_μ(h_μ)) Π_{i∈μ} exp(v_i (g_i + w_iμ h_μ)) · Π_{i∉any} exp(g_i v_i)

so each h_μ has the one-dimensional marginal log P(h) = −U(h) + Σ_{i∈μ} softplus(g_i + w_iμ h)
(up to a constant), and ancestral sampling — h_μ from that marginal by inverse CDF on a fine grid,
then v_i | h exactly — gives independent, exact samples (to the grid's resolution in h), with none
of the mixing problems of Gibbs chains on strongly bimodal units.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .errors import ParameterError
from .layers import drelu_moments, drelu_params

GRID = 20001  # points of the inverse-CDF grid per hidden unit


def _softplus(x):
    return np.logaddexp(0.0, x)


def _log_prior(h, gp, gm, tp, tm):
    hp, hm = np.maximum(h, 0.0), np.maximum(-h, 0.0)
    return -(0.5 * gp * hp**2 + tp * hp + 0.5 * gm * hm**2 + tm * hm)


def hidden_marginal(w_col: np.ndarray, g: np.ndarray, gp, gm, tp, tm, n: int = GRID):
    """(grid, cdf) of the marginal of one hidden unit whose members have weights w_col, fields g.

    The grid spans the region where the log density is within 50 of its maximum.
    """

    def logp(h):
        return _log_prior(h, gp, gm, tp, tm) + _softplus(g[None, :] + np.outer(h, w_col)).sum(1)

    wide = np.linspace(-40.0, 40.0, max(n // 2, 2001)) / np.sqrt(min(gp, gm))
    lp = logp(wide)
    keep = np.flatnonzero(lp > lp.max() - 50.0)
    lo, hi = wide[max(keep[0] - 1, 0)], wide[min(keep[-1] + 1, wide.size - 1)]
    grid = np.linspace(lo, hi, n)
    dens = np.exp(logp(grid) - logp(grid).max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
    return grid, cdf / cdf[-1]


def _from_branches(gp, gm, tp, tm):
    """(γ₊, γ₋, θ₊, θ₋) → (γ, θ, δ, η), inverting METHODS §2."""
    eta = (gm - gp) / (gm + gp)
    gamma = gp * (1 + eta)
    a, b = 1 / np.sqrt(1 + eta), 1 / np.sqrt(1 - eta)
    delta = (tp + tm) / (a + b)
    return gamma, tp - delta * a, delta, eta


def planted_crbm(
    weights: sp.spmatrix, baseline_logit: np.ndarray, rng: np.random.Generator, boost: float = 2.0
) -> dict[str, np.ndarray]:
    """A cRBM whose hidden units are the planted assemblies, made disjoint (each neuron keeps
    only its strongest assembly).

    Units are "jumpy" double-well dReLUs like the paper's: an on-branch with its mode at h ≈ H
    (θ₊ = −Hγ₊, γ₊ ≥ 1 stiff enough that all members firing cannot push h beyond ≈ 2H) and a
    narrow off-branch just below 0 (γ₋ = 4γ₊). Weights are the planted pattern scaled
    so an on unit raises its members' logits by ≈ `boost`; H is chosen per unit so the members'
    feedback (Σ_i w_i p_i) moves that by at most ≈ 25 % (no runaway to saturation), and θ₋ so the
    unit is on (h > H/2) a fraction 0.1–0.3 of the time.
    """
    w = sp.csr_matrix(weights, dtype=np.float64).toarray()
    strongest = np.abs(w).argmax(axis=1)
    rows = np.arange(w.shape[0])
    pattern = np.zeros_like(w)
    pattern[rows, strongest] = w[rows, strongest] / 2.25  # planted weights average 2.25
    g = np.asarray(baseline_logit, dtype=np.float64)
    m = w.shape[1]
    out = np.zeros_like(pattern)
    gp, gm = np.ones(m), np.full(m, 4.0)
    tp, tm = np.empty(m), np.empty(m)
    for mu in range(m):
        members = np.flatnonzero(pattern[:, mu])
        if members.size == 0:
            raise ParameterError("an assembly lost all its members; use fewer assemblies")
        p_on = 1.0 / (1.0 + np.exp(-(g[members] + boost)))
        height = max(
            2.0, np.sqrt(4.0 * boost * np.sum(np.abs(pattern[members, mu]) * p_on) * boost)
        )
        out[members, mu] = pattern[members, mu] * boost / height
        # stiff enough that even all members firing cannot push h far beyond 2H (no saturation)
        gp[mu] = max(1.0, np.abs(out[members, mu]).sum() / height)
        gm[mu] = 4.0 * gp[mu]
        tp[mu] = -height * gp[mu]
        target = rng.uniform(0.1, 0.3)
        lo, hi = -300.0, 300.0
        for _ in range(50):  # P(on) grows with θ₋ (less mass on the off-branch)
            tm[mu] = 0.5 * (lo + hi)
            grid, cdf = hidden_marginal(
                out[members, mu], g[members], gp[mu], gm[mu], tp[mu], tm[mu], n=1001
            )
            on = 1.0 - np.interp(0.5 * height, grid, cdf)
            lo, hi = (lo, tm[mu]) if on > target else (tm[mu], hi)
    gamma, theta, delta, eta = _from_branches(gp, gm, tp, tm)
    return {
        "weights": out.astype(np.float32),
        "fields": g.astype(np.float32),
        "gamma": gamma.astype(np.float32),
        "theta": theta.astype(np.float32),
        "delta": delta.astype(np.float32),
        "eta": eta.astype(np.float32),
    }


def sample_crbm(
    model: dict[str, np.ndarray],
    n_frames: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n_frames independent exact samples: (spikes T×N uint8, E[h|v] T×M, ⟨Var(h|v)⟩ M).

    Requires disjoint hidden units (each neuron with at most one nonzero weight).
    """
    w = model["weights"].astype(np.float64)
    g = model["fields"].astype(np.float64)
    if np.any((w != 0).sum(axis=1) > 1):
        raise ParameterError("exact sampling needs each neuron in at most one hidden unit")
    gp, gm, tp, tm = (
        np.asarray(a, dtype=np.float64)
        for a in drelu_params(model["gamma"], model["theta"], model["delta"], model["eta"])
    )
    h = np.empty((n_frames, w.shape[1]))
    for mu in range(w.shape[1]):
        members = np.flatnonzero(w[:, mu])
        grid, cdf = hidden_marginal(w[members, mu], g[members], gp[mu], gm[mu], tp[mu], tm[mu])
        h[:, mu] = np.interp(rng.random(n_frames), cdf, grid)
    logit = g + h @ w.T
    spikes = (rng.random(logit.shape) < 1.0 / (1.0 + np.exp(-logit))).astype(np.uint8)
    mean, var = drelu_moments(spikes @ w, gp, gm, tp, tm)
    return spikes, mean.astype(np.float32), var.mean(axis=0)
