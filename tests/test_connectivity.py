"""Region-level coupling without an N×N matrix equals the brute-force N×N computation."""

import numpy as np
import pytest
import scipy.sparse as sp

from crbm_core.connectivity import region_mean_abs_coupling


def _brute(w, var, labels, r):
    j = np.abs((w * var) @ w.T)
    np.fill_diagonal(j, np.nan)
    out = np.full((r, r), np.nan)
    for a in range(r):
        for b in range(r):
            block = j[np.ix_(labels == a, labels == b)]
            if np.isfinite(block).any():
                out[a, b] = np.nanmean(block)
    return out


@pytest.mark.parametrize("density", [0.05, 1.0], ids=["sparse", "dense"])
def test_blocked_equals_brute_force(rng, density):
    n, m, r = 300, 7, 6
    w = rng.normal(size=(n, m)) * (rng.random((n, m)) < density)
    var = rng.uniform(0.2, 2.0, m)
    labels = rng.integers(-1, r, n)
    labels[labels == 5] = 4  # region 5 empty → NaN row and column
    got = region_mean_abs_coupling(sp.csr_matrix(w) if density < 1 else w, var, labels, r, block=64)
    np.testing.assert_allclose(got, _brute(w, var, labels, r), rtol=1e-10, equal_nan=True)
    assert np.isnan(got[5]).all()
