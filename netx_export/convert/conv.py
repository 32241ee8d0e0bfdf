"""Plain numpy convolution and dense products, batched (no torch, no Lava).

Used for the host-side input drive (float) and by the reference simulator (integers). The
simulator carries integer weights and binary spikes in float64 because numpy's integer matmul
does not use BLAS; float64 is exact for integer sums below 2^53, far above anything a NetX layer
can produce (|per-step input| < 2^17 on Loihi), and :func:`int_conv2d` / :func:`int_dense`
check the bound before trusting it.
"""
from __future__ import annotations

import numpy as np

__all__ = ["conv2d", "dense", "int_conv2d", "int_dense", "conv_output_shape", "max_abs_fan_in",
           "FLOAT32_EXACT", "FLOAT64_EXACT"]

_CHUNK_ELEMS = 1 << 24        # im2col block size (float64 elements, 128 MB) per batch chunk
FLOAT32_EXACT = 1 << 24       # integers of magnitude below this are exact in float32 (any sum order)
FLOAT64_EXACT = 1 << 53       # … and in float64
_EXACT = float(FLOAT64_EXACT)


def max_abs_fan_in(weight: np.ndarray) -> int:
    """max over output channels (rows) of Σ|w| over the fan-in: the largest |input| that 0/1 spikes
    can make through these integer weights, whatever the order of summation."""
    w = np.abs(np.asarray(weight, dtype=np.int64))
    return int(w.reshape(w.shape[0], -1).sum(axis=1).max(initial=0)) if w.size else 0


def conv2d(x: np.ndarray, w: np.ndarray, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups: int = 1
           ) -> np.ndarray:
    """PyTorch-semantics cross-correlation: ``x`` (N, C, H, W), ``w`` (O, C/groups, kH, kW) → (N, O, Ho, Wo), float64."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = tuple(stride), tuple(padding), tuple(dilation)
    if c != cg * groups:
        raise ValueError(f"conv: input has {c} channels, weight expects {cg}×{groups}")
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    ho, wo = (x.shape[2] - eh) // sh + 1, (x.shape[3] - ew) // sw + 1
    out = np.empty((n, o, ho, wo))
    og = o // groups
    per_image = c * ho * wo * kh * kw
    step = max(1, _CHUNK_ELEMS // max(1, per_image))
    for a in range(0, n, step):
        win = np.lib.stride_tricks.sliding_window_view(x[a:a + step], (eh, ew), axis=(2, 3))
        win = win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :ho, :wo]          # (n, C, Ho, Wo, kH, kW)
        for g in range(groups):
            cols = win[:, g * cg:(g + 1) * cg]
            wg = w[g * og:(g + 1) * og]
            # (n, Ho, Wo, og) ← contract C, kH, kW
            out[a:a + step, g * og:(g + 1) * og] = np.tensordot(cols, wg, axes=([1, 4, 5], [1, 2, 3])
                                                                ).transpose(0, 3, 1, 2)
    return out


def dense(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x`` (N, ...) flattened in C, H, W order, times ``w.T`` (w: N_out × N_in) → (N, N_out), float64."""
    x = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
    return x @ np.asarray(w, dtype=np.float64).T


def _check_exact(x: np.ndarray, w: np.ndarray, fan_in: int) -> None:
    bound = float(np.abs(x).max(initial=0)) * float(np.abs(w).max(initial=0)) * fan_in
    if bound >= _EXACT:
        raise OverflowError(f"integer products may reach {bound:.3g} ≥ 2^53; float64 accumulation would be inexact")


def int_conv2d(x: np.ndarray, w: np.ndarray, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups: int = 1
               ) -> np.ndarray:
    """Exact integer convolution (int64 result) of integer ``x`` and ``w``."""
    _check_exact(x, w, int(np.prod(w.shape[1:])))
    return np.rint(conv2d(x, w, stride, padding, dilation, groups)).astype(np.int64)


def int_dense(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact integer dense product (int64 result) of integer ``x`` and ``w``."""
    _check_exact(x, w, int(w.shape[1]))
    return np.rint(dense(x, w)).astype(np.int64)


def conv_output_shape(in_shape: tuple[int, int, int], c_out: int, kernel, stride, padding, dilation
                      ) -> tuple[int, int, int]:
    """PyTorch's (and Lava's) conv output size."""
    hw = [(in_shape[1 + d] + 2 * padding[d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1 for d in (0, 1)]
    return (c_out, hw[0], hw[1])
