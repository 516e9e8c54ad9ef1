"""Baselines the cRBM is compared with (METHODS §8): PCA weights and a logistic-regression GLM.

PCA with M components gives the non-sparse weight matrix of the sparsity and regional-occupancy
comparisons (paper Figure 2I–K). The GLM predicts each neuron of a subset from all other neurons
at the same frame (L2 logistic regression, scikit-learn), the fully connected reference of the
reconstruction quality (paper Figure 2H: median nLLH 0.20 against the cRBM's 0.24).

Neither builds an N×N matrix: PCA is an SVD of the frames (exact when T·N is small, otherwise a
randomized SVD of the implicitly centred sparse spike matrix), and the GLM regresses on the sparse
spike matrix.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .errors import ParameterError
from .evaluate import P_EPS, independent_llh, normalized_llh
from .recording import check_binary_block

EXACT_MAX_ELEMENTS = 20_000_000  # T·N up to which PCA is an exact dense SVD (160 MB of float64)
GLM_C = 1e-3  # scikit-learn's C = 1/λ_GLM with the paper's λ_GLM = 1000


def _binary(data, what: str) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 2:
        raise ParameterError(f"{what} must be frames × neurons (≥ 2 of each), got {data.shape}")
    return check_binary_block(data, what)


def _sparse(data: np.ndarray) -> sp.csr_matrix:
    """Binary frames as a float64 CSR matrix, built a block of frames at a time."""
    blocks = [sp.csr_matrix(data[t0 : t0 + 1024]) for t0 in range(0, data.shape[0], 1024)]
    return sp.vstack(blocks, format="csr").astype(np.float64)


# --------------------------------------------------------------------------------------------
# PCA


@dataclass
class PCAResult:
    """weights: N×M orthonormal principal axes (each signed so that Σ_i w_iμ ≥ 0, like the cRBM's
    sign swap); explained_variance: variance of the data along each (ddof 1), decreasing;
    explained_variance_ratio: its share of the total variance Σ_i Var(v_i); mean: ⟨v⟩."""

    weights: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    mean: np.ndarray
    method: str


def pca(
    data: np.ndarray,
    n_components: int,
    method: str = "auto",
    seed: int = 0,
    n_iter: int = 7,
    oversample: int = 20,
) -> PCAResult:
    """The first `n_components` principal axes of binary frames `data` (T×N).

    method "exact": dense SVD of the centred frames; "randomized": Halko et al. (2011) range
    finder with `n_iter` power iterations on X − 1⟨v⟩ᵀ applied implicitly to the sparse spikes
    (memory O(nnz + (T + N)·(M + oversample))); "auto": exact when T·N ≤ EXACT_MAX_ELEMENTS."""
    x = _binary(data, "data")
    t, n = x.shape
    m = int(n_components)
    if not 1 <= m <= min(t, n):
        raise ParameterError(f"n_components {n_components}: must be between 1 and {min(t, n)}")
    if method == "auto":
        method = "exact" if t * n <= EXACT_MAX_ELEMENTS else "randomized"
    mean = x.mean(axis=0, dtype=np.float64)
    if method == "exact":
        xc = x.astype(np.float64) - mean
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
        total = float(np.sum(xc**2)) / (t - 1)
    elif method == "randomized":
        s, vt = _randomized_svd(_sparse(x), mean, m, seed, n_iter, oversample)
        total = float(np.sum(x.var(axis=0, ddof=1, dtype=np.float64)))
    else:
        raise ParameterError(f"PCA method {method!r}: not one of auto, exact, randomized")
    w = vt[:m].T.copy()
    w *= np.where(w.sum(axis=0) < 0, -1.0, 1.0)
    var = s[:m] ** 2 / (t - 1)
    return PCAResult(w, var, var / total if total > 0 else np.zeros(m), mean, method)


def _randomized_svd(x: sp.csr_matrix, mean: np.ndarray, m: int, seed, n_iter, oversample):
    """Top singular values and right vectors of A = X − 1 meanᵀ without forming A."""
    t, n = x.shape
    ones = np.ones(t)
    xt = x.T.tocsr()

    def a_dot(b):  # A b
        return x @ b - np.outer(ones, mean @ b)

    def at_dot(c):  # Aᵀ c
        return xt @ c - np.outer(mean, ones @ c)

    k = min(m + oversample, min(t, n))
    q, _ = np.linalg.qr(a_dot(np.random.default_rng(seed).standard_normal((n, k))))
    for _ in range(n_iter):
        z, _ = np.linalg.qr(at_dot(q))
        q, _ = np.linalg.qr(a_dot(z))
    _, s, vt = np.linalg.svd(at_dot(q).T, full_matrices=False)
    return s, vt


# --------------------------------------------------------------------------------------------
# GLM


@dataclass
class GLMResult:
    """Reconstruction of each neuron of `neurons` from all others (test frames).

    fitted[k] is False for a neuron constant over the training frames (nothing to regress):
    it is predicted by the independent model, so its nLLH is 0."""

    neurons: np.ndarray
    llh: np.ndarray
    llh_indep: np.ndarray
    nllh: np.ndarray
    fitted: np.ndarray
    median_nllh: float
    C: float

    def to_dict(self) -> dict:
        return {
            "neurons": self.neurons.tolist(),
            "llh": self.llh.tolist(),
            "llh_indep": self.llh_indep.tolist(),
            "nllh": self.nllh.tolist(),
            "fitted": self.fitted.tolist(),
            "median_nllh": float(self.median_nllh),
            "C": float(self.C),
        }


def glm_neurons(n_neurons: int, n_subset: int, seed: int = 0) -> np.ndarray:
    """A random neuron subset (sorted, numpy.random.default_rng(seed)), or all if fewer."""
    if n_subset < 1:
        raise ParameterError(f"n_subset {n_subset}: must be at least 1")
    if n_neurons <= n_subset:
        return np.arange(n_neurons)
    return np.sort(np.random.default_rng(seed).choice(n_neurons, size=n_subset, replace=False))


def glm_reconstruction(
    train: np.ndarray,
    test: np.ndarray,
    neurons: np.ndarray | None = None,
    n_subset: int = 1000,
    C: float = GLM_C,
    seed: int = 0,
    max_iter: int = 500,
) -> GLMResult:
    """L2 logistic regression of each chosen neuron on all other neurons (same frame), fitted on
    `train`, scored on `test` with the cRBM's nLLH (independent model p = ⟨v_i⟩_train).

    neurons: indices to reconstruct; default `glm_neurons(N, n_subset, seed)` (the paper used
    10 % of ~50k neurons; each fit costs O(nnz · iterations), so the subset sets the time).
    C: scikit-learn's inverse penalty, 1/λ_GLM (paper λ_GLM = 1000)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    train = _binary(train, "training data")
    test = _binary(test, "test data")
    if train.shape[1] != test.shape[1]:
        raise ParameterError(
            f"training data has {train.shape[1]} neurons, test data {test.shape[1]}"
        )
    if not (math.isfinite(C) and C > 0):
        raise ParameterError(f"C {C}: must be a positive number")
    n = train.shape[1]
    if neurons is None:
        neurons = glm_neurons(n, n_subset, seed)
    neurons = np.asarray(neurons, dtype=np.int64)
    if neurons.ndim != 1 or neurons.size == 0 or neurons.min() < 0 or neurons.max() >= n:
        raise ParameterError(f"neurons must be a non-empty list of indices in 0..{n - 1}")
    xtr, xte = _sparse(train), _sparse(test)
    p_train = train.mean(axis=0, dtype=np.float64)
    llh = np.empty(neurons.size)
    fitted = np.zeros(neurons.size, dtype=bool)
    for k, i in enumerate(neurons):
        y = train[:, i]
        if y.min() == y.max():
            p = np.full(test.shape[0], np.clip(p_train[i], P_EPS, 1 - P_EPS))
        else:
            clf = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(_without_column(xtr, i), y)
            p = clf.predict_proba(_without_column(xte, i))[:, 1]
            fitted[k] = True
        v = test[:, i]
        p = np.clip(p, 1e-12, 1 - 1e-12)
        llh[k] = np.mean(v * np.log(p) + (1 - v) * np.log1p(-p))
    indep = independent_llh(test[:, neurons], p_train[neurons])
    nl = normalized_llh(llh, indep)
    nl[~fitted] = 0.0
    return GLMResult(neurons, llh, indep, nl, fitted, float(np.median(nl)), float(C))


def _without_column(x: sp.csr_matrix, i: int) -> sp.csr_matrix:
    """x with column i zeroed (the neuron must not predict itself); shares the index arrays."""
    data = x.data.copy()
    data[x.indices == i] = 0.0
    return sp.csr_matrix((data, x.indices, x.indptr), shape=x.shape)
