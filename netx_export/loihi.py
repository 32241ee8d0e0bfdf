"""Loihi's integer neuron arithmetic: 24-bit u and v, decays in 1/4096 rounding toward zero, u's wrap.
Used by the simulators and by the stock-block mapping's check that an idle neuron stays silent; the
Lava runtime does not compute it (Lava does). Written with operators only, so the same functions
run on numpy arrays and on torch tensors (the reference simulator's two array backends)."""
from __future__ import annotations

__all__ = ["UV_MAX", "DECAY_SHIFT", "decay", "wrap_current"]

UV_MAX = 1 << 23            # u, v are 24-bit signed
DECAY_SHIFT = 12            # decays are in 1/4096


def decay(x, const: int):
    """Loihi's decay: ``sgn(x·(4096 − const))·(|x·(4096 − const)| >> 12)`` (rounds toward zero).
    ``const`` 4096 (no persistence: 0) and 0 (no leak: x itself) are exact identities of it and
    skip the arithmetic; they are the IF_SUB neuron's current and voltage."""
    k = (1 << DECAY_SHIFT) - int(const)
    if k == 0:
        return x * 0
    if k == 1 << DECAY_SHIFT:
        return x
    p = x * k
    return (abs(p) >> DECAY_SHIFT) * (1 - 2 * (p < 0))


def wrap_current(u):
    """u outside the 24-bit range wraps by 2^24 (Lava: > 2^23 → −2^24, ≤ −2^23 → +2^24). One
    reduction first: in range (the usual case) u is returned as it is."""
    if not isinstance(u, int) and not (u.max() > UV_MAX or u.min() <= -UV_MAX):
        return u
    return u - (2 * UV_MAX) * (u > UV_MAX) + (2 * UV_MAX) * (u <= -UV_MAX)
