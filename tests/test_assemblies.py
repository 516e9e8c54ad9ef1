"""Assemblies (METHODS §6) against planted truth and hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from crbm_core.assemblies import (
    SIZE_THRESHOLD,
    VIEW_THRESHOLD,
    assembly_sizes,
    assembly_summary,
    effective_regions,
    membership,
    participation_ratio,
    region_matrix,
    regional_occupancy,
    strongest_hu,
)
from crbm_core.errors import ParameterError
from crbm_core.model import CRBM
from crbm_core.synthetic import generate_virtual_fish

N, T, K = 600, 2000, 8


@pytest.fixture(scope="module")
def fish():
    return generate_virtual_fish(N, T, K, seed=11)


# --------------------------------------------------------------------------------------------
# planted virtual fish


@pytest.mark.parametrize("threshold", [VIEW_THRESHOLD, SIZE_THRESHOLD])
def test_membership_equals_planted_members(fish, threshold):
    # planted member weights are 1.5–3 (or −1…−2 contralateral), non-members exactly 0
    truth = fish.truth
    np.testing.assert_array_equal(membership(truth.weights, threshold), truth.membership)
    sizes = assembly_sizes(truth.weights, threshold)
    np.testing.assert_array_equal(sizes, truth.assemblies["size"])


def test_membership_accepts_a_crbm(fish):
    w = fish.truth.weights
    m = w.shape[1]
    model = CRBM(w, np.zeros(N, np.float32), *(np.ones(m, np.float32) for _ in range(4)))
    np.testing.assert_array_equal(membership(model), fish.truth.membership)


def test_strongest_hu_matches_planted_assemblies(fish):
    w = fish.truth.weights
    hu, strength = strongest_hu(w)
    n_member = fish.truth.membership.sum(axis=1)
    assert (n_member == 0).any() and (n_member == 1).any() and (n_member > 1).any()
    assert (hu[n_member == 0] == -1).all()
    for i in np.flatnonzero(n_member >= 1):  # brute force: the member with the largest |w|
        best = max(range(K), key=lambda k, i=i: abs(float(w[i, k])))
        assert hu[i] == best
        assert strength[i] == abs(w[i, best])
    single = np.flatnonzero(n_member == 1)
    np.testing.assert_array_equal(hu[single], np.nonzero(fish.truth.membership[single])[1])


def test_occupancy_equals_brute_force_region_means(fish):
    w, labels = fish.truth.weights, fish.recording.region_labels
    occ = regional_occupancy(w, labels, 72)
    for r in range(72):
        idx = [i for i in range(N) if labels[i] == r]
        for k in range(K):
            expected = sum(abs(float(w[i, k])) for i in idx) / len(idx) if idx else 0.0
            assert occ[k, r] == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_effective_regions_bounded_by_planted_regions(fish):
    w, labels = fish.truth.weights, fish.recording.region_labels
    eff = effective_regions(w, labels, 72)
    tab = fish.truth.assemblies
    for k in range(K):
        members = np.flatnonzero(fish.truth.membership[:, k])
        regions = np.unique(labels[members][labels[members] >= 0])
        # PR·R = (Σx²)²/Σx⁴ lies between 1 and the number of nonzero entries
        assert 1 - 1e-9 <= eff[k] <= regions.size + 1e-9
        if tab["n_regions"][k] == 1 and not tab["contra_negative"][k]:
            assert regions.size == 1 and eff[k] == pytest.approx(1.0, abs=1e-12)
    single = (tab["n_regions"] == 1) & ~tab["contra_negative"]
    assert single.any() and (~single).any()
    # planted assemblies are local: a few regions, far below the 72 of the atlas
    assert assembly_summary(w, labels, 72)["regions_median"] <= 4


# --------------------------------------------------------------------------------------------
# tiny labelled example, by hand


def _tiny():
    """6 regions with 2, 3, 4, 5, 1 and 0 neurons (region 5 empty) and 2 unlabelled neurons."""
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, -1, -1])
    w = np.zeros((labels.size, 3))
    # HU 0: mean |w| = 1 in regions 0, 1, 2 (signs and spread differ) → 3 effective regions
    w[[0, 1], 0] = [1.0, -1.0]
    w[[2, 3, 4], 0] = [0.5, 1.5, 1.0]
    w[[5, 6, 7, 8], 0] = [2.0, 0.0, -1.0, 1.0]
    # HU 1: only unlabelled neurons → occupancy 0 everywhere, 0 effective regions
    w[[15, 16], 1] = [5.0, -3.0]
    # HU 2: mean |w| 2 in region 3 and 1 in region 4 → (4 + 1)² / (16 + 1) = 25/17
    w[[9, 10, 11, 12, 13], 2] = [2.0, 2.0, 2.0, 2.0, 2.0]
    w[14, 2] = 1.0
    return w, labels


@pytest.mark.filterwarnings("error")
def test_tiny_example_by_hand():
    w, labels = _tiny()
    occ = regional_occupancy(w, labels, 6)
    np.testing.assert_allclose(
        occ,
        [[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 2, 1, 0]],
        atol=1e-15,
    )
    np.testing.assert_allclose(effective_regions(w, labels, 6), [3.0, 0.0, 25 / 17], rtol=1e-14)
    lmat = region_matrix(labels, 6).toarray()
    np.testing.assert_allclose(lmat.sum(axis=0), [1, 1, 1, 1, 1, 0])
    assert (lmat[labels == -1] == 0).all()


@pytest.mark.filterwarnings("error")
def test_summary_by_hand():
    w, labels = _tiny()
    s = assembly_summary(w, labels, 6, threshold=0.01)
    # effective regions of the three HUs sorted: 0, 25/17, 3 (linear-interpolated quartiles)
    assert s["regions_median"] == pytest.approx(25 / 17)
    assert s["regions_q25"] == pytest.approx(25 / 34)
    assert s["regions_q75"] == pytest.approx((25 / 17 + 3) / 2)
    # sizes |w| > 0.01: HU 0 has 8 (w = 0 at neuron 6), HU 1 2, HU 2 6 → median 6, q25 4, q75 7
    assert (s["size_median"], s["size_q25"], s["size_q75"]) == (6.0, 4.0, 7.0)
    assert s["n_without_members"] == 0
    assert s["embedded_fraction"] == pytest.approx(16 / 17)


@pytest.mark.filterwarnings("error")
def test_summary_with_hu_without_members():
    w, labels = _tiny()
    w[:, 1] = 0.0  # HU 1 has no member: left out of the quartiles, counted separately
    s = assembly_summary(w, labels, 6)
    assert s["n_without_members"] == 1
    assert s["regions_median"] == pytest.approx((3 + 25 / 17) / 2)


@pytest.mark.filterwarnings("error")
def test_participation_ratio_closed_forms():
    n = 7
    one = np.zeros(n)
    one[3] = -2.5
    assert participation_ratio(one) == pytest.approx(1 / n)
    assert participation_ratio(np.full(n, 0.3)) == pytest.approx(1.0)
    k = np.zeros(n)
    k[:4] = 1e-100  # four equal tiny entries: x⁴ would underflow without rescaling
    assert participation_ratio(k) == pytest.approx(4 / n)
    assert participation_ratio(np.zeros(n)) == 0.0
    rows = np.array([[1.0, 1.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0]])
    np.testing.assert_allclose(participation_ratio(rows, axis=1), [2 / 4, 25 / 17 / 4])


def test_strongest_hu_threshold_flags_weak_neurons():
    w = np.array([[0.005, -0.009], [0.2, -0.3], [0.0, 0.0]])
    hu, strength = strongest_hu(w, threshold=0.01)
    np.testing.assert_array_equal(hu, [-1, 1, -1])
    np.testing.assert_allclose(strength, [0.009, 0.3, 0.0])


def test_occupancy_threshold_drops_weak_weights():
    w, labels = _tiny()
    w[0:2, 0] = [1.0, 0.05]  # region 0: with threshold 0.1 only the 1.0 counts → mean 0.5
    occ = regional_occupancy(w, labels, 6, threshold=0.1)
    assert occ[0, 0] == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda w, lab: membership(np.zeros(5)), "shape"),
        (lambda w, lab: membership(np.zeros((0, 3))), "shape"),
        (lambda w, lab: membership(np.where(w > 1, np.nan, w)), "NaN"),
        (lambda w, lab: membership(w, threshold=-0.1), "threshold"),
        (lambda w, lab: membership(w, threshold=np.nan), "threshold"),
        (lambda w, lab: regional_occupancy(w, lab[:-1], 6), "labels have shape"),
        (lambda w, lab: regional_occupancy(w, lab.astype(float), 6), "dtype"),
        (lambda w, lab: regional_occupancy(w, np.where(lab == 4, 9, lab), 6), "label 9"),
        (lambda w, lab: regional_occupancy(w, np.where(lab == 4, -2, lab), 6), "label -2"),
        (lambda w, lab: effective_regions(w, lab, 0), "n_regions"),
        (lambda w, lab: participation_ratio(np.zeros(0)), "empty"),
        (lambda w, lab: participation_ratio([1.0, np.inf]), "NaN or inf"),
    ],
)
def test_bad_input_is_named(call, match):
    w, labels = _tiny()
    with pytest.raises(ParameterError, match=match):
        call(w, labels)
