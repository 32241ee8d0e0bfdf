"""The one look of every accuracy-against-T plot (``evaluate --plot``, the benchmarks): a log-2 time
axis, labelled, with a light grid. The caller imports matplotlib (Agg) and owns the figure."""
from __future__ import annotations

from typing import Any

__all__ = ["time_axis"]


def time_axis(ax: Any, ylabel: str | None = "test accuracy (%)", ylim: tuple[float, float] | None = None) -> None:
    """Style ``ax`` for values against time steps T = 1, 2, 4, …"""
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps T")
    if ylabel:
        ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3, which="both")
