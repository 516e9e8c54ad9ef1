"""The compositional RBM (METHODS §1–3): parameters, transforms, free energy, Gibbs sweeps.

Visible units are binary and sparse (2–5 % active), so v → h inputs are sums of the weight rows
of the active neurons (`hidden_input`), never a dense product. A Gibbs sweep streams W once:
per block of neurons, a small GEMM (BLAS) gives their inputs from h, the Bernoulli units are
drawn, and the rows of those that fired are added into the next hidden input while in cache.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from .layers import (
    drelu_cgf,
    drelu_moments,
    drelu_params,
    drelu_sample,
)
from .special import rng_init

HIDDEN_PARAMS = ("gamma", "theta", "delta", "eta")


# --------------------------------------------------------------------------------------------
# kernels


# Neurons are processed in blocks of _BLOCK rows of W, which stay in cache while every chain uses
# them; the blocks are grouped into _CHUNKS fixed chunks, each summing into its own partial
# hidden input. Chunk boundaries depend on N only — not on the batch, its size or the number of
# threads — so I(v) of a row is the same float sum wherever it is computed, and both kernels
# below (v → h and the fused h → v → h) give bit-identical inputs. _GROUP chains at a time bound
# the partial sums to _CHUNKS × _GROUP × M.
_BLOCK = 128
_CHUNKS = 16
_GROUP = 128


@njit(cache=True, nogil=True)
def _chunk_range(n: int, k: int) -> tuple[int, int]:
    """Neurons [i0, i1) of chunk k: whole blocks, as even a split as blocks allow."""
    nb = (n + _BLOCK - 1) // _BLOCK
    return min(n, (k * nb // _CHUNKS) * _BLOCK), min(n, ((k + 1) * nb // _CHUNKS) * _BLOCK)


@njit(cache=True, nogil=True)
def _sum_chunks(part: np.ndarray, out: np.ndarray) -> None:
    """out[c] = Σ_k part[k, c] in chunk order (a fixed order: reproducible)."""
    for c in range(out.shape[0]):
        o = out[c]
        o[:] = part[0, c]
        for k in range(1, part.shape[0]):
            pk = part[k, c]
            for j in range(o.shape[0]):
                o[j] += pk[j]


# The bodies of the parallel loops are separate functions: compiled inside a prange body,
# the same loops ran 4–8× slower (parfor lowering lost their vectorization).


_U24 = np.float32(2.0**-24)
_MASK24 = np.uint64(0xFFFFFF)
_U5, _U9 = np.uint64(5), np.uint64(9)
# e^t in float32 (Cephes expf): t = n·ln2 + r, |r| ≤ ln2/2, ln2 split so n·_LN2_HI is exact
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_POLY = (1.98756915e-4, 1.39819995e-3, 8.33345191e-3, 4.16657959e-2, 0.166666655, 0.5)
_P0, _P1, _P2, _P3, _P4, _P5 = (np.float32(c) for c in _EXP_POLY)
_HALF, _ONE = np.float32(0.5), np.float32(1.0)
_CLIP = 30.0  # σ(±30) is 0 or 1 to float32 precision anyway


@njit(cache=True, nogil=True)
def _exp_neg_logit(x: np.ndarray, row: int, gi: float, out: np.ndarray, q: int, bits: np.ndarray):
    """out[q] = e^−(x[row]+gi) with x+gi clipped to ±30, float32 to ≤ 1.4 ulp (numpy's SIMD exp
    is not callable from numba, and math.exp is a scalar libm call, several times slower).

    A polynomial on the reduced argument times 2^n, where 2^n is built from its exponent bits in
    an int32 buffer viewed as float32: everything vectorizes."""
    scale = bits.view(np.float32)
    for c in range(out.shape[1]):
        t = -min(max(x[row, c] + gi, np.float32(-_CLIP)), np.float32(_CLIP))
        n = np.floor(t * _LOG2E + _HALF)
        r = (t - n * _LN2_HI) - n * _LN2_LO
        p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
        out[q, c] = p * (r * r) + r + _ONE
        bits[c] = (np.int32(n) + np.int32(127)) << np.int32(23)
    for c in range(out.shape[1]):
        out[q, c] *= scale[c]


@njit(cache=True, nogil=True)
def _exp_neg_logit64(x: np.ndarray, row: int, gi: float, out: np.ndarray, q: int) -> None:
    """out[q] = e^−(x[row]+gi) with x+gi clipped to ±30 (float64: libm exp)."""
    for c in range(out.shape[1]):
        out[q, c] = math.exp(-min(max(x[row, c] + gi, -_CLIP), _CLIP))


@njit(cache=True, nogil=True)
def _draw_pair(s: np.ndarray, e: np.ndarray, f: np.ndarray) -> None:
    """f[:, c] = 1{u < σ(x)} for two neurons given e = e^−x (2×C; u < σ(x) ⟺ u(1 + e^−x) < 1).

    Chain c draws from its own xoshiro256** stream s[:, c] (one `special.rng_next` step, written
    on a structure of arrays so that the loop over chains vectorizes); the 64 bits give the two
    24-bit uniforms."""
    one = e.dtype.type(1.0)
    for c in range(e.shape[1]):
        s0, s1, s2, s3 = s[0, c], s[1, c], s[2, c], s[3, c]
        x = s1 * _U5
        r = ((x << np.uint64(7)) | (x >> np.uint64(57))) * _U9
        t = s1 << np.uint64(17)
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s[0, c], s[1, c], s[2, c] = s0, s1, s2
        s[3, c] = (s3 << np.uint64(45)) | (s3 >> np.uint64(19))
        u0 = (np.float32(r >> np.uint64(40)) + np.float32(0.5)) * _U24
        u1 = (np.float32((r >> np.uint64(8)) & _MASK24) + np.float32(0.5)) * _U24
        f[0, c] = 1 if u0 * (one + e[0, c]) < one else 0
        f[1, c] = 1 if u1 * (one + e[1, c]) < one else 0


@njit(cache=True, nogil=True)
def _add_fired(f: np.ndarray, row: int, w: np.ndarray, i: int, acc: np.ndarray, idx: np.ndarray):
    """acc[c] += w[i] for every chain c with f[row, c] = 1 (branch-free list of the chains first).

    Arrays are indexed, never sliced into row views here and in the callers' per-neuron loops:
    the reference counting of a view costs ~8 ns, as much as adding a 200-float row."""
    k = 0
    for c in range(f.shape[1]):
        idx[k] = c
        k += f[row, c]
    for t in range(k):
        c = idx[t]
        for j in range(w.shape[1]):
            acc[c, j] += w[i, j]


@njit(cache=True, nogil=True)
def _input_chunk(v: np.ndarray, w: np.ndarray, k: int, acc: np.ndarray) -> None:
    """acc[c] = Σ_{i in chunk k: v[c,i]=1} w[i] (in increasing i), a block of neurons at a time:
    the block of v is transposed so that each row of W is loaded once for all its chains."""
    i0, i1 = _chunk_range(w.shape[0], k)
    cg = v.shape[0]
    acc[:cg] = 0
    vt, idx = np.empty((_BLOCK, cg), dtype=np.uint8), np.empty(cg, dtype=np.int64)
    for b0 in range(i0, i1, _BLOCK):
        b1 = min(i1, b0 + _BLOCK)
        for c in range(cg):
            vt[: b1 - b0, c] = v[c, b0:b1]
        for i in range(b0, b1):
            _add_fired(vt, i - b0, w, i, acc, idx)


@njit(parallel=True, cache=True, nogil=True)
def _sparse_input_kernel(v: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """out[b] = Σ_{i: v[b,i]=1} w[i]  (v binary uint8, B×N; w N×M), in w's precision.

    W is streamed once per group of chains (rows in block order) instead of gathering the
    active rows of every chain from all over W, which is memory-latency bound at N = 40,000."""
    part = np.empty((_CHUNKS, min(_GROUP, v.shape[0]), w.shape[1]), dtype=out.dtype)
    for g0 in range(0, v.shape[0], _GROUP):
        g1 = min(v.shape[0], g0 + _GROUP)
        for k in prange(_CHUNKS):
            _input_chunk(v[g0:g1], w, k, part[k])
        _sum_chunks(part[:, : g1 - g0], out[g0:g1])


@njit(cache=True, nogil=True)
def _sweep_chunk(ht, w, g, key, c0, k, fast_exp, v_out, acc) -> None:
    """Chunk k of `_visible_sweep_kernel` for the chains c0… (ht = their h, transposed M×C)."""
    n, cg = w.shape[0], ht.shape[1]
    i0, i1 = _chunk_range(n, k)
    acc[:cg] = 0
    s = np.empty((4, cg), dtype=np.uint64)
    for c in range(cg):
        s[:, c] = rng_init(key, (c0 + c) * _CHUNKS + k)
    e, f = np.zeros((2, cg), dtype=w.dtype), np.zeros((2, cg), dtype=np.uint8)
    bits, idx = np.empty(cg, dtype=np.int32), np.empty(cg, dtype=np.int64)
    for b0 in range(i0, i1, _BLOCK):
        b1 = min(i1, b0 + _BLOCK)
        xt = np.dot(w[b0:b1], ht)  # block inputs, neurons × chains
        for i in range(b0, b1, 2):
            pair = 2 if i + 1 < b1 else 1  # a lone last neuron uses the first uniform only
            for q in range(pair):
                if fast_exp:
                    _exp_neg_logit(xt, i + q - b0, g[i + q], e, q, bits)
                else:
                    _exp_neg_logit64(xt, i + q - b0, g[i + q], e, q)
            _draw_pair(s, e, f)
            for q in range(pair):
                for c in range(cg):
                    v_out[c0 + c, i + q] = f[q, c]
                _add_fired(f, q, w, i + q, acc, idx)


@njit(parallel=True, cache=True, nogil=True)
def _visible_sweep_kernel(
    h: np.ndarray,
    w: np.ndarray,
    g: np.ndarray,
    key: np.uint64,
    fast_exp: bool,
    v_out: np.ndarray,
    i_out: np.ndarray,
) -> None:
    """v_out ~ P(v|h) (uint8, C×N) and i_out = I(v_out) (C×M) in one pass over W.

    Per block of neurons: their inputs from h (a small GEMM, BLAS), the Bernoulli draws, then
    the rows of the units that fired — still in cache — are added into the next hidden input,
    so the v → h step of the following sweep costs no second pass over W (and i_out is
    bit-identical to `_sparse_input_kernel` of v_out). Chain c uses stream (key, c·_CHUNKS + k)
    in chunk k, so nothing depends on the number of threads."""
    part = np.empty((_CHUNKS, min(_GROUP, h.shape[0]), w.shape[1]), dtype=i_out.dtype)
    for c0 in range(0, h.shape[0], _GROUP):
        c1 = min(h.shape[0], c0 + _GROUP)
        ht = np.ascontiguousarray(h[c0:c1].T)
        for k in prange(_CHUNKS):
            _sweep_chunk(ht, w, g, key, c0, k, fast_exp, v_out, part[k])
        _sum_chunks(part[:, : c1 - c0], i_out[c0:c1])


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


@functools.cache
def _blas_threads():
    """Controls the BLAS that numba's np.dot calls (scipy's). The sweep's block GEMMs already
    run on every numba thread; a multi-threaded BLAS under each of them oversubscribes the
    cores (measured at 40000×200 on 2 cores: 2× slower, ±20× spread), so they get one thread."""
    import scipy.linalg.cython_blas  # noqa: F401  (load it before the controller looks)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


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
        _sparse_input_kernel(np.ascontiguousarray(v), np.ascontiguousarray(self.weights), out)
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
        """v ~ P(v|h) as uint8 (B×N)."""
        return self._visible_sweep(h, rng)[0]

    def _visible_sweep(self, h: np.ndarray, rng: np.random.Generator):
        """(v ~ P(v|h), I(v)) from one fused pass over W (`_visible_sweep_kernel`)."""
        h = np.ascontiguousarray(np.atleast_2d(h), dtype=self.dtype)
        v = np.empty((h.shape[0], self.n_visible), dtype=np.uint8)
        inp = np.empty((h.shape[0], self.n_hidden), dtype=self.dtype)
        w = np.ascontiguousarray(self.weights)
        g = np.ascontiguousarray(self.fields, dtype=self.dtype)
        with _blas_threads().limit(limits=1, user_api="blas"):
            _visible_sweep_kernel(h, w, g, _key(rng), self.dtype == np.float32, v, inp)
        return v, inp

    def gibbs(self, v: np.ndarray, n_sweeps: int, rng: np.random.Generator, *, return_input=False):
        """n_sweeps of v → h → v from v (B×N uint8); returns the new v (and I(v) if asked).

        Each sweep after the first reuses the hidden input that the previous h → v pass
        accumulated, so W is streamed once per sweep."""
        v = np.atleast_2d(v).astype(np.uint8, copy=False)
        inp = self.hidden_input(v)
        hp = self.hidden_params()
        for _ in range(n_sweeps):
            v, inp = self._visible_sweep(drelu_sample(inp, *hp, rng), rng)
        return (v, inp) if return_input else v

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
