"""The compositional RBM (METHODS §1–3): parameters, transforms, free energy, Gibbs sweeps.

Visible units are binary and sparse (2–5 % active), so v → h inputs are sums of the weight rows
of the active neurons (`hidden_input`), never a dense product. h → v is a dense GEMM (BLAS)
followed by a fused numba kernel that adds the fields and draws the Bernoulli units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from .layers import (
    drelu_cgf,
    drelu_moments,
    drelu_params,
    drelu_sample,
)
from .special import rng_init, rng_next

HIDDEN_PARAMS = ("gamma", "theta", "delta", "eta")


# --------------------------------------------------------------------------------------------
# kernels


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _sparse_input_kernel(v: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """out[b] = Σ_{i: v[b,i]=1} w[i]  (v binary uint8, B×N; w N×M), in w's precision.

    Rows of W are contiguous, so each active neuron adds one SIMD M-vector (fastmath lets LLVM
    vectorize; results stay deterministic for a given build, so runs remain reproducible)."""
    for b in prange(v.shape[0]):
        active = np.flatnonzero(v[b])
        o = out[b]
        o[:] = 0
        for t in range(active.shape[0]):
            wi = w[active[t]]
            for j in range(o.shape[0]):
                o[j] += wi[j]


_U24 = np.float32(2.0**-24)
_MASK24 = np.uint64(0xFFFFFF)


@njit(parallel=True, cache=True, nogil=True)
def _bernoulli_draw_kernel(emx: np.ndarray, key: np.uint64, out: np.ndarray):
    """out[b, i] = 1{u < σ(x)} given emx = e^−x (B×N); row b uses its own stream (key, b).

    u < σ(x) ⟺ u·(1 + e^−x) < 1. Two 24-bit uniforms come from each 64-bit draw; the exp is
    done beforehand by numpy's vectorized exp, so this loop is only the draw and a compare."""
    n = emx.shape[1]
    one = emx.dtype.type(1.0)
    for b in prange(emx.shape[0]):
        s = rng_init(key, b)
        e = emx[b]
        o = out[b]
        for i in range(0, n - 1, 2):
            r = rng_next(s)
            u0 = (np.float32(r >> np.uint64(40)) + np.float32(0.5)) * _U24
            u1 = (np.float32((r >> np.uint64(8)) & _MASK24) + np.float32(0.5)) * _U24
            o[i] = 1 if u0 * (one + e[i]) < one else 0
            o[i + 1] = 1 if u1 * (one + e[i + 1]) < one else 0
        if n % 2:
            u0 = (np.float32(rng_next(s) >> np.uint64(40)) + np.float32(0.5)) * _U24
            o[n - 1] = 1 if u0 * (one + e[n - 1]) < one else 0


@njit(parallel=True, cache=True, nogil=True)
def _sparse_outer_kernel(vt: np.ndarray, h: np.ndarray, out: np.ndarray) -> None:
    """out[i] = Σ_{b: vt[i,b]=1} h[b]  (vt binary N×B, h B×M): vᵀh without a dense product."""
    m = h.shape[1]
    for i in prange(vt.shape[0]):
        for j in range(m):
            out[i, j] = 0.0
        for b in range(vt.shape[1]):
            if vt[i, b]:
                for j in range(m):
                    out[i, j] += h[b, j]


def sparse_outer(v: np.ndarray, h: np.ndarray) -> np.ndarray:
    """vᵀh for binary v (B×N uint8) and h (B×M), summing only the active neurons' rows."""
    out = np.empty((v.shape[1], h.shape[1]), dtype=h.dtype)
    _sparse_outer_kernel(np.ascontiguousarray(v.T), np.ascontiguousarray(h), out)
    return out


def _key(rng: np.random.Generator) -> np.uint64:
    return rng.integers(0, 2**64, dtype=np.uint64)


# --------------------------------------------------------------------------------------------
# the model


@dataclass
class CRBM:
    """Bernoulli visible × dReLU hidden RBM.

    weights: N×M; fields g: N; hidden (γ, θ, δ, η): M each (METHODS §2 parameterization).
    Arrays keep the dtype they are given (float32 for training, float64 in exactness tests).
    """

    weights: np.ndarray
    fields: np.ndarray
    gamma: np.ndarray
    theta: np.ndarray
    delta: np.ndarray
    eta: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def n_visible(self) -> int:
        return self.weights.shape[0]

    @property
    def n_hidden(self) -> int:
        return self.weights.shape[1]

    @property
    def dtype(self):
        return self.weights.dtype

    def copy(self) -> CRBM:
        return CRBM(
            *(getattr(self, k).copy() for k in ("weights", "fields", *HIDDEN_PARAMS)),
            meta=dict(self.meta),
        )

    def hidden_params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(γ₊, γ₋, θ₊, θ₋) of every unit."""
        return drelu_params(self.gamma, self.theta, self.delta, self.eta)

    # -- transforms -----------------------------------------------------------------------------
    def hidden_input(self, v: np.ndarray) -> np.ndarray:
        """I_μ(v) = Σ_i w_iμ v_i for a batch of binary v (B×N); sums active rows only."""
        v = np.atleast_2d(v)
        if v.dtype != np.uint8:
            if np.any((v != 0) & (v != 1)):
                return np.asarray(v, dtype=self.dtype) @ self.weights
            v = v.astype(np.uint8)
        out = np.empty((v.shape[0], self.n_hidden), dtype=self.dtype)
        _sparse_input_kernel(np.ascontiguousarray(v), self.weights, out)
        return out

    def visible_input(self, h: np.ndarray) -> np.ndarray:
        """I_i(h) = Σ_μ w_iμ h_μ (a dense GEMM)."""
        return np.asarray(h, dtype=self.dtype) @ self.weights.T

    def mean_hidden(self, v: np.ndarray) -> np.ndarray:
        """E[h|v] (B×M)."""
        return drelu_moments(self.hidden_input(v), *self.hidden_params())[0]

    def var_hidden(self, v: np.ndarray) -> np.ndarray:
        return drelu_moments(self.hidden_input(v), *self.hidden_params())[1]

    def mean_visible(self, h: np.ndarray) -> np.ndarray:
        """P(v_i = 1 | h) = σ(g_i + I_i(h))."""
        x = self.visible_input(h) + self.fields
        return 0.5 * (1.0 + np.tanh(0.5 * x))

    def sample_hidden(self, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return drelu_sample(self.hidden_input(v), *self.hidden_params(), rng)

    def sample_visible(self, h: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """v ~ P(v|h) as uint8 (B×N): one GEMM, in-place vectorized exp, then the draws."""
        x = np.ascontiguousarray(self.visible_input(np.atleast_2d(h)))
        x += self.fields
        np.clip(x, -30.0, 30.0, out=x)  # σ(±30) is 0 or 1 to float32 precision anyway
        np.negative(x, out=x)
        np.exp(x, out=x)
        out = np.empty(x.shape, dtype=np.uint8)
        _bernoulli_draw_kernel(x, _key(rng), out)
        return out

    def gibbs(self, v: np.ndarray, n_sweeps: int, rng: np.random.Generator) -> np.ndarray:
        """n_sweeps of v → h → v from v (B×N uint8); returns the new v."""
        v = np.atleast_2d(v).astype(np.uint8, copy=False)
        for _ in range(n_sweeps):
            v = self.sample_visible(self.sample_hidden(v, rng), rng)
        return v

    # -- probabilities --------------------------------------------------------------------------
    def free_energy(self, v: np.ndarray) -> np.ndarray:
        """F(v) = −Σ_i g_i v_i − Σ_μ Γ_μ(I_μ(v)), so P(v) ∝ exp(−F(v))."""
        v = np.atleast_2d(v)
        inp = self.hidden_input(v).astype(np.float64)
        gp, gm, tp, tm = (np.asarray(a, np.float64) for a in self.hidden_params())
        return -(v @ self.fields.astype(np.float64)) - drelu_cgf(inp, gp, gm, tp, tm).sum(axis=1)

    def energy(self, v: np.ndarray, h: np.ndarray) -> np.ndarray:
        """E(v,h) = −Σ g_i v_i + Σ_μ U_μ(h_μ) − Σ w_iμ v_i h_μ."""
        v, h = np.atleast_2d(v).astype(np.float64), np.atleast_2d(h).astype(np.float64)
        gp, gm, tp, tm = (np.asarray(a, np.float64) for a in self.hidden_params())
        hp, hm = np.maximum(h, 0), np.maximum(-h, 0)
        u = 0.5 * gp * hp**2 + tp * hp + 0.5 * gm * hm**2 + tm * hm
        return (
            -(v @ self.fields)
            + u.sum(axis=1)
            - np.einsum("bi,bm,im->b", v, h, self.weights.astype(np.float64))
        )

    # -- symmetry -------------------------------------------------------------------------------
    def sign_swapped(self) -> CRBM:
        """Flip every unit with Σ_i w_iμ < 0 (h → −h): negate its weights and swap its ±
        branches (θ → −θ, η → −η; γ, δ unchanged). P(v) is unchanged."""
        out = self.copy()
        flip = self.weights.sum(axis=0) < 0
        out.weights[:, flip] *= -1
        out.theta[flip] *= -1
        out.eta[flip] *= -1
        out.meta["sign_swapped"] = True
        return out

    def to_dict(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("weights", "fields", *HIDDEN_PARAMS)}

    @classmethod
    def from_dict(cls, d: dict[str, np.ndarray], meta: dict | None = None) -> CRBM:
        return cls(
            *(np.asarray(d[k]) for k in ("weights", "fields", *HIDDEN_PARAMS)),
            meta=dict(meta or {}),
        )
