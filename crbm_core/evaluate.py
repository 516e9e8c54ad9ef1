"""Model statistics for evaluation (METHODS §5): the sampling protocol and pairwise moments.

Pairwise statistics of a cRBM are computed Rao-Blackwellized: given h the neurons are
independent, so ⟨v_i v_j⟩ = E_h[p_i(h) p_j(h)] (i ≠ j) with p(h) = σ(g + W h). Averaging the
smooth p_i p_j over samples of h instead of the binary v_i v_j removes the Bernoulli noise of the
visible draw, which dominates for neurons firing a few % of the time.
"""

from __future__ import annotations

import numpy as np

from .model import CRBM


def model_samples(
    model: CRBM,
    data: np.ndarray,
    rng: np.random.Generator,
    n_chains: int = 300,
    burn_in: int = 100,
    n_saved: int = 50,
    spacing: int = 20,
) -> np.ndarray:
    """The paper's protocol: chains started from random data frames, `burn_in` Gibbs sweeps,
    then `n_saved` configurations per chain `spacing` sweeps apart ((n_saved·n_chains)×N uint8)."""
    v = np.ascontiguousarray(data[rng.choice(data.shape[0], size=n_chains)], dtype=np.uint8)
    v = model.gibbs(v, burn_in, rng)
    saved = []
    for _ in range(n_saved):
        v = model.gibbs(v, spacing, rng)
        saved.append(v)
    return np.concatenate(saved)


def connected_correlations(
    model: CRBM, v: np.ndarray, rng: np.random.Generator, neurons: np.ndarray | None = None
) -> np.ndarray:
    """⟨v_i v_j⟩ − ⟨v_i⟩⟨v_j⟩ for i < j (upper triangle, row-major) of the chosen neurons,
    Rao-Blackwellized over h ~ P(h | v) at the given visible samples `v` (from `model`)."""
    p = model.mean_visible(model.sample_hidden(v, rng))
    return _upper_covariance(p if neurons is None else p[:, neurons])


def data_connected_correlations(v: np.ndarray, neurons: np.ndarray | None = None) -> np.ndarray:
    """The same statistic from binary frames (T×N), for comparison with a model's."""
    return _upper_covariance(v if neurons is None else v[:, neurons])


def _upper_covariance(x: np.ndarray) -> np.ndarray:
    """Covariance of the columns of x (rows = samples), upper triangle without the diagonal."""
    x = x.astype(np.float64)
    mean = x.mean(axis=0)
    cov = x.T @ x / x.shape[0] - np.outer(mean, mean)
    return cov[np.triu_indices(mean.size, 1)]
