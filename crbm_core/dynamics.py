"""Hidden-unit dynamics (METHODS §6): activity traces, bimodality, time constants, HU order,
PCA of the traces and the compositional phase m(t).

Traces are h_μ(t) = E[h_μ | v(t)], computed a block of frames at a time from an in-memory or
lazily read recording, so 50k neurons × 10k frames needs only the T×M result and one block.
Time constants stream the binary states through two small numba passes (count, then fill) and
keep only the cycle lengths, never a T×N temporary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy.cluster.hierarchy import leaves_list, linkage

from .assemblies import participation_ratio
from .errors import ParameterError
from .model import CRBM
from .recording import H5Spikes, Recording, check_binary_block, iter_blocks

TRACE_BATCH = 1024  # frames per block: 1024 × 50k uint8 = 50 MB
_VAR_FLOOR = 1e-6  # GMM variance floor, relative to the trace's variance (like sklearn's reg_covar)


# --------------------------------------------------------------------------------------------
# validation


def _spike_source(spikes) -> np.ndarray | H5Spikes:
    data = spikes.spikes if isinstance(spikes, Recording) else spikes
    if not isinstance(data, H5Spikes):
        data = np.asarray(data)
        if data.ndim != 2:
            raise ParameterError(f"spikes have shape {data.shape}; expected frames × neurons")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ParameterError(f"spikes have shape {data.shape}; need at least one frame and neuron")
    return data


def _traces(traces, min_frames: int = 2) -> np.ndarray:
    x = np.asarray(traces)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ParameterError(f"HU traces have shape {x.shape}; expected frames × HUs (T×M)")
    if x.shape[0] < min_frames:
        raise ParameterError(f"HU traces have {x.shape[0]} frames; need at least {min_frames}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise ParameterError("HU traces contain NaN, inf or non-numbers")
    return x.astype(np.float64, copy=False)


def _per_hu(values, n_hidden: int, what: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (n_hidden,):
        raise ParameterError(f"{what} has shape {v.shape}; expected ({n_hidden},), one per HU")
    if not np.all(np.isfinite(v)):
        raise ParameterError(f"{what} contains NaN or inf")
    return v


def _frame_rate(frame_rate) -> float:
    rate = float(frame_rate)
    if not np.isfinite(rate) or rate <= 0:
        raise ParameterError(f"frame rate {frame_rate}: must be a positive number of frames/s")
    return rate


# --------------------------------------------------------------------------------------------
# traces


def hu_traces(model: CRBM, spikes, batch: int = TRACE_BATCH) -> np.ndarray:
    """h_μ(t) = E[h_μ | v(t)] (T×M, the model's dtype) for a spike matrix, `H5Spikes` or
    `Recording`, `batch` frames at a time (a lazy recording is never loaded whole)."""
    data = _spike_source(spikes)
    if int(batch) < 1:
        raise ParameterError(f"batch {batch}: must be ≥ 1 frame")
    if data.shape[1] != model.n_visible:
        raise ParameterError(
            f"spikes have {data.shape[1]} neurons but the model has {model.n_visible}"
        )
    out = np.empty((data.shape[0], model.n_hidden), dtype=model.dtype)
    for t0, block in iter_blocks(data, int(batch)):
        v = check_binary_block(np.asarray(block), "spikes", frame0=t0)
        out[t0 : t0 + v.shape[0]] = model.mean_hidden(v)
    return out


# --------------------------------------------------------------------------------------------
# bimodality: a 2-component Gaussian mixture per HU


@njit(cache=True, nogil=True)
def _init_two_means(z: np.ndarray) -> tuple[float, float, float, float, float]:
    """Exact 1-D 2-means of z (the split of the sorted values with least within-cluster sum of
    squares): a deterministic, globally optimal start for EM, so no random restarts are needed.
    Returns (weight₀, mean₀, var₀, mean₁, var₁)."""
    s = np.sort(z)
    n = s.size
    c1, c2 = np.cumsum(s), np.cumsum(s * s)
    best, k_best = np.inf, 1
    for k in range(1, n):
        l1, l2 = c1[k - 1], c2[k - 1]
        r1, r2 = c1[n - 1] - l1, c2[n - 1] - l2
        sse = (l2 - l1 * l1 / k) + (r2 - r1 * r1 / (n - k))
        if sse < best:
            best, k_best = sse, k
    k = k_best
    m0, m1 = c1[k - 1] / k, (c1[n - 1] - c1[k - 1]) / (n - k)
    v0 = max(c2[k - 1] / k - m0 * m0, 0.0)
    v1 = max((c2[n - 1] - c2[k - 1]) / (n - k) - m1 * m1, 0.0)
    return k / n, m0, v0, m1, v1


@njit(cache=True, nogil=True)
def _em_column(z: np.ndarray, max_iter: int, tol: float, floor: float) -> np.ndarray:
    """EM for a 2-Gaussian mixture of a standardized trace z; returns
    (w₀, μ₀, σ₀², w₁, μ₁, σ₁², iterations, converged). Each iteration is one fused pass: the
    responsibilities (in log space, safe for well-separated modes) and the weighted moments."""
    n = z.size
    w0, m0, v0, m1, v1 = _init_two_means(z)
    v0, v1 = v0 + floor, v1 + floor
    w1 = 1.0 - w0
    half_log_2pi = 0.5 * math.log(2.0 * math.pi)
    prev, it, converged = -np.inf, 0, False
    while it < max_iter:
        it += 1
        a0 = math.log(max(w0, 1e-300)) - 0.5 * math.log(v0) - half_log_2pi
        a1 = math.log(max(w1, 1e-300)) - 0.5 * math.log(v1) - half_log_2pi
        ll = s0 = s1 = x0 = x1 = q0 = q1 = 0.0
        for t in range(n):
            x = z[t]
            l0 = a0 - 0.5 * (x - m0) * (x - m0) / v0
            l1 = a1 - 0.5 * (x - m1) * (x - m1) / v1
            hi = max(l0, l1)
            lse = hi + math.log(math.exp(l0 - hi) + math.exp(l1 - hi))
            r1 = math.exp(l1 - lse)
            r0 = 1.0 - r1
            ll += lse
            s0 += r0
            s1 += r1
            x0 += r0 * x
            x1 += r1 * x
            q0 += r0 * x * x
            q1 += r1 * x * x
        ll /= n
        if s0 > 1e-12:
            m0 = x0 / s0
            v0 = max(q0 / s0 - m0 * m0, 0.0) + floor
        if s1 > 1e-12:
            m1 = x1 / s1
            v1 = max(q1 / s1 - m1 * m1, 0.0) + floor
        w0, w1 = s0 / n, s1 / n
        if abs(ll - prev) < tol:
            converged = True
            break
        prev = ll
    return np.array([w0, m0, v0, w1, m1, v1, it, 1.0 if converged else 0.0])


@njit(cache=True, nogil=True)
def _em_kernel(z: np.ndarray, max_iter: int, tol: float, floor: float, out: np.ndarray) -> None:
    """Serial over HUs: 10k frames × 200 HUs take ~0.5 s, less than a parallel compile."""
    for j in range(z.shape[1]):
        out[j] = _em_column(np.ascontiguousarray(z[:, j]), max_iter, tol, floor)


@dataclass
class Bimodality:
    """Per-HU 2-Gaussian fit; component 0 is the inactive (lower) peak, 1 the active one."""

    means: np.ndarray  # M×2
    stds: np.ndarray  # M×2
    weights: np.ndarray  # M×2
    n_iter: np.ndarray  # M
    converged: np.ndarray  # M bool (constant traces count as converged)

    @property
    def transition(self) -> np.ndarray:
        """Bimodality transition point: the mean of the two peaks (paper: ≈ 0 for most HUs)."""
        return self.means.mean(axis=1)

    @property
    def inactive_peak(self) -> np.ndarray:
        return self.means[:, 0]

    def center(self, traces) -> np.ndarray:
        """Traces minus their transition point, so that > 0 means active (the paper's plots)."""
        return _traces(traces, 1) - self.transition


def fit_bimodal(traces, max_iter: int = 1000, tol: float = 1e-12) -> Bimodality:
    """A 2-component Gaussian mixture per HU trace (columns of T×M), fitted by EM.

    Our own EM rather than scikit-learn (not a dependency of crbm_core): it starts from the exact
    1-D 2-means split, so it is deterministic without a random_state, and fits all HUs in one
    compiled loop. Each trace is standardized first, so the variance floor (1e-6 of the trace's
    variance) and `tol` (change of the mean log-likelihood per frame) are scale-free. A constant
    trace gets two equal peaks at its value."""
    x = _traces(traces)
    if int(max_iter) < 1 or not (np.isfinite(tol) and tol > 0):
        raise ParameterError(f"max_iter {max_iter} must be ≥ 1 and tol {tol} > 0")
    mean, std = x.mean(axis=0), x.std(axis=0)
    const = np.ptp(x, axis=0) == 0
    std = np.where(const | (std == 0), 1.0, std)
    z = np.asfortranarray((x - mean) / std)
    raw = np.empty((x.shape[1], 8))
    _em_kernel(z, int(max_iter), float(tol), _VAR_FLOOR, raw)
    means = mean[:, None] + std[:, None] * raw[:, [1, 4]]
    stds = std[:, None] * np.sqrt(raw[:, [2, 5]])
    weights = raw[:, [0, 3]]
    swap = means[:, 0] > means[:, 1]
    for a in (means, stds, weights):
        a[swap] = a[swap][:, ::-1]
    means[const] = x[0, const][:, None]
    stds[const], weights[const] = 0.0, [1.0, 0.0]
    return Bimodality(means, stds, weights, raw[:, 6].astype(np.int64), (raw[:, 7] > 0) | const)


# --------------------------------------------------------------------------------------------
# time constants: median onset-to-onset period of a two-state signal


@njit(cache=True, nogil=True)
def _count_onsets(block: np.ndarray, prev: np.ndarray, count: np.ndarray) -> None:
    for t in range(block.shape[0]):
        for i in range(block.shape[1]):
            x = block[t, i] != 0
            if x and not prev[i]:
                count[i] += 1
            prev[i] = x


@njit(cache=True, nogil=True)
def _fill_cycles(block, t0, prev, last, ptr, filled, cycles) -> None:
    """cycles[ptr[i] + k] = frames between the k-th and (k+1)-th onset of unit i."""
    for t in range(block.shape[0]):
        for i in range(block.shape[1]):
            x = block[t, i] != 0
            if x and not prev[i]:
                if last[i] >= 0:
                    cycles[ptr[i] + filled[i]] = t0 + t - last[i]
                    filled[i] += 1
                last[i] = t0 + t
            prev[i] = x


@njit(cache=True, nogil=True)
def _segment_medians(cycles: np.ndarray, ptr: np.ndarray, out: np.ndarray) -> None:
    for i in range(out.size):
        a, b = ptr[i], ptr[i + 1]
        out[i] = np.median(cycles[a:b].astype(np.float64)) if b > a else np.nan


@dataclass
class TimeConstants:
    """Per unit: median period of a full inactive + active cycle (onset to next onset).

    NaN (with n_cycles 0) for a unit with fewer than two onsets: it has no complete cycle."""

    period_frames: np.ndarray
    n_cycles: np.ndarray
    frame_rate: float

    @property
    def period_s(self) -> np.ndarray:
        return self.period_frames / self.frame_rate

    def median_s(self) -> float:
        """Median over the units that have a complete cycle (NaN if none has)."""
        ok = self.n_cycles > 0
        return float(np.median(self.period_s[ok])) if ok.any() else float("nan")


def _cycle_periods(blocks, n_units: int, frame_rate: float) -> TimeConstants:
    """Two passes over `blocks()` (an iterable factory of (t0, T_b×n binary) blocks): count the
    onsets of each unit, then store the onset-to-onset intervals and take their medians.

    An onset is a frame where the unit is active and was not in the previous frame; a unit
    already active in frame 0 has no onset there (its start is not seen), and the run after
    its last onset is incomplete, so only whole cycles are counted."""
    prev = np.ones(n_units, dtype=np.bool_)
    count = np.zeros(n_units, dtype=np.int64)
    for _, block in blocks():
        _count_onsets(block, prev, count)
    n_cycles = np.maximum(count - 1, 0)
    ptr = np.concatenate([[0], np.cumsum(n_cycles)]).astype(np.int64)
    cycles = np.empty(int(ptr[-1]), dtype=np.int32)
    prev[:] = True
    last = np.full(n_units, -1, dtype=np.int64)
    filled = np.zeros(n_units, dtype=np.int64)
    for t0, block in blocks():
        _fill_cycles(block, t0, prev, last, ptr, filled, cycles)
    period = np.empty(n_units)
    _segment_medians(cycles, ptr, period)
    return TimeConstants(period, n_cycles, frame_rate)


def hu_time_constants(traces, transition, frame_rate: float) -> TimeConstants:
    """Time constants with a bare threshold: a unit is active while its trace is above its
    `transition` point; its time constant is the median length of an inactive + active cycle.
    Right for noise-free activity (planted assembly states); a learned HU's E[h|v(t)] flickers
    across any threshold, so the report decodes its states first (`hu_states`) and uses
    `state_time_constants`."""
    x = _traces(traces)
    thr = _per_hu(transition, x.shape[1], "transition")
    return state_time_constants((x > thr).astype(np.uint8), frame_rate)


def state_time_constants(states, frame_rate: float) -> TimeConstants:
    """Time constants of units whose active/inactive state per frame is known (T×M 0/1, e.g.
    `hu_states.decode_hu_states(...).states`, the report's HU time constants)."""
    x = np.asarray(states)
    if x.ndim != 2 or x.shape[1] == 0 or not np.isin(x, (0, 1)).all():
        raise ParameterError(f"states of shape {x.shape}: need a T×M array of 0/1")
    rate = _frame_rate(frame_rate)
    return _cycle_periods(lambda: [(0, x.astype(np.uint8, copy=False))], x.shape[1], rate)


def neuron_time_constants(spikes, frame_rate: float | None = None) -> TimeConstants:
    """Neuron time constants: median length of an inter-spike interval plus the following spike
    interval (a spike may last several frames). `spikes`: T×N array, `H5Spikes` or `Recording`
    (whose frame rate is used unless one is given), read twice a block of frames at a time."""
    if frame_rate is None:
        if not isinstance(spikes, Recording):
            raise ParameterError("give the frame rate (or a Recording, which has one)")
        frame_rate = spikes.frame_rate
    rate = _frame_rate(frame_rate)
    data = _spike_source(spikes)

    def blocks():
        for t0, block in iter_blocks(data):
            yield t0, check_binary_block(np.asarray(block), "spikes", frame0=t0)

    return _cycle_periods(blocks, data.shape[1], rate)


# --------------------------------------------------------------------------------------------
# ordering, PCA, compositional phase


def correlation_distance(traces) -> np.ndarray:
    """M×M 1 − Pearson r of the HU traces (M×M only; T×M in). A constant trace is taken as
    uncorrelated with every other (distance 1) instead of giving NaN."""
    x = _traces(traces)
    z = x - x.mean(axis=0)
    norm = np.linalg.norm(z, axis=0)
    z = z / np.where(norm > 0, norm, 1.0)
    d = 1.0 - z.T @ z
    np.fill_diagonal(d, 0.0)
    return np.clip((d + d.T) / 2, 0.0, 2.0)


def ward_order(traces) -> tuple[np.ndarray, np.ndarray]:
    """(order, linkage): Ward hierarchical clustering of the HUs on 1 − Pearson r of their
    traces (as the paper, scipy's Lance–Williams Ward on these distances). `order` is the
    dendrogram's leaf order, kept in every view; `linkage` (M−1)×4 draws the dendrogram."""
    d = correlation_distance(traces)
    m = d.shape[0]
    if m == 1:
        return np.zeros(1, dtype=np.int64), np.empty((0, 4))
    z = linkage(d[np.triu_indices(m, 1)], method="ward")
    return leaves_list(z).astype(np.int64), z


@dataclass
class TracePCA:
    """PCA of the HU traces (paper: 3 PCs 52 %, 10 PCs 73 % of the variance)."""

    components: np.ndarray  # K×M principal axes, K = min(T, M)
    explained_variance_ratio: np.ndarray  # K
    cumulative: np.ndarray  # K: share of the variance in the first k components


def trace_pca(traces) -> TracePCA:
    """PCA of the centred T×M traces by SVD (the T×M matrix is small next to the recording)."""
    x = _traces(traces)
    z = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    var = s * s
    if var.sum() <= 0:
        raise ParameterError("HU traces are all constant: no variance to decompose")
    ratio = var / var.sum()
    return TracePCA(vt, ratio, np.cumsum(ratio))


@dataclass
class CompositionalPhase:
    """m(t): the effective number of active HUs in each frame (1 ≪ median m ≪ M in the
    compositional phase; paper: median m/M ≈ 0.26)."""

    m: np.ndarray  # T
    n_hidden: int

    @property
    def median_fraction(self) -> float:
        return float(np.median(self.m) / self.n_hidden)


def compositional_phase(traces, inactive_peak) -> CompositionalPhase:
    """m(t) = PR(h₊(t))·M with h₊ = max(h − inactive peak, 0): PR assumes inactive entries are
    ≈ 0, so each HU is measured from its own inactive peak (`Bimodality.inactive_peak`). A frame
    with no HU above its inactive peak has m = 0."""
    x = _traces(traces, 1)
    base = _per_hu(inactive_peak, x.shape[1], "inactive peak")
    hp = np.maximum(x - base, 0.0)
    return CompositionalPhase(participation_ratio(hp, axis=1) * x.shape[1], x.shape[1])
