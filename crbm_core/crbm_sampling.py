"""Exact samples of a known cRBM, for virtual fish in "crbm" mode.

When every neuron belongs to at most one hidden unit (disjoint assemblies), the cRBM factorizes:

    P(v, h) ∝ Π_μ exp(−U_μ(h_μ)) Π_{i∈μ} exp(v_i (g_i + w_iμ h_μ)) · Π_{i∉any} exp(g_i v_i)

so each h_μ has the one-dimensional marginal log P(h) = −U(h) + S(h) with
S(h) = Σ_{i∈μ} softplus(g_i + w_iμ h) (up to a constant), and ancestral sampling — h_μ from that
marginal by inverse CDF on a fine grid, then v_i | h exactly — gives independent, exact samples
(to the grid's resolution in h), with none of the mixing problems of Gibbs chains on strongly
bimodal units.

The planted model (`planted_crbm`) is tuned on that exact marginal; see its docstring.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from .errors import ParameterError
from .layers import drelu_moments, drelu_params

GRID = 20001  # points of the inverse-CDF grid per hidden unit
_TAIL = 12.0  # grid margin in prior standard deviations beyond the provable support (e^-72)

# planted-model design (on-mode at h = 1 before the final Var(h) = 1 rescaling)
OFF_MODE = -0.3  # off-mode at h = −0.3: a double well whose off-side is narrow (γ₋ > γ₊)
STIFFNESS = 1.5  # γ₊ = STIFFNESS · max_{h≥0} S''(h): the on-side potential stays convex
MIN_GAMMA_PLUS = 16.0  # on-well prior s.d. ≤ 1/4 of the on-mode's height
ON_FRACTION = (0.12, 0.28)  # per-unit target P(on), drawn uniformly
MAX_GAMMA_RATIO = 38.0  # γ₋/γ₊ within the |η| ≤ 0.95 clip of drelu_params
ON_LOGIT_SPREAD = 0.4  # per-unit offset of the members' median on-logit, uniform ±
ON_PROB = (0.1, 0.2, 0.45)  # members' median on-probability: least, typical, most
MIN_ON_SPIKES = 4.0  # small units: median on-probability ≥ this / (number of positive members)
FIELD_SHIFT = 3.0  # the mean rate is reached by shifting all fields by at most this much
_CAL_GRID = 6001  # points of the calibration grid


@njit(parallel=True, cache=True, nogil=True)
def _member_sums_kernel(h, w, g, out):
    """out[:, k] = (S, S', S'', Σσ) at h[k], with S(h) = Σ_i softplus(g_i + w_i h)."""
    for k in prange(h.size):
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for i in range(w.size):
            x = g[i] + w[i] * h[k]
            if x > 0.0:
                e = math.exp(-x)
                sp_ = x + math.log1p(e)
                sig = 1.0 / (1.0 + e)
            else:
                e = math.exp(x)
                sp_ = math.log1p(e)
                sig = e / (1.0 + e)
            s0 += sp_
            s1 += w[i] * sig
            s2 += w[i] * w[i] * sig * (1.0 - sig)
            s3 += sig
        out[0, k] = s0
        out[1, k] = s1
        out[2, k] = s2
        out[3, k] = s3


def member_sums(h: np.ndarray, w_col: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(4, len(h)): S(h), S'(h), S''(h) and the members' expected spike count Σ_i σ(g_i + w_i h)."""
    h = np.ascontiguousarray(h, dtype=np.float64)
    out = np.empty((4, h.size))
    _member_sums_kernel(
        h,
        np.ascontiguousarray(w_col, dtype=np.float64),
        np.ascontiguousarray(g, dtype=np.float64),
        out,
    )
    return out


def _log_prior(h, gp, gm, tp, tm):
    hp, hm = np.maximum(h, 0.0), np.maximum(-h, 0.0)
    return -(0.5 * gp * hp**2 + tp * hp + 0.5 * gm * hm**2 + tm * hm)


def _support(w_col, gp, gm, tp, tm) -> tuple[float, float]:
    """An interval holding all but ~e^-72 of the marginal's mass.

    For h > 0, d log P/dh = −γ₊h − θ₊ + S'(h) ≤ γ₊(b − h) with b = (Σ_{w>0} w − θ₊)/γ₊, so beyond
    max(b, 0) the log density falls at least like a Gaussian of variance 1/γ₊; likewise below
    min((θ₋ + Σ_{w<0} w)/γ₋, 0) for h < 0.
    """
    w_col = np.asarray(w_col, dtype=np.float64)
    hi = max(0.0, (w_col[w_col > 0].sum() - tp) / gp) + _TAIL / math.sqrt(gp)
    lo = min(0.0, (tm + w_col[w_col < 0].sum()) / gm) - _TAIL / math.sqrt(gm)
    return lo, hi


def hidden_marginal(w_col: np.ndarray, g: np.ndarray, gp, gm, tp, tm, n: int = GRID):
    """(grid, cdf) of the marginal of one hidden unit whose members have weights w_col, fields g.

    A coarse pass over the provable support (`_support`) finds where the log density is within
    50 of its maximum; the returned grid of n points spans that region.
    """
    gp, gm, tp, tm = (float(a) for a in (gp, gm, tp, tm))

    def logp(h):
        return _log_prior(h, gp, gm, tp, tm) + member_sums(h, w_col, g)[0]

    wide = np.linspace(*_support(w_col, gp, gm, tp, tm), max(n // 2, 2001))
    lp = logp(wide)
    keep = np.flatnonzero(lp > lp.max() - 50.0)
    lo, hi = wide[max(keep[0] - 1, 0)], wide[min(keep[-1] + 1, wide.size - 1)]
    grid = np.linspace(lo, hi, n)
    lp = logp(grid)
    dens = np.exp(lp - lp.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
    return grid, cdf / cdf[-1]


def _from_branches(gp, gm, tp, tm):
    """(γ₊, γ₋, θ₊, θ₋) → (γ, θ, δ, η), inverting METHODS §2."""
    eta = (gm - gp) / (gm + gp)
    gamma = gp * (1 + eta)
    a, b = 1 / np.sqrt(1 + eta), 1 / np.sqrt(1 - eta)
    delta = (tp + tm) / (a + b)
    return gamma, tp - delta * a, delta, eta


def _expit(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _logit(p):
    return math.log(p / (1.0 - p))


def _bisect(f, lo, hi, n=50):
    """Root of an increasing function f on [lo, hi] (clipped to the ends)."""
    if f(lo) >= 0:
        return lo
    if f(hi) <= 0:
        return hi
    for _ in range(n):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


class _Unit:
    """One planted unit during calibration (on-mode at h = 1, off-mode at h = OFF_MODE)."""

    C_GRID = np.linspace(0.0, 40.0, 1601)  # on-boost scales (logit units)

    def __init__(self, pattern, base, on_fraction, logit_offset):
        self.pattern, self.base = pattern, base
        self.f, self.offset = on_fraction, logit_offset
        pos = pattern > 0
        # a small assembly needs a few spikes per on-frame to be recognizable from v
        self.min_logit = _logit(min(ON_PROB[2], MIN_ON_SPIKES / pos.sum()))
        # median over positive members of the on-state logit base_i + c·pattern_i, per c
        self.median_logit = np.median(
            base[pos][None, :] + self.C_GRID[:, None] * pattern[pos][None, :], axis=1
        )

    def boost(self, median_on_logit, shift):
        """Scale c so the positive members' median on-logit (fields shifted by `shift`) hits
        `median_on_logit + offset`; at least 1 (an assembly always raises its members)."""
        target = max(median_on_logit + self.offset, self.min_logit) - shift
        return max(1.0, float(np.interp(target, self.median_logit, self.C_GRID)))

    def approx_spikes(self, median_on_logit, shift):
        """Expected spike count of the members for a two-point h (off / on with prob. f)."""
        c = self.boost(median_on_logit, shift)
        off = _expit(self.base + shift).sum()
        on = _expit(self.base + shift + c * self.pattern).sum()
        return (1.0 - self.f) * off + self.f * on

    def build(self, median_on_logit, shift):
        """Exact dReLU parameters: (w, g, γ₊, γ₋, θ₊, θ₋, expected spike count, Var h)."""
        c = self.boost(median_on_logit, shift)
        h_on, h_off = 1.0, OFF_MODE
        w = c * self.pattern / (h_on - h_off)
        g = self.base + shift - w * h_off  # off-mode: every member at its baseline logit
        pos = w > 0
        # on side: stiff enough to stay convex up to (and beyond) the members' saturation
        h_sat = float(np.max((8.0 - g[pos]) / w[pos]))
        s2 = member_sums(np.linspace(0.0, max(h_sat, 2.0), 2001), w, g)[2].max()
        gp = max(STIFFNESS * s2, MIN_GAMMA_PLUS)  # the floor keeps tiny units' on-well narrow
        sums_at = member_sums(np.array([h_off, h_on]), w, g)
        tp = sums_at[1, 1] - gp * h_on  # V'(h_on) = 0
        # off side: convex too where opposite-sign members saturate (h < 0)
        gm_min = gp / MAX_GAMMA_RATIO
        if (w < 0).any():
            h_neg = float(np.min((8.0 - g[~pos]) / w[~pos]))
            s2 = member_sums(np.linspace(min(h_neg, -2.0), 0.0, 2001), w, g)[2].max()
            gm_min = max(gm_min, STIFFNESS * s2)
        gm_range = min(gm_min, gp * MAX_GAMMA_RATIO), gp * MAX_GAMMA_RATIO

        def theta_minus(gm):  # V'(h_off) = 0 for any γ₋
            return gm * h_off - sums_at[1, 0]

        # the support is widest for the softest off-side
        grid = np.linspace(*_support(w, gp, gm_range[0], tp, theta_minus(gm_range[0])), _CAL_GRID)
        sums = member_sums(grid, w, g)
        mid = 0.5 * (h_on + h_off)
        above = grid > mid

        def log_density(gm):
            tm = theta_minus(gm)
            lp = _log_prior(grid, gp, gm, tp, tm) + sums[0]
            return lp - lp.max(), tm

        def excess_on(log_gm):  # P(on) − f decreases with γ₋ (a deeper off-well)
            lp, _ = log_density(np.exp(log_gm))
            p = np.exp(lp)
            return self.f - p[above].sum() / p.sum()

        gm = math.exp(_bisect(excess_on, *np.log(gm_range)))
        lp, tm = log_density(gm)
        p = np.exp(lp)
        p /= p.sum()
        mean = (p * grid).sum()
        var = (p * (grid - mean) ** 2).sum()
        return w, g, gp, gm, tp, tm, float((p * sums[3]).sum()), var


def planted_crbm(
    weights: sp.spmatrix,
    baseline_logit: np.ndarray,
    rng: np.random.Generator,
    mean_rate: float = 0.035,
) -> dict[str, np.ndarray]:
    """A cRBM whose hidden units are the planted assemblies, made disjoint (each neuron keeps
    only its strongest assembly), tuned on each unit's exact 1-D marginal.

    Each unit is a "jumpy" double-well dReLU (δ < 0). Before rescaling, its marginal has an
    off-mode at h = OFF_MODE and an on-mode at h = 1:

    * weights w_i = c·pattern_i/(1 − OFF_MODE) (pattern = planted weights / 2.25, signed); the
      fields g_i = b_i + Δ − w_i·OFF_MODE put every member at its baseline logit b_i + Δ in the
      off-mode, and the on-mode raises it by c·pattern_i;
    * c is chosen so that the positive members' median firing probability in the on-mode is
      σ(L + ε_μ) (ε_μ uniform ±ON_LOGIT_SPREAD per unit; L common, see below), or at least
      MIN_ON_SPIKES/(number of positive members) (≤ max ON_PROB) so that a small assembly's
      on-frames carry a few spikes and E[h|v] can tell them from off-frames;
    * γ₊ = STIFFNESS·max_{h≥0} S''(h) (at least MIN_GAMMA_PLUS): the effective potential
      V(h) = U(h) − S(h) is then convex on h > 0, so there is a single on-mode and no runaway
      well where the members saturate (S' → Σw, the cause of all-or-none units); θ₊ puts that
      mode at h = 1 (V'(1) = 0), where the members are far from saturation;
    * θ₋ = γ₋·OFF_MODE − S'(OFF_MODE) puts the off-mode at OFF_MODE; γ₋ (which sets the
      off-well's depth, ≈ ½γ₋·OFF_MODE²; also ≥ STIFFNESS·max_{h≤0} S'' for opposite-sign
      members) is found by bisection so the exact marginal mass above the midpoint between the
      two modes — P(on) — is f_μ, drawn uniformly in ON_FRACTION;
    * the expected mean firing rate over all neurons is brought to `mean_rate` by a common field
      shift Δ (|Δ| ≤ FIELD_SHIFT) with L = logit(typical ON_PROB); only if that cannot reach it,
      Δ stays at the end of its range and L moves within logit(ON_PROB). The search uses a
      two-mode approximation of the rate; one correction pass uses the exact expected rate;
    * finally h is rescaled so Var(h) = 1 under the marginal (the paper's normalization;
      P(v) is unchanged).

    With baselines from ``synthetic`` this gives, per unit, P(on) 0.12–0.28, members' median
    firing probability ≈ 0.2–0.25 when on (their baseline when off), within-assembly correlations
    ≈ 0.15 and a mean rate of `mean_rate` (tests/test_crbm_sampling.py checks these).
    """
    w = sp.csr_matrix(weights, dtype=np.float64).toarray()
    n, m = w.shape
    strongest = np.abs(w).argmax(axis=1)
    rows = np.arange(n)
    pattern = np.zeros_like(w)
    pattern[rows, strongest] = w[rows, strongest] / 2.25  # planted weights average 2.25
    b = np.asarray(baseline_logit, dtype=np.float64)
    units, member_sets = [], []
    f = rng.uniform(*ON_FRACTION, size=m)
    offsets = rng.uniform(-ON_LOGIT_SPREAD, ON_LOGIT_SPREAD, size=m)
    for mu in range(m):
        members = np.flatnonzero(pattern[:, mu])
        if members.size == 0:
            raise ParameterError("an assembly lost all its members; use fewer assemblies")
        col = pattern[members, mu]
        if not (col > 0).any():  # only opposite-sign members left: flip (P(v) is symmetric)
            col = -col
        member_sets.append(members)
        units.append(_Unit(col, b[members], f[mu], offsets[mu]))
    is_member = np.zeros(n, dtype=bool)
    is_member[np.concatenate(member_sets)] = True

    def approx_rate(lo, shift, bias=0.0):
        spikes = _expit(b[~is_member] + shift).sum()
        spikes += sum(u.approx_spikes(lo, shift) for u in units)
        return spikes / n + bias - mean_rate

    def solve(bias):
        """(L, Δ): Δ with L at its typical value, else L with Δ at the end of its range."""
        level = _logit(ON_PROB[1])
        if approx_rate(level, -FIELD_SHIFT, bias) <= 0 <= approx_rate(level, FIELD_SHIFT, bias):
            return level, _bisect(lambda d: approx_rate(level, d, bias), -FIELD_SHIFT, FIELD_SHIFT)
        shift = FIELD_SHIFT if approx_rate(level, FIELD_SHIFT, bias) < 0 else -FIELD_SHIFT
        lo, hi = _logit(ON_PROB[0]), _logit(ON_PROB[2])
        return _bisect(lambda x: approx_rate(x, shift, bias), lo, hi), shift

    bias = 0.0
    for _ in range(2):  # second pass corrects the two-point approximation's bias
        level, shift = solve(bias)
        built = [u.build(level, shift) for u in units]
        exact = (_expit(b[~is_member] + shift).sum() + sum(x[6] for x in built)) / n
        bias = exact - (approx_rate(level, shift) + mean_rate)
        if abs(exact - mean_rate) < 0.02 * mean_rate:
            break

    out = np.zeros_like(w)
    fields = b + shift
    gp, gm, tp, tm = (np.empty(m) for _ in range(4))
    for mu, (members, (wc, gc, gp_, gm_, tp_, tm_, _, var)) in enumerate(
        zip(member_sets, built, strict=True)
    ):
        s = math.sqrt(var)  # h → h/s: w → w·s, γ± → γ±·s², θ± → θ±·s
        out[members, mu] = wc * s
        fields[members] = gc
        gp[mu], gm[mu], tp[mu], tm[mu] = gp_ * s * s, gm_ * s * s, tp_ * s, tm_ * s
    gamma, theta, delta, eta = _from_branches(gp, gm, tp, tm)
    return {
        "weights": out.astype(np.float32),
        "fields": fields.astype(np.float32),
        "gamma": gamma.astype(np.float32),
        "theta": theta.astype(np.float32),
        "delta": delta.astype(np.float32),
        "eta": eta.astype(np.float32),
    }


def unit_modes(model: dict[str, np.ndarray]) -> np.ndarray:
    """(M, 2): the off- and on-mode (lowest and highest local maximum) of each hidden unit's
    exact marginal P(h_μ) (disjoint units)."""
    w = np.asarray(model["weights"], dtype=np.float64)
    g = np.asarray(model["fields"], dtype=np.float64)
    params = drelu_params(model["gamma"], model["theta"], model["delta"], model["eta"])
    gp, gm, tp, tm = (np.asarray(a, dtype=np.float64) for a in params)
    modes = np.empty((w.shape[1], 2))
    for mu in range(w.shape[1]):
        members = np.flatnonzero(w[:, mu])
        grid, cdf = hidden_marginal(w[members, mu], g[members], gp[mu], gm[mu], tp[mu], tm[mu])
        dens = np.diff(cdf)
        peak = (dens[1:-1] > dens[:-2]) & (dens[1:-1] >= dens[2:]) & (dens[1:-1] > 1e-9)
        centres = 0.5 * (grid[1:] + grid[:-1])[1:-1][peak]
        modes[mu] = centres.min(), centres.max()
    return modes


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
