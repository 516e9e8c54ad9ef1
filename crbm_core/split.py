"""Train/test split by chronological segments (METHODS §4, the paper's "Train / test data split").

The recording is cut into `n_segments` (10) chronological segments of (nearly) equal length; each
of the C(10, 3) = 120 ways to hold out 3 of them is scored by how different its training and test
statistics are, and the split at the 10th percentile of that score is taken: test data that is
statistically like the training data, without picking the single most favourable split (the
paper's reasoning). Frames keep their temporal order inside each part, so dynamics can be
analysed on either side.

Score of a split: the RMSE between train and test of the neuron means ⟨v_i⟩ (all neurons) and
the RMSE of the connected correlations ⟨v_i v_j⟩ − ⟨v_i⟩⟨v_j⟩ (all pairs i < j of a fixed random
subsample of at most `max_neurons` neurons, drawn with `seed`: 1000 neurons give ~500,000 pairs,
enough to rank splits, and keep the cost at 10 Gram matrices of 1000×1000). The two RMSEs are on
different scales, so each is divided by its median over the 120 splits and the two are added:
score = RMSE_mean / median(RMSE_mean) + RMSE_corr / median(RMSE_corr) (a median of 0 leaves that
term unscaled). Everything comes from per-segment sums (counts, Σv, Σvvᵀ on the subsample), so
the data are read once, a segment at a time; lazily read recordings work.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from .errors import ParameterError
from .recording import check_binary_block

MIN_FRAMES_PER_SEGMENT = 2  # a covariance needs two frames


def segment_bounds(n_frames: int, n_segments: int = 10) -> np.ndarray:
    """(n_segments + 1,) frame boundaries: segment s is frames [b[s], b[s+1]).

    Lengths differ by at most one frame (the first T mod n_segments segments get the extra)."""
    n_frames, n_segments = int(n_frames), int(n_segments)
    if n_segments < 2:
        raise ParameterError(f"n_segments {n_segments}: need at least 2 segments")
    if n_frames < MIN_FRAMES_PER_SEGMENT * n_segments:
        raise ParameterError(
            f"{n_frames} frames are too few for {n_segments} segments of at least "
            f"{MIN_FRAMES_PER_SEGMENT} frames (need ≥ {MIN_FRAMES_PER_SEGMENT * n_segments})"
        )
    sizes = np.full(n_segments, n_frames // n_segments, dtype=np.int64)
    sizes[: n_frames % n_segments] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def _frames(bounds: np.ndarray, segments) -> np.ndarray:
    return np.concatenate([np.arange(bounds[s], bounds[s + 1]) for s in sorted(segments)])


@dataclass
class Split:
    """A chosen train/test split and the scores it was chosen from.

    Segment ids are 0-based. `combinations[k]` are the held-out segments of candidate k (in
    itertools.combinations order), scored `scores[k]`; the chosen candidate is the `rank`-th
    smallest score (0-based), `rank` = round(percentile/100 · (n_candidates − 1)).
    """

    n_frames: int
    bounds: np.ndarray  # (n_segments + 1,)
    held_out: tuple[int, ...]
    train: np.ndarray  # frame indices, increasing
    test: np.ndarray  # frame indices, increasing
    combinations: np.ndarray  # (n_candidates, n_test) held-out segment ids
    rmse_mean: np.ndarray  # (n_candidates,)
    rmse_corr: np.ndarray  # (n_candidates,)
    scores: np.ndarray  # (n_candidates,)
    rank: int
    percentile: float
    neurons: np.ndarray  # the neuron subsample of the correlation RMSE
    seed: int

    @property
    def n_segments(self) -> int:
        return self.bounds.size - 1

    def apply(self, data) -> tuple[np.ndarray, np.ndarray]:
        """(train frames, test frames) of `data` (T×N, in memory or lazy), in temporal order."""
        if data.shape[0] != self.n_frames:
            raise ParameterError(
                f"the split is for {self.n_frames} frames, data has {data.shape[0]}"
            )

        def part(segments):
            return np.concatenate(
                [np.asarray(data[self.bounds[s] : self.bounds[s + 1]]) for s in segments]
            )

        held = set(self.held_out)
        return part([s for s in range(self.n_segments) if s not in held]), part(self.held_out)

    def describe(self) -> str:
        """One line for logs and file attributes."""
        held = ", ".join(str(int(s) + 1) for s in self.held_out)
        return (
            f"segments {held} of {self.n_segments} held out ({len(self.train)} train, "
            f"{len(self.test)} test frames; {self.percentile:g}th percentile of train-test RMSE)"
        )

    def to_dict(self) -> dict:
        """Arrays and scalars only (HDF5 datasets/attributes; `from_dict` inverts it)."""
        return {
            "n_frames": int(self.n_frames),
            "bounds": np.asarray(self.bounds, dtype=np.int64),
            "held_out": np.asarray(self.held_out, dtype=np.int64),
            "train": np.asarray(self.train, dtype=np.int64),
            "test": np.asarray(self.test, dtype=np.int64),
            "combinations": np.asarray(self.combinations, dtype=np.int64),
            "rmse_mean": np.asarray(self.rmse_mean, dtype=np.float64),
            "rmse_corr": np.asarray(self.rmse_corr, dtype=np.float64),
            "scores": np.asarray(self.scores, dtype=np.float64),
            "rank": int(self.rank),
            "percentile": float(self.percentile),
            "neurons": np.asarray(self.neurons, dtype=np.int64),
            "seed": int(self.seed),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Split:
        """Rebuild a stored split, checking that its frames are the segments it names."""
        missing = [k for k in cls.__dataclass_fields__ if k not in d]
        if missing:
            raise ParameterError(f"stored split lacks {', '.join(missing)}")
        bounds = np.asarray(d["bounds"], dtype=np.int64)
        held = tuple(int(s) for s in np.atleast_1d(d["held_out"]))
        n_frames = int(d["n_frames"])
        if (
            bounds.ndim != 1
            or bounds[0] != 0
            or bounds[-1] != n_frames
            or np.any(np.diff(bounds) < 1)
        ):
            raise ParameterError(
                f"stored split: bounds {bounds.tolist()} do not cut {n_frames} frames"
            )
        n_seg = bounds.size - 1
        if not held or any(not 0 <= s < n_seg for s in held):
            raise ParameterError(f"stored split: held-out segments {held} not in 0..{n_seg - 1}")
        train = np.asarray(d["train"], dtype=np.int64)
        test = np.asarray(d["test"], dtype=np.int64)
        rest = [s for s in range(n_seg) if s not in set(held)]
        if not (
            np.array_equal(test, _frames(bounds, held))
            and np.array_equal(train, _frames(bounds, rest))
        ):
            raise ParameterError("stored split: train/test frames are not the segments it names")
        return cls(
            n_frames,
            bounds,
            held,
            train,
            test,
            np.asarray(d["combinations"], dtype=np.int64),
            np.asarray(d["rmse_mean"], dtype=np.float64),
            np.asarray(d["rmse_corr"], dtype=np.float64),
            np.asarray(d["scores"], dtype=np.float64),
            int(d["rank"]),
            float(d["percentile"]),
            np.asarray(d["neurons"], dtype=np.int64),
            int(d["seed"]),
        )


def correlation_neurons(n_neurons: int, max_neurons: int = 1000, seed: int = 0) -> np.ndarray:
    """The neurons whose pairs enter the correlation RMSE: all, or `max_neurons` drawn at random
    (without replacement, `numpy.random.default_rng(seed)`), sorted."""
    if max_neurons < 2:
        raise ParameterError(f"max_neurons {max_neurons}: need at least 2 neurons for pairs")
    if n_neurons <= max_neurons:
        return np.arange(n_neurons)
    return np.sort(np.random.default_rng(seed).choice(n_neurons, size=max_neurons, replace=False))


def _segment_sums(data, bounds: np.ndarray, neurons: np.ndarray):
    """Per segment: frame count, Σ_t v(t) (N), Σ_t v_S(t) v_S(t)ᵀ on the subsample S."""
    n_seg, n = bounds.size - 1, data.shape[1]
    counts = np.diff(bounds).astype(np.float64)
    sums = np.empty((n_seg, n))
    grams = np.empty((n_seg, neurons.size, neurons.size))
    for s in range(n_seg):
        block = check_binary_block(
            np.asarray(data[bounds[s] : bounds[s + 1]]), "spikes", frame0=int(bounds[s])
        )
        sums[s] = block.sum(axis=0, dtype=np.float64)
        x = block[:, neurons].astype(np.float32)  # 0/1 products and sums < 2^24: exact
        grams[s] = x.T @ x
    return counts, sums, grams


def _stats(count, total, gram, neurons, iu):
    """(⟨v⟩ of all neurons, connected correlations of the subsample's pairs iu)."""
    mean = total / count
    ms = mean[neurons]
    cov = gram / count - np.outer(ms, ms)
    return mean, cov[iu]


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def choose_split(
    data,
    n_segments: int = 10,
    n_test: int = 3,
    percentile: float = 10.0,
    max_neurons: int = 1000,
    seed: int = 0,
) -> Split:
    """Score every way of holding out `n_test` of `n_segments` chronological segments of `data`
    (T×N binary, in memory or lazy) and return the split at `percentile` (see module docstring)."""
    if getattr(data, "ndim", None) != 2:
        raise ParameterError(
            f"data must be frames × neurons, got shape {getattr(data, 'shape', None)}"
        )
    n_frames, n_neurons = (int(x) for x in data.shape)
    if n_neurons < 2:
        raise ParameterError(f"{n_neurons} neuron(s): correlations need at least 2 neurons")
    if not 1 <= int(n_test) < int(n_segments):
        raise ParameterError(
            f"n_test {n_test}: must be between 1 and n_segments − 1 = {n_segments - 1}"
        )
    if not (math.isfinite(percentile) and 0.0 <= percentile <= 100.0):
        raise ParameterError(f"percentile {percentile}: must be between 0 and 100")
    bounds = segment_bounds(n_frames, n_segments)
    neurons = correlation_neurons(n_neurons, max_neurons, seed)
    counts, sums, grams = _segment_sums(data, bounds, neurons)
    iu = np.triu_indices(neurons.size, 1)
    all_c, all_s, all_g = counts.sum(), sums.sum(axis=0), grams.sum(axis=0)
    combos = np.array(list(itertools.combinations(range(int(n_segments)), int(n_test))))
    rmse_mean, rmse_corr = np.empty(len(combos)), np.empty(len(combos))
    for k, held in enumerate(combos):
        c, s, g = counts[held].sum(), sums[held].sum(axis=0), grams[held].sum(axis=0)
        test_m, test_c = _stats(c, s, g, neurons, iu)
        train_m, train_c = _stats(all_c - c, all_s - s, all_g - g, neurons, iu)
        rmse_mean[k], rmse_corr[k] = _rmse(train_m, test_m), _rmse(train_c, test_c)
    scores = _scaled(rmse_mean) + _scaled(rmse_corr)
    rank = int(round(percentile / 100.0 * (len(combos) - 1)))
    chosen = int(np.argsort(scores, kind="stable")[rank])
    held = tuple(int(s) for s in combos[chosen])
    rest = [s for s in range(int(n_segments)) if s not in held]
    return Split(
        n_frames,
        bounds,
        held,
        _frames(bounds, rest),
        _frames(bounds, held),
        combos,
        rmse_mean,
        rmse_corr,
        scores,
        rank,
        float(percentile),
        neurons,
        int(seed),
    )


def _scaled(x: np.ndarray) -> np.ndarray:
    med = float(np.median(x))
    return x / med if med > 0 else x
