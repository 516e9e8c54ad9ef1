"""Region-level functional connectivity (METHODS §7) computed without an N×N matrix.

FC_ab = mean over i ∈ a, j ∈ b, i ≠ j of |J_ij| with J_ij = Σ_μ w_iμ w_jμ v_μ (v_μ: the HU's
variance, or for planted assemblies the variance of their activity). The |·| defeats a low-rank
shortcut, so J is formed a block of rows at a time.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def region_mean_abs_coupling(
    weights, hu_variance: np.ndarray, labels: np.ndarray, n_regions: int, block: int = 4096
) -> np.ndarray:
    """FC_ab = mean_{i∈a, j∈b, i≠j} |Σ_μ w_iμ w_jμ var_μ|, for sparse or dense N×M weights.

    Exact. With sparse weights (planted assemblies) the cost is the number of nonzero couplings;
    dense weights cost N²·M flops in blocks of `block` rows (memory block × N). Regions with fewer
    than two neurons in a pair get NaN.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    a = sp.csr_matrix(weights, dtype=np.float64) @ sp.diags(
        np.sqrt(np.asarray(hu_variance, dtype=np.float64))
    )
    a = sp.csr_matrix(a)
    keep = labels >= 0
    member = sp.csr_matrix(
        (np.ones(keep.sum()), (np.flatnonzero(keep), labels[keep])), shape=(n, n_regions)
    )
    dense = a.nnz > 0.2 * a.shape[0] * a.shape[1]
    sums = np.zeros((n_regions, n_regions))
    at = a.T.tocsc()
    ad = a.toarray() if dense else None
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        if dense:
            j = np.abs(ad[i0:i1] @ ad.T)
            j[np.arange(i1 - i0), np.arange(i0, i1)] = 0.0  # i ≠ j
            sums += member[i0:i1].T @ (j @ member)
        else:
            j = abs(a[i0:i1] @ at).tocsr()
            j.setdiag(0.0, k=i0)  # the diagonal of this row block sits at column offset i0
            sums += (member[i0:i1].T @ j @ member).toarray()
    counts = np.bincount(labels[keep], minlength=n_regions).astype(np.float64)
    pairs = np.outer(counts, counts) - np.diag(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, sums / np.where(pairs > 0, pairs, 1), np.nan)
