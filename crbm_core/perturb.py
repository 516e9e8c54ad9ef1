"""In-silico perturbation (METHODS §7): clamp neurons or hidden units, compare with the free chain.

A perturbation fixes chosen neurons to 0 (ablation) or 1 (stimulation), or chosen hidden units
(HUs) to a value, and samples the rest of the model conditionally on it: P(v_free, h | v_S = s)
or P(v, h_free | h_H = c). Gibbs sampling stays exact for these conditionals because the two
layers are conditionally independent: after each visible draw the clamped neurons are reset and
the hidden input I = vW is corrected by their changed rows only (a neuron whose draw already
equals its clamp value costs nothing); a clamped HU's sampled h is replaced by its value before
the h → v pass. Everything else is the model's fused sweep (`CRBM._visible_sweep`), in the
model's dtype (float32 for trained models).

Estimator. Both chains start from the same data frames (one chain per frame) and run the same
sweeps; they draw common random numbers — two Generators with one seed, so chain c of the
perturbed run uses exactly the uniforms of chain c of the reference (the clamped units are drawn
and then overwritten, which keeps the streams aligned). Neurons the perturbation does not reach
then move together in both chains, which removes most of the variance of their difference.
Firing probabilities are Rao-Blackwellized: P(v_i=1 | h) = σ(g_i + Σ_μ w_iμ h_μ) averaged over
the sampled h (not the binary draws); HU activities are E[h_μ | v] averaged over the sampled v.

Standard errors. Each chain's time average after burn-in is one sample; chains are independent
(own starting frame, own random streams), so the C per-chain means — of the perturbed, the
reference and their paired difference — are i.i.d., and se = sd(chain means, ddof=1)/√C. This
holds whatever the autocorrelation within a chain; it does not include the bias of an
unfinished burn-in (chains from data frames start near the free equilibrium; `burn_in` sweeps let
the perturbed chain relax to the clamped one). Region means are formed per chain before taking
the spread, so correlations between the neurons of a region are accounted for.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from .errors import ParameterError
from .layers import drelu_mean, drelu_sample
from .model import _BLOCK, CRBM, _blas_threads, _exp_neg_logit, _exp_neg_logit64

# Defaults sized for N = 10,000, M = 100 in < 1 s on 2 cores (benchmarks/perturb_speed.py):
# 64 chains keep the relative error of every standard error near 1/√(2·63) ≈ 9 %; 15 sweeps of
# burn-in let the clamped chain relax (a clamped assembly switches its HU within a few sweeps;
# check `delta_h_drift` for slower cascades); 20 samples one sweep apart average over the fast
# fluctuations of h within each chain. Cost: 2 × 35 fused sweeps + 2 × 20 Rao-Blackwell passes.
N_CHAINS = 64
BURN_IN = 15
N_SAMPLES = 20
SPACING = 1


# --------------------------------------------------------------------------------------------
# what to clamp


@dataclass(frozen=True)
class Clamp:
    """Neurons fixed to 0/1 and hidden units fixed to real values (indices sorted, unique)."""

    n_visible: int
    n_hidden: int
    neurons: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    units: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unit_values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    label: str = ""

    @property
    def is_empty(self) -> bool:
        return self.neurons.size == 0 and self.units.size == 0

    def to_dict(self) -> dict:
        return {
            "clamp_neurons": self.neurons,
            "clamp_values": self.values,
            "clamp_units": self.units,
            "clamp_unit_values": self.unit_values,
            "clamp_label": self.label,
        }


def select_neurons(
    n_neurons: int,
    *,
    regions=None,
    neurons=None,
    region_labels: np.ndarray | None = None,
    region_names=None,
) -> np.ndarray:
    """Sorted unique indices of the neurons in `regions` (names or indices into `region_names`,
    via `region_labels`; −1 = unlabelled belongs to no region) and/or the explicit `neurons`."""
    picked = []
    if regions is not None:
        picked.append(_region_members(n_neurons, regions, region_labels, region_names))
    if neurons is not None:
        picked.append(_check_indices(neurons, n_neurons, "neuron"))
    if not picked:
        raise ParameterError("nothing to clamp: give regions and/or neurons")
    out = np.unique(np.concatenate(picked))
    if out.size == 0:
        raise ParameterError("the selection is empty: no neuron to clamp")
    return out


def neuron_clamp(
    n_visible: int,
    n_hidden: int,
    value,
    *,
    regions=None,
    neurons=None,
    region_labels: np.ndarray | None = None,
    region_names=None,
) -> Clamp:
    """Clamp the selected neurons (see `select_neurons`) to `value`: 0 ablates, 1 stimulates."""
    if not (np.ndim(value) == 0 and value in (0, 1) and not isinstance(value, str)):
        raise ParameterError(f"neuron clamp value {value!r}: must be 0 (ablate) or 1 (stimulate)")
    idx = select_neurons(
        n_visible,
        regions=regions,
        neurons=neurons,
        region_labels=region_labels,
        region_names=region_names,
    )
    what = "stimulate" if int(value) else "ablate"
    label = f"{what} {idx.size} neuron{'s' if idx.size > 1 else ''}"
    if regions is not None:
        label += f" (regions {_names(regions, region_names)})"
    return Clamp(
        int(n_visible), int(n_hidden), idx, np.full(idx.size, int(value), np.uint8), label=label
    )


def unit_clamp(n_visible: int, n_hidden: int, units, value) -> Clamp:
    """Clamp hidden units `units` to `value` (a scalar or one finite value per unit)."""
    raw = np.atleast_1d(np.asarray(units))
    idx = _check_indices(raw, n_hidden, "hidden unit")
    if idx.size == 0:
        raise ParameterError("the selection is empty: no hidden unit to clamp")
    if idx.size != raw.size:
        raise ParameterError("hidden units to clamp are listed more than once")
    try:
        vals = np.broadcast_to(np.asarray(value, dtype=np.float64), raw.shape)
    except (TypeError, ValueError):
        raise ParameterError(
            f"hidden clamp value has shape {np.shape(value)}; expected a scalar or one per unit "
            f"({raw.size})"
        ) from None
    if not np.all(np.isfinite(vals)):
        raise ParameterError("hidden clamp values must be finite numbers")
    order = np.argsort(raw)
    label = f"clamp {idx.size} hidden unit{'s' if idx.size > 1 else ''}"
    return Clamp(
        int(n_visible), int(n_hidden), units=idx, unit_values=vals[order].copy(), label=label
    )


def combine(*clamps: Clamp) -> Clamp:
    """One clamp doing all of `clamps` (e.g. ablate one region while stimulating another)."""
    if not clamps:
        raise ParameterError("combine needs at least one clamp")
    nv, nh = clamps[0].n_visible, clamps[0].n_hidden
    if any((c.n_visible, c.n_hidden) != (nv, nh) for c in clamps):
        raise ParameterError("clamps made for models of different sizes cannot be combined")
    out = []
    for idx, val in (("neurons", "values"), ("units", "unit_values")):
        i = np.concatenate([getattr(c, idx) for c in clamps])
        x = np.concatenate([getattr(c, val) for c in clamps])
        uniq, first = np.unique(i, return_index=True)
        for j in uniq:  # a unit clamped twice must get one value
            if np.unique(x[i == j]).size > 1:
                raise ParameterError(f"{idx[:-1]} {j} is clamped to two different values")
        out += [uniq, x[first]]
    label = " + ".join(c.label for c in clamps if c.label)
    return Clamp(nv, nh, out[0], out[1].astype(np.uint8), out[2], out[3].astype(float), label)


def _check_indices(values, n: int, what: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values))
    if arr.ndim != 1:
        raise ParameterError(f"{what} indices must be a 1-D list, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.number) and np.all(arr == np.round(arr))):
            raise ParameterError(f"{what} indices must be integers, got {arr.dtype} values")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise ParameterError(
            f"{what} index {int(bad[0])} is out of range: the model has {n} ({what}s 0..{n - 1})"
        )
    return np.unique(arr)


def _region_members(n_neurons, regions, region_labels, region_names) -> np.ndarray:
    if region_labels is None:
        raise ParameterError("selecting neurons by region needs the recording's region labels")
    labels = np.asarray(region_labels)
    if labels.shape != (n_neurons,):
        raise ParameterError(
            f"region labels have shape {labels.shape}; the model has {n_neurons} neurons"
        )
    names = tuple(region_names) if region_names is not None else None
    n_regions = len(names) if names is not None else int(labels.max(initial=-1)) + 1
    wanted = [regions] if isinstance(regions, (str, int, np.integer)) else list(regions)
    if not wanted:
        raise ParameterError("the selection is empty: no region given")
    out = []
    for r in wanted:
        k = _region_index(r, names, n_regions)
        members = np.flatnonzero(labels == k)
        if members.size == 0:
            name = names[k] if names is not None else f"region {k}"
            raise ParameterError(f"{name!r} has no neurons in this recording: nothing to clamp")
        out.append(members)
    return np.concatenate(out)


def _region_index(r, names, n_regions: int) -> int:
    if isinstance(r, str):
        if names is None:
            raise ParameterError(f"region {r!r} given by name, but no region names are known")
        lower = [n.lower() for n in names]
        if r.lower() in lower:
            return lower.index(r.lower())
        close = difflib.get_close_matches(r, names, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ParameterError(f"unknown region {r!r}{hint}")
    if isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer)):
        raise ParameterError(f"region {r!r}: give a region name or an integer index")
    if not 0 <= int(r) < n_regions:
        raise ParameterError(f"region index {r} is out of range 0..{n_regions - 1}")
    return int(r)


def _names(regions, names) -> str:
    wanted = [regions] if isinstance(regions, (str, int, np.integer)) else list(regions)
    return ", ".join(
        str(r) if isinstance(r, str) or names is None else names[int(r)] for r in wanted
    )


# --------------------------------------------------------------------------------------------
# the conditional chain


@njit(parallel=True, cache=True, nogil=True)
def _clamp_kernel(v, idx, vals, w_rows, inp) -> None:
    """v[c, idx[k]] = vals[k] for all chains c, and inp[c] += (vals[k] − old)·W[idx[k]] for the
    entries that changed (w_rows = W[idx]): the input stays I(v) without recomputing vW."""
    for c in prange(v.shape[0]):
        for k in range(idx.shape[0]):
            i = idx[k]
            old = v[c, i]
            if old != vals[k]:
                v[c, i] = vals[k]
                sign = 1.0 if vals[k] > old else -1.0
                for j in range(inp.shape[1]):
                    inp[c, j] += sign * w_rows[k, j]


@njit(cache=True, nogil=True)
def _prob_block(ht, w, g, b0, b1, fast_exp, acc) -> None:
    """acc[i, c] += σ(g_i + Σ_μ w_iμ h_cμ) for the neurons [b0, b1) (ht = hᵀ, M×C): a block
    GEMM, then the sweep's own e^−x (float32 polynomial, or libm in float64)."""
    xt = np.dot(w[b0:b1], ht)
    cg = ht.shape[1]
    e, bits = np.empty((1, cg), dtype=w.dtype), np.empty(cg, dtype=np.int32)
    one = w.dtype.type(1.0)
    for i in range(b0, b1):
        if fast_exp:
            _exp_neg_logit(xt, i - b0, g[i], e, 0, bits)
        else:
            _exp_neg_logit64(xt, i - b0, g[i], e, 0)
        for c in range(cg):
            acc[i, c] += one / (one + e[0, c])


@njit(parallel=True, cache=True, nogil=True)
def _prob_sum_kernel(h, w, g, fast_exp, acc) -> None:
    """acc (N×C) += P(v = 1 | h) of every chain, in one pass over W (blocks of neurons in
    parallel); the probabilities are never stored as a C×N array."""
    ht = np.ascontiguousarray(h.T)
    nb = (w.shape[0] + _BLOCK - 1) // _BLOCK
    for b in prange(nb):
        _prob_block(ht, w, g, b * _BLOCK, min(w.shape[0], (b + 1) * _BLOCK), fast_exp, acc)


class _Chain:
    """C Gibbs chains of `model`, optionally clamped, with Rao-Blackwellized running sums."""

    def __init__(self, model: CRBM, v0: np.ndarray, clamp: Clamp | None, seed: int):
        self.model, self.clamp = model, clamp
        self.rng = np.random.default_rng(seed)
        self.hp = model.hidden_params()
        self.w = np.ascontiguousarray(model.weights)
        self.g = np.ascontiguousarray(model.fields, dtype=model.dtype)
        v = np.array(v0, dtype=np.uint8, copy=True)
        if clamp is not None and clamp.neurons.size:
            self.idx = clamp.neurons
            self.vals = clamp.values
            self.w_rows = np.ascontiguousarray(model.weights[clamp.neurons])
            v[:, self.idx] = self.vals
        self.v = v
        self.inp = model.hidden_input(v)  # the only full v → h product
        c, n, m = v.shape[0], model.n_visible, model.n_hidden
        self.p_sum = np.zeros((n, c))  # neuron-major, as the kernel produces it
        self.h_sum = np.zeros((c, m))
        self.n_acc = 0
        self.h = None

    def draw_hidden(self) -> None:
        self.h = drelu_sample(self.inp, *self.hp, self.rng)
        if self.clamp is not None and self.clamp.units.size:
            self.h[:, self.clamp.units] = self.clamp.unit_values

    def accumulate(self) -> None:
        """Add P(v=1 | h) for the current h and E[h | v] for the current v."""
        fast = self.model.dtype == np.float32
        with _blas_threads().limit(limits=1, user_api="blas"):
            _prob_sum_kernel(self.h, self.w, self.g, fast, self.p_sum)
        self.h_sum += drelu_mean(self.inp, *self.hp)  # clamped units: set exactly in means()
        self.n_acc += 1

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-chain time averages (C×N of P(v=1|h), C×M of E[h|v]); clamped units exact."""
        p, h = self.p_sum.T / self.n_acc, self.h_sum / self.n_acc
        if self.clamp is not None:
            p[:, self.clamp.neurons] = self.clamp.values
            h[:, self.clamp.units] = self.clamp.unit_values
        return p, h

    def draw_visible(self) -> None:
        self.v, self.inp = self.model._visible_sweep(self.h, self.rng)
        if self.clamp is not None and self.clamp.neurons.size:
            _clamp_kernel(self.v, self.idx, self.vals, self.w_rows, self.inp)


def clamped_chain(
    model: CRBM, v0: np.ndarray, clamp: Clamp, n_sweeps: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(v, I(v)) after `n_sweeps` conditional Gibbs sweeps from v0 (C×N): the building block
    of `perturb`, exposed for checks and for callers that want raw conditional samples."""
    _check_model_clamp(model, clamp)
    v0 = _check_frames(v0, model.n_visible)
    chain = _Chain(model, v0, clamp, int(rng.integers(0, 2**63)))
    for _ in range(_check_count(n_sweeps, "n_sweeps", 0)):
        chain.draw_hidden()
        chain.draw_visible()
    return chain.v, chain.inp


# --------------------------------------------------------------------------------------------
# the result


@dataclass
class PerturbationResult:
    """Changes caused by a clamp, each with its standard error across independent chains.

    Per neuron (N): p_reference / p_perturbed = mean P(v_i = 1 | h) in the free and the clamped
    chain (clamped neurons: their clamp value), delta_p = the paired difference. Per HU (M): the
    same for E[h_μ | v]; delta_h_drift is the mean of Δh over the second half of the samples
    minus that over the first half (NaN for one sample): a burn-in check, ≈ 0 within a few
    delta_h_drift_se once the clamped chain has relaxed. Per region (R, only with region
    labels): mean delta_p over the region's labelled neurons that are not clamped (NaN where
    none is left; region_n counts them) and region_reference, their mean p_reference.
    Every *_se is sd(per-chain means)/√n_chains (see the module docstring).
    """

    clamp: Clamp
    p_reference: np.ndarray
    p_reference_se: np.ndarray
    p_perturbed: np.ndarray
    p_perturbed_se: np.ndarray
    delta_p: np.ndarray
    delta_p_se: np.ndarray
    h_reference: np.ndarray
    h_perturbed: np.ndarray
    delta_h: np.ndarray
    delta_h_se: np.ndarray
    delta_h_drift: np.ndarray
    delta_h_drift_se: np.ndarray
    region_reference: np.ndarray | None
    region_delta: np.ndarray | None
    region_delta_se: np.ndarray | None
    region_n: np.ndarray | None
    n_chains: int
    burn_in: int
    n_samples: int
    spacing: int

    def to_dict(self) -> dict:
        """Flat dict of arrays and scalars (HDF5- and dashboard-ready); regions absent → omitted."""
        out = self.clamp.to_dict()
        for k, v in self.__dict__.items():
            if k != "clamp" and v is not None:
                out[k] = v
        return out


# --------------------------------------------------------------------------------------------
# the analysis


def perturb(
    model: CRBM,
    frames,
    clamp: Clamp,
    rng: np.random.Generator,
    *,
    region_labels: np.ndarray | None = None,
    n_regions: int | None = None,
    n_chains: int | None = N_CHAINS,
    burn_in: int = BURN_IN,
    n_samples: int = N_SAMPLES,
    spacing: int = SPACING,
) -> PerturbationResult:
    """Effect of `clamp` on every neuron's firing probability, every HU's mean and every region.

    Chains start from `n_chains` frames of `frames` (T×N binary, an array or lazy `H5Spikes`)
    drawn without replacement (with replacement if T < n_chains); n_chains=None uses every frame
    in order, e.g. the final states of an equilibrated free chain. After `burn_in` sweeps,
    `n_samples` samples `spacing` sweeps apart are averaged. `region_labels` (N, −1 =
    unlabelled) and `n_regions` (default: largest label + 1) give the per-region summary.
    """
    _check_model_clamp(model, clamp)
    if not isinstance(rng, np.random.Generator):
        raise ParameterError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    burn_in = _check_count(burn_in, "burn_in", 0)
    n_samples = _check_count(n_samples, "n_samples", 1)
    spacing = _check_count(spacing, "spacing", 1)
    start = _start_frames(frames, model.n_visible, n_chains, rng)
    member = _region_matrix(region_labels, n_regions, model.n_visible, clamp)

    seed = int(rng.integers(0, 2**63))  # one seed for both: common random numbers
    ref, per = _Chain(model, start, None, seed), _Chain(model, start, clamp, seed)
    last = burn_in + (n_samples - 1) * spacing
    half = n_samples // 2
    h_half = []
    for t in range(last + 1):
        for chain in (ref, per):
            chain.draw_hidden()
            if t >= burn_in and (t - burn_in) % spacing == 0:
                chain.accumulate()
                if chain.n_acc == half:
                    h_half.append(chain.h_sum.copy())
            if t < last:
                chain.draw_visible()

    c = start.shape[0]
    (p_ref, h_ref), (p_per, h_per) = ref.means(), per.means()
    p_per_mean, h_per_mean = p_per.mean(axis=0), h_per.mean(axis=0)
    p_per_mean[clamp.neurons] = clamp.values  # exact, not a mean of equal values
    h_per_mean[clamp.units] = clamp.unit_values
    d_p, d_h = p_per - p_ref, h_per - h_ref
    if half:  # second-half minus first-half mean of Δh, per chain: ≈ 0 once burnt in
        early = (h_half[1] - h_half[0]) / half
        late = (per.h_sum - ref.h_sum - h_half[1] + h_half[0]) / (n_samples - half)
        drift = late - early
        drift[:, clamp.units] = 0.0
        drift = (drift.mean(axis=0), _se(drift))
    else:
        drift = (np.full(model.n_hidden, np.nan),) * 2
    regions = (None,) * 4
    if member is not None:
        counts = np.asarray(member.sum(axis=0)).ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            region_ref = np.asarray(p_ref @ member) / counts  # C×R per-chain region means
            region_d = np.asarray(d_p @ member) / counts
        regions = (region_ref.mean(axis=0), region_d.mean(axis=0), _se(region_d), counts)
    return PerturbationResult(
        clamp,
        p_ref.mean(axis=0),
        _se(p_ref),
        p_per_mean,
        _se(p_per),
        d_p.mean(axis=0),
        _se(d_p),
        h_ref.mean(axis=0),
        h_per_mean,
        d_h.mean(axis=0),
        _se(d_h),
        *drift,
        *regions,
        n_chains=c,
        burn_in=burn_in,
        n_samples=n_samples,
        spacing=spacing,
    )


def perturb_recording(
    model: CRBM,
    recording,
    rng: np.random.Generator,
    *,
    regions=None,
    neurons=None,
    value=None,
    units=None,
    unit_value=None,
    **options,
) -> PerturbationResult:
    """`perturb` on a `Recording`: clamp its `regions` (names or indices) and/or `neurons` to
    `value` (0/1), and/or HUs `units` to `unit_value`; chains start from its frames."""
    n, m = model.n_visible, model.n_hidden
    if recording.n_neurons != n:
        raise ParameterError(
            f"the recording has {recording.n_neurons} neurons but the model has {n}"
        )
    parts = []
    if regions is not None or neurons is not None:
        if value is None:
            raise ParameterError("clamping neurons needs value=0 (ablate) or value=1 (stimulate)")
        parts.append(
            neuron_clamp(
                n,
                m,
                value,
                regions=regions,
                neurons=neurons,
                region_labels=recording.region_labels,
                region_names=recording.region_names,
            )
        )
    if units is not None:
        if unit_value is None:
            raise ParameterError("clamping hidden units needs unit_value")
        parts.append(unit_clamp(n, m, units, unit_value))
    if not parts:
        raise ParameterError("nothing to clamp: give regions, neurons or units")
    return perturb(
        model,
        recording.spikes,
        combine(*parts),
        rng,
        region_labels=recording.region_labels,
        n_regions=len(recording.region_names),
        **options,
    )


# --------------------------------------------------------------------------------------------
# helpers


def _se(x: np.ndarray) -> np.ndarray:
    """Standard error of the mean over chains (axis 0): sd(ddof=1)/√C."""
    return x.std(axis=0, ddof=1) / math.sqrt(x.shape[0])


def _check_count(x, name: str, low: int) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or x < low:
        raise ParameterError(f"{name} = {x!r}: must be an integer ≥ {low}")
    return int(x)


def _check_model_clamp(model: CRBM, clamp: Clamp) -> None:
    if not isinstance(clamp, Clamp):
        raise ParameterError(f"clamp must be a Clamp, got {type(clamp).__name__}")
    if (clamp.n_visible, clamp.n_hidden) != (model.n_visible, model.n_hidden):
        raise ParameterError(
            f"the clamp was made for {clamp.n_visible} neurons × {clamp.n_hidden} hidden units, "
            f"the model has {model.n_visible} × {model.n_hidden}"
        )
    if clamp.is_empty:
        raise ParameterError("the clamp is empty: nothing to perturb")


def _check_frames(v: np.ndarray, n: int) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim != 2 or v.shape[1] != n or v.shape[0] == 0:
        raise ParameterError(f"frames have shape {v.shape}; expected (frames ≥ 1, {n} neurons)")
    if v.dtype != np.uint8:
        if not np.all(np.isin(v, (0, 1))):
            raise ParameterError("frames must be binary (0/1); found other values or NaN")
    elif v.max(initial=0) > 1:
        raise ParameterError("frames must be binary (0/1); found values > 1")
    return np.ascontiguousarray(v, dtype=np.uint8)


def _start_frames(frames, n: int, n_chains, rng: np.random.Generator) -> np.ndarray:
    shape = getattr(frames, "shape", None)
    if shape is None:
        frames = np.asarray(frames)
        shape = frames.shape
    if len(shape) != 2 or shape[1] != n or shape[0] == 0:
        raise ParameterError(f"frames have shape {tuple(shape)}; expected (frames ≥ 1, {n})")
    if n_chains is None:
        idx = np.arange(shape[0])
        if shape[0] < 2:
            raise ParameterError("at least 2 start frames are needed for a standard error")
    else:
        n_chains = _check_count(n_chains, "n_chains", 2)
        idx = np.sort(rng.choice(shape[0], size=n_chains, replace=shape[0] < n_chains))
    return _check_frames(frames[idx], n)


def _region_matrix(labels, n_regions, n: int, clamp: Clamp) -> sp.csr_matrix | None:
    """N×R indicator of the labelled, unclamped neurons of each region (None without labels)."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ParameterError(
            f"region labels must be {n} integers, got {labels.dtype} {labels.shape}"
        )
    if n_regions is None:
        n_regions = int(labels.max(initial=-1)) + 1
    if labels.max(initial=-1) >= n_regions or labels.min(initial=-1) < -1:
        raise ParameterError(f"region labels must lie in −1..{n_regions - 1}")
    keep = labels >= 0
    keep[clamp.neurons] = False
    rows = np.flatnonzero(keep)
    return sp.csr_matrix((np.ones(rows.size), (rows, labels[rows])), shape=(n, n_regions))
