"""Folds: PyTorch modules NetX has no layer for, merged exactly into the synaptic layer next to them.

* BatchNorm folds into the conv/linear before it (:func:`qcfs2lava.folding.fold_batchnorm`, eval-mode
  running statistics);
* Dropout and Identity fold to nothing (:data:`INFERENCE_IDENTITIES`);
* AvgPool is a per-channel box filter (:func:`box_kernel`) that folds into the *following* conv
  (:func:`compose_prefilter_conv`: pool then conv is one strided conv with a larger kernel) or, after a
  flatten, into the following dense layer (:func:`compose_prefilter_dense`). NetX has no pooling layer,
  and folding is exact, while a separate depthwise "pool" layer would add neurons that re-quantise.

Each fold is checked numerically against the modules it replaces (:func:`fold_error`).
"""
from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from torch import nn

from qcfs2lava.folding import fold_batchnorm
from qcfs2lava.qcfs import QCFS

from netx_export.convert.graph import layer_forward
from netx_export.convert.ir import Conv, Dense, Pair, Shape

__all__ = ["INFERENCE_IDENTITIES", "as_float64", "fold_batchnorm_module", "box_kernel", "compose_prefilter_conv",
           "compose_prefilter_dense", "fold_error"]

INFERENCE_IDENTITIES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)


def as_float64(t: torch.Tensor) -> np.ndarray:
    """A parameter or buffer as a float64 numpy copy."""
    return t.detach().double().cpu().numpy().copy()


def fold_batchnorm_module(weight: np.ndarray, bias: np.ndarray, bn: nn.BatchNorm1d | nn.BatchNorm2d
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(W', b') of "conv/linear (``weight``, ``bias``), then ``bn``" (which must have running
    statistics); γ = 1 and β = 0 when ``bn`` has no affine parameters."""
    gamma = as_float64(bn.weight) if bn.weight is not None else np.ones(bn.num_features)
    beta = as_float64(bn.bias) if bn.bias is not None else np.zeros(bn.num_features)
    return fold_batchnorm(weight, bias, gamma, beta, as_float64(bn.running_mean), as_float64(bn.running_var),
                          float(bn.eps))


def box_kernel(kernel: Pair) -> np.ndarray:
    """The AvgPool2d window as a 2-D filter: ones/(kH·kW), shape (kH, kW)."""
    return np.full(kernel, 1.0 / (kernel[0] * kernel[1]))


def compose_prefilter_conv(pre: np.ndarray, pre_stride: Pair, weight: np.ndarray, stride: Pair,
                           padding: Pair, dilation: Pair) -> tuple[np.ndarray, Pair, Pair]:
    """One conv equal to "per-channel filter ``pre`` (stride ``pre_stride``, no padding), then conv ``weight``".

    The composite kernel is ``W'[o,i,a,b] = Σ_{u,v} W[o,i,u,v]·pre[a − u·D·s, b − v·D·s]`` (s the
    pre-filter stride, D the conv dilation): size ``(K−1)·D·s + k``, stride ``S·s``, padding ``P·s``,
    dilation 1. The padding is exact only when the pre-filter tiles its input (checked by the caller);
    ``pre`` acts identically on every channel, so grouped convs compose the same way.
    Also composes two pre-filters (pass a (1, 1, kH, kW) ``weight`` and zero padding).
    """
    kh, kw = pre.shape
    sh, sw = pre_stride
    o, i, KH, KW = weight.shape
    dh, dw = dilation
    out = np.zeros((o, i, (KH - 1) * dh * sh + kh, (KW - 1) * dw * sw + kw))
    for u in range(KH):
        for v in range(KW):
            out[:, :, u * dh * sh:u * dh * sh + kh, v * dw * sw:v * dw * sw + kw] += \
                weight[:, :, u, v, None, None] * pre
    return out, (stride[0] * sh, stride[1] * sw), (padding[0] * sh, padding[1] * sw)


def compose_prefilter_dense(pre: np.ndarray, pre_stride: Pair, weight: np.ndarray, in_shape: Shape,
                            pooled_shape: Shape) -> np.ndarray:
    """Dense weights on the un-pooled map equal to "pre-filter, flatten, dense ``weight``".

    ``W'[o, c, y, x] = Σ_{q,r} W[o, c, q, r]·pre[y − q·s, x − r·s]``; input rows the filter never
    reaches get weight 0, which is exact (unlike a conv's padding, a dense layer has no edge).
    """
    c, hp, wp = pooled_shape
    _, h, w = in_shape
    kh, kw = pre.shape
    sh, sw = pre_stride
    w4 = weight.reshape(weight.shape[0], c, hp, wp)
    out = np.zeros((weight.shape[0], c, h, w))
    for a in range(kh):
        for b in range(kw):
            out[:, :, a:a + sh * (hp - 1) + 1:sh, b:b + sw * (wp - 1) + 1:sw] += pre[a, b] * w4
    return out.reshape(weight.shape[0], -1)


@torch.no_grad()
def fold_error(modules: Sequence[nn.Module | str], layer: Conv | Dense, in_shape: Shape, n: int = 4,
               seed: int = 0) -> float:
    """Max relative difference between the folded ``layer`` and the PyTorch ``modules`` it replaces
    (pools, flatten, conv/linear, BN; QCFS/dropout skipped), on ``n`` random float64 inputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n,) + tuple(in_shape), generator=g, dtype=torch.float64)
    # A dense layer without its own flatten sees the previous dense's (N, 1, 1) output as a vector.
    ref = x.flatten(1) if isinstance(layer, Dense) and "flatten" not in modules else x
    for m in modules:
        if isinstance(m, (QCFS,) + INFERENCE_IDENTITIES):
            continue
        if m == "flatten":
            ref = ref.flatten(1)
            continue
        m = copy.deepcopy(m).double().eval()
        ref = m(ref)
    got = layer_forward(layer, x)
    if got.shape != ref.shape:
        return float("inf")
    return float((got - ref).abs().max() / ref.abs().max().clamp(min=1e-30))
