"""Hidden-unit normalization (METHODS §2) and the gradient correction it implies.

With normalization on, γ is not learned: each update moves it toward γ*, the value at which the
data-batch variance of h is 1, G(γ) = mean_b Var[h|I_b] + Var_b E[h|I_b] − 1 = 0; and θ follows
the mean input, θ = θ' + Σ_i w_iμ⟨v_i⟩. The free parameters are therefore (θ', δ, η, W), and the
exact gradient of the likelihood with respect to them has two extra terms the plain gradient
lacks (the reference code's "cross derivatives"):

* γ* depends on θ, δ, η and W: ∂L/∂x += ∂L/∂γ · dγ*/dx with dγ*/dx = −(∂G/∂x)/(∂G/∂γ)
  (implicit differentiation of G = 0);
* θ depends on W through the centring: ∂L/∂w_iμ += ⟨v_i⟩ · ∂L/∂θ_μ (after the first correction).
  This makes the weight gradient a covariance, ⟨v_i h⟩ − ⟨v_i⟩⟨h⟩ on both phases: the
  "centring trick", known to condition RBM learning better.

∂G/∂I uses ∂E[h|I]/∂I = Var[h|I] (exact: I is the natural parameter) and a central difference
for ∂Var/∂I; θ enters the energy as θ·h, exactly like −I, so ∂G/∂θ = −Σ_b ∂G/∂I_b; γ, δ and η
take central differences of G (all units at once: they are independent). METHODS §2 asks to
keep whichever variant converges better: measured with `benchmarks/recovery.py`, the plain one
stays the default (figures at `TrainConfig.bn_correction`).
"""

from __future__ import annotations

import numpy as np

from .layers import drelu_moments, drelu_params

_REL_STEP = 1e-4  # central differences in float64: truncation ~1e-8 relative, rounding ~1e-12


def renormalize(model, mean_pos, var_pos, data_mean, mean_input_prev, rate):
    """One normalization step in place; returns the new mean input W·⟨v⟩ (to pass next time).

    Centre: θ follows the change of the mean input. Scale: with e = γE[h|I], ν = γVar[h|I] − 1
    on the batch, γ_new = [(1 + ν̄) + √((1 + ν̄)² + 4Var(e))]/2 solves Var_data(h) = 1 when h
    scales as 1/γ; γ moves there by a damped step `rate`, never dropping > 25 %, floor 0.05.
    """
    mean_input = data_mean @ model.weights
    model.theta += (mean_input - mean_input_prev).astype(model.dtype)
    e = model.gamma * mean_pos
    nu = model.gamma * var_pos - 1.0
    a = 1.0 + nu.mean(axis=0)
    target = 0.5 * (a + np.sqrt(a * a + 4.0 * e.var(axis=0)))
    new = (1 - rate) * model.gamma + rate * target
    model.gamma[:] = np.maximum(np.maximum(new, 0.75 * model.gamma), 0.05)
    return mean_input


def variance_constraint(i_pos: np.ndarray, gamma, theta, delta, eta) -> np.ndarray:
    """G per unit: mean_b Var[h|I_b] + Var_b E[h|I_b] − 1 (float64), the data variance of h − 1."""
    hidden = drelu_params(gamma, theta, delta, eta)
    mean, var = drelu_moments(np.asarray(i_pos, np.float64), *hidden)
    return var.mean(axis=0) + mean.var(axis=0) - 1.0


def _hidden(model) -> tuple[np.ndarray, ...]:
    names = ("gamma", "theta", "delta", "eta")
    return tuple(np.asarray(getattr(model, k), np.float64) for k in names)


def constraint_derivatives(model, i_pos: np.ndarray) -> dict[str, np.ndarray]:
    """∂G/∂γ, ∂G/∂θ, ∂G/∂δ, ∂G/∂η (M each) and ∂G/∂I (B×M) at the model's parameters."""
    i = np.asarray(i_pos, np.float64)
    g, t, d, e = _hidden(model)
    hp = drelu_params(g, t, d, e)
    mean, var = drelu_moments(i, *hp)
    step = _REL_STEP * (1.0 + np.abs(i))
    var_up = drelu_moments(i + step, *hp)[1]
    var_dn = drelu_moments(i - step, *hp)[1]
    b = i.shape[0]
    d_input = ((var_up - var_dn) / (2 * step) + 2.0 * (mean - mean.mean(axis=0)) * var) / b
    out = {"input": d_input, "theta": -d_input.sum(axis=0)}
    params = {"gamma": g, "theta": t, "delta": d, "eta": e}
    for name in ("gamma", "delta", "eta"):
        h = _REL_STEP * (1.0 + np.abs(params[name]))
        up = dict(params, **{name: params[name] + h})
        dn = dict(params, **{name: params[name] - h})
        out[name] = (variance_constraint(i, **up) - variance_constraint(i, **dn)) / (2 * h)
    return out


def correct_gradients(model, i_pos, grads: dict, data_mean: np.ndarray, div_pos: float):
    """Add the normalization terms to `grads` (θ, δ, η in place; needs grads["gamma"]).

    Returns (h_extra, rank_one): h_extra (B×M) is added to the data-phase E[h|v] rows of the
    weight gradient Σ_b v_bi h_b/div_pos (it carries ∂L/∂γ·dγ*/dw), and rank_one = (⟨v⟩, ∂L/∂θ)
    is the centring term u_i c_μ."""
    dg = constraint_derivatives(model, i_pos)
    denom = np.where(np.abs(dg["gamma"]) > 1e-12, dg["gamma"], -1e-12)
    g_gamma = np.asarray(grads["gamma"], np.float64)
    for name in ("theta", "delta", "eta"):
        grads[name] = (grads[name] - g_gamma * dg[name] / denom).astype(grads[name].dtype)
    h_extra = (-div_pos * g_gamma / denom) * dg["input"]
    dt = model.dtype
    return h_extra.astype(dt), (np.asarray(data_mean, dt), grads["theta"].astype(dt))
