"""Virtual fish: realistic recordings whose assemblies and connectivity are known.

Every test, benchmark and the demo need data where the truth is known. Two modes:

* "assemblies": a generative process that is NOT an RBM. Neurons sit inside real atlas regions in
  real-fish proportions; K spatially localized assemblies (some spanning 2–3 regions with partners
  chosen in proportion to the structural connectome, left/right mirrored pairs, a few with
  opposite-sign contralateral members) switch on and off slowly (dwell times of seconds, some
  antiphasic pairs), modulated by a slow brain-wide state; each neuron fires per frame with
  probability σ(b_i + β_i·G(t) + Σ_k w_ik h_k(t)).
* "crbm": the same planted assemblies, made disjoint, define a cRBM with double-well dReLU
  hidden units, and the frames are independent exact samples of its P(v) (ancestral sampling,
  `crbm_sampling`), for checks that need the true model.

The ground truth (weights, membership, assembly activity, region-level coupling) is stored in the
recording file under /truth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from . import atlas
from .connectivity import region_mean_abs_coupling
from .errors import ParameterError
from .recording import Recording, write_recording

GENERATOR_VERSION = 3
LOCAL_SHARE = 0.35  # an assembly takes at most this share of a region's neurons (locality)
COVERAGE = 1.0  # default mean assembly size: labelled neurons / assemblies × this
OVERLAP_COST = 2.0  # distance penalty per assembly a neuron already belongs to (tiling)
MODES = ("assemblies", "crbm")


@dataclass
class Assembly:
    """One planted assembly: its members, their weights and how it was built."""

    members: np.ndarray
    weights: np.ndarray
    regions: list[int]
    mirror_of: int = -1
    antiphase_with: int = -1
    contra_negative: bool = False


@dataclass
class GroundTruth:
    """What a virtual fish was made from (arrays indexed like the recording's neurons)."""

    mode: str
    weights: np.ndarray  # N×K float32 (logit units in "assemblies" mode, cRBM weights in "crbm")
    activity: np.ndarray  # T×K float32: assembly activity (or E[h|v] of the true cRBM)
    region_coupling: np.ndarray  # 72×72 mean |J_ij| per region pair
    assemblies: dict[str, np.ndarray]  # per-assembly table: size, home region, mirror, ...
    baseline_logit: np.ndarray  # N
    global_state: np.ndarray | None = None  # T (assemblies mode)
    model: dict[str, np.ndarray] = field(default_factory=dict)  # crbm mode: the true cRBM

    @property
    def membership(self) -> np.ndarray:
        return self.weights != 0

    def best_match(self, learned: np.ndarray, pairs: bool = True) -> np.ndarray:
        """Per planted assembly, the best |cosine| with any learned unit (columns of N×M).

        An antiphasic pair (one assembly on exactly when its partner is off) is one latent
        variable, and a single unit with opposite signs on the two sides is the cRBM's natural
        way to carry it (as the paper's hindbrain-oscillator units do): for such an assembly the
        signed pair vector w_k − w_partner counts as a match too (unless `pairs` is False).
        """
        learned = np.asarray(learned, dtype=np.float64)
        lnorm = np.linalg.norm(learned, axis=0) + 1e-12
        w = self.weights.astype(np.float64)
        targets = [w]
        partner = self.assemblies.get("antiphase_with")
        if pairs and partner is not None and (partner >= 0).any():
            pair = w - np.where(partner >= 0, 1.0, 0.0) * w[:, np.maximum(partner, 0)]
            targets.append(pair)
        best = np.zeros(w.shape[1])
        for x in targets:
            cos = np.abs(x.T @ learned) / np.outer(np.linalg.norm(x, axis=0) + 1e-12, lnorm)
            best = np.maximum(best, cos.max(axis=1))
        return best


# --------------------------------------------------------------------------------------------
# positions and region labels


def sample_positions(
    rng: np.random.Generator, n: int, unlabelled_share: float | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Neuron positions (data mm, ZBrain space) and 72-region labels in real-fish proportions.

    From the atlas label volume when installed (uniform over the region's voxels), otherwise from
    the committed geometry table (the region's centroid and spread, clipped to its extent).
    Unlabelled neurons (≈16 % in real fish) sit near a region but carry label −1.
    """
    geo = atlas.region_geometry()
    share = geo.real_share_labelled
    if unlabelled_share is None:
        unlabelled_share = geo.unlabelled_share
    source = "volume" if atlas.available()["label_volume"] else "table"
    region = rng.choice(atlas.N_REGIONS, size=n, p=share / share.sum())
    labelled = rng.random(n) >= unlabelled_share
    coords = np.empty((n, 3), dtype=np.float64)
    for r in np.unique(region):
        idx = np.flatnonzero(region == r)
        coords[idx] = atlas.sample_region_positions(int(r), idx.size, rng, source=source)
    coords[~labelled] += rng.normal(0.0, 0.012, size=((~labelled).sum(), 3))
    labels = np.where(labelled, region, -1).astype(np.int16)
    return coords.astype(np.float32), labels, f"atlas {source}"


# --------------------------------------------------------------------------------------------
# planted assemblies


def _partner_weights(
    home: int, candidates: np.ndarray, centroids: np.ndarray, sc: np.ndarray | None
) -> np.ndarray:
    if sc is not None:
        w = sc[home, candidates].astype(np.float64)
        if w.sum() > 0:
            return w / w.sum()
    d = np.linalg.norm(centroids[candidates] - centroids[home], axis=1)
    w = 1.0 / (d + 0.05)
    return w / w.sum()


def _nearest_in_region(coords, region_members: np.ndarray, center: np.ndarray, k: int, taken):
    """The k members nearest to `center`, distances stretched by (1 + OVERLAP_COST·memberships):
    free neurons are preferred, so assemblies tile a region and overlap only at their borders."""
    d = np.linalg.norm(coords[region_members] - center, axis=1)
    d *= 1.0 + OVERLAP_COST * taken[region_members]
    return region_members[np.argsort(d)[:k]]


def _mirror(points: np.ndarray) -> np.ndarray:
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] = 2 * atlas.MIDLINE_X_MM - out[..., 0]
    return out


def plant_assemblies(
    rng: np.random.Generator,
    coords: np.ndarray,
    labels: np.ndarray,
    n_assemblies: int,
    sc: np.ndarray | None = None,
    mean_size: float | None = None,
) -> list[Assembly]:
    """Spatially localized assemblies that tile real regions, overlapping at their borders.

    As in real fish (the tectum is tiled by ~18 assemblies, "partially overlapping"): each home
    region is chosen ∝ its neurons not yet in an assembly, an assembly grows around a free neuron
    and prefers free neurons (`OVERLAP_COST`), and its size is capped by its home region
    (`LOCAL_SHARE`), which has room for at least half the mean size. About a quarter of
    assemblies come as left/right mirrored pairs, half of the primaries span 2–3 regions
    (partners ∝ structural connectivity when available, else ∝ 1/distance), and a tenth have
    opposite-sign members in the contralateral homologous region.
    """
    n = coords.shape[0]
    coords = coords.astype(np.float64)
    by_region = {r: np.flatnonzero(labels == r) for r in range(atlas.N_REGIONS)}
    counts = np.array([by_region[r].size for r in range(atlas.N_REGIONS)])
    if mean_size is None:
        mean_size = float(np.clip(COVERAGE * (labels >= 0).sum() / max(n_assemblies, 1), 8, 2000))
    min_region = max(8, int(0.25 * mean_size))
    usable = np.flatnonzero((counts >= min_region) & (counts[np.arange(72) ^ 1] >= min_region))
    if usable.size == 0:
        raise ParameterError(
            f"{n} neurons are too few to plant assemblies of ~{mean_size:.0f} "
            "neurons in real regions; use more neurons or fewer assemblies"
        )
    centroids = np.array(
        [
            coords[by_region[r]].mean(axis=0) if counts[r] else np.zeros(3)
            for r in range(atlas.N_REGIONS)
        ]
    )
    taken = np.zeros(n)  # assemblies each neuron belongs to so far
    room = LOCAL_SHARE * counts  # the most one assembly takes from a region
    # a home region has room for at least half the mean size (no tiny assemblies)
    homes = usable[room[usable] / 0.6 >= 0.5 * mean_size]
    if homes.size == 0:
        homes = usable[room[usable] >= 0.6 * room[usable].max()]

    def grow(region: int, center: np.ndarray, k: int) -> np.ndarray:
        idx = _nearest_in_region(coords, by_region[region], center, max(4, k), taken)
        taken[idx] += 1
        return idx

    def free_center(region: int) -> np.ndarray:
        pool = by_region[region]
        free = pool[taken[pool] == 0]
        return coords[rng.choice(free if free.size else pool)]

    n_pairs = max(1, round(0.125 * n_assemblies)) if n_assemblies >= 4 else 0
    assemblies: list[Assembly] = []
    while len(assemblies) < n_assemblies:
        free = np.array([(taken[by_region[r]] == 0).sum() for r in homes], dtype=np.float64)
        weight = free + 0.05 * counts[homes]  # fully tiled regions can still host overlaps
        home = int(rng.choice(homes, p=weight / weight.sum()))
        size = int(np.clip(rng.lognormal(np.log(mean_size), 0.35), 8, 4 * mean_size))
        n_reg = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        regions = [home]
        others = usable[usable != home]
        if n_reg > 1 and others.size:
            p = _partner_weights(home, others, centroids, sc)
            k = min(n_reg - 1, int((p > 0).sum()))
            regions += [int(r) for r in rng.choice(others, size=k, replace=False, p=p)]
        shares = (
            np.array([0.6] + [0.4 / (len(regions) - 1)] * (len(regions) - 1))
            if len(regions) > 1
            else np.array([1.0])
        )
        size = min(size, int(room[home] / shares[0]))  # the home part fits its region
        centers, members = [], []
        for r, s in zip(regions, shares, strict=True):
            centers.append(free_center(r))
            members.append(grow(r, centers[-1], min(int(s * size), int(room[r]))))
        idx = np.concatenate(members)
        w = rng.uniform(1.5, 3.0, size=idx.size)
        contra = rng.random() < 0.1
        if contra:
            neg = grow(home ^ 1, _mirror(centers[0]), max(4, idx.size // 3))
            neg = np.setdiff1d(neg, idx)
            idx = np.concatenate([idx, neg])
            w = np.concatenate([w, -rng.uniform(1.0, 2.0, size=neg.size)])
        idx, first = np.unique(idx, return_index=True)
        assemblies.append(Assembly(idx, w[first], regions, contra_negative=contra))
        n_mirrored = sum(a.mirror_of >= 0 for a in assemblies)
        if n_mirrored < 2 * n_pairs and len(assemblies) < n_assemblies:
            midx = np.concatenate(
                [
                    grow(r ^ 1, _mirror(center), m.size)
                    for r, center, m in zip(regions, centers, members, strict=True)
                ]
            )
            mw = rng.uniform(1.5, 3.0, size=midx.size)
            midx, first = np.unique(midx, return_index=True)
            primary = len(assemblies) - 1
            assemblies.append(
                Assembly(midx, mw[first], [r ^ 1 for r in regions], mirror_of=primary)
            )
            assemblies[primary].mirror_of = len(assemblies) - 1
    return assemblies


def weight_matrix(assemblies: list[Assembly], n: int) -> sp.csr_matrix:
    rows = np.concatenate([a.members for a in assemblies])
    cols = np.concatenate([np.full(a.members.size, k) for k, a in enumerate(assemblies)])
    vals = np.concatenate([a.weights for a in assemblies])
    return sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(n, len(assemblies)))


# --------------------------------------------------------------------------------------------
# slow dynamics


def _two_state(rng, n_frames: int, on_dwell: float, off_dwell, start_on: bool) -> np.ndarray:
    """Binary Markov chain with mean dwell times in frames; off_dwell may vary per frame."""
    off = np.broadcast_to(np.asarray(off_dwell, dtype=np.float64), (n_frames,))
    u = rng.random(n_frames)
    state = np.empty(n_frames, dtype=bool)
    s = start_on
    for t in range(n_frames):
        state[t] = s
        s = (u[t] >= 1.0 / on_dwell) if s else (u[t] < 1.0 / off[t])
    return state


def simulate_dynamics(
    rng: np.random.Generator, assemblies: list[Assembly], n_frames: int, frame_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Assembly activity (T×K, 0 when off, an episode amplitude ~1 when on) and the global state.

    Assemblies stay on for 2–6 s and off for 10–40 s (2.5× shorter while the brain-wide state is
    active, which makes assemblies co-activate as in real fish); every other mirrored pair is
    antiphasic alternate like the hindbrain oscillator (3–6 s half-periods).
    """
    glob = _two_state(rng, n_frames, 8 * frame_rate, 20 * frame_rate, start_on=False)
    k = len(assemblies)
    act = np.zeros((n_frames, k), dtype=np.float32)
    done = set()
    n_pairs = 0
    for i, a in enumerate(assemblies):
        if i in done:
            continue
        j = a.mirror_of
        n_pairs += j >= 0
        if j >= 0 and j not in done and n_pairs % 2 == 1:  # every other mirrored pair
            half = rng.uniform(3, 6) * frame_rate
            s = _two_state(rng, n_frames, half, half, start_on=bool(rng.random() < 0.5))
            states = {i: s, j: ~s}
            a.antiphase_with, assemblies[j].antiphase_with = j, i
        else:
            off = rng.uniform(10, 40) * frame_rate * np.where(glob, 0.4, 1.0)
            states = {
                i: _two_state(
                    rng,
                    n_frames,
                    rng.uniform(2, 6) * frame_rate,
                    off,
                    start_on=bool(rng.random() < 0.2),
                )
            }
        for m, s in states.items():
            starts = np.flatnonzero(np.diff(np.concatenate([[False], s])) == 1)
            episode = np.cumsum(np.diff(np.concatenate([[False], s])) == 1)
            amp = rng.uniform(0.7, 1.3, size=starts.size + 1)
            act[:, m] = np.where(s, amp[episode], 0.0)
            done.add(m)
    return act, glob.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# the generator


@dataclass
class VirtualFish:
    recording: Recording
    truth: GroundTruth


def _check_params(n_neurons, n_frames, n_assemblies, frame_rate, mode):
    if mode not in MODES:
        raise ParameterError(f"mode {mode!r} is not one of {MODES}")
    if int(n_neurons) < 50:
        raise ParameterError(f"--neurons {n_neurons}: a virtual fish needs at least 50 neurons")
    if int(n_frames) < 10:
        raise ParameterError(f"--frames {n_frames}: a virtual fish needs at least 10 frames")
    if int(n_assemblies) < 1 or int(n_assemblies) > int(n_neurons) // 8:
        raise ParameterError(
            f"--assemblies {n_assemblies}: must be between 1 and neurons/8 = {int(n_neurons) // 8}"
        )
    if not (np.isfinite(frame_rate) and 0.1 <= frame_rate <= 1000):
        raise ParameterError(f"--frame-rate {frame_rate}: must be between 0.1 and 1000 Hz")


def _baseline(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron baseline logit (skewed rates, median ≈ 0.005) and global-state gain."""
    rate = np.clip(rng.lognormal(np.log(0.005), 0.8, size=n), 2e-4, 0.3)
    return np.log(rate / (1 - rate)), rng.uniform(0.8, 2.0, size=n)


def _rate_offset(rng, b, beta, w, act, glob, mean_rate: float, n_sample: int = 256) -> float:
    """Shift of all baseline logits that makes the expected mean firing probability `mean_rate`.

    Solved by bisection on a random subset of frames (the expectation is exact given the
    dynamics; only the frame subset is sampled).
    """
    frames = rng.choice(act.shape[0], size=min(n_sample, act.shape[0]), replace=False)
    logit = b + glob[frames, None] * beta + (w @ act[frames].T).T
    lo, hi = -20.0, 20.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if np.mean(1.0 / (1.0 + np.exp(-(logit + mid)))) > mean_rate:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def generate_virtual_fish(
    n_neurons: int = 3000,
    n_frames: int = 4000,
    n_assemblies: int = 30,
    seed: int = 0,
    mode: str = "assemblies",
    frame_rate: float = 4.0,
    mean_rate: float = 0.035,
    name: str | None = None,
) -> VirtualFish:
    """Make a virtual fish in memory (see the module docstring); deterministic given `seed`.

    `mean_rate` is the mean spike probability per frame over neurons and frames (real fish:
    0.02–0.05), reached by shifting every neuron's baseline ("assemblies" mode).
    """
    _check_params(n_neurons, n_frames, n_assemblies, frame_rate, mode)
    if not 0.001 <= mean_rate <= 0.3:
        raise ParameterError(f"mean rate {mean_rate}: must be between 0.001 and 0.3 per frame")
    n, t = int(n_neurons), int(n_frames)
    rng = np.random.default_rng(seed)
    coords, labels, placed = sample_positions(rng, n)
    sc = None
    partner_rule = "1/distance (structural connectivity not installed)"
    if atlas.available().get("connectivity", False):
        sc, partner_rule = atlas.structural_connectivity(), "structural connectivity"
    assemblies = plant_assemblies(rng, coords, labels, int(n_assemblies), sc)
    w = weight_matrix(assemblies, n)
    b, beta = _baseline(rng, n)
    if mode == "assemblies":
        act, glob = simulate_dynamics(rng, assemblies, t, frame_rate)
        b = b + _rate_offset(rng, b, beta, w, act, glob, mean_rate)
        spikes = np.empty((t, n), dtype=np.uint8)
        for t0 in range(0, t, 1024):
            sl = slice(t0, min(t0 + 1024, t))
            logit = b + glob[sl, None] * beta + (w @ act[sl].T).T
            spikes[sl] = rng.random(logit.shape) < 1.0 / (1.0 + np.exp(-logit))
        variance = act.var(axis=0)
        weights = w.toarray()
        model = {}
    else:
        from .crbm_sampling import planted_crbm, sample_crbm

        model = planted_crbm(w, b, rng, mean_rate=mean_rate)
        spikes, act, variance = sample_crbm(model, t, rng)
        weights, glob = model["weights"], None
    coupling = region_mean_abs_coupling(sp.csr_matrix(weights), variance, labels, atlas.N_REGIONS)
    table = {
        "size": np.array([a.members.size for a in assemblies]),
        "home_region": np.array([a.regions[0] for a in assemblies]),
        "n_regions": np.array([len(a.regions) for a in assemblies]),
        "mirror_of": np.array([a.mirror_of for a in assemblies]),
        "antiphase_with": np.array([a.antiphase_with for a in assemblies]),
        "contra_negative": np.array([a.contra_negative for a in assemblies]),
    }
    rec = Recording.from_arrays(
        spikes,
        coords,
        labels,
        frame_rate=frame_rate,
        name=name or f"virtual-fish-{mode}-N{n}-K{n_assemblies}-s{seed}",
        coords_unit="mm",
        atlas="zbrain",
        species="Danio rerio (virtual)",
        source=f"crbm generate v{GENERATOR_VERSION}: mode={mode}, seed={seed}, positions from "
        f"{placed}, partner regions by {partner_rule}",
    )
    truth = GroundTruth(
        mode,
        weights.astype(np.float32),
        act.astype(np.float32),
        coupling,
        table,
        b.astype(np.float32),
        glob,
        model,
    )
    return VirtualFish(rec, truth)


def save_virtual_fish(fish: VirtualFish, path: str | os.PathLike) -> Path:
    """Write the recording with its ground truth under /truth, atomically."""
    rec, truth = fish.recording, fish.truth

    def write_truth(f: h5py.File) -> None:
        g = f.create_group("truth")
        g.attrs.update(mode=truth.mode, generator_version=GENERATOR_VERSION)
        opts = dict(compression="gzip", compression_opts=4)
        g.create_dataset("weights", data=truth.weights, **opts)
        g.create_dataset("membership", data=truth.membership.astype(np.uint8), **opts)
        g.create_dataset("activity", data=truth.activity, **opts)
        g.create_dataset("region_coupling", data=truth.region_coupling)
        g.create_dataset("baseline_logit", data=truth.baseline_logit)
        if truth.global_state is not None:
            g.create_dataset("global_state", data=truth.global_state)
        tab = g.create_group("assemblies")
        for k, v in truth.assemblies.items():
            tab.create_dataset(k, data=v)
        if truth.model:
            m = g.create_group("model")
            for k, v in truth.model.items():
                m.create_dataset(k, data=v, **(opts if np.ndim(v) == 2 else {}))

    return write_recording(
        path,
        [(0, rec.spike_array())],
        n_frames=rec.n_frames,
        n_neurons=rec.n_neurons,
        coords=rec.coords,
        region_labels=rec.region_labels,
        times=rec.times,
        name=rec.name,
        coords_unit=rec.coords_unit,
        atlas=rec.atlas,
        region_names=rec.region_names,
        species=rec.species,
        source=rec.source,
        extra=write_truth,
    )


def load_truth(path: str | os.PathLike) -> GroundTruth:
    """The ground truth stored with a virtual fish (KeyError if the file has none)."""
    with h5py.File(path, "r") as f:
        if "truth" not in f:
            raise KeyError(f"{path} has no /truth group: it is not a virtual fish")
        g = f["truth"]
        mode = g.attrs["mode"]
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        return GroundTruth(
            mode=mode,
            weights=g["weights"][()],
            activity=g["activity"][()],
            region_coupling=g["region_coupling"][()],
            assemblies={k: v[()] for k, v in g["assemblies"].items()},
            baseline_logit=g["baseline_logit"][()],
            global_state=g["global_state"][()] if "global_state" in g else None,
            model={k: v[()] for k, v in g["model"].items()} if "model" in g else {},
        )
