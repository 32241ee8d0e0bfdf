"""The report's figures, each rendered to PNG bytes (matplotlib, Agg).

(a) accuracy vs T, (b) the paper's Figure 2 (QCFS activation against the IF neuron's mean output),
(c) firing rates per layer, (d) a spike raster of one sample. Every function is pure: data in,
PNG bytes out, nothing written to disk (``report.write_report`` writes, atomically).
"""
from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import numpy as np

__all__ = ["figure2_curves", "activation_T_values", "accuracy_png", "activation_png",
           "firing_rates_png", "raster_png"]

_DPI = 120


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=_DPI)
    finally:
        plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------- (b) activation math
def figure2_curves(z: np.ndarray, L: int, phi: float, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Figure 2's two curves at inputs ``z`` (units of λ = θ = 1): the QCFS activation (eq. 15,
    :func:`qcfs2lava.qcfs.qcfs`) and the IF neuron's mean output φ(T) after T steps of constant input,
    v(0) = φ·θ (eq. 2-6, :func:`qcfs2lava.low_latency.if_mean_output`)."""
    import torch

    from qcfs2lava.low_latency import if_mean_output
    from qcfs2lava.qcfs import qcfs
    zt = torch.as_tensor(np.asarray(z, dtype=np.float64))
    a = qcfs(zt, 1.0, L, phi).numpy()
    s = if_mean_output(zt.expand(int(T), *zt.shape), 1.0, phi).numpy()
    return a, s


def activation_T_values(L: int) -> list[int]:
    """The time steps Figure 2 compares against L: 2, L, 2L and 16 (distinct, sorted)."""
    return sorted({2, int(L), 2 * int(L), 16})


# --------------------------------------------------------------------------- figures
def accuracy_png(T: int, ann: float | None, curves: Mapping[str, Sequence[float]],
                 points: Mapping[str, Mapping[int, float]] | None = None, title: str = "") -> bytes:
    """(a) Test accuracy (%) against time steps t = 1..T on a log-2 axis: ``curves`` are accuracy at
    every t (index t−1), ``points`` markers at chosen t, ``ann`` a dashed horizontal line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = [dict(color="tab:blue", marker="o"), dict(color="tab:orange", marker="s", ls="--")]
    for i, (label, acc) in enumerate(curves.items()):
        ts = np.arange(1, len(acc) + 1)
        ax.plot(ts, 100 * np.asarray(acc, dtype=float), ms=3.5, lw=1.5, label=label, **styles[i % len(styles)])
    for i, (label, pts) in enumerate((points or {}).items()):
        ts = sorted(pts)
        ax.plot(ts, [100 * pts[t] for t in ts], ls="none", marker="D", ms=8, mfc="none", mew=1.8,
                color=["tab:green", "tab:purple"][i % 2], label=label)
    if ann is not None:
        ax.axhline(100 * ann, ls=":", color="black", lw=1.2, label=f"QCFS ANN ({100 * ann:.2f}%)")
    ax.set_xscale("log", base=2)
    ax.set_xlim(0.8, T * 1.25)
    ticks = [2 ** k for k in range(int(math.log2(T)) + 1)]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel("time steps t (log₂ scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "accuracy vs time steps", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def activation_png(L: int, phi: float = 0.5, Ts: Sequence[int] | None = None) -> bytes:
    """(b) The paper's Figure 2 for this network: the ANN's QCFS activation (eq. 15, L steps, shift φ)
    against the mean output φ(T) of the converted IF neuron (θ = λ, v(0) = φ·θ, simulated; eq. 11)
    for T ≠ L, in units of λ. Each panel gives the mean conversion error E_z[φ(T) − a] over
    z ∈ [0, λ], which Theorem 2 says is 0 for φ = ½, and the mean |error|, which is not."""
    plt = _plt()
    Ts = list(Ts) if Ts else activation_T_values(L)
    fig, axes = plt.subplots(1, len(Ts), figsize=(2.7 * len(Ts) + 0.6, 3.3), sharey=True, squeeze=False)
    z = np.linspace(-0.25, 1.25, 3001)
    inside = (z >= 0) & (z <= 1)
    for ax, T in zip(axes[0], Ts):
        a, s = figure2_curves(z, L, phi, T)
        err = float(np.mean(s[inside] - a[inside]))
        err = 0.0 if abs(err) < 5e-4 else err      # no "-0.000"
        abs_err = float(np.mean(np.abs(s[inside] - a[inside])))
        ax.plot(z, a, color="tab:green", lw=2.2, label=f"ANN: QCFS, L={L}")
        ax.plot(z, s, color="tab:red", lw=1.3, label="SNN: IF mean output φ(T)")
        ax.set_title(f"T = {T}" + (" (= L)" if T == L else ""), fontsize=10)
        ax.text(0.03, 0.97, f"mean error {err:+.3f} λ\nmean |error| {abs_err:.3f} λ", transform=ax.transAxes,
                va="top", fontsize=7.5, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
        ax.set_xlabel("input z / λ")
        ax.set_xticks([0, 0.5, 1])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("output / λ")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"Figure 2 of the paper for this net: QCFS (φ={phi:g}) vs IF neuron, θ=λ, v(0)={phi:g}·θ",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return _png(fig)


def _short(name: str, width: int = 14) -> str:
    """A layer label that fits under a bar: long folded names keep their last module (the neuron's)."""
    if len(name) <= width:
        return name
    last = name.split("+")[-1]
    return "…+" + last if len(last) < width else "…" + name[-width:]


def firing_rates_png(layer_names: Sequence[str], rates: Mapping[str, Sequence[float]], title: str = "") -> bytes:
    """(c) Spikes per neuron per step, per layer, one bar per series (e.g. float and fixed-point SNN)."""
    plt = _plt()
    k = max(1, len(rates))
    fig, ax = plt.subplots(figsize=(min(14.0, max(5.0, 0.9 * len(layer_names) * k + 2)), 3.8))
    labelled = len(layer_names) * k <= 16      # value labels only while the bars are wide enough
    x = np.arange(len(layer_names))
    width = 0.8 / k
    for i, (label, r) in enumerate(rates.items()):
        vals = np.array([np.nan if v is None else float(v) for v in r])
        bars = ax.bar(x + (i - (k - 1) / 2) * width, np.nan_to_num(vals), width, label=label)
        for b, v in zip(bars, vals):
            if labelled and np.isfinite(v):
                ax.annotate(f"{v:.3f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(x)
    labels = [_short(n) for n in layer_names]
    long = sum(len(n) for n in labels) > 8 * len(labels)
    ax.set_xticklabels(labels, rotation=30 if long else 0, ha="right" if long else "center", fontsize=8)
    ax.set_xlabel("layer (the PyTorch modules folded into it)")
    ax.set_ylabel("firing rate (spikes / neuron / step)")
    ax.set_title(title or "firing rate per layer", fontsize=10)
    top = max([float(np.nanmax(np.asarray(r, dtype=float))) for r in rates.values() if len(r)] + [0.0])
    ax.set_ylim(0, top * 1.2 if top > 0 else 1.0)
    ax.grid(alpha=0.3, axis="y")
    if len(rates) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def raster_png(layers: Sequence[tuple[str, np.ndarray, int]], title: str = "") -> bytes:
    """(d) Spike raster: one panel per layer; ``(name, spikes bool (T, k), neurons in the layer)``,
    a dot for every spike of the k shown neurons at every step t."""
    plt = _plt()
    n = max(1, len(layers))
    heights = [max(0.9, min(1.8, 0.035 * s.shape[1] + 0.4)) for _, s, _ in layers] or [1.0]
    fig, axes = plt.subplots(n, 1, figsize=(7.5, sum(heights) + 1.0), sharex=True, squeeze=False,
                             gridspec_kw=dict(height_ratios=heights))
    for ax, (name, spikes, total) in zip(axes[:, 0], layers):
        s = np.asarray(spikes, dtype=bool)
        t, j = np.nonzero(s)
        ax.scatter(t + 1, j, marker="s", s=7, lw=0, color="black")
        k = s.shape[1]
        ax.set_ylim(-1, k)
        ax.set_yticks([0, k - 1] if k > 1 else [0])
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel(f"{_short(name)}\n{k} of {total}\nneurons", fontsize=8, rotation=0, ha="right", va="center")
        rate = s.mean() if s.size else 0.0
        ax.text(1.01, 0.5, f"shown:\n{rate:.2f} spikes/\nneuron/step", transform=ax.transAxes, fontsize=7,
                va="center")
        ax.grid(alpha=0.25, axis="x")
    last = axes[-1, 0]
    T = max((s.shape[0] for _, s, _ in layers), default=1)
    last.set_xlim(0.3, T + 0.7)
    last.set_xticks(range(1, T + 1, max(1, T // 16)))
    last.set_xlabel("time step t")
    fig.suptitle(title or "spike raster", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    return _png(fig)
