"""Region-level functional connectivity (METHODS §7–8) computed without an N×N matrix.

Generic coupling (paper Eq. 15): J_ij(v) is the log odds-ratio of neuron i firing when neuron j
is switched on versus off, the rest fixed at v. For the cRBM, with F(v) = −Σ g v − Σ_μ Γ_μ(I_μ(v))
and I⁰ the hidden input of v with v_i = v_j = 0,

    J_ij(v) = Σ_μ Γ_μ(I⁰_μ + w_iμ + w_jμ) − Γ_μ(I⁰_μ + w_iμ) − Γ_μ(I⁰_μ + w_jμ) + Γ_μ(I⁰_μ)

(`exact_coupling`), whose second-order expansion in w gives the fast approximation

    J_ij = Σ_μ w_iμ w_jμ ⟨Var(h_μ | v(t))⟩_t,   J_ii = 0.

The authors' code multiplies this by ½; we do not, so that J is the expansion of Eq. 15 itself
(tests check that it tracks `exact_coupling`). A constant factor shifts every log10 FC by the
same amount and changes none of the correlations and tests below.

Region FC: FC_ab = mean over i ∈ a, j ∈ b, i ≠ j of |J_ij|. The |·| defeats a low-rank
shortcut, so J is formed a square tile at a time (a float GEMM of two row blocks of
A = W·diag(√var)) and each tile is summed into region-pair sums at once: neurons are sorted by
region, so a tile row meets each region in one contiguous run. Only tiles on and above the
diagonal are formed (J is symmetric). Memory: the sorted A plus one tile per thread.

Baselines (METHODS §8): the covariance C_ij = ⟨v_i v_j⟩ − ⟨v_i⟩⟨v_j⟩ and the Pearson correlation
of the binary spikes, with the same aggregation. Spikes are sparse (2–5 %), so the coincidence
counts ⟨v_i v_j⟩·T come from neuron i's spike times (sums of rows of a block of frames): p× the
work of a dense T-deep GEMM for a firing probability p, in vectorized byte adds. (Scattering +1
into a count tile for each pair of co-active neurons is p× less work still, but scalar: 2×
slower, measured at N = 20,000, T = 5000.)

Specimen averaging, the bilateral region filter, FC vs SC statistics and the cross-fish
correlation of log FC complete §7.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
import scipy.stats
from numba import njit, prange

from . import atlas
from .errors import ParameterError
from .layers import drelu_cgf
from .model import CRBM, _blas_threads
from .recording import check_binary_block

__all__ = [
    "CrossFishCorrelation",
    "FcScComparison",
    "SpikeFC",
    "approx_coupling",
    "bilateral_regions",
    "compare_fc_sc",
    "correlation_fc",
    "covariance_fc",
    "crbm_region_fc",
    "cross_fish_correlation",
    "exact_coupling",
    "hidden_variance",
    "region_counts",
    "region_mean_abs_coupling",
    "specimen_average",
    "spike_fc",
]

TILE = 512  # rows/columns of a J tile (1 MB float32); 256–2048 measured within 30 % at N = 10⁴
SPIKE_BLOCK = 128  # neurons per dense spike block: T × 128 bytes (640 kB at T = 5000) in L2
BATCH = 1024  # frames per pass over the data
_SPARSE_ROWS = 4096  # rows per sparse product (sparse weights)


# --------------------------------------------------------------------------------------------
# input checks


def _check_labels(labels, n: int, n_regions: int) -> np.ndarray:
    if int(n_regions) < 1:
        raise ParameterError(f"n_regions must be at least 1, got {n_regions}")
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ParameterError(f"region labels have shape {labels.shape}; expected ({n},)")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ParameterError("region labels must be integers (−1 = unlabelled)")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < -1 or labels.max() >= n_regions):
        raise ParameterError(
            f"region labels must lie in −1..{n_regions - 1}, found {labels.min()}..{labels.max()}"
        )
    return labels


def _check_frames(frames, n: int | None, name: str = "frames"):
    """An array or `H5Spikes` of shape (T ≥ 1, n) (any n when n is None)."""
    if getattr(frames, "ndim", None) != 2:
        frames = np.asarray(frames)
    if frames.ndim != 2 or (n is not None and frames.shape[1] != n):
        want = f"(frames, {n})" if n is not None else "(frames, neurons)"
        raise ParameterError(f"{name} have shape {frames.shape}; expected {want}")
    if frames.shape[0] < 1:
        raise ParameterError(f"{name} are empty (0 frames)")
    return frames


def _frame_batches(frames, name: str, batch: int = BATCH):
    """Binary uint8 blocks of `frames` (an array or lazily read `H5Spikes`), checked."""
    if int(batch) < 1:
        raise ParameterError(f"batch must be at least 1 frame, got {batch}")
    for t0 in range(0, frames.shape[0], batch):
        block = np.asarray(frames[t0 : t0 + batch])
        yield check_binary_block(block, name, frame0=t0)


def _sorted_regions(labels: np.ndarray, n_regions: int):
    """(labelled neurons sorted by region, their labels, region starts in that order, counts)."""
    keep = np.flatnonzero(labels >= 0)
    order = keep[np.argsort(labels[keep], kind="stable")]
    lab = np.ascontiguousarray(labels[order])
    starts = np.searchsorted(lab, np.arange(n_regions + 1)).astype(np.int64)
    return order, lab, starts, np.diff(starts)


def _pair_mean(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """sums / (number of pairs i ∈ a, j ∈ b, i ≠ j); NaN where there is no such pair."""
    counts = counts.astype(np.float64)
    pairs = np.outer(counts, counts) - np.diag(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, sums / np.where(pairs > 0, pairs, 1), np.nan)


def region_counts(labels, n_regions: int = atlas.N_REGIONS) -> np.ndarray:
    """Neurons per region (unlabelled neurons, label −1, are not counted)."""
    labels = np.asarray(labels)
    labels = _check_labels(labels, labels.shape[0] if labels.ndim == 1 else -1, n_regions)
    return np.bincount(labels[labels >= 0], minlength=int(n_regions))


# --------------------------------------------------------------------------------------------
# kernels: |A Aᵀ| tiles into region-pair sums


@njit(cache=True, nogil=True, fastmath=True)
def _abs_tile_sums(t, i0, j0, lab, starts, diag, zero, sums):
    """sums[a, b] += Σ |t[r, c]| over the tile's rows of region a and columns of region b
    (and the mirrored sums[b, a] for a tile above the diagonal); the diagonal i = j is skipped."""
    nr, nc = t.shape
    if diag:
        for r in range(nr):
            t[r, r] = 0.0
    b_first, b_last = lab[j0], lab[j0 + nc - 1]
    for r in range(nr):
        a = lab[i0 + r]
        for b in range(b_first, b_last + 1):
            c0 = max(starts[b], j0) - j0
            c1 = min(starts[b + 1], j0 + nc) - j0
            acc = zero  # the tile's float type: float32 sums of at most `tile` terms
            for c in range(c0, c1):
                acc += abs(t[r, c])
            sums[a, b] += acc
            if not diag:
                sums[b, a] += acc


@njit(parallel=True, cache=True, nogil=True)
def _abs_gram_kernel(a, lab, starts, tile, zero, sums):
    """sums[w] (one R×R per worker) += region sums of |A Aᵀ| over the tiles (bi ≤ bj) that
    worker w takes in turn; tiles are equal, so the round robin balances the workers."""
    n = a.shape[0]
    nb = (n + tile - 1) // tile
    n_workers = sums.shape[0]
    for w in prange(n_workers):
        buf = np.empty(tile * tile, dtype=a.dtype)
        k = 0
        for bi in range(nb):
            i0, i1 = bi * tile, min(n, (bi + 1) * tile)
            for bj in range(bi, nb):
                if k % n_workers == w:
                    j0, j1 = bj * tile, min(n, (bj + 1) * tile)
                    t = buf[: (i1 - i0) * (j1 - j0)].reshape((i1 - i0, j1 - j0))
                    np.dot(a[i0:i1], a[j0:j1].T, t)
                    _abs_tile_sums(t, i0, j0, lab, starts, bi == bj, zero, sums[w])
                k += 1


def _dense_abs_gram_sums(a: np.ndarray, lab, starts, n_regions: int, tile: int) -> np.ndarray:
    sums = np.zeros((numba.get_num_threads(), n_regions, n_regions))
    if a.shape[0]:
        with _blas_threads().limit(limits=1, user_api="blas"):
            _abs_gram_kernel(a, lab, starts, int(tile), a.dtype.type(0), sums)
    return sums.sum(axis=0)


def region_mean_abs_coupling(
    weights, hu_variance: np.ndarray, labels: np.ndarray, n_regions: int, block: int = TILE
) -> np.ndarray:
    """FC_ab = mean_{i∈a, j∈b, i≠j} |Σ_μ w_iμ w_jμ var_μ|, for sparse or dense N×M weights.

    Exact. Dense weights: N²·M/2 multiply-adds in the weights' float type (float32 or float64)
    in `block`×`block` tiles; mostly zero weights (≤ 20 % nonzero, e.g. planted assemblies,
    scipy.sparse or not): sparse products in float64, cost the number of nonzero couplings.
    Unlabelled neurons (−1) are left out; region pairs with no neuron pair get NaN.
    """
    if sp.issparse(weights):
        shape, finite = weights.shape, np.all(np.isfinite(weights.data))
    else:
        weights = np.asarray(weights)
        shape = weights.shape
        finite = weights.dtype.kind == "f" and bool(np.all(np.isfinite(weights)))
    if len(shape) != 2 or not finite:
        raise ParameterError(f"weights must be a finite N×M float matrix, got shape {shape}")
    var = np.asarray(hu_variance, dtype=np.float64)
    if var.shape != (shape[1],) or not np.all(np.isfinite(var)) or np.any(var < 0):
        raise ParameterError(
            f"hu_variance must be {shape[1]} finite values ≥ 0, got shape {var.shape}"
        )
    if int(block) < 1:
        raise ParameterError(f"block must be at least 1, got {block}")
    labels = _check_labels(labels, shape[0], n_regions)
    order, lab, starts, counts = _sorted_regions(labels, int(n_regions))
    r = int(n_regions)
    nnz = weights.nnz if sp.issparse(weights) else np.count_nonzero(weights)
    if nnz <= 0.2 * shape[0] * shape[1]:
        a = sp.csr_matrix(weights, dtype=np.float64)[order] @ sp.diags(np.sqrt(var))
        sums = _sparse_abs_gram_sums(sp.csr_matrix(a), lab, r, _SPARSE_ROWS)
    else:
        w = weights.toarray() if sp.issparse(weights) else weights
        dtype = np.float64 if w.dtype == np.float64 else np.float32
        a = np.ascontiguousarray(w[order], dtype=dtype) * np.sqrt(var).astype(dtype)
        sums = _dense_abs_gram_sums(a, lab, starts, r, int(block))
    return _pair_mean(sums, counts)


def _sparse_abs_gram_sums(a: sp.csr_matrix, lab: np.ndarray, r: int, block: int) -> np.ndarray:
    """Region sums of |A Aᵀ| (i ≠ j) for sparse A: blocks of rows as sparse products."""
    n = a.shape[0]
    member = sp.csr_matrix((np.ones(n), (np.arange(n), lab)), shape=(n, r))
    at = a.T.tocsc()
    sums = np.zeros((r, r))
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        j = abs(a[i0:i1] @ at).tocsr()
        j.setdiag(0.0, k=i0)  # the diagonal of this row block sits at column offset i0
        sums += (member[i0:i1].T @ j @ member).toarray()
    return sums


# --------------------------------------------------------------------------------------------
# cRBM couplings


def hidden_variance(model: CRBM, frames, batch: int = BATCH) -> np.ndarray:
    """⟨Var(h_μ | v(t))⟩_t over data frames (M,), float64, a batch of frames at a time."""
    frames = _check_frames(frames, model.n_visible)
    total = np.zeros(model.n_hidden)
    for v in _frame_batches(frames, "frames", batch):
        total += model.var_hidden(v).sum(axis=0, dtype=np.float64)
    return total / frames.shape[0]


def crbm_region_fc(
    model: CRBM,
    frames,
    labels: np.ndarray,
    n_regions: int = atlas.N_REGIONS,
    *,
    hu_variance: np.ndarray | None = None,
    block: int = TILE,
) -> np.ndarray:
    """R×R cRBM functional connectivity FC_ab = mean_{i∈a, j∈b, i≠j} |J_ij| with
    J_ij = Σ_μ w_iμ w_jμ ⟨Var(h_μ|v(t))⟩_t (no ½; see the module docstring), no N×N matrix.

    `frames` (T×N binary, an array or `H5Spikes`) give the HU variances unless `hu_variance`
    is passed. The tiles run in the model's float type (float32 for trained models)."""
    var = hidden_variance(model, frames) if hu_variance is None else hu_variance
    return region_mean_abs_coupling(model.weights, var, labels, n_regions, block=block)


def _pairs(i, j, n: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.atleast_1d(np.asarray(i)), np.atleast_1d(np.asarray(j))
    if i.shape != j.shape or i.ndim != 1 or i.size == 0:
        raise ParameterError(f"pairs need two equal 1-D lists of neurons, got {i.shape}, {j.shape}")
    if not (np.issubdtype(i.dtype, np.integer) and np.issubdtype(j.dtype, np.integer)):
        raise ParameterError("neuron indices must be integers")
    if min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n:
        raise ParameterError(f"neuron indices must lie in 0..{n - 1}")
    if np.any(i == j):
        raise ParameterError("a coupling needs two different neurons (i ≠ j)")
    return i.astype(np.int64), j.astype(np.int64)


def approx_coupling(model: CRBM, hu_variance: np.ndarray, i, j) -> np.ndarray:
    """J_ij = Σ_μ w_iμ w_jμ var_μ for the pairs (i[k], j[k]) (float64)."""
    i, j = _pairs(i, j, model.n_visible)
    w = np.asarray(model.weights, dtype=np.float64)
    var = np.asarray(hu_variance, dtype=np.float64)
    if var.shape != (model.n_hidden,):
        raise ParameterError(f"hu_variance must have shape ({model.n_hidden},), got {var.shape}")
    return np.einsum("km,km,m->k", w[i], w[j], var)


def exact_coupling(model: CRBM, frames, i, j, batch: int = BATCH) -> np.ndarray:
    """Eq. 15 for the pairs (i[k], j[k]): ⟨J_ij(v)⟩ over the data frames, with

        J_ij(v) = Σ_μ Γ_μ(I⁰ + w_i + w_j) − Γ_μ(I⁰ + w_i) − Γ_μ(I⁰ + w_j) + Γ_μ(I⁰),

    I⁰ = I(v) − v_i w_i − v_j w_j (float64): log P(v_i=1|v_−i) − log P(v_i=0|v_−i) =
    g_i + Σ_μ Γ_μ(I⁰ + w_i + v_j w_j) − Γ_μ(I⁰ + v_j w_j), differenced between v_j = 1 and 0.
    Costs 4·T·M evaluations of Γ per pair (pairs are stacked into batches of ~10⁶ values)."""
    i, j = _pairs(i, j, model.n_visible)
    frames = _check_frames(frames, model.n_visible)
    m64 = CRBM(*(np.asarray(p, dtype=np.float64) for p in model.to_dict().values()))
    w = m64.weights
    hp = m64.hidden_params()
    total = np.zeros(i.size)
    for v in _frame_batches(frames, "frames", batch):
        inp = m64.hidden_input(v)
        step = max(1, 2**20 // inp.size)
        for k0 in range(0, i.size, step):
            a, b = i[k0 : k0 + step], j[k0 : k0 + step]
            wa, wb = w[a][:, None, :], w[b][:, None, :]
            i0 = inp[None] - v.T[a][:, :, None] * wa - v.T[b][:, :, None] * wb
            terms = (
                drelu_cgf((i0 + wa + wb).reshape(-1, inp.shape[1]), *hp)
                - drelu_cgf((i0 + wa).reshape(-1, inp.shape[1]), *hp)
                - drelu_cgf((i0 + wb).reshape(-1, inp.shape[1]), *hp)
                + drelu_cgf(i0.reshape(-1, inp.shape[1]), *hp)
            )
            total[k0 : k0 + step] += terms.reshape(a.size, -1).sum(axis=1)
    return total / frames.shape[0]


# --------------------------------------------------------------------------------------------
# kernels: covariance and correlation of binary spikes


@njit(cache=True, nogil=True)
def _neuron_lists(rows, cols, n):
    """Spike times per neuron (CSR: times[ptr[j]:ptr[j + 1]], increasing) from (frame, neuron)
    pairs listed frame by frame."""
    ptr = np.zeros(n + 1, dtype=np.int64)
    for k in range(cols.size):
        ptr[cols[k] + 1] += 1
    for j in range(n):
        ptr[j + 1] += ptr[j]
    times = np.empty(cols.size, dtype=np.int32)
    fill = ptr[:-1].copy()
    for k in range(cols.size):
        j = cols[k]
        times[fill[j]] = rows[k]
        fill[j] += 1
    return ptr, times


@njit(cache=True, nogil=True, fastmath=True)
def _cov_row_sums(cnt, i, j0, lab, starts, mu, isd, inv_t, own, s_cov, s_cor):
    """Region sums of |C_ij| and |C_ij|/(σ_iσ_j) for neuron i and the columns j0… of a block,
    from the coincidence counts cnt[c] of i and j0 + c; isd = 1/σ (0 for a neuron that never
    or always fires: its correlation is undefined and left out). In its own block (i ≥ j0) the
    pair i = i is skipped and every pair is met from both of its rows; below it, each pair is
    met once and added for (a, b) and (b, a)."""
    a, mi, si = lab[i], mu[i], isd[i]
    nc = cnt.shape[0]
    for b in range(lab[j0], lab[j0 + nc - 1] + 1):
        c0 = max(starts[b], j0) - j0
        c1 = min(starts[b + 1], j0 + nc) - j0
        acc = 0.0
        acc_r = 0.0
        for c in range(c0, c1):
            x = abs(cnt[c] * inv_t - mi * mu[j0 + c])
            acc += x
            acc_r += x * isd[j0 + c]
        if own and c0 <= i - j0 < c1:
            x = abs(cnt[i - j0] * inv_t - mi * mi)
            acc -= x
            acc_r -= x * si
        s_cov[a, b] += acc
        s_cor[a, b] += acc_r * si
        if not own:
            s_cov[b, a] += acc
            s_cor[b, a] += acc_r * si


@njit(parallel=True, cache=True, nogil=True)
def _spike_cov_kernel(ptr, times, n_frames, lab, starts, mu, isd, inv_t, width, s_cov, s_cor):
    """Per block J of `width` columns (in turn per worker): its spikes as a dense frames ×
    width 0/1 array xj (in cache); then for every neuron i < end of J the coincidence counts
    with J are the sum of the rows of xj at i's spike times (a vectorized add of `width`
    bytes per spike), summed per region at once. Silent neurons contribute 0 and are skipped.
    uint16 counters are flushed into float64 every 65535 spikes."""
    n = lab.shape[0]
    nb = (n + width - 1) // width
    n_workers = s_cov.shape[0]
    for w in prange(n_workers):
        xj = np.zeros((n_frames, width), dtype=np.uint8)
        c16 = np.zeros(width, dtype=np.uint16)
        cnt = np.zeros(width)
        for bj in range(w, nb, n_workers):
            j0, j1 = bj * width, min(n, (bj + 1) * width)
            for j in range(j0, j1):
                for k in range(ptr[j], ptr[j + 1]):
                    xj[times[k], j - j0] = 1
            for i in range(j1):
                k0, k1 = ptr[i], ptr[i + 1]
                if k0 == k1:
                    continue
                cnt[:] = 0.0
                for s0 in range(k0, k1, 65535):
                    c16[:] = 0
                    for k in range(s0, min(k1, s0 + 65535)):
                        t = times[k]
                        for c in range(width):
                            c16[c] += xj[t, c]
                    for c in range(width):
                        cnt[c] += c16[c]
                _cov_row_sums(
                    cnt[: j1 - j0], i, j0, lab, starts, mu, isd, inv_t, i >= j0, s_cov[w], s_cor[w]
                )
            for j in range(j0, j1):
                for k in range(ptr[j], ptr[j + 1]):
                    xj[times[k], j - j0] = 0


@dataclass(frozen=True)
class SpikeFC:
    """Covariance and Pearson-correlation FC of binary spikes (R×R each, NaN = no pair).

    Correlation leaves out neurons that never (or always) fire: their correlation is undefined
    (np.corrcoef's NaN), and the mean is over the remaining pairs."""

    covariance: np.ndarray
    correlation: np.ndarray

    def to_dict(self) -> dict[str, np.ndarray]:
        return {"covariance": self.covariance, "correlation": self.correlation}


def spike_fc(
    spikes, labels: np.ndarray, n_regions: int = atlas.N_REGIONS, *, block: int = SPIKE_BLOCK
) -> SpikeFC:
    """FC_ab = mean_{i∈a, j∈b, i≠j} |C_ij| for the covariance C = ⟨vvᵀ⟩ − ⟨v⟩⟨v⟩ᵀ (1/T) and for
    the Pearson correlation of binary spikes (T×N, array or `H5Spikes`), without an N×N matrix.

    One pass over the frames lists each neuron's spike times (4 bytes per spike, neurons in
    region order); blocks of `block` neurons are then expanded to a dense frames × block 0/1
    array, and each neuron's coincidence counts with a block are sums of its rows. Cost:
    (spikes) × N/2 byte adds, vectorized; memory: the spike lists plus T × block bytes per
    thread."""
    spikes = _check_frames(spikes, None, "spikes")
    t, n = spikes.shape
    labels = _check_labels(labels, n, n_regions)
    if int(block) < 1:
        raise ParameterError(f"block must be at least 1, got {block}")
    r = int(n_regions)
    order, lab, starts, counts = _sorted_regions(labels, r)
    rows, cols = [], []
    for t0, v in zip(range(0, t, BATCH), _frame_batches(spikes, "spikes"), strict=True):
        fr, nr = np.nonzero(v[:, order])
        rows.append((fr + t0).astype(np.int32))
        cols.append(nr.astype(np.int32))
    ptr, times = _neuron_lists(np.concatenate(rows), np.concatenate(cols), order.size)
    mu = np.diff(ptr) / t
    sd = np.sqrt(mu * (1.0 - mu))
    live = sd > 0
    isd = np.where(live, 1.0 / np.where(live, sd, 1.0), 0.0)
    s_cov = np.zeros((numba.get_num_threads(), r, r))
    s_cor = np.zeros_like(s_cov)
    if order.size:
        _spike_cov_kernel(ptr, times, t, lab, starts, mu, isd, 1.0 / t, int(block), s_cov, s_cor)
    live_counts = np.bincount(lab[live], minlength=r)
    return SpikeFC(
        _pair_mean(s_cov.sum(axis=0), counts), _pair_mean(s_cor.sum(axis=0), live_counts)
    )


def covariance_fc(spikes, labels, n_regions: int = atlas.N_REGIONS, *, block: int = SPIKE_BLOCK):
    """Covariance FC of binary spikes (see `spike_fc`, which gives both baselines at once)."""
    return spike_fc(spikes, labels, n_regions, block=block).covariance


def correlation_fc(spikes, labels, n_regions: int = atlas.N_REGIONS, *, block: int = SPIKE_BLOCK):
    """Pearson-correlation FC of binary spikes (see `spike_fc`)."""
    return spike_fc(spikes, labels, n_regions, block=block).correlation


# --------------------------------------------------------------------------------------------
# across fish, and against structure


def _stack(fcs, name: str = "fcs") -> np.ndarray:
    fcs = np.asarray(fcs, dtype=np.float64)
    if fcs.ndim != 3 or fcs.shape[1] != fcs.shape[2] or fcs.shape[0] < 1:
        raise ParameterError(f"{name} must be one R×R matrix per fish, got shape {fcs.shape}")
    return fcs


def _counts(counts, shape: tuple[int, int]) -> np.ndarray:
    c = np.asarray(counts)
    if c.shape != shape or not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ParameterError(f"neuron counts must be {shape} values ≥ 0, got shape {c.shape}")
    return c.astype(np.float64)


def specimen_average(fcs, n_frames, counts) -> np.ndarray:
    """FC_ab = Σ_F w_F FC^F_ab / Σ_F w_F with w_F = T_F·(N_a^F + N_b^F) (METHODS §7).

    fcs: F×R×R; n_frames: F recording lengths; counts: F×R neurons per region. A fish whose
    FC_ab is not finite (it lacks the pair) does not count for that pair; NaN where no fish has
    it."""
    fcs = _stack(fcs)
    f, r = fcs.shape[:2]
    t = np.asarray(n_frames, dtype=np.float64)
    if t.shape != (f,) or not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise ParameterError(f"n_frames must be {f} lengths > 0, got {np.shape(n_frames)}")
    c = _counts(counts, (f, r))
    w = t[:, None, None] * (c[:, :, None] + c[:, None, :])
    ok = np.isfinite(fcs) & (w > 0)
    num = np.where(ok, w * np.where(ok, fcs, 0.0), 0.0).sum(axis=0)
    den = np.where(ok, w, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def bilateral_regions(counts, min_neurons: int = 5) -> np.ndarray:
    """Regions (of the 72) kept by the filter: ≥ `min_neurons` neurons in the region and in its
    contralateral twin — in every fish when counts is F×72."""
    c = np.asarray(counts)
    if c.ndim not in (1, 2) or c.shape[-1] != atlas.N_REGIONS:
        raise ParameterError(
            f"counts must be 72 neuron counts per fish (the atlas regions), got shape {c.shape}"
        )
    if int(min_neurons) < 0:
        raise ParameterError(f"min_neurons must be ≥ 0, got {min_neurons}")
    c = np.atleast_2d(_counts(c, c.shape))
    twin = np.array([atlas.contralateral(i) for i in range(atlas.N_REGIONS)])
    return np.all((c >= min_neurons) & (c[:, twin] >= min_neurons), axis=0)


def _upper(r: int, keep: np.ndarray | None, diagonal: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.triu_indices(r, 0 if diagonal else 1)
    if keep is not None:
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (r,):
            raise ParameterError(f"keep must be {r} booleans, got shape {keep.shape}")
        sel = keep[a] & keep[b]
        a, b = a[sel], b[sel]
    return a, b


def _log10(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(x)


def _correlatable(x: np.ndarray, y: np.ndarray) -> bool:
    """At least 3 pairs and neither side constant (else r is undefined: NaN, no warning)."""
    return x.size >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0


@dataclass(frozen=True)
class FcScComparison:
    """FC vs SC on log10 (region pairs of the upper triangle, SC = 0 excluded from r).

    pairs/log_fc/log_sc: the pairs used for the correlations; log_fc_sc_zero: log FC of the
    pairs with SC = 0 (the KS test compares it with log_fc)."""

    spearman_r: float
    spearman_p: float
    pearson_r: float
    pearson_p: float
    n_pairs: int
    ks_statistic: float
    ks_pvalue: float
    n_sc_zero: int
    pairs: np.ndarray
    log_fc: np.ndarray
    log_sc: np.ndarray
    log_fc_sc_zero: np.ndarray

    def to_dict(self) -> dict:
        scalars = (
            "spearman_r spearman_p pearson_r pearson_p ks_statistic ks_pvalue n_pairs n_sc_zero"
        )
        out = {k: getattr(self, k) for k in scalars.split()}
        out.update(
            pairs=self.pairs,
            log_fc=self.log_fc,
            log_sc=self.log_sc,
            log_fc_sc_zero=self.log_fc_sc_zero,
        )
        return out


def compare_fc_sc(fc, sc, keep=None, *, diagonal: bool = True) -> FcScComparison:
    """Spearman and Pearson r of log10 FC vs log10 SC over the upper triangle (with the diagonal
    unless `diagonal=False`) of the regions in `keep`, SC = 0 and non-finite log FC dropped;
    KS test (two-sided) of log FC for SC = 0 vs SC > 0 pairs. Statistics are NaN with fewer
    than 3 pairs or a constant side (correlations) or an empty group (KS).

    The shipped Kunst et al. SC has a 0 diagonal (undefined, not absent): its diagonal pairs
    then fall in the SC = 0 group of the KS test; `diagonal=False` leaves them out."""
    fc = np.asarray(fc, dtype=np.float64)
    sc = np.asarray(sc, dtype=np.float64)
    if fc.ndim != 2 or fc.shape[0] != fc.shape[1] or sc.shape != fc.shape:
        raise ParameterError(f"FC {fc.shape} and SC {sc.shape} must be the same square shape")
    if not np.all(np.isfinite(sc)) or np.any(sc < 0):
        raise ParameterError("SC must be finite and ≥ 0")
    a, b = _upper(fc.shape[0], keep, diagonal)
    lf = _log10(fc[a, b])
    finite = np.isfinite(lf)
    pos = finite & (sc[a, b] > 0)
    zero = finite & (sc[a, b] == 0)
    x, y = np.log10(sc[a, b][pos]), lf[pos]
    nan = float("nan")
    if _correlatable(x, y):
        s = scipy.stats.spearmanr(x, y)
        p = scipy.stats.pearsonr(x, y)
        stats = (float(s.statistic), float(s.pvalue), float(p.statistic), float(p.pvalue))
    else:
        stats = (nan, nan, nan, nan)
    if pos.any() and zero.any():
        ks = scipy.stats.ks_2samp(lf[zero], y)
        ks_stats = (float(ks.statistic), float(ks.pvalue))
    else:
        ks_stats = (nan, nan)
    return FcScComparison(
        *stats,
        int(pos.sum()),
        *ks_stats,
        int(zero.sum()),
        np.stack([a[pos], b[pos]], axis=1),
        y,
        x,
        lf[zero],
    )


@dataclass(frozen=True)
class CrossFishCorrelation:
    """Pearson r of log10 FC between every two fish (F×F, 1 on the diagonal) and its mean over
    the fish pairs; n_pairs: the region pairs each r used."""

    matrix: np.ndarray
    n_pairs: np.ndarray
    mean: float

    def to_dict(self) -> dict:
        return {"matrix": self.matrix, "n_pairs": self.n_pairs, "mean": self.mean}


def cross_fish_correlation(
    fcs, counts=None, min_neurons: int = 5, *, diagonal: bool = True
) -> CrossFishCorrelation:
    """Pearson r of log10 FC over the upper triangle (with the diagonal) of each two fish,
    using the pairs finite in both and — with counts (F×72) — the regions kept by
    `bilateral_regions` in both fish. NaN for a fish pair with fewer than 3 region pairs (or
    a constant side); the mean is over the fish pairs where r is defined."""
    fcs = _stack(fcs)
    f, r = fcs.shape[:2]
    if counts is not None:
        counts = _counts(counts, (f, r))
    logs = _log10(fcs)
    mat = np.eye(f)
    n_pairs = np.zeros((f, f), dtype=np.int64)
    for p in range(f):
        n_pairs[p, p] = int(np.isfinite(logs[p][np.triu_indices(r, 0 if diagonal else 1)]).sum())
        for q in range(p + 1, f):
            keep = None if counts is None else bilateral_regions(counts[[p, q]], min_neurons)
            a, b = _upper(r, keep, diagonal)
            x, y = logs[p][a, b], logs[q][a, b]
            ok = np.isfinite(x) & np.isfinite(y)
            n_pairs[p, q] = n_pairs[q, p] = int(ok.sum())
            x, y = x[ok], y[ok]
            rho = scipy.stats.pearsonr(x, y).statistic if _correlatable(x, y) else np.nan
            mat[p, q] = mat[q, p] = rho
    off = mat[np.triu_indices(f, 1)]
    mean = float(np.nanmean(off)) if np.isfinite(off).any() else float("nan")
    return CrossFishCorrelation(mat, n_pairs, mean)
