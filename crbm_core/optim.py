"""The RMSprop step of the N×M weights, fused with their gradient (METHODS §3), in numba.

Done with numpy, one update of W at N×M = 40,000×200 is ~15 passes over 32 MB arrays (two sparse
vᵀh products, the regularization term, clip, moment update, sqrt, divide, add) plus two scans
for NaN and max|w|. Here each row of W is finished while in cache: its data and chain terms are
summed from the rows of E[h|v] of the frames/chains where the neuron is on, and the gradient,
moment and weight are updated in place, element by element with the very float operations (and
rounding) of the numpy version `train.gradients` + `train.update_step` used to do.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

REG_KINDS = {"l1": 0, "l1_squared": 1, "l2": 2}
_ROW_CHUNKS = 64  # fixed: the max|w| of a chunk does not depend on the thread count anyway


_TBLOCK = 64  # neurons whose columns of v are transposed at a time (in L1)


@njit(cache=True, nogil=True)
def _transpose_block(v: np.ndarray, i0: int, i1: int, vt: np.ndarray) -> None:
    """vt[i − i0, b] = v[b, i]: reading columns of v directly misses the TLB on every row."""
    for b in range(v.shape[0]):
        vb = v[b]
        for i in range(i0, i1):
            vt[i - i0, b] = vb[i]


@njit(cache=True, nogil=True)
def _sum_active(vt: np.ndarray, h: np.ndarray, out: np.ndarray, idx: np.ndarray) -> None:
    """out = Σ_{b: vt[b]=1} h[b] (in increasing b, as `model.sparse_outer`); the list of active
    b is made branch-free first (3× faster than testing each b, at 2–5 % activity)."""
    k = 0
    for b in range(vt.shape[0]):
        idx[k] = b
        k += vt[b] != 0
    for j in range(out.shape[0]):
        out[j] = 0
    for t in range(k):
        b = idx[t]
        for j in range(out.shape[0]):
            out[j] += h[b, j]  # (not a row view h[b]: its reference counting costs ~8 ns)


@njit(cache=True, nogil=True, error_model="numpy")
def _weight_step_rows(
    i0, i1, w, w_bits, mom, v_pos, h_pos, div_pos, v_neg, h_neg, div_neg, reg_kind, reg_coef,
    ru, rc, clip, b2, one_minus_b2, lr, bias, eps, sign_mask,
):  # fmt: skip
    """Rows [i0, i1) of `_weight_step_kernel`; returns the max of |w|'s bit patterns.

    Kept out of the prange body, and with numpy's error model (no Python zero-division checks),
    so that the loop over j vectorizes: both made it several times faster."""
    m = w.shape[1]
    dt = w.dtype.type
    pos, neg, reg = np.empty(m, dtype=w.dtype), np.empty(m, dtype=w.dtype), np.empty(m, w.dtype)
    top = w_bits.dtype.type(0)
    vt_pos = np.empty((_TBLOCK, v_pos.shape[0]), dtype=np.uint8)
    vt_neg = np.empty((_TBLOCK, v_neg.shape[0]), dtype=np.uint8)
    idx = np.empty(max(v_pos.shape[0], v_neg.shape[0]), dtype=np.int64)
    for i in range(i0, i1):
        if (i - i0) % _TBLOCK == 0:
            _transpose_block(v_pos, i, min(i1, i + _TBLOCK), vt_pos)
            _transpose_block(v_neg, i, min(i1, i + _TBLOCK), vt_neg)
        _sum_active(vt_pos[(i - i0) % _TBLOCK], h_pos, pos, idx)
        _sum_active(vt_neg[(i - i0) % _TBLOCK], h_neg, neg, idx)
        wi, mi, bi = w[i], mom[i], w_bits[i]
        if reg_kind == 2:
            for j in range(m):
                reg[j] = reg_coef[j] * wi[j]
        else:
            for j in range(m):
                x = wi[j]
                reg[j] = reg_coef[j] * (dt(1) if x > 0 else (dt(-1) if x < 0 else x * dt(0)))
        ui = ru[i]
        for j in range(m):
            gr = (pos[j] / div_pos - neg[j] / div_neg + ui * rc[j]) - reg[j]
            gr = clip if gr > clip else (-clip if gr < -clip else gr)  # NaN stays NaN
            mo = mi[j] * b2 + (one_minus_b2 * gr) * gr
            mi[j] = mo
            wi[j] += (lr * gr) / (np.sqrt(mo / bias) + eps)
        for j in range(m):
            top = max(top, bi[j] & sign_mask)
    return top


@njit(parallel=True, cache=True, nogil=True)
def _weight_step_kernel(
    w, w_bits, mom, v_pos, h_pos, div_pos, v_neg, h_neg, div_neg, reg_kind, reg_coef,
    ru, rc, clip, b2, one_minus_b2, lr, bias, eps, sign_mask, top_bits,
):  # fmt: skip
    """One RMSprop step of every w_ij, with grad = Σ_pos h/div_pos − Σ_neg h/div_neg + ru_i·rc_j
    − reg (ru ⊗ rc: the normalization's centring term, zeros without it).

    reg = coef_j·sign(w) (l1: coef = λ; l1_squared: coef = λΣ_i|w_iμ|) or coef_j·w (l2).
    w_bits is w viewed as integers: the max of |w|'s bit patterns per chunk (top_bits) is the
    bit pattern of max|w|, or ≥ that of +inf if anything is inf or NaN (an integer max that
    vectorizes, where a float max with NaN checks would not); sign_mask: all bits but the sign."""
    n = w.shape[0]
    for k in prange(_ROW_CHUNKS):
        top_bits[k] = _weight_step_rows(
            k * n // _ROW_CHUNKS, (k + 1) * n // _ROW_CHUNKS, w, w_bits, mom, v_pos, h_pos,
            div_pos, v_neg, h_neg, div_neg, reg_kind, reg_coef, ru, rc, clip, b2, one_minus_b2,
            lr, bias, eps, sign_mask,
        )  # fmt: skip


@njit(parallel=True, cache=True, nogil=True)
def _abs_column_sums(w: np.ndarray, out: np.ndarray) -> None:
    """out[j] = Σ_i |w_ij| (float64 partial sums over fixed row chunks, summed in order)."""
    n, m = w.shape
    part = np.zeros((_ROW_CHUNKS, m))
    for k in prange(_ROW_CHUNKS):
        for i in range(k * n // _ROW_CHUNKS, (k + 1) * n // _ROW_CHUNKS):
            for j in range(m):
                part[k, j] += abs(w[i, j])
    for j in range(m):
        out[j] = part[:, j].sum()


def weight_step(
    w: np.ndarray,
    mom: np.ndarray,
    v_pos: np.ndarray,
    h_pos: np.ndarray,
    div_pos: float,
    v_neg: np.ndarray,
    h_neg: np.ndarray,
    div_neg: float,
    *,
    reg: str,
    lam: float,
    clip: float,
    beta2: float,
    lr: float,
    t: int,
    eps: float,
    rank_one: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """Update w and its RMSprop moment in place; returns max|w| after the step (NaN if any
    weight is not finite).

    Gradient Σ_{b: v_pos[b,i]=1} h_pos[b,j]/div_pos − Σ_{c: v_neg[c,i]=1} h_neg[c,j]/div_neg −
    reg'(w_ij) (v binary uint8 B×N, h B×M) [+ u_i·c_j with rank_one = (u, c)]; then, with
    the rounding of numpy float arithmetic, g ← clip(g), m ← β₂m + (1−β₂)g²,
    w ← w + lr·g/(√(m/(1−β₂ᵗ)) + ε)."""
    if not (w.flags.c_contiguous and mom.flags.c_contiguous and mom.dtype == w.dtype):
        raise ValueError("weights and moments must be C-contiguous arrays of one dtype")
    dt = w.dtype.type
    lam_ = dt(lam)
    if reg == "l1_squared":
        sums = np.empty(w.shape[1])
        _abs_column_sums(w, sums)
        coef = lam_ * sums.astype(w.dtype)
    else:
        coef = np.full(w.shape[1], lam_, dtype=w.dtype)
    if rank_one is None:
        ru, rc = np.zeros(w.shape[0], w.dtype), np.zeros(w.shape[1], w.dtype)
    else:
        ru, rc = (np.ascontiguousarray(a, dtype=w.dtype) for a in rank_one)
    bits_dtype = np.int32 if w.dtype == np.float32 else np.int64
    top = np.zeros(_ROW_CHUNKS, dtype=bits_dtype)
    _weight_step_kernel(
        w,
        w.view(bits_dtype),
        mom,
        np.ascontiguousarray(v_pos, dtype=np.uint8),
        np.ascontiguousarray(h_pos, dtype=w.dtype),
        dt(div_pos),
        np.ascontiguousarray(v_neg, dtype=np.uint8),
        np.ascontiguousarray(h_neg, dtype=w.dtype),
        dt(div_neg),
        REG_KINDS[reg],
        coef,
        ru,
        rc,
        dt(clip) if clip > 0 else dt(np.inf),  # no clip: ±inf bounds change nothing
        dt(beta2),
        dt(1 - beta2),
        dt(lr),
        dt(1 - beta2**t),
        dt(eps),
        np.iinfo(bits_dtype).max,
        top,
    )
    top_w = float(top.max(initial=0).view(w.dtype))
    return top_w if np.isfinite(top_w) else float("nan")
