"""Loihi's integer neuron arithmetic: 24-bit u and v, decays in 1/4096 rounding toward zero, u's wrap.
Used by the simulators and by the stock-block mapping's check that an idle neuron stays silent; the
Lava runtime does not compute it (Lava does)."""
from __future__ import annotations

import numpy as np

__all__ = ["UV_MAX", "DECAY_SHIFT", "decay", "wrap_current"]

UV_MAX = 1 << 23            # u, v are 24-bit signed
DECAY_SHIFT = 12            # decays are in 1/4096


def decay(x: np.ndarray, const: int) -> np.ndarray:
    """Loihi's decay: ``sgn(x·(4096 − const))·(|x·(4096 − const)| >> 12)`` (rounds toward zero)."""
    p = x * ((1 << DECAY_SHIFT) - int(const))
    return np.sign(p) * (np.abs(p) >> DECAY_SHIFT)


def wrap_current(u: np.ndarray) -> np.ndarray:
    """u outside the 24-bit range wraps by 2^24 (Lava: > 2^23 → −2^24, ≤ −2^23 → +2^24)."""
    u = np.where(u > UV_MAX, u - 2 * UV_MAX, u)
    return np.where(u <= -UV_MAX, u + 2 * UV_MAX, u)
