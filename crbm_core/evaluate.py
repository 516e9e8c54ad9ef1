"""Evaluation of a cRBM against held-out data (METHODS §5, the paper's Figure 2).

Five statistics are compared between model samples and test data: ⟨v_i⟩, ⟨h_μ⟩, ⟨v_i h_μ⟩, the
connected ⟨v_i v_j⟩ − ⟨v_i⟩⟨v_j⟩ and the connected ⟨h_μ h_ν⟩ − ⟨h_μ⟩⟨h_ν⟩. On data, h is
E[h|v(t)] (the recording has no hidden units). On the model side every statistic is
Rao-Blackwellized, which keeps its expectation and lowers its variance:

    ⟨h_μ⟩ = E_v[E[h_μ|v]],   ⟨v_i h_μ⟩ = E_v[v_i E[h_μ|v]],
    ⟨h_μ h_ν⟩ = E_v[E[h_μ|v] E[h_ν|v]]   (μ ≠ ν: the hidden units are independent given v),
    ⟨v_i⟩ = E_h[p_i(h)],   ⟨v_i v_j⟩ = E_h[p_i(h) p_j(h)]   (i ≠ j: neurons independent given h),

with p(h) = σ(g + W h) at one h ~ P(h|v) per model sample v.

Averaging the smooth p_i p_j over samples of h instead of the binary v_i v_j removes the
Bernoulli noise of the visible draw, which dominates for neurons firing a few % of the time.
Everything streams over blocks of frames/samples: no T×N float array and no N×N matrix.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from .errors import ParameterError
from .layers import bernoulli_cgf, drelu_moments, drelu_sample
from .model import CRBM, sparse_outer
from .recording import check_binary_block

STATISTICS = ("v", "h", "vh", "vv", "hh")
LABELS = {
    "v": "⟨v_i⟩",
    "h": "⟨h_μ⟩",
    "vh": "⟨v_i h_μ⟩",
    "vv": "⟨v_i v_j⟩ − ⟨v_i⟩⟨v_j⟩",
    "hh": "⟨h_μ h_ν⟩ − ⟨h_μ⟩⟨h_ν⟩",
}
N_PAIRS = 100_000  # default neuron pairs of the ⟨v_i v_j⟩ statistic (see `sample_pairs`)
PAIR_SEED = 0  # the same pairs for every model of a recording, so that models compare
P_EPS = 1e-4  # clip of the independent model's p (as train.init_state clips the fields)
_BLOCK_ELEMENTS = 2**22  # frames × neurons per streamed block (32 MB of float64)


def _rows(n: int) -> int:
    """Frames or samples per streamed block for n neurons."""
    return max(16, min(1024, _BLOCK_ELEMENTS // max(n, 1)))


# --------------------------------------------------------------------------------------------
# the sampling protocol and the pair statistics of the engine issue (kept as they were)


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
    then `n_saved` configurations per chain `spacing` sweeps apart ((n_saved·n_chains)×N uint8).

    Row k·n_chains + c is the k-th saved configuration of chain c."""
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


# --------------------------------------------------------------------------------------------
# neuron pairs


def n_all_pairs(n: int) -> int:
    return n * (n - 1) // 2


def pair_index_to_ij(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) of linear indices k into the row-major upper triangle (i < j) of an n×n matrix,
    the order of np.triu_indices(n, 1)."""
    k = np.asarray(k, dtype=np.int64)
    if k.size and (k.min() < 0 or k.max() >= n_all_pairs(n)):
        raise ParameterError(f"pair indices must be in 0..{n_all_pairs(n) - 1} for {n} neurons")
    # row i starts at s(i) = i·n − i(i+1)/2; invert the quadratic, then fix float rounding
    i = np.floor(((2 * n - 1) - np.sqrt((2.0 * n - 1) ** 2 - 8.0 * k)) / 2).astype(np.int64)
    i = np.clip(i, 0, n - 2)
    start = i * n - i * (i + 1) // 2
    for _ in range(2):
        low = k < start
        i[low] -= 1
        start = i * n - i * (i + 1) // 2
        high = k >= start + (n - 1 - i)
        i[high] += 1
        start = i * n - i * (i + 1) // 2
    return i, k - start + i + 1


def sample_pairs(
    n: int, n_pairs: int = N_PAIRS, seed: int = PAIR_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Neuron pairs (i, j), i < j, of the ⟨v_i v_j⟩ statistic: all n(n−1)/2 when there are at most
    `n_pairs`, else `n_pairs` drawn uniformly without replacement (numpy.random.default_rng(seed)),
    sorted by i then j (cache-friendly). Pairs, not a neuron subset: every neuron has the same
    chance to appear, and the RMSE over pairs is an unbiased estimate of the all-pairs one."""
    if n < 2:
        raise ParameterError(f"{n} neuron(s): pair statistics need at least 2 neurons")
    if n_pairs < 1:
        raise ParameterError(f"n_pairs {n_pairs}: must be at least 1")
    total = n_all_pairs(n)
    if total <= n_pairs:
        i, j = np.triu_indices(n, 1)
        return i.astype(np.int64), j.astype(np.int64)
    k = np.sort(np.random.default_rng(seed).choice(total, size=n_pairs, replace=False))
    return pair_index_to_ij(k, n)


@njit(parallel=True, cache=True, nogil=True)
def _pair_sums_kernel(xt: np.ndarray, pi: np.ndarray, pj: np.ndarray, out: np.ndarray) -> None:
    """out[k] += Σ_s xt[pi[k], s] · xt[pj[k], s]  (xt: neurons × samples, rows contiguous)."""
    for k in prange(pi.size):
        a, b = pi[k], pj[k]
        s = 0.0
        for t in range(xt.shape[1]):
            s += float(xt[a, t]) * float(xt[b, t])
        out[k] += s


def _add_pair_sums(x: np.ndarray, pi: np.ndarray, pj: np.ndarray, out: np.ndarray) -> None:
    xt = np.ascontiguousarray(x.T, dtype=np.float32 if x.dtype == np.uint8 else x.dtype)
    _pair_sums_kernel(xt, pi, pj, out)


# --------------------------------------------------------------------------------------------
# the five statistics


@dataclass
class Statistics:
    """The five statistics of one source (test data, training data, shuffled data or model)."""

    v: np.ndarray  # (N,)
    h: np.ndarray  # (M,)
    vh: np.ndarray  # (N, M)
    vv: np.ndarray  # (P,) connected, on the pairs used
    hh: np.ndarray  # (M(M−1)/2,) connected, upper triangle row-major

    def __getitem__(self, name: str) -> np.ndarray:
        return getattr(self, name)


def _check_frames(v: np.ndarray, model: CRBM, what: str) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ParameterError(f"{what} must be frames × neurons with ≥ 2 frames, got {v.shape}")
    if v.shape[1] != model.n_visible:
        raise ParameterError(f"{what} has {v.shape[1]} neurons, the model {model.n_visible}")
    return check_binary_block(v, what)


def _pairs_or_all(pairs, n: int):
    if pairs is None:
        return sample_pairs(n, N_PAIRS, PAIR_SEED)
    pi, pj = (np.ascontiguousarray(p, dtype=np.int64) for p in pairs)
    if pi.shape != pj.shape or pi.ndim != 1 or pi.size == 0:
        raise ParameterError("pairs must be two equal-length, non-empty 1-D index arrays")
    if pi.min() < 0 or pj.min() < 0 or max(pi.max(), pj.max()) >= n or np.any(pi == pj):
        raise ParameterError(f"pairs must index distinct neurons in 0..{n - 1}")
    return pi, pj


def _finish(n_rows, sum_v, sum_pairs, sum_vh, hs, pairs) -> Statistics:
    v = sum_v / n_rows
    h_all = np.concatenate(hs)
    pi, pj = pairs
    return Statistics(
        v,
        h_all.mean(axis=0, dtype=np.float64),
        sum_vh / n_rows,
        sum_pairs / n_rows - v[pi] * v[pj],
        _upper_covariance(h_all),
    )


def data_statistics(
    model: CRBM, v: np.ndarray, pairs: tuple[np.ndarray, np.ndarray] | None = None
) -> Statistics:
    """The five statistics of binary frames `v` (T×N), with h = E[h|v(t)] under `model`.

    `pairs` (i, j) of the ⟨v_i v_j⟩ statistic: default `sample_pairs(N)`."""
    v = _check_frames(v, model, "data")
    pairs = _pairs_or_all(pairs, model.n_visible)
    n, m = model.n_visible, model.n_hidden
    sum_v, sum_vh, sum_pairs, hs = np.zeros(n), np.zeros((n, m)), np.zeros(pairs[0].size), []
    rows = _rows(n)
    for t0 in range(0, v.shape[0], rows):
        block = np.ascontiguousarray(v[t0 : t0 + rows])
        eh = model.mean_hidden(block)
        sum_v += block.sum(axis=0, dtype=np.float64)
        sum_vh += sparse_outer(block, eh)
        _add_pair_sums(block, *pairs, sum_pairs)
        hs.append(eh)
    return _finish(v.shape[0], sum_v, sum_pairs, sum_vh, hs, pairs)


def regularization_gradient(weights: np.ndarray, l1: float, kind: str = "l1") -> np.ndarray:
    """∂R/∂w of the training penalty (METHODS §3): at a stationary point of training
    ⟨v h⟩_data = ⟨v h⟩_model + ∂R/∂w, so this is the correction of the model's ⟨v_i h_μ⟩
    (λ·sign(w) for the paper's L1)."""
    w = np.asarray(weights, dtype=np.float64)
    if not (math.isfinite(l1) and l1 >= 0):
        raise ParameterError(f"l1 {l1}: must be a finite number ≥ 0")
    if kind == "l1":
        return l1 * np.sign(w)
    if kind == "l1_squared":
        return l1 * np.abs(w).sum(axis=0, keepdims=True) * np.sign(w)
    if kind == "l2":
        return l1 * w
    raise ParameterError(f"regularization {kind!r}: not one of l1, l1_squared, l2")


def model_statistics(
    model: CRBM,
    samples: np.ndarray,
    rng: np.random.Generator,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
    l1: float = 0.0,
    regularization: str = "l1",
) -> Statistics:
    """The five statistics of `model` from its samples (S×N binary, `model_samples`),
    Rao-Blackwellized (module docstring); ⟨v_i h_μ⟩ includes the penalty correction
    `regularization_gradient(W, l1, regularization)` (l1 = 0: none)."""
    samples = _check_frames(samples, model, "model samples")
    pairs = _pairs_or_all(pairs, model.n_visible)
    n, m = model.n_visible, model.n_hidden
    hp = model.hidden_params()
    sum_v, sum_vh, sum_pairs, hs = np.zeros(n), np.zeros((n, m)), np.zeros(pairs[0].size), []
    rows = _rows(n)
    for s0 in range(0, samples.shape[0], rows):
        block = np.ascontiguousarray(samples[s0 : s0 + rows])
        inp = model.hidden_input(block)
        eh = drelu_moments(inp, *hp)[0]
        p = model.mean_visible(drelu_sample(inp, *hp, rng))
        sum_v += p.sum(axis=0, dtype=np.float64)
        sum_vh += sparse_outer(block, eh)
        _add_pair_sums(p, *pairs, sum_pairs)
        hs.append(eh)
    stats = _finish(samples.shape[0], sum_v, sum_pairs, sum_vh, hs, pairs)
    if l1:
        stats.vh = stats.vh + regularization_gradient(model.weights, l1, regularization)
    return stats


def shuffle_frames(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each neuron's frames permuted independently: rates kept, every correlation destroyed."""
    return rng.permuted(np.asarray(v), axis=0)


def shuffled_statistics(
    model: CRBM,
    train: np.ndarray,
    rng: np.random.Generator,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> Statistics:
    """The "shuffled" reference of nRMSE (the worst a sensible model does), from the training data
    with each neuron's frames independently permuted (`shuffle_frames`), h = E[h|v]:

    - ⟨v_i⟩: frame shuffling keeps every mean, so here the training means are given to randomly
      permuted neurons (the paper's shuffle of the statistic's entries);
    - ⟨h_μ⟩: the HU means that neurons firing independently at their training rates produce;
    - ⟨v_i h_μ⟩: neuron–HU moments with all co-activation gone (only a neuron's own share of
      the input of h_μ couples them);
    - ⟨v_i v_j⟩ connected: ≈ 0 up to sampling noise;
    - ⟨h_μ h_ν⟩ connected: the HU correlations left by overlapping weights alone.
    """
    train = _check_frames(train, model, "training data")
    stats = data_statistics(model, shuffle_frames(train, rng), pairs)
    stats.v = stats.v[rng.permutation(stats.v.size)]
    return stats


# --------------------------------------------------------------------------------------------
# comparison


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


def nrmse(model: np.ndarray, train: np.ndarray, test: np.ndarray, shuffled: np.ndarray) -> float:
    """(RMSE(model,test) − RMSE(train,test)) / (RMSE(shuffled,test) − RMSE(train,test)):
    0 = as close to the test data as the training data is, 1 = as far as shuffled data.
    NaN when the shuffled reference is not worse than the training data (no scale)."""
    opt = rmse(train, test)
    den = rmse(shuffled, test) - opt
    return (rmse(model, test) - opt) / den if den > 0 else float("nan")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r, NaN when either side is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


@dataclass
class StatisticComparison:
    """One statistic: model vs test, with the train-vs-test and shuffled-vs-test references.

    `n` entries were compared out of `n_total` (fewer only for ⟨v_i v_j⟩ on a random pair
    subset; ⟨v_i h_μ⟩ counts its w_iμ ≠ 0 pairs only); `nrmse_se`, `rmse_model_se` are bootstrap
    standard errors over the choice of entries when `n < n_total` (0 otherwise). `edges`,
    `counts` are a 2-D histogram of (test, model) values on shared edges, for the data-vs-model
    density plot."""

    name: str
    label: str
    n: int
    n_total: int
    rmse_model: float
    rmse_train: float
    rmse_shuffled: float
    nrmse: float
    pearson_r: float
    nrmse_se: float
    rmse_model_se: float
    edges: np.ndarray
    counts: np.ndarray

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["edges"] = self.edges.tolist()
        out["counts"] = self.counts.tolist()
        return {k: (_json_float(v) if isinstance(v, float) else v) for k, v in out.items()}


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def density(x: np.ndarray, y: np.ndarray, bins: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(edges (bins+1,), counts (bins, bins) int64) of a 2-D histogram of (x, y) on shared edges
    spanning both (counts[a, b]: x in bin a, y in bin b)."""
    lo = float(min(np.min(x), np.min(y)))
    hi = float(max(np.max(x), np.max(y)))
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, int(bins) + 1)
    counts, _, _ = np.histogram2d(x, y, bins=[edges, edges])
    return edges, counts.astype(np.int64)


def compare(
    name: str,
    model: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    shuffled: np.ndarray,
    n_total: int | None = None,
    bins: int = 50,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> StatisticComparison:
    """Compare one statistic (flat vectors of the same entries from the four sources)."""
    vecs = [np.asarray(a, dtype=np.float64).ravel() for a in (model, train, test, shuffled)]
    if len({a.size for a in vecs}) != 1 or vecs[0].size == 0:
        raise ParameterError(f"statistic {name}: the four sources differ in size or are empty")
    if not all(np.all(np.isfinite(a)) for a in vecs):
        raise ParameterError(f"statistic {name}: NaN or inf in the statistics")
    mo, tr, te, sh = vecs
    n_total = mo.size if n_total is None else int(n_total)
    nr_se = rm_se = 0.0
    if mo.size < n_total and n_bootstrap > 0:  # entries are a random subset: bootstrap them
        boot_rng = np.random.default_rng(seed)
        boot = np.empty((n_bootstrap, 2))
        for b in range(n_bootstrap):
            k = boot_rng.integers(0, mo.size, size=mo.size)
            boot[b] = rmse(mo[k], te[k]), nrmse(mo[k], tr[k], te[k], sh[k])
        rm_se, nr_se = (float(np.nanstd(boot[:, c], ddof=1)) for c in (0, 1))
    edges, counts = density(te, mo, bins)
    return StatisticComparison(
        name,
        LABELS.get(name, name),
        mo.size,
        n_total,
        rmse(mo, te),
        rmse(tr, te),
        rmse(sh, te),
        nrmse(mo, tr, te, sh),
        pearson(mo, te),
        nr_se,
        rm_se,
        edges,
        counts,
    )


def selection_score(comparisons: dict[str, StatisticComparison]) -> float:
    """min over the statistics of (1 − nRMSE) (METHODS §5 model selection; higher is better).
    Statistics whose nRMSE is NaN (no scale) are left out; NaN if all are."""
    vals = [1.0 - c.nrmse for c in comparisons.values() if math.isfinite(c.nrmse)]
    return min(vals) if vals else float("nan")


# --------------------------------------------------------------------------------------------
# reconstruction


def reconstruction_llh(model: CRBM, v: np.ndarray) -> np.ndarray:
    """Per-neuron mean log-likelihood of frames v (T×N) under the reconstruction
    p_i(t) = σ(g_i + Σ_μ w_iμ E[h_μ|v(t)]): LLH_i = mean_t [v_i x_i − softplus(x_i)], x the logit
    (= mean_t log(p v + (1−p)(1−v)), without log of a rounded 0)."""
    v = _check_frames(v, model, "data")
    total = np.zeros(model.n_visible)
    rows = _rows(model.n_visible)
    for t0 in range(0, v.shape[0], rows):
        block = v[t0 : t0 + rows]
        x = model.visible_input(model.mean_hidden(block)).astype(np.float64) + model.fields
        total += (block * x - bernoulli_cgf(x)).sum(axis=0)
    return total / v.shape[0]


def independent_llh(v: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-neuron mean log-likelihood of v (T×N) under independent neurons firing with p (clipped
    to [P_EPS, 1 − P_EPS], so a neuron silent in training costs log P_EPS per spike, not −inf)."""
    v = np.asarray(v)
    p = np.clip(np.asarray(p, dtype=np.float64), P_EPS, 1.0 - P_EPS)
    k = v.sum(axis=0, dtype=np.float64)
    return (k * np.log(p) + (v.shape[0] - k) * np.log1p(-p)) / v.shape[0]


def normalized_llh(llh: np.ndarray, llh_indep: np.ndarray) -> np.ndarray:
    """nLLH = (LLH − LLH_indep) / (−LLH_indep): 0 = independent model, 1 = perfect (LLH = 0)."""
    return (np.asarray(llh) - llh_indep) / (-np.asarray(llh_indep))


@dataclass
class Reconstruction:
    """Per-neuron reconstruction quality on test frames, and its median."""

    llh: np.ndarray
    llh_indep: np.ndarray
    nllh: np.ndarray
    median_nllh: float

    def to_dict(self) -> dict:
        return {
            "llh": self.llh.tolist(),
            "llh_indep": self.llh_indep.tolist(),
            "nllh": self.nllh.tolist(),
            "median_nllh": _json_float(self.median_nllh),
        }


def reconstruction(model: CRBM, test: np.ndarray, train_mean: np.ndarray) -> Reconstruction:
    """nLLH of the cRBM reconstruction of `test` against the independent model p = ⟨v⟩_train."""
    train_mean = np.asarray(train_mean, dtype=np.float64)
    if train_mean.shape != (model.n_visible,) or not np.all(np.isfinite(train_mean)):
        raise ParameterError(f"train_mean must be {model.n_visible} finite rates")
    llh = reconstruction_llh(model, test)
    indep = independent_llh(test, train_mean)
    nl = normalized_llh(llh, indep)
    return Reconstruction(llh, indep, nl, float(np.median(nl)))


# --------------------------------------------------------------------------------------------
# the whole evaluation


@dataclass
class Evaluation:
    """What `evaluate` computed: the five comparisons, the selection score, reconstruction."""

    statistics: dict[str, StatisticComparison]
    score: float
    reconstruction: Reconstruction
    n_samples: int
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain lists, floats (NaN → None) and strings: JSON-serializable."""
        return {
            "statistics": {k: c.to_dict() for k, c in self.statistics.items()},
            "score": _json_float(self.score),
            "reconstruction": self.reconstruction.to_dict(),
            "n_samples": int(self.n_samples),
            "settings": self.settings,
        }

    def summary(self) -> dict[str, dict[str, float]]:
        """{statistic: {nrmse, pearson_r}} plus the score and the median nLLH."""
        out = {k: {"nrmse": c.nrmse, "pearson_r": c.pearson_r} for k, c in self.statistics.items()}
        out["model"] = {"score": self.score, "median_nllh": self.reconstruction.median_nllh}
        return out


def regularization_of(model: CRBM) -> tuple[float, str]:
    """(λ, penalty kind) the model was trained with, from its file's `resolved` settings."""
    resolved = model.meta.get("resolved")
    if isinstance(resolved, str):
        resolved = json.loads(resolved)
    if not isinstance(resolved, dict) or resolved.get("l1") is None:
        raise ParameterError(
            "the model does not say which λ it was trained with; pass l1= (and regularization=)"
        )
    return float(resolved["l1"]), str(resolved.get("regularization", "l1"))


def evaluate(
    model: CRBM,
    train: np.ndarray,
    test: np.ndarray,
    rng: np.random.Generator,
    *,
    samples: np.ndarray | None = None,
    l1: float | None = None,
    regularization: str | None = None,
    n_pairs: int = N_PAIRS,
    pair_seed: int = PAIR_SEED,
    bins: int = 50,
    n_bootstrap: int = 200,
    sampling: dict | None = None,
) -> Evaluation:
    """The paper's Figure 2 evaluation of `model` on `test` frames (METHODS §5).

    samples: model samples; default `model_samples(model, train, rng, **sampling)` (chains from
    random training frames). l1, regularization: the training penalty for the ⟨v_i h_μ⟩
    correction; default read from `model.meta` (`regularization_of`). Pairs with w_iμ = 0 are
    left out of ⟨v_i h_μ⟩.

    ⟨v_i v_j⟩ uses `n_pairs` random pairs (`sample_pairs`, seed `pair_seed`) when N(N−1)/2 is
    larger: 100,000 pairs at N = 10,000 are 0.2 % of 5·10⁷. The RMSE over a random subset of P
    pairs estimates the all-pairs RMSE with relative standard error ≈ cv(d²)/(2√P), d the per-pair
    difference: 0.5–1.6 % at P = 100,000 for cv(d²) = 3–10 (heavy-tailed correlations). The result
    carries the bootstrap standard errors (`nrmse_se`, `rmse_model_se`) of that choice.

    Each nRMSE uses train-vs-test as 0 and `shuffled_statistics` (described there, statistic by
    statistic) as 1; Pearson r is model vs test. The score is `selection_score`; the
    reconstruction is scored against the independent model with the training rates.
    """
    train = _check_frames(train, model, "training data")
    test = _check_frames(test, model, "test data")
    if l1 is None:
        l1, kind = regularization_of(model)
        regularization = regularization or kind
    regularization = regularization or "l1"
    n = model.n_visible
    pairs = sample_pairs(n, n_pairs, pair_seed)
    if samples is None:
        samples = model_samples(model, train, rng, **(sampling or {}))
    sources = {
        "model": model_statistics(model, samples, rng, pairs, l1, regularization),
        "train": data_statistics(model, train, pairs),
        "test": data_statistics(model, test, pairs),
        "shuffled": shuffled_statistics(model, train, rng, pairs),
    }
    keep_vh = (model.weights != 0).ravel()
    comps = {}
    for k in STATISTICS:
        vecs = [sources[s][k].ravel() for s in ("model", "train", "test", "shuffled")]
        if k == "vh":
            vecs = [a[keep_vh] for a in vecs]
        total = n_all_pairs(n) if k == "vv" else None
        comps[k] = compare(k, *vecs, n_total=total, bins=bins, n_bootstrap=n_bootstrap)
    train_mean = train.mean(axis=0, dtype=np.float64)
    settings = {
        "l1": float(l1),
        "regularization": regularization,
        "n_pairs": int(pairs[0].size),
        "n_all_pairs": n_all_pairs(n),
        "pair_seed": int(pair_seed),
        "vh_zero_weights_excluded": int(keep_vh.size - keep_vh.sum()),
        "n_train_frames": int(train.shape[0]),
        "n_test_frames": int(test.shape[0]),
        "sampling": dict(sampling or {}),
    }
    return Evaluation(
        comps,
        selection_score(comps),
        reconstruction(model, test, train_mean),
        int(samples.shape[0]),
        settings,
    )
