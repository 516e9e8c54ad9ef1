"""Assemblies of a cRBM (METHODS §6): membership, sizes, strongest unit, regional occupancy.

An assembly is the set of neurons a hidden unit (HU) is strongly connected to. Everything here is
a pure function of the N×M weight matrix (a `CRBM` or an array) and, for the anatomy, of the
per-neuron region labels (−1 = unlabelled). Nothing is N×N; the largest temporary is |W|.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .errors import ParameterError

# Paper thresholds on |w_iμ|: the views draw assemblies at 0.1–0.15, size statistics use 0.01.
VIEW_THRESHOLD = 0.1
SIZE_THRESHOLD = 0.01


# --------------------------------------------------------------------------------------------
# validation


def as_weights(weights) -> np.ndarray:
    """The N×M weight matrix of a `CRBM` (anything with `.weights`) or of an array, checked."""
    w = np.asarray(getattr(weights, "weights", weights))
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise ParameterError(f"weights have shape {w.shape}; expected a non-empty N×M matrix")
    if not np.issubdtype(w.dtype, np.number) or np.issubdtype(w.dtype, np.complexfloating):
        raise ParameterError(f"weights have dtype {w.dtype}; expected real numbers")
    if not np.all(np.isfinite(w)):
        raise ParameterError("weights contain NaN or inf")
    return w


def _threshold(threshold: float) -> float:
    thr = float(threshold)
    if not np.isfinite(thr) or thr < 0:
        raise ParameterError(f"threshold {threshold}: must be a finite number ≥ 0")
    return thr


def _labels(labels, n_neurons: int | None, n_regions: int | None) -> tuple[np.ndarray, int]:
    lab = np.asarray(labels)
    if lab.ndim != 1 or (n_neurons is not None and lab.shape[0] != n_neurons):
        expected = f"({n_neurons},)" if n_neurons is not None else "(N,)"
        raise ParameterError(
            f"region labels have shape {lab.shape}; expected {expected}, one per neuron"
        )
    if not np.issubdtype(lab.dtype, np.integer):
        raise ParameterError(f"region labels have dtype {lab.dtype}; expected integers")
    lab = lab.astype(np.int64)
    if n_regions is None:
        from .atlas import N_REGIONS

        n_regions = N_REGIONS
    if int(n_regions) < 1:
        raise ParameterError(f"n_regions {n_regions}: must be ≥ 1")
    n_regions = int(n_regions)
    bad = (lab < -1) | (lab >= n_regions)
    if bad.any():
        i = int(np.argmax(bad))
        raise ParameterError(
            f"region label {lab[i]} of neuron {i} is unknown: labels must be −1 (unlabelled) "
            f"or 0..{n_regions - 1}"
        )
    return lab, n_regions


# --------------------------------------------------------------------------------------------
# membership


def membership(weights, threshold: float = VIEW_THRESHOLD) -> np.ndarray:
    """N×M boolean: neuron i belongs to assembly μ when |w_iμ| > threshold."""
    return np.abs(as_weights(weights)) > _threshold(threshold)


def assembly_sizes(weights, threshold: float = SIZE_THRESHOLD) -> np.ndarray:
    """Neurons per assembly (M ints) at `threshold` (the paper's size statistics use 0.01)."""
    return membership(weights, threshold).sum(axis=0)


def strongest_hu(weights, threshold: float = SIZE_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """(hu, strength): each neuron's argmax_μ |w_iμ| and that |w|; hu = −1 where the strongest
    |w| is not above `threshold` (the neuron is in no assembly, so a brain map leaves it grey)."""
    a = np.abs(as_weights(weights))
    thr = _threshold(threshold)
    hu = np.argmax(a, axis=1)
    strength = a[np.arange(a.shape[0]), hu]
    return np.where(strength > thr, hu, -1), strength


# --------------------------------------------------------------------------------------------
# anatomy


def region_matrix(labels, n_regions: int | None = None) -> sp.csr_matrix:
    """L (N×R, sparse): L_ir = 1/N_r if neuron i lies in region r, else 0.

    Normalized per region so that |w_μ|·L is the mean |w| over a region's neurons: big regions
    do not look occupied just because they hold many weakly connected neurons. Unlabelled
    neurons (−1) have an empty row and empty regions an empty column."""
    lab, r = _labels(labels, None, n_regions)
    keep = np.flatnonzero(lab >= 0)
    counts = np.bincount(lab[keep], minlength=r)
    vals = 1.0 / counts[lab[keep]]
    return sp.csr_matrix((vals, (keep, lab[keep])), shape=(lab.size, r))


def regional_occupancy(
    weights, labels, n_regions: int | None = None, threshold: float | None = None
) -> np.ndarray:
    """M×R: occupancy of region r by assembly μ, (|w_μ|·L)_r = mean |w_iμ| over i in r.

    As in the paper no threshold is applied by default (the participation ratio measures spread
    without one); with `threshold`, weights |w| ≤ threshold count as 0. Empty regions get 0."""
    w = as_weights(weights)
    a = np.abs(w).astype(np.float64)
    if threshold is not None:
        a[a <= _threshold(threshold)] = 0.0
    lab, r = _labels(labels, w.shape[0], n_regions)
    return np.asarray((region_matrix(lab, r).T @ a).T)


def participation_ratio(x, axis: int = -1) -> np.ndarray:
    """PR(x) = (Σ x²)² / (n Σ x⁴) along `axis`: 1/n for one nonzero entry, 1 for n equal ones.

    An all-zero vector has no occupied entry: its PR is 0 (not 0/0)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or x.shape[axis] == 0:
        raise ParameterError("participation ratio of an empty vector")
    if not np.all(np.isfinite(x)):
        raise ParameterError("participation ratio of a vector with NaN or inf")
    # scale by the max |x| first: x⁴ of small weights (1e-80…) would underflow to 0
    peak = np.max(np.abs(x), axis=axis, keepdims=True)
    y = x / np.where(peak > 0, peak, 1.0)
    s2 = np.sum(y * y, axis=axis)
    s4 = np.sum(y**4, axis=axis)
    n = x.shape[axis]
    return np.where(s4 > 0, s2 * s2 / (n * np.where(s4 > 0, s4, 1.0)), 0.0)


def effective_regions(
    weights, labels, n_regions: int | None = None, threshold: float | None = None
) -> np.ndarray:
    """Effective number of regions of each assembly, PR(occupancy)·R (M values, 0 for an
    assembly with no weight on labelled neurons). PR·R = (Σx²)²/Σx⁴, so empty regions, whose
    occupancy is 0, do not change it."""
    occ = regional_occupancy(weights, labels, n_regions, threshold)
    return participation_ratio(occ, axis=1) * occ.shape[1]


def _quartiles(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"median": float("nan"), "q25": float("nan"), "q75": float("nan")}
    q25, med, q75 = np.percentile(x, [25, 50, 75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75)}


def assembly_summary(
    weights, labels, n_regions: int | None = None, threshold: float = SIZE_THRESHOLD
) -> dict[str, float]:
    """The paper's headline figures: median and IQR of regions per assembly (paper: 3, 2–6) and
    of assembly size at `threshold`, over assemblies with at least one member; plus how many
    HUs have no member and the fraction of neurons in at least one assembly (paper: 93–94 %)."""
    w = as_weights(weights)
    member = membership(w, threshold)
    sizes = member.sum(axis=0)
    used = sizes > 0
    eff = effective_regions(w, labels, n_regions)[used]
    out = {"n_assemblies": int(w.shape[1]), "n_without_members": int((~used).sum())}
    out |= {f"regions_{k}": v for k, v in _quartiles(eff).items()}
    out |= {f"size_{k}": v for k, v in _quartiles(sizes[used].astype(np.float64)).items()}
    out["embedded_fraction"] = float(member.any(axis=1).mean())
    out["threshold"] = float(threshold)
    return out
