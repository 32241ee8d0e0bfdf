"""PyTorch's array layouts ↔ Lava's, in one place.

Lava's neurons and conv synapses are laid out (x, y, channel) = (W, H, C), PyTorch's (C, H, W); its
Conv weight is (out, kW, kH, in) with the kernel flipped (Lava convolves where PyTorch
cross-correlates). Dense layers are flat in PyTorch's C, H, W order on both sides.
"""
from __future__ import annotations

import numpy as np

__all__ = ["whc", "to_lava", "lava_conv_weight", "torch_conv_weight"]


def whc(a: np.ndarray) -> np.ndarray:
    """(…, C, H, W) → (…, W, H, C), PyTorch → Lava (a view); its own inverse, so also Lava → PyTorch."""
    return np.swapaxes(np.asarray(a), -1, -3)


def to_lava(a: np.ndarray, shape: tuple[int, int, int], kind: str) -> np.ndarray:
    """One sample's values of a layer of PyTorch ``shape`` (C, H, W) in Lava's neuron layout: (W, H, C)
    for a conv layer, flat (C·H·W,) for a dense one."""
    a = np.asarray(a).reshape(shape)
    return whc(a) if kind == "conv" else a.reshape(-1)


def lava_conv_weight(weight: np.ndarray, dtype: type | None = np.int32) -> np.ndarray:
    """PyTorch conv weight (out, in/groups, kH, kW) → Lava's Conv weight (out, kW, kH, in/groups),
    kernel flipped; a new contiguous array (of ``dtype``; None keeps the weight's)."""
    w = whc(np.asarray(weight)[:, :, ::-1, ::-1])
    return (w if dtype is None else w.astype(dtype)).copy()


def torch_conv_weight(weight: np.ndarray) -> np.ndarray:
    """The inverse of :func:`lava_conv_weight`: Lava (out, kW, kH, in) → PyTorch (out, in, kH, kW)."""
    return whc(np.asarray(weight))[:, :, ::-1, ::-1]
