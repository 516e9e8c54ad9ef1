"""Persistent-contrastive-divergence training of a cRBM (METHODS §2–3), observable and resumable.

One `numpy.random.Generator` drives every draw (batches, chains, hidden samples), and the whole
training state — model, persistent chains, RMSprop moments, RNG state, batch order, schedule
position, history — goes into the checkpoint, so a run resumed from update k is bit-for-bit the
run that was never stopped. Progress events carry cheap convergence statistics; NaN/inf, a
collapsed model or divergence stop the run with a reason (optionally retried from the last
checkpoint at half the learning rate).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import param
from numba import njit

from .errors import CrbmError, ParameterError
from .layers import drelu_moments, drelu_sufficient_stats, drelu_sufficient_stats_mean
from .model import CRBM, HIDDEN_PARAMS, sparse_outer
from .normalization import correct_gradients, renormalize
from .optim import weight_step

PAPER_RATE = 0.043  # mean activity of the fish λ = 0.02 was tuned on (METHODS §3)
L1_PER_RATE = 0.01 / PAPER_RATE  # default λ per unit of mean activity (half the paper's ratio)
INIT_Z = 4.0  # significance (standard errors) of a correlation kept by correlation_init
COLLAPSE_MAX_W = 1e-3  # below this everywhere after the warm phase: nothing was learned
LEARNED = ("weights", "fields", "theta", "delta", "eta")  # γ is set by the normalization


class TrainingError(CrbmError):
    """A run that cannot go on: NaN/inf, divergence, collapse. `update` says where."""

    def __init__(self, message: str, update: int):
        super().__init__(f"update {update}: {message}")
        self.update = update


class TrainConfig(param.Parameterized):
    """How a cRBM is trained. Defaults are the paper's (van der Plas, Tubiana et al. 2023)."""

    n_hidden = param.Integer(
        default=None,
        allow_None=True,
        bounds=(1, 5000),
        doc=(
            "Hidden units M. Default scales with the number of neurons N as round(√N), which gives "
            "the paper's M = 200 at N = 40,000."
        ),
    )
    l1 = param.Number(
        default=None,
        allow_None=True,
        bounds=(0, 10),
        doc=(
            "Sparsity strength λ. Default 0.01 × (mean activity / 0.043): the paper tuned 0.02 on "
            "fish firing 0.043 per frame, a fixed 0.02 on sparser data kills every weight, and on "
            "virtual fish half the paper's ratio recovered more planted assemblies (N = 2,000, "
            "9,000 updates: 87 % vs 77 %; λ/4: 83 %)."
        ),
    )
    regularization = param.Selector(
        default="l1",
        objects=["l1", "l1_squared", "l2"],
        doc=("Penalty on the weights: λΣ|w| (paper), (λ/2)Σ_μ(Σ_i|w_iμ|)², or (λ/2)Σw²."),
    )
    n_updates = param.Integer(
        default=20_000,
        bounds=(1, None),
        doc=("Parameter updates (the paper used 200,000 for 40k neurons)."),
    )
    batch_size = param.Integer(default=100, bounds=(1, None), doc="Data frames per update.")
    n_chains = param.Integer(default=100, bounds=(1, None), doc="Persistent Gibbs chains.")
    n_mc = param.Integer(default=15, bounds=(1, None), doc="Gibbs sweeps per update (N_MC).")
    learning_rate = param.Number(default=1e-3, bounds=(1e-7, 1.0), doc="Initial learning rate.")
    lr_final = param.Number(default=1e-5, bounds=(1e-9, 1.0), doc="Learning rate at the end.")
    decay_start = param.Number(
        default=0.25,
        bounds=(0.0, 1.0),
        doc=("Fraction of updates at constant rate before the geometric decay (paper 25 %)."),
    )
    beta2 = param.Number(default=0.999, bounds=(0.0, 0.99999), doc="RMSprop decay (paper).")
    epsilon = param.Number(default=1e-6, bounds=(0.0, 1.0), doc="RMSprop ε (paper).")
    grad_clip = param.Number(
        default=1.0, bounds=(0.0, None), doc=("Element-wise gradient clip (0 = none).")
    )
    normalize = param.Boolean(
        default=True,
        doc=("Keep every hidden unit at unit variance on the data and centred (METHODS §2)."),
    )
    bn_correction = param.Boolean(
        default=False,
        doc=(
            "Add to the gradients the terms from γ and θ being set by the normalization "
            "(implicit dependence on θ, δ, η, W; centred weight gradient), as the reference code "
            "does (derivation in normalization.py). Off by default: on virtual fish (N = 2,000, "
            "30 assemblies) it was faster on one fish (93 % recovered after 3,000 updates vs 73 "
            "%) but not better on others (seed 1: 87 % vs 83 % at 14,000 updates; seed 11: 83 % "
            "at 8,000 vs 93 % plain at 14,000), and on crbm-mode data it ended outside the "
            "paper's weight-std convergence filter (0.19)."
        ),
    )
    seed = param.Integer(default=0, doc="One seed makes the run bit-for-bit reproducible.")
    dtype = param.Selector(default="float32", objects=["float32", "float64"])
    progress_every = param.Integer(default=100, bounds=(1, None), doc="Updates per event.")
    checkpoint_every = param.Integer(default=1000, bounds=(1, None), doc="Updates/checkpoint.")
    checkpoint_seconds = param.Number(
        default=300.0,
        bounds=(1.0, None),
        doc=("Also checkpoint when this many seconds passed since the last one."),
    )
    retries = param.Integer(
        default=0,
        bounds=(0, 10),
        doc=(
            "On divergence, restart from the last checkpoint with half the learning rate, at most "
            "this many times."
        ),
    )
    init = param.Selector(
        default="correlation",
        objects=["correlation", "random"],
        doc=(
            "Initial weights. correlation: each hidden unit starts on the correlation "
            "neighbourhood of a seed neuron (seeds drawn ∝ firing rate, away from neighbourhoods "
            "already taken), so units spread over distinct assemblies instead of all chasing the "
            "strongest ones (crbm-mode virtual fish, N = 2,000, 4,000 updates: 87 % of planted "
            "units found vs 43 % from random). random: w ~ N(0, 0.1/N), the paper's."
        ),
    )
    l1_warmup = param.Number(
        default=0.05,
        bounds=(0.0, 1.0),
        doc=(
            "Fraction of updates over which λ ramps up linearly from 0. At W ≈ 0 the data gradient "
            "of an assembly grows with its size; on small recordings it is below λ and the L1 "
            "penalty would pin every weight to 0 before the model sees any structure."
        ),
    )
    stat_neurons = param.Integer(
        default=500,
        bounds=(10, None),
        doc=("Neurons in the fixed subsample used for the ⟨v h⟩ progress statistic."),
    )

    def resolved(self, n_neurons: int, mean_rate: float) -> dict:
        """The settings with the data-dependent defaults filled in."""
        d = {k: v for k, v in self.param.values().items() if k != "name"}
        if d["n_hidden"] is None:
            d["n_hidden"] = max(2, int(round(math.sqrt(n_neurons))))
        if d["l1"] is None:
            d["l1"] = L1_PER_RATE * mean_rate
        if d["lr_final"] > d["learning_rate"]:
            raise ParameterError(
                f"lr_final {d['lr_final']} is above learning_rate {d['learning_rate']}"
            )
        return d

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in self.param.values().items() if k != "name"})

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls(**json.loads(text))


def learning_rate(update: int, cfg: dict) -> float:
    """Constant for the first `decay_start` of the run, then geometric decay to `lr_final`."""
    n, start = cfg["n_updates"], int(cfg["decay_start"] * cfg["n_updates"])
    lr0 = cfg["learning_rate"] * cfg.get("lr_scale", 1.0)
    if update < start or n <= start:
        return lr0
    frac = (update - start) / max(1, n - start)
    return lr0 * (cfg["lr_final"] / cfg["learning_rate"]) ** frac


# --------------------------------------------------------------------------------------------
# state


@dataclass
class TrainState:
    """Everything needed to continue a run exactly."""

    model: CRBM
    chains: np.ndarray  # n_chains × N uint8
    moments: dict[str, np.ndarray]  # RMSprop second moments per learned parameter
    rng: np.random.Generator
    order: np.ndarray  # current permutation of the training frames
    position: int  # next index into `order`
    update: int  # updates done
    mean_input: np.ndarray  # ⟨v⟩_data · W at the last update (for centring)
    elapsed: float = 0.0  # seconds of training before this process
    lr_scale: float = 1.0  # halved by each divergence retry
    history: list[dict] = field(default_factory=list)
    stat_idx: np.ndarray | None = None  # fixed neuron subsample for ⟨v h⟩


def active_lists(data: np.ndarray, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The spikes as per-frame lists of active neurons (CSR: indptr T+1, indices int32): 2–5 %
    of the T×N bytes, so sums over chosen frames touch only the spikes."""
    t = data.shape[0]
    indptr = np.zeros(t + 1, np.int64)
    parts = []
    for t0 in range(0, t, block):
        rows, cols = np.nonzero(data[t0 : t0 + block])
        indptr[t0 + 1 : t0 + 1 + min(block, t - t0)] = np.bincount(
            rows, minlength=min(block, t - t0)
        )
        parts.append(cols.astype(np.int32))
    np.cumsum(indptr, out=indptr)
    return indptr, np.concatenate(parts) if parts else np.zeros(0, np.int32)


@njit(cache=True, nogil=True)
def _coactive_counts(indptr, indices, frames, n):
    """How many of `frames` each neuron fired in (exact integer counts, as float64)."""
    out = np.zeros(n, np.float64)
    for f in frames:
        for k in range(indptr[f], indptr[f + 1]):
            out[indices[k]] += 1.0
    return out


def correlation_init(
    data: np.ndarray,
    n_hidden: int,
    rng: np.random.Generator,
    input_std: float = 1.0,
    z: float = INIT_Z,
    candidates: int = 20,
) -> np.ndarray:
    """N×M weights: each unit starts on the significant correlations of a different seed neuron.

    `candidates`·M seeds are drawn ∝ firing rate. A seed's correlations with every neuron (from
    the frames where it fired: no N×N matrix) are taken partial to the population rate, so that
    brain-wide fluctuations, which correlate every pair a little, do not merge assemblies; then
    soft-thresholded at z standard errors (z/√T), which removes the sampling noise that would
    otherwise dominate the vector (N·(1/√T)² against a few dozen real neighbours). Seeds are
    taken strongest neighbourhood first (Σr²), skipping any whose neighbourhood has cosine > 0.5
    with one already taken, so units start on distinct assemblies. Each unit is scaled so that
    its input varies by `input_std` over the data: at small weights the likelihood gradient of a
    weight grows with the weights (∝ Σ_j C_ij w_j) and the L1 penalty would silence the unit of
    a small assembly before it could grow. Units left without a seed start as the paper's
    w ~ N(0, 0.1/N).
    """
    t, n = data.shape
    p = data.mean(axis=0, dtype=np.float64)
    sd = np.sqrt(p * (1 - p)) + 1e-9
    w = rng.normal(0.0, math.sqrt(0.1 / n), size=(n, n_hidden))
    if p.sum() <= 0:
        return w
    thr = z / math.sqrt(t)
    pop = data.sum(axis=1, dtype=np.float64)
    pop = (pop - pop.mean()) / (pop.std() + 1e-12)
    r_pop = (
        sum(  # correlation of each neuron with the population rate, by blocks of frames
            pop[t0 : t0 + 1024] @ data[t0 : t0 + 1024].astype(np.float32)
            for t0 in range(0, t, 1024)
        )
        / (t * sd)
    )
    r_pop = np.clip(r_pop, -0.99, 0.99)
    rest = np.sqrt(1.0 - r_pop**2)

    n_cand = min(int((p > 0).sum()), candidates * n_hidden)
    seeds = rng.choice(n, size=n_cand, replace=False, p=p / p.sum())
    indptr, indices = active_lists(data)
    seed_frames = data[:, seeds]  # T × candidates: which frames each seed fired in

    def neighbourhood(c: int) -> np.ndarray:
        s = seeds[c]
        co = _coactive_counts(indptr, indices, np.flatnonzero(seed_frames[:, c]), n)
        r = (co / t - p * p[s]) / (sd * sd[s])
        r = (r - r_pop * r_pop[s]) / (rest * rest[s])
        r[s] = 0.0
        return np.sign(r) * np.maximum(np.abs(r) - thr, 0.0)

    strength = np.array([np.sum(neighbourhood(c) ** 2) for c in range(n_cand)])  # 1 vector
    chosen = np.zeros((n_hidden, n))  # unit vectors of the neighbourhoods taken
    k = 0
    for c in np.argsort(-strength, kind="stable"):
        if k == n_hidden or strength[c] <= 0:
            break
        r = neighbourhood(c)
        u = r / math.sqrt(strength[c])
        if k and np.abs(chosen[:k] @ u).max() > 0.5:
            continue
        w[:, k], chosen[k] = r, u
        k += 1
    if k:  # scale each seeded unit so that its input varies by `input_std` over the data
        inp = np.concatenate(
            [
                data[t0 : t0 + 1024].astype(np.float32) @ w[:, :k].astype(np.float32)
                for t0 in range(0, t, 1024)
            ]
        )
        w[:, :k] *= input_std / (inp.std(axis=0) + 1e-12)
    return w


def init_state(data: np.ndarray, cfg: dict) -> TrainState:
    """Fields g = logit⟨v⟩, chains from the independent model, weights per `init`."""
    rng = np.random.default_rng(cfg["seed"])
    t, n = data.shape
    dt = np.dtype(cfg["dtype"])
    mean_v = data.mean(axis=0, dtype=np.float64)
    p = np.clip(mean_v, 1e-4, 1 - 1e-4)  # never-firing neurons: logit of ε, no −inf
    m = cfg["n_hidden"]
    if cfg["init"] == "correlation":
        weights = correlation_init(data, m, rng)
    else:
        weights = rng.normal(0.0, math.sqrt(0.1 / n), size=(n, m))
    model = CRBM(
        weights.astype(dt),
        np.log(p / (1 - p)).astype(dt),
        np.ones(m, dt),
        np.zeros(m, dt),
        np.zeros(m, dt),
        np.zeros(m, dt),
    )
    chains = (rng.random((cfg["n_chains"], n)) < p).astype(np.uint8)
    moments = {k: np.zeros_like(getattr(model, k)) for k in LEARNED}
    stat_idx = np.sort(rng.choice(n, size=min(n, cfg["stat_neurons"]), replace=False))
    return TrainState(
        model,
        chains,
        moments,
        rng,
        rng.permutation(t),
        0,
        0,
        (mean_v.astype(dt) @ model.weights),
        stat_idx=stat_idx,
    )


def _next_batch(state: TrainState, data: np.ndarray, size: int) -> np.ndarray:
    """Frames without replacement within an epoch, a new permutation per epoch."""
    idx = []
    while len(idx) < size:
        if state.position >= state.order.size:
            state.order = state.rng.permutation(data.shape[0])
            state.position = 0
        take = min(size - len(idx), state.order.size - state.position)
        idx.extend(state.order[state.position : state.position + take])
        state.position += take
    return data[np.sort(np.asarray(idx))]


# --------------------------------------------------------------------------------------------
# one update


def _hidden_grads(model: CRBM, pos, neg) -> dict[str, np.ndarray]:
    """Log-likelihood gradients for (θ, δ, η) from the four dReLU sufficient statistics.

    ∂Γ/∂θ₊ = −E[h₊], ∂Γ/∂θ₋ = −E[h₋], ∂Γ/∂γ± = −½E[h±²] (h₋ = max(−h, 0) ≥ 0), data minus
    model, chained through γ₊ = γ/(1+η), γ₋ = γ/(1−η), θ₊ = θ + δ/√(1+η), θ₋ = −θ + δ/√(1−η).
    """
    d_tp = -(pos[0] - neg[0])
    d_tm = -(pos[1] - neg[1])
    d_gp = -0.5 * (pos[2] - neg[2])
    d_gm = -0.5 * (pos[3] - neg[3])
    g, d, e = model.gamma, model.delta, np.clip(model.eta, -0.95, 0.95)
    sp, sm = np.sqrt(1 + e), np.sqrt(1 - e)
    return {
        "gamma": d_gp / (1 + e) + d_gm / (1 - e),  # not learned: used by the bn correction
        "theta": d_tp - d_tm,
        "delta": d_tp / sp + d_tm / sm,
        "eta": (
            -d_gp * g / (1 + e) ** 2
            + d_gm * g / (1 - e) ** 2
            - 0.5 * d_tp * d / sp**3
            + 0.5 * d_tm * d / sm**3
        ),
    }


def _reg_strength(cfg: dict, update: int) -> float:
    """λ, ramped up linearly over the first `l1_warmup` of the run."""
    warm = cfg["l1_warmup"] * cfg["n_updates"]
    return cfg["l1"] * (min(1.0, update / warm) if warm > 0 else 1.0)


def _reg_grad(w: np.ndarray, cfg: dict, update: int) -> np.ndarray:
    lam = _reg_strength(cfg, update)
    kind = cfg["regularization"]
    if kind == "l1":
        return lam * np.sign(w)
    if kind == "l1_squared":
        return lam * np.abs(w).sum(axis=0, keepdims=True) * np.sign(w)
    return lam * w


def _phase_gradients(model: CRBM, v_pos, i_pos, v_neg, i_neg, neg_weights):
    """Every gradient but the weights', E[h|v] and Var[h|v] of the data, and the chain side of
    the weight gradient as (h rows, divisor): Σ_{c: v_neg[c,i]=1} h[c]/divisor."""
    hp = model.hidden_params()
    mean_pos, var_pos = drelu_moments(i_pos, *hp)
    mean_neg = drelu_moments(i_neg, *hp)[0]
    dt = model.dtype
    if neg_weights is None:
        v_neg_mean = v_neg.mean(axis=0, dtype=dt)
        stats_neg = drelu_sufficient_stats_mean(i_neg, *hp)
        h_neg = (mean_neg, v_neg.shape[0])
    else:
        pw = np.asarray(neg_weights, dtype=dt)
        v_neg_mean = pw @ v_neg
        stats_neg = tuple(pw @ s for s in drelu_sufficient_stats(i_neg, *hp))
        h_neg = (pw[:, None] * mean_neg, 1)
    grads = {"fields": v_pos.mean(axis=0, dtype=dt) - v_neg_mean}
    grads.update(_hidden_grads(model, drelu_sufficient_stats_mean(i_pos, *hp), stats_neg))
    return grads, mean_pos, var_pos, h_neg


def gradients(
    model: CRBM,
    v_pos: np.ndarray,
    v_neg: np.ndarray,
    cfg: dict,
    update: int = 0,
    neg_weights: np.ndarray | None = None,
    data_mean: np.ndarray | None = None,
):
    """Data-minus-model gradients (Rao-Blackwellized: E[h|v] at data and chain states).

    `neg_weights` (summing to 1) weight the rows of v_neg, e.g. P(v) over all states for the
    exact gradient of a tiny model; default: uniform (chains). With cfg["bn_correction"] the
    normalization terms are added (`normalization.correct_gradients`; `data_mean` defaults to
    the batch mean). Training does the weight part fused with the optimizer step
    (`optim.weight_step`); this is its reference.
    Returns (grads, positive-phase E[h|v], positive-phase Var[h|v], positive hidden input)."""
    i_pos, i_neg = model.hidden_input(v_pos), model.hidden_input(v_neg)
    grads, mean_pos, var_pos, (h_neg, div_neg) = _phase_gradients(
        model, v_pos, i_pos, v_neg, i_neg, neg_weights
    )
    h_pos, extra = _corrected_positive_phase(model, v_pos, i_pos, mean_pos, grads, cfg, data_mean)
    reg = _reg_grad(model.weights, cfg, update).astype(model.dtype)
    vh_pos = sparse_outer(v_pos, h_pos) / v_pos.shape[0]
    grads["weights"] = vh_pos - sparse_outer(v_neg, h_neg) / div_neg - reg
    if extra is not None:
        grads["weights"] += np.outer(*extra)
    return grads, mean_pos, var_pos, i_pos


def _corrected_positive_phase(model, v_pos, i_pos, mean_pos, grads, cfg, data_mean):
    """(data-phase h rows of the weight gradient, rank-one centring term or None), with the
    normalization correction applied to `grads` when cfg asks for it."""
    if not (cfg.get("normalize", True) and cfg.get("bn_correction", False)):
        return mean_pos, None
    if data_mean is None:
        data_mean = v_pos.mean(axis=0, dtype=np.float64)
    h_extra, extra = correct_gradients(model, i_pos, grads, data_mean, v_pos.shape[0])
    return mean_pos + h_extra, extra


def negative_phase(state: TrainState, cfg: dict):
    """(v_neg, I(v_neg), row weights or None): N_MC Gibbs sweeps of the persistent chains."""
    state.chains, i_neg = state.model.gibbs(state.chains, cfg["n_mc"], state.rng, return_input=True)
    return state.chains, i_neg, None


def _rmsprop(param_, mom, g, lr, t, cfg) -> None:
    b2 = cfg["beta2"]
    if cfg["grad_clip"] > 0:
        g = np.clip(g, -cfg["grad_clip"], cfg["grad_clip"])
    mom *= b2
    mom += (1 - b2) * g * g
    step = lr * g / (np.sqrt(mom / (1 - b2**t)) + cfg["epsilon"])
    param_ += step.astype(param_.dtype)


def update_step(state: TrainState, data: np.ndarray, data_mean: np.ndarray, cfg: dict) -> dict:
    """One PCD update; returns what the progress statistics need (and max|w| after it)."""
    model = state.model
    lr = learning_rate(state.update, {**cfg, "lr_scale": state.lr_scale})
    v_pos = _next_batch(state, data, cfg["batch_size"])
    v_neg, i_neg, neg_weights = negative_phase(state, cfg)
    i_pos = model.hidden_input(v_pos)
    grads, mean_pos, var_pos, (h_neg, div_neg) = _phase_gradients(
        model, v_pos, i_pos, v_neg, i_neg, neg_weights
    )
    h_pos, rank_one = _corrected_positive_phase(
        model, v_pos, i_pos, mean_pos, grads, cfg, data_mean
    )
    lam = _reg_strength(cfg, state.update)
    state.update += 1
    t = state.update
    max_abs_w = weight_step(
        model.weights,
        state.moments["weights"],
        v_pos,
        h_pos,
        v_pos.shape[0],
        v_neg,
        h_neg,
        div_neg,
        reg=cfg["regularization"],
        lam=lam,
        clip=cfg["grad_clip"],
        beta2=cfg["beta2"],
        lr=lr,
        t=t,
        eps=cfg["epsilon"],
        rank_one=rank_one,
    )
    for k in LEARNED[1:]:
        _rmsprop(getattr(model, k), state.moments[k], grads[k], lr, t, cfg)
    np.clip(model.eta, -0.95, 0.95, out=model.eta)
    if cfg["normalize"]:
        rate = 0.25 * lr / cfg["learning_rate"]
        state.mean_input = renormalize(model, mean_pos, var_pos, data_mean, state.mean_input, rate)
    return {
        "lr": lr,
        "v_pos": v_pos,
        "mean_pos": mean_pos,
        "var_pos": var_pos,
        "max_abs_w": max_abs_w,
    }


# --------------------------------------------------------------------------------------------
# statistics, checks


def progress_stats(state: TrainState, step: dict, data_mean: np.ndarray) -> dict:
    """Cheap convergence statistics (one chain-side E[h|v] on the current chains)."""
    model, idx = state.model, state.stat_idx
    w = model.weights
    chain_mean = state.chains.mean(axis=0)
    h_chain = model.mean_hidden(state.chains)
    vh_data = step["v_pos"][:, idx].T.astype(np.float64) @ step["mean_pos"] / step["v_pos"].shape[0]
    vh_model = state.chains[:, idx].T.astype(np.float64) @ h_chain / state.chains.shape[0]
    return {
        "rmse_v": float(np.sqrt(np.mean((data_mean - chain_mean) ** 2))),
        "rmse_vh": float(np.sqrt(np.mean((vh_data - vh_model) ** 2))),
        "sparsity": float(np.mean(np.abs(w) > 0.01)),
        "mean_abs_w": float(np.mean(np.abs(w))),
        "w_std": float(np.std(w)),
        "h_mean": float(np.mean(step["mean_pos"])),
        "h_var": float(np.mean(np.var(step["mean_pos"], axis=0))),
        "gamma_min": float(model.gamma.min()),
        "gamma_max": float(model.gamma.max()),
    }


def _max_abs_w(state: TrainState, step: dict | None) -> float:
    """max|w| (NaN if a weight is not finite), from the update step when it said so."""
    if step is not None and "max_abs_w" in step:
        return step["max_abs_w"]
    w = state.model.weights
    return float(np.abs(w).max()) if np.all(np.isfinite(w)) else float("nan")


def check_finite(state: TrainState, step: dict | None = None) -> str | None:
    """A reason to stop, or None. `step`: what `update_step` returned (saves two scans of W)."""
    top = _max_abs_w(state, step)
    bad = [] if math.isfinite(top) else ["weights"]
    bad += [k for k in ("fields", *HIDDEN_PARAMS) if not np.isfinite(getattr(state.model, k)).all()]
    if bad:
        return f"non-finite values in {bad[0]} (diverged); lower the learning rate"
    if top > 1e3:
        return "weights exceed 1e3 (diverged); lower the learning rate"
    return None


def check_collapse(state: TrainState, cfg: dict, step: dict | None = None) -> str | None:
    if (
        state.update >= int(cfg["decay_start"] * cfg["n_updates"])
        and _max_abs_w(state, step) < COLLAPSE_MAX_W
    ):
        return (
            f"the model collapsed: no weight above {COLLAPSE_MAX_W:g} after the constant-rate"
            f" phase (λ = {cfg['l1']:.3g} is too strong for this data; lower --l1)"
        )
    return None


# --------------------------------------------------------------------------------------------
# the loop


@dataclass
class TrainResult:
    model: CRBM  # sign-swapped final model
    state: TrainState
    status: str  # "finished", "not converged", "stopped"
    message: str = ""
    resolved: dict = field(default_factory=dict)  # the settings used, defaults filled in


def train(
    data: np.ndarray,
    config: TrainConfig,
    *,
    state: TrainState | None = None,
    callback: Callable[[dict], None] | None = None,
    checkpoint: Callable[[TrainState, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train on binary frames `data` (T×N uint8), or continue `state` (a resumed checkpoint).

    `callback(event)` gets a progress event every `progress_every` updates; `checkpoint(state,
    cfg)` is called every `checkpoint_every` updates or `checkpoint_seconds` seconds and at the
    end; `should_stop()` is polled every update (a cancel or Ctrl-C writes a final checkpoint).
    """
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 2:
        raise ParameterError(f"training data must be frames × neurons, got {data.shape}")
    data_mean64 = data.mean(axis=0, dtype=np.float64)
    cfg = config.resolved(data.shape[1], float(data_mean64.mean()))
    if cfg["batch_size"] > data.shape[0]:
        raise ParameterError(
            f"batch size {cfg['batch_size']} exceeds the {data.shape[0]} training frames"
        )
    if state is None:
        state = init_state(data, cfg)
    elif state.model.n_visible != data.shape[1]:
        raise ParameterError(
            f"the checkpoint has {state.model.n_visible} neurons, the data {data.shape[1]}"
        )
    data_mean = data_mean64.astype(state.model.dtype)
    retries = cfg["retries"]
    last_good: TrainState | None = _snapshot(state)
    t0, last_ckpt, t_start_update = time.monotonic(), time.monotonic(), state.update
    while state.update < cfg["n_updates"]:
        if should_stop is not None and should_stop():
            state.elapsed += time.monotonic() - t0  # the checkpoint keeps this stretch's time
            if checkpoint:
                checkpoint(state, cfg)
            return TrainResult(
                state.model.sign_swapped(),
                state,
                "stopped",
                f"stopped at update {state.update}",
                cfg,
            )
        step = update_step(state, data, data_mean, cfg)
        reason = check_finite(state, step) or check_collapse(state, cfg, step)
        # mean over all chains: on a tiny model one chain with every neuron on is a legal state
        if reason is None and state.chains.mean() > 0.9:
            reason = "persistent chains saturated (most neurons on); lower the learning rate"
        if reason is not None:
            if retries > 0 and last_good is not None and "collapsed" not in reason:
                retries -= 1
                state = _snapshot(last_good)
                state.lr_scale *= 0.5
                state.history.append(
                    {
                        "update": state.update,
                        "event": "retry",
                        "reason": reason,
                        "lr_scale": state.lr_scale,
                    }
                )
                continue
            raise TrainingError(reason, state.update)
        now = time.monotonic()
        if state.update % cfg["progress_every"] == 0 or state.update == cfg["n_updates"]:
            done = state.update - t_start_update
            rate = done / max(now - t0, 1e-9)
            event = {
                "update": state.update,
                "n_updates": cfg["n_updates"],
                "elapsed": state.elapsed + now - t0,
                "updates_per_s": rate,
                "eta_s": (cfg["n_updates"] - state.update) / max(rate, 1e-9),
                "lr": step["lr"],
                **progress_stats(state, step, data_mean64),
            }
            state.history.append(event)
            if callback:
                callback(event)
        if checkpoint and (
            state.update % cfg["checkpoint_every"] == 0
            or now - last_ckpt >= cfg["checkpoint_seconds"]
        ):
            state.elapsed += now - t0
            t0 = now
            t_start_update = state.update
            checkpoint(state, cfg)
            last_ckpt = now
            last_good = _snapshot(state)
    state.elapsed += time.monotonic() - t0
    final = state.model.sign_swapped()
    w_std = float(np.std(final.weights))
    status, message = "finished", ""
    if not 0.01 < w_std < 0.1:
        status = "not converged"
        message = f"weight std {w_std:.3g} is outside (0.01, 0.1), the paper's convergence filter"
    if checkpoint:
        checkpoint(state, cfg)
    return TrainResult(final, state, status, message, cfg)


def _snapshot(state: TrainState) -> TrainState:
    """A deep copy (the RNG included) to roll back to."""
    rng = np.random.default_rng()
    rng.bit_generator.state = state.rng.bit_generator.state
    return TrainState(
        state.model.copy(),
        state.chains.copy(),
        {k: v.copy() for k, v in state.moments.items()},
        rng,
        state.order.copy(),
        state.position,
        state.update,
        np.array(state.mean_input, copy=True),
        state.elapsed,
        state.lr_scale,
        [dict(h) for h in state.history],
        None if state.stat_idx is None else state.stat_idx.copy(),
    )
