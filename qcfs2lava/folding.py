"""BatchNorm folding: the one place where an eval-mode BatchNorm is merged into the layer before it.

Used by the max-input thresholds of :mod:`qcfs2lava.balance` (torch tensors) and by the NetX exporter's
tracer (:mod:`netx_export.convert.trace`, float64 numpy arrays). Not part of the paper: BatchNorm
at inference is an affine map per channel, so it folds exactly into the preceding conv/linear.
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

__all__ = ["fold_batchnorm"]

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def fold_batchnorm(weight: Array, bias: Array, gamma: Array, beta: Array, mean: Array, var: Array,
                   eps: float) -> tuple[Array, Array]:
    """BN(W·x + b) = W'·x + b' for eval-mode BatchNorm (running mean μ, variance σ²):

        g = γ / √(σ² + ε),   W' = W·g,   b' = (b − μ)·g + β      (per output channel)

    ``weight`` has the output channel on axis 0 (conv ``[C_out, ...]``, dense ``[N_out, N_in]``);
    every argument is either a numpy array or a torch tensor (not mixed)."""
    sqrt = torch.sqrt if isinstance(var, torch.Tensor) else np.sqrt
    g = gamma / sqrt(var + eps)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return weight * g.reshape(shape), (bias - mean) * g + beta
