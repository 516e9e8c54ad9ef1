"""Train/test split by chronological segments (METHODS §4): brute force, planted drift."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from crbm_core.errors import CrbmError, ParameterError
from crbm_core.recording import Recording
from crbm_core.split import Split, choose_split, correlation_neurons, segment_bounds


def _bernoulli(rng, t, rates):
    return (rng.random((t, rates.size)) < rates).astype(np.uint8)


def _brute_force(data, neurons, n_test=3, percentile=10.0):
    """Each candidate from scratch: frames by np.array_split, statistics by np.cov."""
    segs = np.array_split(np.arange(data.shape[0]), 10)
    iu = np.triu_indices(neurons.size, 1)
    rm, rc, combos = [], [], list(itertools.combinations(range(10), n_test))
    for held in combos:
        test = np.concatenate([segs[s] for s in held])
        train = np.concatenate([segs[s] for s in range(10) if s not in held])
        a, b = data[train].astype(float), data[test].astype(float)
        rm.append(np.sqrt(np.mean((a.mean(0) - b.mean(0)) ** 2)))
        ca = np.cov(a[:, neurons], rowvar=False, bias=True)[iu]
        cb = np.cov(b[:, neurons], rowvar=False, bias=True)[iu]
        rc.append(np.sqrt(np.mean((ca - cb) ** 2)))
    rm, rc = np.array(rm), np.array(rc)
    score = rm / np.median(rm) + rc / np.median(rc)
    order = sorted(range(len(combos)), key=lambda k: (score[k], k))
    chosen = order[int(round(percentile / 100 * (len(combos) - 1)))]
    return rm, rc, score, combos[chosen]


@pytest.mark.parametrize("n, max_neurons", [(12, 1000), (40, 15)])
def test_scores_and_choice_match_brute_force(rng, n, max_neurons):
    rates = rng.uniform(0.02, 0.3, n)
    data = _bernoulli(rng, 203, rates)  # 203 frames: segments of 21 and 20 frames
    split = choose_split(data, max_neurons=max_neurons, seed=3)
    neurons = correlation_neurons(n, max_neurons, 3)
    assert neurons.size == min(n, max_neurons)
    rm, rc, score, held = _brute_force(data, neurons)
    np.testing.assert_allclose(split.rmse_mean, rm, rtol=1e-12)
    np.testing.assert_allclose(split.rmse_corr, rc, rtol=1e-10)
    np.testing.assert_allclose(split.scores, score, rtol=1e-10)
    assert split.held_out == held
    assert split.rank == 12 and len(split.scores) == 120
    np.testing.assert_array_equal(split.neurons, neurons)


def test_segments_are_chronological_and_even():
    b = segment_bounds(203, 10)
    sizes = np.diff(b)
    assert b[0] == 0 and b[-1] == 203 and sizes.max() - sizes.min() <= 1
    np.testing.assert_array_equal([s[0] for s in np.array_split(np.arange(203), 10)], b[:-1])


def test_a_planted_nonstationary_segment_is_never_held_out_at_the_10th_percentile():
    """Rates doubled in segment 4. Holding it out puts 1/3 of the test data at 2× rate (bias r/3
    in ⟨v⟩) against 1/7 of the training data when it is kept (bias r/7); with 200 neurons at
    r = 0.05 and 400 frames per segment the per-neuron sampling s.d. of a train−test difference is
    √(r(1/1200 + 1/2800)) ≈ 0.008, so RMSEs ≈ 0.018 vs 0.010, apart by ≫ their ~5 % spread."""
    rng = np.random.default_rng(7)
    t, n = 4000, 200
    rates = np.full(n, 0.05)
    data = _bernoulli(rng, t, rates)
    seg4 = slice(*segment_bounds(t)[4:6])
    data[seg4] = _bernoulli(rng, seg4.stop - seg4.start, 2 * rates)
    split = choose_split(data)
    with_4 = np.array([4 in c for c in split.combinations])
    assert with_4.sum() == 36
    assert split.scores[with_4].min() > split.scores[~with_4].max()
    assert 4 not in split.held_out
    worst = choose_split(data, percentile=100.0)
    assert 4 in worst.held_out


def test_temporal_order_and_apply(rng):
    data = _bernoulli(rng, 250, rng.uniform(0.05, 0.2, 8))
    split = choose_split(data)
    assert np.all(np.diff(split.train) > 0) and np.all(np.diff(split.test) > 0)
    assert np.intersect1d(split.train, split.test).size == 0
    np.testing.assert_array_equal(np.union1d(split.train, split.test), np.arange(250))
    b = split.bounds
    np.testing.assert_array_equal(
        split.test, np.concatenate([np.arange(b[s], b[s + 1]) for s in split.held_out])
    )
    tr, te = split.apply(data)
    np.testing.assert_array_equal(tr, data[split.train])
    np.testing.assert_array_equal(te, data[split.test])


def test_lazy_recording_gives_the_same_split(rng, tmp_path):
    data = _bernoulli(rng, 300, rng.uniform(0.02, 0.2, 30))
    rec = Recording.from_arrays(data, rng.normal(size=(30, 3)), frame_rate=2.0)
    lazy = Recording.load(rec.save(tmp_path / "r.h5"), lazy=True)
    a, b = choose_split(data), choose_split(lazy.spikes)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.held_out == b.held_out
    np.testing.assert_array_equal(b.apply(lazy.spikes)[1], data[a.test])


def test_to_dict_round_trip_and_tampering(rng):
    data = _bernoulli(rng, 120, rng.uniform(0.05, 0.3, 6))
    split = choose_split(data)
    d = split.to_dict()
    back = Split.from_dict(
        {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}
    )
    for k, v in d.items():
        np.testing.assert_array_equal(np.asarray(back.to_dict()[k]), np.asarray(v))
    bad = dict(d, train=d["train"][:-1])
    with pytest.raises(ParameterError, match="not the segments"):
        Split.from_dict(bad)
    with pytest.raises(ParameterError, match="lacks"):
        Split.from_dict({k: v for k, v in d.items() if k != "test"})
    with pytest.raises(ParameterError, match="held-out"):
        Split.from_dict(dict(d, held_out=np.array([10])))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_frames=19), "too few"),
        (dict(n_neurons=1), "at least 2 neurons"),
        (dict(n_test=0), "n_test"),
        (dict(n_test=10), "n_test"),
        (dict(percentile=101.0), "percentile"),
        (dict(percentile=float("nan")), "percentile"),
        (dict(max_neurons=1), "max_neurons"),
    ],
)
def test_bad_parameters(rng, kwargs, match):
    t, n = kwargs.pop("n_frames", 40), kwargs.pop("n_neurons", 5)
    with pytest.raises(ParameterError, match=match):
        choose_split(_bernoulli(rng, t, np.full(n, 0.2)), **kwargs)


def test_bad_data(rng):
    x = _bernoulli(rng, 40, np.full(5, 0.2)).astype(float)
    x[33, 2] = np.nan
    with pytest.raises(CrbmError, match="frame 33, neuron 2"):
        choose_split(x)
    with pytest.raises(CrbmError, match="not binary"):
        choose_split(x * 0 + 2)
    with pytest.raises(ParameterError, match="frames × neurons"):
        choose_split(np.zeros(40))
    split = choose_split(np.nan_to_num(x))
    with pytest.raises(ParameterError, match="40 frames"):
        split.apply(np.zeros((41, 5)))
