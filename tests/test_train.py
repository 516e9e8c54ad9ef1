"""PCD training (crbm_core.train) and its checkpoints (crbm_core.modelfile).

1. Gradients: on tiny models (N = 8) the exact log-likelihood gradient is known by enumerating all
   2^N visible states. `gradients()` with exact weights must equal finite differences of the
   exact log-likelihood (this pins every sign of the θ/δ/η chain rule in `_hidden_grads`), and
   the PCD gradient from 20,000 equilibrated Gibbs samples must agree with it within z = 5
   standard errors estimated from the per-sample contributions.
2. Training by exact gradients and by PCD reach the same moments (see the test's docstring for
   the tolerance).
3. Same seed → bit-identical runs; stop at update k, checkpoint, resume (in this process or in a
   new one) → exactly the uninterrupted run.
4. A checkpoint write that dies midway leaves the previous file intact; a truncated file gives a
   clear ModelFileError.
5. Divergence, NaN, retry at half the learning rate, collapse.
6. Progress events, the stored history, the learning-rate schedule.

All randomness uses fixed seeds, so every outcome is deterministic.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

import crbm_core.train as tr
from crbm_core.model import CRBM
from crbm_core.modelfile import (
    ModelFileError,
    load_checkpoint,
    load_history,
    load_latest_checkpoint,
    load_model,
    save_checkpoint,
)
from crbm_core.train import (
    LEARNED,
    TrainConfig,
    TrainingError,
    gradients,
    init_state,
    learning_rate,
    train,
)

Z_MAX = 5.0
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# helpers: enumeration of tiny models


def all_states(n: int) -> np.ndarray:
    return np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.uint8)


def state_index(v: np.ndarray) -> np.ndarray:
    n = v.shape[1]
    return v.astype(np.int64) @ (1 << np.arange(n - 1, -1, -1, dtype=np.int64))


def exact_probs(model: CRBM, states: np.ndarray) -> np.ndarray:
    neg_f = -model.free_energy(states)
    p = np.exp(neg_f - neg_f.max())
    return p / p.sum()


def sample_exact(model: CRBM, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Independent exact samples of P(v) (enumeration)."""
    states = all_states(model.n_visible)
    return states[rng.choice(len(states), size=n_frames, p=exact_probs(model, states))]


def flat_params(model: CRBM) -> list[tuple[str, tuple]]:
    return [(k, idx) for k in LEARNED for idx in np.ndindex(getattr(model, k).shape)]


def per_state_derivatives(model: CRBM, states: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """D[s, p] = ∂(−F(v_s))/∂param_p by central finite differences (float64), independent of
    train.py: the log-likelihood gradient is mean_data D − Σ_s P(s) D[s]."""
    params = flat_params(model)
    out = np.empty((len(states), len(params)))
    for col, (k, idx) in enumerate(params):
        a = getattr(model, k)
        old = a[idx]
        a[idx] = old + h
        fp = -model.free_energy(states)
        a[idx] = old - h
        fm = -model.free_energy(states)
        a[idx] = old
        out[:, col] = (fp - fm) / (2 * h)
    return out


def flatten(grads: dict[str, np.ndarray], model: CRBM) -> np.ndarray:
    return np.array([grads[k][idx] for k, idx in flat_params(model)])


def group_slices(model: CRBM) -> dict[str, np.ndarray]:
    names = np.array([k for k, _ in flat_params(model)])
    return {k: names == k for k in LEARNED}


GRAD_CFG = {"l1": 0.0, "l1_warmup": 0.0, "n_updates": 1, "regularization": "l1"}


@pytest.fixture(scope="module")
def tiny():
    """N = 8, M = 3 float64 model: a double well (δ < 0), a thresholded unit (δ > 0), both η
    signs, γ ≠ 1; a data batch that is *not* from the model, so the gradient is far from 0."""
    rng = np.random.default_rng(7)
    n, m = 8, 3
    model = CRBM(
        rng.normal(0.0, 0.7, (n, m)),
        rng.normal(-1.0, 0.5, n),
        np.array([1.0, 1.3, 0.8]),
        np.array([0.3, -0.4, 0.1]),
        np.array([-0.8, 0.6, 0.2]),
        np.array([0.3, -0.4, 0.0]),
    )
    states = all_states(n)
    p = exact_probs(model, states)
    v_pos = (rng.random((200, n)) < 0.3).astype(np.uint8)
    d = per_state_derivatives(model, states)
    exact = d[state_index(v_pos)].mean(axis=0) - p @ d
    return {"model": model, "states": states, "p": p, "v_pos": v_pos, "D": d, "exact": exact}


# --------------------------------------------------------------------------------------------
# 1. gradients


def test_exact_gradient_matches_finite_differences(tiny):
    """gradients() with the exact model distribution (neg_weights = P(v) over all states) equals
    the finite-difference gradient of the exact log-likelihood for every learned parameter:
    this checks the weight/field moments and the sign of each term of the θ, δ, η chain rule."""
    model = tiny["model"]
    g = gradients(model, tiny["v_pos"], tiny["states"], GRAD_CFG, neg_weights=tiny["p"])[0]
    assert set(g) == {*LEARNED, "gamma"}  # γ: not learned, used by the bn correction
    got, want = flatten(g, model), tiny["exact"]
    for k, sel in group_slices(model).items():
        err = np.abs(got[sel] - want[sel]).max()
        assert err < 1e-7, f"{k}: max |analytic − finite difference| = {err:.2e}"
    assert np.abs(want).max() > 0.05  # far from a stationary point: the check has power


def test_hidden_chain_rule_by_finite_differences_of_loglik(tiny):
    """The same check through the log-likelihood itself (not per-state derivatives), on θ, δ, η
    only, at a second point with the η signs reversed."""
    model = tiny["model"].copy()
    model.eta *= -1
    states, v_pos = tiny["states"], tiny["v_pos"]

    def loglik() -> float:
        neg_f = -model.free_energy(states)
        return float(np.mean(-model.free_energy(v_pos)) - np.logaddexp.reduce(neg_f))

    g = gradients(model, v_pos, states, GRAD_CFG, neg_weights=exact_probs(model, states))[0]
    h = 1e-5
    for k in ("theta", "delta", "eta"):
        a = getattr(model, k)
        for mu in range(model.n_hidden):
            old = a[mu]
            a[mu] = old + h
            lp = loglik()
            a[mu] = old - h
            lm = loglik()
            a[mu] = old
            fd = (lp - lm) / (2 * h)
            assert abs(g[k][mu] - fd) < 1e-7 * max(1.0, abs(fd)), (k, mu, g[k][mu], fd)


def test_pcd_gradient_agrees_with_exact_within_sampling_error(tiny):
    """gradients(model, v_pos, v_neg) with v_neg = 20,000 independent chains after 150 Gibbs
    sweeps agrees with the exact gradient (same v_pos on both sides, l1 = 0) within 5 standard
    errors; the standard error of each component comes from the per-sample contributions
    ∂(−F(v))/∂param at the sampled states (independent chains → std/√n)."""
    model, n_neg = tiny["model"], 20_000
    rng = np.random.default_rng(11)
    v0 = (rng.random((n_neg, model.n_visible)) < 0.5).astype(np.uint8)
    v_neg = model.gibbs(v0, 150, rng)
    g = flatten(gradients(model, tiny["v_pos"], v_neg, GRAD_CFG)[0], model)
    contrib = tiny["D"][state_index(v_neg)]
    se = contrib.std(axis=0) / math.sqrt(n_neg)
    z = (g - tiny["exact"]) / se
    worst = {k: float(np.abs(z[sel]).max()) for k, sel in group_slices(model).items()}
    print("max |z| per parameter group:", {k: round(v, 2) for k, v in worst.items()})
    assert max(worst.values()) < Z_MAX, worst
    # the samples are equilibrated: visited states follow P(v) (χ²-free check on the mean energy)
    neg_f = -model.free_energy(v_neg)
    f_exact = tiny["p"] @ -model.free_energy(tiny["states"])
    assert abs(neg_f.mean() - f_exact) < Z_MAX * neg_f.std() / math.sqrt(n_neg)


def test_neg_weights_uniform_equals_default(tiny):
    model, v_pos = tiny["model"], tiny["v_pos"]
    v_neg = v_pos[::-1][:50]
    a = gradients(model, v_pos, v_neg, GRAD_CFG)[0]
    b = gradients(model, v_pos, v_neg, GRAD_CFG, neg_weights=np.full(50, 1 / 50))[0]
    for k in LEARNED:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reg", ["l1", "l1_squared", "l2"])
@pytest.mark.parametrize("weighted", [False, True])
def test_fused_weight_step_equals_numpy_step(reg, weighted):
    """optim.weight_step (gradient, clip, RMSprop, in one numba pass) = gradients() followed by
    the numpy RMSprop step, to float32 rounding; it reports max|w|, or NaN for a non-finite w."""
    from crbm_core.layers import drelu_moments
    from crbm_core.optim import weight_step

    rng = np.random.default_rng(40)
    n, m, b, c = 700, 9, 30, 40
    f32 = np.float32
    model = CRBM(
        rng.normal(0.0, 0.3, (n, m)).astype(f32),
        rng.normal(-2.0, 0.5, n).astype(f32),
        rng.uniform(0.5, 1.5, m).astype(f32),
        rng.normal(0.0, 0.5, m).astype(f32),
        rng.normal(0.0, 0.5, m).astype(f32),
        rng.uniform(-0.5, 0.5, m).astype(f32),
    )
    model.weights[:5] = 0.0  # sign(0) = 0
    v_pos = (rng.random((b, n)) < 0.2).astype(np.uint8)
    v_neg = (rng.random((c, n)) < 0.2).astype(np.uint8)
    pw = rng.dirichlet(np.ones(c)) if weighted else None
    cfg = {"l1": 0.05, "l1_warmup": 0.0, "n_updates": 10, "regularization": reg}
    clip, beta2, lr, t, eps = 0.1, 0.999, 3e-3, 7, 1e-6
    mom = rng.uniform(0.0, 1e-3, (n, m)).astype(f32)

    g = gradients(model, v_pos, v_neg, cfg, 3, neg_weights=pw)[0]["weights"]
    assert np.mean(np.abs(g) > clip) > 0.01  # the clip is exercised
    w_ref, m_ref = model.weights.copy(), mom.copy()
    tr._rmsprop(w_ref, m_ref, g, lr, t, {"beta2": beta2, "grad_clip": clip, "epsilon": eps})

    hp = model.hidden_params()
    mean_pos = drelu_moments(model.hidden_input(v_pos), *hp)[0]
    mean_neg = drelu_moments(model.hidden_input(v_neg), *hp)[0]
    h_neg, div = (mean_neg, c) if pw is None else (pw[:, None].astype(f32) * mean_neg, 1)
    w, mo = model.weights.copy(), mom.copy()
    kw = dict(reg=reg, lam=0.05, clip=clip, beta2=beta2, lr=lr, t=t, eps=eps)
    top = weight_step(w, mo, v_pos, mean_pos, b, v_neg, h_neg, div, **kw)
    np.testing.assert_allclose(mo, m_ref, rtol=1e-6, atol=0)
    np.testing.assert_allclose(w, w_ref, rtol=1e-6, atol=1e-9)
    assert np.abs(w - model.weights).max() > 1e-4  # the step moved the weights
    assert top == float(np.abs(w).max())
    w[3, 4] = np.nan
    assert math.isnan(weight_step(w, mo, v_pos, mean_pos, b, v_neg, h_neg, div, **kw))


# --------------------------------------------------------------------------------------------
# 2. exact-gradient training vs PCD training


@pytest.mark.slow
def test_exact_and_pcd_training_reach_the_same_moments(monkeypatch):
    """A random N = 8, M = 2 cRBM gives 500 exact frames. The same TrainConfig is run (a) with
    exact gradients — full data batch, model moments by enumeration (the negative phase is
    every state weighted by P(v)) — and (b) with PCD (batches of 100, 100 chains, 5 sweeps).

    Yardstick: the sampling error of each data moment, SE = std over frames / √500. Two fits whose
    moments differ by less than SE cannot be told apart by these data; a broken negative phase
    (wrong sign, unmixed chains) misses by many SE (the independent model misses ⟨v_i v_j⟩ by
    > 5 SE here). Measured (2 cores, float32): exact vs data on the fitted moments ⟨v_i⟩,
    ⟨v_i E[h|v]⟩ ≤ 0.07 SE; PCD vs exact on every family ≤ 0.35 SE; ⟨v_i v_j⟩ (not a fitted
    moment) vs data ≈ 0.8 SE for both; log-likelihood gap 0.003 nats/frame.
    Tolerances: fitted moments exact–data 0.25 SE, PCD–data 1 SE; PCD–exact 1 SE on every family;
    ⟨v_i v_j⟩–data 2 SE; log-likelihood gap 0.01 nats/frame; total variation < 0.05.
    ⟨v_i E[h|v]⟩ is compared with each model's own E[h|v] and with the other's, since two fits of
    the same P(v) need not share their hidden units (observed: same P(v), different units)."""
    rng = np.random.default_rng(2)
    n, m, t = 8, 2, 500
    teacher = CRBM(
        rng.normal(0.0, 1.0, (n, m)),
        rng.normal(-1.5, 0.5, n),
        np.ones(m),
        np.zeros(m),
        np.array([-0.5, 0.5]),
        np.zeros(m),
    )
    data = sample_exact(teacher, t, rng)
    states = all_states(n)
    common = dict(
        n_hidden=m,
        l1=0.0,
        n_updates=1500,
        learning_rate=0.03,
        lr_final=1e-4,
        seed=3,
        progress_every=1500,
    )
    pcd = train(data, TrainConfig(batch_size=100, n_chains=100, n_mc=5, **common))

    def exact_negative_phase(state, cfg):
        assert cfg["batch_size"] == t  # the whole data set every update
        model = state.model
        return states, model.hidden_input(states), exact_probs(model, states)

    monkeypatch.setattr(tr, "negative_phase", exact_negative_phase)
    exact = train(data, TrainConfig(batch_size=t, n_chains=1, n_mc=1, **common))
    monkeypatch.undo()

    p_pcd, p_ex = exact_probs(pcd.model, states), exact_probs(exact.model, states)
    iu = np.triu_indices(n, 1)

    def features(v):
        x = v.astype(np.float64)
        out = {"v": x, "vv": (x[:, :, None] * x[:, None, :])[:, iu[0], iu[1]]}
        for name, r in (("vh_pcd", pcd), ("vh_exact", exact)):
            h = r.model.mean_hidden(v).astype(np.float64)
            out[name] = (x[:, :, None] * h[:, None, :]).reshape(len(x), -1)
        return out

    f_data, f_all = features(data), features(states)
    score = {}
    for k in f_data:
        mean_d = f_data[k].mean(axis=0)
        se = np.maximum(f_data[k].std(axis=0) / math.sqrt(t), 1.0 / t)
        m_pcd, m_ex = p_pcd @ f_all[k], p_ex @ f_all[k]
        score[k] = {
            "pcd-data": float(np.abs((m_pcd - mean_d) / se).max()),
            "exact-data": float(np.abs((m_ex - mean_d) / se).max()),
            "pcd-exact": float(np.abs((m_pcd - m_ex) / se).max()),
        }
    print("max |Δ|/SE:", json.dumps(score, indent=1))
    idx = state_index(data)
    ll_pcd, ll_ex = np.log(p_pcd[idx]).mean(), np.log(p_ex[idx]).mean()
    tv = 0.5 * np.abs(p_pcd - p_ex).sum()
    print(f"log-likelihood/frame: pcd {ll_pcd:.4f} exact {ll_ex:.4f}; TV {tv:.4f}")

    for k in score:
        assert score[k]["pcd-exact"] < 1.0, (k, score[k])
    assert score["v"]["exact-data"] < 0.25 and score["vh_exact"]["exact-data"] < 0.25, score
    assert score["v"]["pcd-data"] < 1.0 and score["vh_pcd"]["pcd-data"] < 1.0, score
    assert score["vv"]["exact-data"] < 2.0 and score["vv"]["pcd-data"] < 2.0, score
    assert abs(ll_pcd - ll_ex) < 0.01
    assert tv < 0.05
    # power: the data are far from independent, so matching ⟨v_i v_j⟩ is not trivial
    mu = data.mean(axis=0)
    se_vv = np.maximum(f_data["vv"].std(axis=0) / math.sqrt(t), 1.0 / t)
    indep = np.outer(mu, mu)[iu]
    assert np.abs((indep - f_data["vv"].mean(axis=0)) / se_vv).max() > 5


# --------------------------------------------------------------------------------------------
# shared small training problem for 3–6


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """300 frames of 20 neurons with two co-active groups (so the model learns something)."""
    rng = np.random.default_rng(5)
    t, n = 300, 20
    latent = rng.random((t, 2)) < 0.3
    p = (
        0.08
        + 0.6 * (latent[:, [0]] & (np.arange(n) < 8))
        + 0.6 * (latent[:, [1]] & (np.arange(n) >= 12))
    )
    return (rng.random((t, n)) < p).astype(np.uint8)


def small_config(**kw) -> TrainConfig:
    base = dict(
        n_hidden=3,
        l1=0.005,
        n_updates=40,
        batch_size=50,
        n_chains=30,
        n_mc=3,
        learning_rate=5e-3,
        lr_final=1e-4,
        seed=42,
        progress_every=5,
        checkpoint_every=10,
    )
    base.update(kw)
    return TrainConfig(**base)


def assert_same_state(a: tr.TrainState, b: tr.TrainState) -> None:
    for k in ("weights", "fields", "gamma", "theta", "delta", "eta"):
        x, y = getattr(a.model, k), getattr(b.model, k)
        assert x.dtype == y.dtype and np.array_equal(x, y), k
    assert np.array_equal(a.chains, b.chains)
    assert set(a.moments) == set(b.moments) == set(LEARNED)
    for k in LEARNED:
        assert np.array_equal(a.moments[k], b.moments[k]), k
    assert a.rng.bit_generator.state == b.rng.bit_generator.state
    assert np.array_equal(a.order, b.order) and a.position == b.position
    assert a.update == b.update and np.array_equal(a.mean_input, b.mean_input)


def stop_at(k: int):
    """should_stop() that stops when polled with k updates done (it is polled once per update)."""
    calls = [0]

    def should_stop() -> bool:
        calls[0] += 1
        return calls[0] > k

    return should_stop


def saver(path: Path, config: TrainConfig):
    def checkpoint(state, cfg):
        save_checkpoint(path, state, config, cfg)

    return checkpoint


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# 3. reproducibility and resume


def test_same_seed_is_bit_identical(frames):
    a = train(frames, small_config())
    b = train(frames, small_config())
    assert_same_state(a.state, b.state)
    assert np.array_equal(a.model.weights, b.model.weights)
    c = train(frames, small_config(seed=43))
    assert not np.array_equal(a.state.model.weights, c.state.model.weights)


@pytest.fixture(scope="module")
def uninterrupted(frames):
    return train(frames, small_config())


def test_stop_checkpoint_resume_is_exact(frames, uninterrupted, tmp_path):
    config, path = small_config(), tmp_path / "ckpt.h5"
    events = []
    stopped = train(
        frames,
        config,
        checkpoint=saver(path, config),
        should_stop=stop_at(17),
        callback=events.append,
    )
    assert stopped.status == "stopped" and stopped.state.update == 17
    state, cfg2, attrs = load_checkpoint(path)
    assert state.update == 17 and attrs["updates"] == 17 and attrs["status"] == "running"
    assert_same_state(state, stopped.state)
    # the time spent since the last periodic checkpoint (update 10) is kept
    assert attrs["elapsed_s"] >= events[-1]["elapsed"] > 0
    resumed = train(frames, cfg2, state=state)
    assert resumed.status in ("finished", "not converged")
    assert_same_state(resumed.state, uninterrupted.state)
    assert np.array_equal(resumed.model.weights, uninterrupted.model.weights)
    assert [e["update"] for e in resumed.state.history] == [
        e["update"] for e in uninterrupted.state.history
    ]


def test_resume_in_a_new_process_is_exact(frames, uninterrupted, tmp_path):
    config, ckpt = small_config(), tmp_path / "ckpt.h5"
    train(frames, config, checkpoint=saver(ckpt, config), should_stop=stop_at(23))
    np.save(tmp_path / "frames.npy", frames)
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from crbm_core.modelfile import load_checkpoint, save_checkpoint
        from crbm_core.train import train
        d = sys.argv[1]
        state, config, _ = load_checkpoint(d + "/ckpt.h5")
        out = train(np.load(d + "/frames.npy"), config, state=state,
                    checkpoint=lambda s, c: save_checkpoint(d + "/final.h5", s, config, c))
        print(out.status, out.state.update)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    final, _, attrs = load_checkpoint(tmp_path / "final.h5")
    assert final.update == 40 and attrs["status"] == "running"
    assert_same_state(final, uninterrupted.state)
    analysed = load_model(tmp_path / "final.h5")
    assert np.array_equal(analysed.weights, uninterrupted.model.weights)


# --------------------------------------------------------------------------------------------
# 4. crashes during a checkpoint write, truncated files


@pytest.fixture
def previous_checkpoint(frames, tmp_path):
    config, path = small_config(n_updates=10), tmp_path / "ckpt.h5"
    result = train(frames, config, checkpoint=saver(path, config))
    return path, config, result.state


def test_failed_write_keeps_previous_checkpoint(previous_checkpoint, monkeypatch):
    path, config, state = previous_checkpoint
    before = file_digest(path)
    original = h5py.Group.create_dataset
    written = []

    def failing(self, name, *args, **kwargs):
        if name == "chains":
            raise OSError("disk full (simulated)")
        written.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    newer = tr._snapshot(state)
    newer.update += 5
    newer.model.weights += 1.0
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, newer, config, config.resolved(20, 0.1))
    monkeypatch.undo()
    assert written  # it died midway, after some datasets were written
    assert file_digest(path) == before
    assert [p.name for p in path.parent.iterdir() if ".tmp-" in p.name] == []
    loaded, _, _ = load_checkpoint(path)
    assert_same_state(loaded, state)


def test_killed_writer_keeps_previous_checkpoint(previous_checkpoint):
    """A hard kill (SIGKILL, no cleanup) in the middle of a write: the previous file is intact.
    The dead writer's hidden temp file (".ckpt.h5.tmp-<pid>") stays behind; it does not disturb
    loading or the next write."""
    path, config, state = previous_checkpoint
    before = file_digest(path)
    script = textwrap.dedent(
        """
        import os, signal, sys
        import h5py
        from crbm_core.modelfile import load_checkpoint, save_checkpoint
        path = sys.argv[1]
        state, config, attrs = load_checkpoint(path)
        original = h5py.Group.create_dataset
        def dying(self, name, *args, **kwargs):
            if name == "chains":
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, name, *args, **kwargs)
        h5py.Group.create_dataset = dying
        state.update += 1
        save_checkpoint(path, state, config, {})
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr
    assert file_digest(path) == before
    loaded, _, _ = load_checkpoint(path)
    assert_same_state(loaded, state)
    leftovers = [p.name for p in path.parent.iterdir() if p.name not in (path.name, PREV)]
    assert all(name.startswith(".ckpt.h5.tmp-") for name in leftovers), leftovers
    save_checkpoint(path, loaded, config, config.resolved(20, 0.1))
    assert load_checkpoint(path)[0].update == loaded.update


PREV = "ckpt.previous.h5"


def _flip_bytes_of(path: Path, dataset: str) -> None:
    """Damage the stored bytes of one dataset in place (as a bad disk sector would)."""
    with h5py.File(path, "r") as f:
        d = f[dataset]
        offset = d.id.get_chunk_info(0).byte_offset if d.chunks else d.id.get_offset()
        size = d.id.get_storage_size()
    with open(path, "r+b") as fh:
        fh.seek(offset + size // 2)
        chunk = bytearray(fh.read(8))
        fh.seek(offset + size // 2)
        fh.write(bytes(b ^ 0xFF for b in chunk))


@pytest.mark.parametrize("damage", ["flipped weights", "flipped chains", "truncated", "deleted"])
def test_damaged_checkpoint_falls_back_to_the_previous_one(previous_checkpoint, damage):
    path, config, state = previous_checkpoint
    newer = tr._snapshot(state)
    newer.update += 5
    newer.model.weights += 0.5
    save_checkpoint(path, newer, config, config.resolved(20, 0.1))
    assert load_checkpoint(path.with_name(PREV))[0].update == state.update
    if damage == "flipped weights":
        _flip_bytes_of(path, "state/model/weights")
    elif damage == "flipped chains":
        _flip_bytes_of(path, "state/chains")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    with pytest.raises(ModelFileError, match="ckpt.h5"):
        load_checkpoint(path)  # the checksums catch flipped bytes: no resuming from garbage
    loaded, _, attrs, note = load_latest_checkpoint(path)
    assert_same_state(loaded, state)
    assert attrs["checkpoint_file"] == str(path.with_name(PREV))
    assert "previous checkpoint (update 10)" in note
    path.with_name(PREV).write_bytes(b"\0" * 100)  # both gone: a clear error, not a fresh start
    with pytest.raises(ModelFileError, match="ckpt.previous.h5"):
        load_latest_checkpoint(path)


def test_final_model_removes_the_previous_checkpoint(previous_checkpoint):
    path, config, state = previous_checkpoint
    assert path.with_name(PREV).exists()
    save_checkpoint(path, state, config, {}, status="finished", final=state.model.sign_swapped())
    assert not path.with_name(PREV).exists()
    assert load_latest_checkpoint(path)[3] == ""


@pytest.mark.parametrize("keep", [0.0, 0.02, 0.3, 0.7, 0.99])
def test_truncated_checkpoint_gives_model_file_error(previous_checkpoint, keep, tmp_path):
    path = previous_checkpoint[0]
    cut = tmp_path / "cut.h5"
    data = path.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])
    for load in (load_checkpoint, load_model, load_history):
        with pytest.raises(ModelFileError, match="cut.h5"):
            load(cut)


# --------------------------------------------------------------------------------------------
# 5. divergence, NaN, retry, collapse


def test_absurd_learning_rate_stops_with_reason():
    rng = np.random.default_rng(0)
    data = (rng.random((300, 60)) < 0.05).astype(np.uint8)
    config = small_config(learning_rate=1.0, lr_final=1e-3, l1=0.0, n_updates=200)
    with pytest.raises(TrainingError, match="lower the learning rate") as err:
        train(data, config)
    assert 0 < err.value.update < 200


def test_nan_parameters_stop_with_reason(frames):
    config = small_config()
    cfg = config.resolved(frames.shape[1], float(frames.mean()))
    state = init_state(frames, cfg)
    state.model.weights[3, 1] = np.nan
    with pytest.raises(TrainingError, match="non-finite values in weights") as err:
        train(frames, config, state=tr._snapshot(state))
    assert err.value.update == 1
    # a retry from a poisoned snapshot fails again and then gives up
    with pytest.raises(TrainingError, match="non-finite"):
        train(frames, small_config(retries=1), state=state)


def test_divergence_retries_from_last_checkpoint_at_half_rate(frames, tmp_path):
    """NaN injected after update 15: the run rolls back to the snapshot of the checkpoint at
    update 10, halves the learning rate and finishes; what it does then is exactly a run resumed
    from that checkpoint file with lr_scale = 0.5."""
    config = small_config(retries=1)
    cfg = config.resolved(frames.shape[1], float(frames.mean()))
    state = init_state(frames, cfg)
    calls = [0]

    def poison() -> bool:
        calls[0] += 1
        if calls[0] == 16:  # polled before update 16: the state object given to train()
            state.model.weights[0, 0] = np.nan
        return False

    def checkpoint(s, c):
        save_checkpoint(tmp_path / f"ckpt-{s.update}.h5", s, config, c)

    events = []
    result = train(
        frames,
        config,
        state=state,
        checkpoint=checkpoint,
        should_stop=poison,
        callback=events.append,
    )
    retry = [e for e in result.state.history if e.get("event") == "retry"]
    assert len(retry) == 1
    assert retry[0]["update"] == 10 and retry[0]["lr_scale"] == 0.5
    assert "non-finite values in weights" in retry[0]["reason"]
    assert result.state.update == 40 and result.state.lr_scale == 0.5
    assert np.all(np.isfinite(result.state.model.weights))
    after = [e for e in result.state.history if "event" not in e and e["update"] > 10]
    assert after and all(
        e["lr"] == learning_rate(e["update"] - 1, {**cfg, "lr_scale": 0.5}) for e in after
    )
    # the retry event is in the final model file too
    final, _, _ = load_checkpoint(tmp_path / "ckpt-40.h5")
    assert [e["event"] for e in final.history if "event" in e] == ["retry"]
    # identical to a run resumed from the update-10 file at half the learning rate
    resumed, _, _ = load_checkpoint(tmp_path / "ckpt-10.h5")
    resumed.lr_scale = 0.5
    again = train(frames, config, state=resumed)
    assert_same_state(again.state, result.state)


def test_huge_l1_collapses(frames):
    """λ = 10 pins every weight to 0 ± lr (subgradient steps of size lr); once the decaying
    rate is below the 1e-3 collapse threshold the run stops, and a collapse is not retried.
    (From the paper's small random start: the correlation start's weights of order 1 would take
    most of the run to shrink at lr per update.)"""
    config = small_config(
        l1=10.0, l1_warmup=0.0, learning_rate=2e-3, n_updates=400, retries=1, init="random"
    )
    with pytest.raises(TrainingError, match="collapsed") as err:
        train(frames, config)
    assert 100 <= err.value.update < 400


# --------------------------------------------------------------------------------------------
# 6. progress events, stored history, learning-rate schedule

EVENT_KEYS = {
    "update",
    "elapsed",
    "updates_per_s",
    "eta_s",
    "lr",
    "rmse_v",
    "rmse_vh",
    "sparsity",
    "mean_abs_w",
    "w_std",
    "h_mean",
    "h_var",
    "gamma_min",
    "gamma_max",
}


def test_progress_events_and_stored_history(frames, tmp_path):
    config, path = small_config(n_updates=42, progress_every=5), tmp_path / "model.h5"
    cfg = config.resolved(frames.shape[1], float(frames.mean()))
    events = []
    result = train(frames, config, callback=events.append, checkpoint=saver(path, config))
    assert [e["update"] for e in events] == [*range(5, 41, 5), 42]
    for e in events:
        assert EVENT_KEYS <= set(e), EVENT_KEYS - set(e)
        assert all(math.isfinite(e[k]) for k in EVENT_KEYS)
        assert e["lr"] == learning_rate(e["update"] - 1, cfg)
        assert e["updates_per_s"] > 0 and e["eta_s"] >= 0
        assert 0 <= e["sparsity"] <= 1 and e["gamma_min"] <= e["gamma_max"]
        assert e["w_std"] > 0 and e["mean_abs_w"] > 0 and e["rmse_v"] >= 0
    assert events[-1]["eta_s"] == 0
    elapsed = [e["elapsed"] for e in events]
    assert elapsed == sorted(elapsed)
    assert result.state.history == events
    stored = load_history(path)
    assert EVENT_KEYS <= set(stored)
    for k in EVENT_KEYS:
        assert np.array_equal(stored[k], np.array([e[k] for e in events], dtype=float)), k


def test_learning_rate_schedule():
    cfg = {"n_updates": 1000, "decay_start": 0.25, "learning_rate": 1e-3, "lr_final": 1e-5}
    lr = np.array([learning_rate(u, cfg) for u in range(1001)])
    assert np.all(lr[:251] == 1e-3)  # constant for the first 25 %
    assert lr[1000] == pytest.approx(1e-5, rel=1e-12)  # lr_final at the end
    assert lr[625] == pytest.approx(1e-4, rel=1e-12)  # geometric: halfway in log
    ratio = lr[251:] / lr[250:-1]
    np.testing.assert_allclose(ratio, 0.01 ** (1 / 750), rtol=1e-12)
    assert learning_rate(300, {**cfg, "lr_scale": 0.5}) == pytest.approx(0.5 * lr[300], rel=1e-14)
    with pytest.raises(tr.ParameterError, match="lr_final"):
        TrainConfig(learning_rate=1e-4, lr_final=1e-3).resolved(10, 0.1)
