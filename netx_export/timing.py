"""The two step schedules every simulator and Lava runner of a NetX file offers, in one place.

``"aligned"`` (the default everywhere): layer l sees layer l − 1's spikes of the same step, as the
float SNN does — no latency loss, for accuracy studies; the Lava runners reproduce it by starting
layer l l steps late. ``"lava"``: every synapse delivers one step late (Lava's and Loihi's own
behaviour), so the readout lags the input by one step per synaptic layer after the first.
"""
from __future__ import annotations

__all__ = ["TIMINGS", "DEFAULT_TIMING", "check_timing"]

TIMINGS = ("aligned", "lava")
DEFAULT_TIMING = "aligned"


def check_timing(timing: str) -> str:
    """``timing`` itself if it is one of :data:`TIMINGS`, else ValueError."""
    if timing not in TIMINGS:
        raise ValueError(f"timing must be one of {TIMINGS}, got {timing!r}")
    return timing
