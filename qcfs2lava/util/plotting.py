"""The one look of every accuracy-against-T plot (``evaluate --plot``, the benchmarks): a log-2 time
axis, labelled, with a light grid. The caller imports matplotlib (Agg) and owns the figure."""
from __future__ import annotations

from typing import Any

__all__ = ["time_axis", "plot_accuracy_vs_T"]


def time_axis(ax: Any, ylabel: str | None = "test accuracy (%)", ylim: tuple[float, float] | None = None) -> None:
    """Style ``ax`` for values against time steps T = 1, 2, 4, …"""
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps T")
    if ylabel:
        ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3, which="both")


def plot_accuracy_vs_T(path: str, curves: dict[str, list[float]], ann: dict[str, float], title: str) -> None:
    """PNG at ``path``: accuracy (%) against time steps, one line per curve; ANN accuracies dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qcfs2lava.util.fileio import atomic_write_png
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, acc in curves.items():
        ts = list(range(1, len(acc) + 1))
        line, = ax.plot(ts, [100 * v for v in acc], marker="o", ms=3, label=f"{label} SNN")
        if label in ann:
            ax.axhline(100 * ann[label], ls="--", color=line.get_color(), lw=1, label=f"{label} ANN")
    time_axis(ax)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_png(path, fig)
    plt.close(fig)
