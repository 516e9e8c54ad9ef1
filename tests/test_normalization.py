"""The normalization's gradient correction (crbm_core.normalization), by exact enumeration.

With normalization the free parameters are (θ', δ, η, W): γ is the root of the batch-variance
constraint G = 0 and θ = θ' + Wᵀ⟨v⟩. On a tiny model (N = 8, M = 3, all 256 states enumerated)
the corrected gradient must equal finite differences of the exact log-likelihood of that
composed function, with γ re-solved by a root finder at every evaluation: an independent check of
the implicit derivatives, the centring term and the fused weight step that applies them.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import brentq

from crbm_core.model import CRBM
from crbm_core.normalization import constraint_derivatives, variance_constraint
from crbm_core.train import gradients

CFG = {"l1": 0.0, "l1_warmup": 0.0, "n_updates": 1, "regularization": "l1"}
STATES = np.array(list(itertools.product((0, 1), repeat=8)), dtype=np.uint8)


def solve_gamma(model: CRBM, v_pos: np.ndarray) -> np.ndarray:
    """γ* per unit: the root of G(γ) = 0 on the batch (G falls monotonically with γ)."""
    i_pos = v_pos.astype(np.float64) @ model.weights
    out = np.empty(model.n_hidden)
    for mu in range(model.n_hidden):

        def g(log_gamma, mu=mu):
            gamma = model.gamma.copy()
            gamma[mu] = np.exp(log_gamma)
            return variance_constraint(i_pos, gamma, model.theta, model.delta, model.eta)[mu]

        out[mu] = np.exp(brentq(g, np.log(0.06), np.log(200.0), xtol=1e-14, rtol=1e-14))
    return out


def loglik(model: CRBM, v_pos: np.ndarray) -> float:
    neg_f = -model.free_energy(STATES)
    return float(np.mean(-model.free_energy(v_pos)) - np.logaddexp.reduce(neg_f))


def composed_loglik(model: CRBM, v_pos: np.ndarray, name: str, index, step: float) -> float:
    """Log-likelihood after moving one free parameter, θ following W and γ re-solved."""
    m = model.copy()
    if name == "weights":
        i, mu = index
        m.weights[i, mu] += step
        m.theta[mu] += step * v_pos[:, i].mean()  # θ = θ' + Wᵀ⟨v⟩
    else:
        getattr(m, name)[index] += step
    m.gamma[:] = solve_gamma(m, v_pos)
    return loglik(m, v_pos)


@pytest.fixture(scope="module")
def normalized():
    rng = np.random.default_rng(21)
    n, m = 8, 3
    model = CRBM(
        rng.normal(0.0, 0.7, (n, m)),
        rng.normal(-1.0, 0.5, n),
        np.ones(m),
        np.array([0.3, -0.4, 0.1]),
        np.array([-0.8, 0.6, 0.2]),
        np.array([0.3, -0.4, 0.0]),
    )
    v_pos = (rng.random((300, n)) < 0.3).astype(np.uint8)
    model.gamma[:] = solve_gamma(model, v_pos)
    return model, v_pos


def test_gamma_is_at_the_root(normalized):
    model, v_pos = normalized
    g = variance_constraint(v_pos @ model.weights, model.gamma, model.theta, model.delta, model.eta)
    assert np.abs(g).max() < 1e-10
    assert np.all(model.gamma > 0.1)  # away from the floors, where G is smooth


def test_constraint_derivatives_match_finite_differences(normalized):
    model, v_pos = normalized
    i_pos = v_pos @ model.weights
    d = constraint_derivatives(model, i_pos)
    h = 1e-5
    hidden = {k: getattr(model, k) for k in ("gamma", "theta", "delta", "eta")}
    for name in hidden:
        up = dict(hidden, **{name: hidden[name] + h})
        dn = dict(hidden, **{name: hidden[name] - h})
        fd = (variance_constraint(i_pos, **up) - variance_constraint(i_pos, **dn)) / (2 * h)
        np.testing.assert_allclose(d[name], fd, rtol=1e-6, atol=1e-8, err_msg=name)
    for b in (0, 7, 123):  # ∂G/∂I_b: move one frame's input
        i_up, i_dn = i_pos.copy(), i_pos.copy()
        i_up[b] += h
        i_dn[b] -= h
        fd = (variance_constraint(i_up, **hidden) - variance_constraint(i_dn, **hidden)) / (2 * h)
        np.testing.assert_allclose(d["input"][b], fd, rtol=1e-5, atol=1e-9)


def test_corrected_gradient_is_the_gradient_of_the_normalized_likelihood(normalized):
    model, v_pos = normalized
    p = np.exp(-model.free_energy(STATES) - np.logaddexp.reduce(-model.free_energy(STATES)))
    cfg = dict(CFG, bn_correction=True)
    g = gradients(model, v_pos, STATES, cfg, neg_weights=p)[0]
    plain = gradients(model, v_pos, STATES, CFG, neg_weights=p)[0]
    h = 1e-5
    checks = [(k, mu) for k in ("theta", "delta", "eta") for mu in range(3)]
    checks += [("weights", (i, mu)) for i in (0, 3, 7) for mu in range(3)]
    differs = 0.0
    for name, idx in checks:
        up = composed_loglik(model, v_pos, name, idx, h)
        fd = (up - composed_loglik(model, v_pos, name, idx, -h)) / (2 * h)
        assert abs(g[name][idx] - fd) < 2e-6 * max(1.0, abs(fd)), (name, idx, g[name][idx], fd)
        differs = max(differs, abs(plain[name][idx] - fd))
    assert differs > 1e-2  # the correction is not negligible here: the check has power


def test_fused_step_applies_the_correction(normalized):
    """The training step's fused weight update uses the corrected gradient: one RMSprop step
    from zero moments with tiny lr moves each weight by lr·sign(grad)."""
    from crbm_core.optim import weight_step
    from crbm_core.train import _corrected_positive_phase, _phase_gradients

    model, v_pos = normalized
    v_neg = STATES[::5]
    cfg = dict(CFG, bn_correction=True)
    want = gradients(model, v_pos, v_neg, cfg)[0]["weights"]
    i_pos = model.hidden_input(v_pos)
    grads, mean_pos, _, (h_neg, div_neg) = _phase_gradients(
        model, v_pos, i_pos, v_neg, model.hidden_input(v_neg), None
    )
    h_pos, rank_one = _corrected_positive_phase(model, v_pos, i_pos, mean_pos, grads, cfg, None)
    w = model.weights.copy()
    mom = np.zeros_like(w)
    weight_step(
        w, mom, v_pos, h_pos, v_pos.shape[0], v_neg, h_neg, div_neg, reg="l1", lam=0.0,
        clip=0.0, beta2=0.5, lr=1e-9, t=1, eps=0.0, rank_one=rank_one,
    )  # fmt: skip
    np.testing.assert_allclose(mom, 0.5 * want**2, rtol=1e-10)
    np.testing.assert_allclose((w - model.weights) / 1e-9, np.sign(want), atol=1e-6)
