"""In-silico perturbation against independent truth: exact conditionals of tiny models by
enumeration, the spread of independent replicate runs for the standard errors, and planted
assemblies of a virtual fish.

Tolerances: each estimate is compared with the truth as z = (estimate − exact)/se with the
reported standard error, |z| < Z_MAX = 5 (fixed seeds: a failure is a real error, not bad luck).
The reported se itself is checked against the spread of independent replicate runs
(`test_standard_errors_match_the_spread_of_replicate_runs`), so the z-tests rest on it fairly.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from crbm_core import perturb as pt
from crbm_core.errors import ParameterError
from crbm_core.model import CRBM
from crbm_core.synthetic import generate_virtual_fish

Z_MAX = 5.0


def all_states(n: int) -> np.ndarray:
    return np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.uint8)


def tiny_model(seed: int, n: int = 8, m: int = 3, **kw) -> CRBM:
    """A float64 model with moderate weights (its Gibbs chain mixes in a few sweeps)."""
    r = np.random.default_rng(seed)
    return CRBM(
        r.normal(0.0, kw.get("w_scale", 0.8), (n, m)),
        r.normal(-0.5, 0.8, n),
        r.uniform(0.7, 1.5, m),
        r.normal(0.0, 0.5, m),
        r.uniform(*kw.get("delta", (-0.5, 1.0)), m),
        r.uniform(-0.5, 0.5, m),
    )


def exact_marginals(model: CRBM, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P(v_i = 1), E[h_μ]) under P(v) ∝ exp(−F(v)) restricted to `states` (enumeration)."""
    log_w = -model.free_energy(states)
    p = np.exp(log_w - np.logaddexp.reduce(log_w))
    return p @ states, p @ model.mean_hidden(states)


def exact_samples(model: CRBM, n: int, rng) -> np.ndarray:
    """n independent exact draws of P(v): chains that start at equilibrium."""
    states = all_states(model.n_visible)
    log_w = -model.free_energy(states)
    p = np.exp(log_w - np.logaddexp.reduce(log_w))
    return states[rng.choice(len(states), size=n, p=p / p.sum())]


def z_scores(estimate, exact, se):
    return np.abs(estimate - exact) / se


# --------------------------------------------------------------------------------------------
# exact conditionals of tiny models


@pytest.fixture(scope="module")
def tiny():
    model = tiny_model(1)
    frames = exact_samples(model, 2000, np.random.default_rng(7))
    return model, frames


def test_neuron_clamp_matches_the_exact_conditional_by_enumeration(tiny):
    model, frames = tiny
    n, m = model.n_visible, model.n_hidden
    clamp = pt.combine(
        pt.neuron_clamp(n, m, 1, neurons=[1, 4]), pt.neuron_clamp(n, m, 0, neurons=[6])
    )
    res = pt.perturb(
        model, frames, clamp, np.random.default_rng(3), n_chains=None, burn_in=10, n_samples=60
    )
    states = all_states(n)
    cond = states[(states[:, 1] == 1) & (states[:, 4] == 1) & (states[:, 6] == 0)]
    p_ref, h_ref = exact_marginals(model, states)  # P(v) over all 2^8 states
    p_cond, h_cond = exact_marginals(model, cond)  # P(v_free | v_S = s): 2^5 states
    free = np.setdiff1d(np.arange(n), [1, 4, 6])

    np.testing.assert_array_equal(res.p_perturbed[[1, 4, 6]], [1.0, 1.0, 0.0])
    assert res.n_chains == 2000 and res.n_samples == 60
    # the standard errors are small enough for the z-tests to have power (≤ 0.01 in p)
    assert res.delta_p_se[free].max() < 0.01 and res.delta_h_se.max() < 0.02
    assert z_scores(res.p_perturbed[free], p_cond[free], res.p_perturbed_se[free]).max() < Z_MAX
    assert z_scores(res.p_reference, p_ref, res.p_reference_se).max() < Z_MAX
    dp = p_cond - p_ref
    assert z_scores(res.delta_p[free], dp[free], res.delta_p_se[free]).max() < Z_MAX
    assert z_scores(res.delta_h, h_cond - h_ref, res.delta_h_se).max() < Z_MAX
    # burnt in: the second half of the samples agrees with the first
    assert z_scores(res.delta_h_drift, 0.0, res.delta_h_drift_se).max() < Z_MAX
    # the effect is real, not within noise: the test would see a sign error
    assert np.abs(dp[free]).max() > 10 * res.delta_p_se[free].max()


def test_hidden_clamp_of_every_unit_makes_neurons_independent_sigmoids(tiny):
    """With h fixed to c, P(v | h = c) = Π σ(g + W c) exactly, in every sample."""
    model, frames = tiny
    c = np.array([1.3, -0.7, 0.4])
    clamp = pt.unit_clamp(model.n_visible, model.n_hidden, [2, 0, 1], c[[2, 0, 1]])
    res = pt.perturb(model, frames[:50], clamp, np.random.default_rng(4), n_samples=5)
    exact = 1.0 / (1.0 + np.exp(-(model.fields + model.weights @ c)))
    np.testing.assert_allclose(res.p_perturbed, exact, rtol=1e-12, atol=1e-14)
    assert res.p_perturbed_se.max() < 1e-12
    np.testing.assert_allclose(res.h_perturbed, c, rtol=0, atol=0)


def test_hidden_clamp_of_one_unit_matches_enumeration(tiny):
    """P(v | h_0 = c) ∝ exp(Σ g_i v_i + c·I_0(v) + Σ_{μ≠0} Γ_μ(I_μ(v))): the free energy of the
    model without unit 0 and with fields g + c·w_0 (integrating out the free units only)."""
    model, frames = tiny
    c = 1.5
    res = pt.perturb(
        model,
        frames,
        pt.unit_clamp(model.n_visible, model.n_hidden, [0], c),
        np.random.default_rng(5),
        n_chains=None,
        burn_in=10,
        n_samples=60,
    )
    sub = CRBM(
        model.weights[:, 1:],
        model.fields + c * model.weights[:, 0],
        *(getattr(model, k)[1:] for k in ("gamma", "theta", "delta", "eta")),
    )
    states = all_states(model.n_visible)
    p_cond, h_cond = exact_marginals(sub, states)
    assert res.h_perturbed[0] == c
    assert z_scores(res.p_perturbed, p_cond, res.p_perturbed_se).max() < Z_MAX
    assert z_scores(res.h_perturbed[1:], h_cond, res.delta_h_se[1:] + 1e-300).max() < Z_MAX
    assert np.abs(res.p_perturbed - res.p_reference).max() > 0.05  # the clamp matters here


def test_standard_errors_match_the_spread_of_replicate_runs(tiny):
    """R independent runs (own seeds, own start frames): the sd of their estimates across runs
    is what each run's se claims. With R = 100 the sample sd of one neuron has relative error
    1/√(2·99) ≈ 0.071; pooling the variances of the 7 free neurons (3 HUs) shrinks that to
    ≈ 0.03–0.04, so the band [0.85, 1.18] is ≥ 3.5 σ wide on either side, and still rejects an
    se off by √2 (ratio 0.71 or 1.41). sd/√C with C = 40 is biased low by only ≈ 1/(4·39)."""
    model, frames = tiny
    n, m = model.n_visible, model.n_hidden
    clamp = pt.neuron_clamp(n, m, 1, neurons=[2])
    runs = [
        pt.perturb(
            model,
            frames,
            clamp,
            np.random.default_rng(100 + r),
            n_chains=40,
            burn_in=5,
            n_samples=10,
        )
        for r in range(100)
    ]
    free = np.setdiff1d(np.arange(n), [2])
    for key in ("delta_p", "p_reference", "p_perturbed", "delta_h"):
        est = np.array([getattr(r, key) for r in runs])
        se = np.array([getattr(r, key + "_se") for r in runs])
        cols = free if est.shape[1] == n else slice(None)
        spread = np.sqrt(est[:, cols].var(axis=0, ddof=1).mean())
        claimed = np.sqrt((se[:, cols] ** 2).mean())
        assert 0.85 < spread / claimed < 1.18, (key, spread, claimed)


def test_clamped_sweeps_keep_the_clamp_and_an_exact_hidden_input():
    """After every sweep the clamped neurons hold their values and the incrementally corrected
    input equals a fresh I = vW of the returned states (float32, N = 300)."""
    r = np.random.default_rng(11)
    n, m = 300, 20
    model = CRBM(
        r.normal(0, 0.3, (n, m)).astype(np.float32),
        np.full(n, -2.5, np.float32),
        np.ones(m, np.float32),
        np.zeros(m, np.float32),
        np.full(m, -0.5, np.float32),
        np.zeros(m, np.float32),
    )
    v0 = (r.random((40, n)) < 0.1).astype(np.uint8)
    on, off = np.arange(0, 60, 3), np.arange(100, 200)
    clamp = pt.combine(pt.neuron_clamp(n, m, 1, neurons=on), pt.neuron_clamp(n, m, 0, neurons=off))
    v, inp = pt.clamped_chain(model, v0, clamp, 5, r)
    assert np.all(v[:, on] == 1) and np.all(v[:, off] == 0)
    np.testing.assert_allclose(inp, v.astype(np.float64) @ model.weights, rtol=1e-5, atol=1e-4)
    free = np.setdiff1d(np.arange(n), np.concatenate([on, off]))
    assert 0.02 < v[:, free].mean() < 0.5  # the free neurons still move


# --------------------------------------------------------------------------------------------
# a virtual fish with a CRBM made from its planted assemblies


@pytest.fixture(scope="module")
def fish():
    """A "crbm"-mode fish: its cRBM is built from the planted assemblies (made disjoint), and
    its frames are exact samples of that model, so chains started from them are at equilibrium.
    Disjoint units make P(v) factorize over assemblies: clamping assembly k's neurons leaves the
    marginal of every neuron outside k exactly unchanged (the truth the tests use)."""
    f = generate_virtual_fish(600, 2000, 8, seed=0, mode="crbm")
    return f, CRBM.from_dict(f.truth.model)


def _mean_and_bound(res, idx):
    """Mean Δp over idx and an upper bound of its se: sd(Σ x_i) ≤ Σ sd(x_i) (any correlation)."""
    return res.delta_p[idx].mean(), res.delta_p_se[idx].mean()


def test_stimulating_half_an_assembly_raises_its_other_members_only(fish):
    f, model = fish
    w = f.truth.weights
    k = int(np.argmax((w > 0).sum(axis=0)))
    members = np.flatnonzero(w[:, k] > 0)
    stim, targets = members[::2], members[1::2]
    others = np.flatnonzero(w[:, k] == 0)
    res = pt.perturb(
        model,
        f.recording.spike_array(),
        pt.neuron_clamp(600, 8, 1, neurons=stim),
        np.random.default_rng(0),
        region_labels=f.recording.region_labels,
        n_regions=len(f.recording.region_names),
    )
    d_t, se_t = _mean_and_bound(res, targets)
    d_o, se_o = _mean_and_bound(res, others)
    # non-members: true change 0 (factorization); members: the unit turns on (P(on) 0.12–0.28 →
    # ≈ 1) and raises them from baseline to their on-rate (median ≈ 0.2), a change ≈ 0.1
    assert abs(d_o) < Z_MAX * se_o + 1e-3
    assert d_t - Z_MAX * se_t > 0.05
    assert d_t > 5 * (abs(d_o) + Z_MAX * se_o)
    # common random numbers: the untouched neurons move alike in both chains, so their paired
    # difference is far less noisy than either chain alone
    coupled = np.flatnonzero((w[:, k] == 0) & (w != 0).any(axis=1))  # in other assemblies
    assert np.median(res.delta_p_se[coupled]) < 0.1 * np.median(res.p_reference_se[coupled])
    assert res.delta_h[k] > 0.5 and np.abs(np.delete(res.delta_h, k)).max() < 0.1
    # per region: the region holding most unclamped members changes most
    labels = f.recording.region_labels
    top = np.bincount(labels[targets][labels[targets] >= 0], minlength=72).argmax()
    assert np.nanargmax(res.region_delta) == top


def test_ablating_a_region_lowers_its_assemblies_elsewhere(fish):
    """Ablate the home region of every assembly that also has members in other regions. With
    positive weights, silencing members only removes input to the unit, so P(on) and with it
    the other members' firing can only fall: their mean change is negative (a sign test on an
    effect of 3–7 se-bounds here) and never a significant rise; the unit's activity falls by
    more than 2.5 of its se."""
    f, model = fish
    rec, w = f.recording, f.truth.weights
    labels = rec.region_labels
    checked = 0
    for k in range(w.shape[1]):
        members = np.flatnonzero(w[:, k] > 0)
        home = int(f.truth.assemblies["home_region"][k])
        outside = members[labels[members] != home]
        if outside.size < 3:
            continue
        res = pt.perturb_recording(
            model, rec, np.random.default_rng(k), regions=rec.region_names[home], value=0
        )
        d, se = _mean_and_bound(res, outside)
        assert d < 0 and d < Z_MAX * se, (k, d, se)
        assert res.delta_h[k] < -2.5 * res.delta_h_se[k], (k, res.delta_h[k], res.delta_h_se[k])
        checked += 1
    assert checked >= 2


def test_region_summary_is_the_mean_over_free_labelled_neurons(fish):
    f, model = fish
    labels = f.recording.region_labels
    region = int(np.bincount(labels[labels >= 0]).argmax())
    half = np.flatnonzero(labels == region)[::2]
    res = pt.perturb(
        model,
        f.recording.spike_array(),
        pt.neuron_clamp(600, 8, 0, neurons=half),
        np.random.default_rng(1),
        region_labels=labels,
        n_regions=72,
        n_chains=16,
        burn_in=2,
        n_samples=3,
    )
    free = np.ones(600, bool)
    free[half] = False
    for r in range(72):
        sel = free & (labels == r)
        assert res.region_n[r] == sel.sum()
        if sel.any():
            assert res.region_delta[r] == pytest.approx(res.delta_p[sel].mean(), abs=1e-12)
            assert res.region_reference[r] == pytest.approx(res.p_reference[sel].mean(), abs=1e-12)
        else:
            assert np.isnan(res.region_delta[r])
    d = res.to_dict()
    assert d["delta_p"].shape == (600,) and d["region_delta"].shape == (72,)
    assert d["clamp_neurons"].tolist() == half.tolist() and d["n_chains"] == 16
    assert "stimulate" not in d["clamp_label"] and "ablate" in d["clamp_label"]
    no_regions = pt.perturb(
        model,
        f.recording.spike_array()[:4],
        pt.unit_clamp(600, 8, [0], 1.0),
        np.random.default_rng(2),
        n_chains=None,
        burn_in=0,
        n_samples=1,
    ).to_dict()
    assert "region_delta" not in no_regions and no_regions["delta_h"].shape == (8,)


def test_a_lazily_read_recording_gives_the_in_memory_result(fish, tmp_path):
    """Start frames read from the file (`H5Spikes`, sorted fancy indexing) are the same frames."""
    from crbm_core.recording import Recording
    from crbm_core.synthetic import save_virtual_fish

    f, model = fish
    lazy = Recording.load(save_virtual_fish(f, tmp_path / "fish.h5"), lazy=True)
    assert not isinstance(lazy.spikes, np.ndarray)
    counts = np.bincount(f.recording.region_labels[f.recording.region_labels >= 0])
    big, name = int(counts.argmax()), f.recording.region_names[int(np.argsort(counts)[-2])]
    opts = dict(regions=[big, name], value=1, n_chains=8, burn_in=1, n_samples=2)
    a = pt.perturb_recording(model, lazy, np.random.default_rng(9), **opts)
    b = pt.perturb_recording(model, f.recording, np.random.default_rng(9), **opts)
    np.testing.assert_array_equal(a.delta_p, b.delta_p)
    assert a.clamp.label == b.clamp.label and name in a.clamp.label
    assert a.clamp.neurons.size == counts[big] + counts[f.recording.region_names.index(name)]


# --------------------------------------------------------------------------------------------
# bad input


def test_bad_input_raises_clear_parameter_errors(fish):
    f, model = fish
    rec = f.recording
    lab, names = rec.region_labels, rec.region_names
    spikes = rec.spike_array()
    ok = pt.neuron_clamp(600, 8, 1, neurons=[0])
    rng = np.random.default_rng(0)
    empty_region = next(i for i in range(72) if not (lab == i).any())
    cases = [
        (
            lambda: pt.neuron_clamp(
                600, 8, 1, regions="Tectum", region_labels=lab, region_names=names
            ),
            "unknown region 'Tectum'",
        ),
        (
            lambda: pt.neuron_clamp(600, 8, 1, regions=72, region_labels=lab, region_names=names),
            "out of range",
        ),
        (
            lambda: pt.neuron_clamp(
                600, 8, 1, regions=empty_region, region_labels=lab, region_names=names
            ),
            "has no neurons",
        ),
        (lambda: pt.neuron_clamp(600, 8, 1, regions=[], region_labels=lab), "empty"),
        (lambda: pt.neuron_clamp(600, 8, 1, regions=3), "region labels"),
        (lambda: pt.neuron_clamp(600, 8, 1, neurons=[5, 600]), "neuron index 600 is out of range"),
        (lambda: pt.neuron_clamp(600, 8, 1, neurons=[-1]), "out of range"),
        (lambda: pt.neuron_clamp(600, 8, 1, neurons=[1.5]), "integers"),
        (lambda: pt.neuron_clamp(600, 8, 1, neurons=[]), "empty"),
        (lambda: pt.neuron_clamp(600, 8, 1), "nothing to clamp"),
        (lambda: pt.neuron_clamp(600, 8, 2, neurons=[0]), "must be 0 (ablate) or 1"),
        (lambda: pt.neuron_clamp(600, 8, 0.5, neurons=[0]), "must be 0 (ablate) or 1"),
        (lambda: pt.neuron_clamp(600, 8, np.nan, neurons=[0]), "must be 0 (ablate) or 1"),
        (lambda: pt.unit_clamp(600, 8, [8], 1.0), "hidden unit index 8 is out of range"),
        (lambda: pt.unit_clamp(600, 8, [], 1.0), "empty"),
        (lambda: pt.unit_clamp(600, 8, [1], np.inf), "finite"),
        (lambda: pt.unit_clamp(600, 8, [1, 2], [1.0, 2.0, 3.0]), "one per unit"),
        (lambda: pt.combine(ok, pt.neuron_clamp(600, 8, 0, neurons=[0])), "two different values"),
        (
            lambda: pt.perturb(model, spikes, pt.neuron_clamp(601, 8, 1, neurons=[0]), rng),
            "was made for 601",
        ),
        (lambda: pt.perturb(model, spikes[:, :599], ok, rng), "frames have shape"),
        (lambda: pt.perturb(model, spikes * 2, ok, rng), "binary"),
        (lambda: pt.perturb(model, spikes.astype(float) * np.nan, ok, rng), "binary"),
        (lambda: pt.perturb(model, spikes[:0], ok, rng), "frames have shape"),
        (lambda: pt.perturb(model, spikes, ok, rng, n_chains=1), "n_chains"),
        (lambda: pt.perturb(model, spikes, ok, rng, burn_in=-1), "burn_in"),
        (lambda: pt.perturb(model, spikes, ok, rng, n_samples=0), "n_samples"),
        (lambda: pt.perturb(model, spikes, ok, rng, region_labels=lab[:10]), "region labels"),
        (lambda: pt.perturb_recording(model, rec, rng), "nothing to clamp"),
        (lambda: pt.perturb_recording(model, rec, rng, neurons=[3]), "needs value"),
    ]
    for call, words in cases:
        with pytest.raises(ParameterError, match=None) as err:
            call()
        message = str(err.value)
        assert words in message, (words, message)
        assert "\n" not in message and len(message) < 300
