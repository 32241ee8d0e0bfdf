"""One comparison of two runs of the same network on the same inputs: spike for spike in every
layer, logit for logit at every step (Lava vs the reference simulator, stock mode vs IF_SUB, one conv
model vs another).

A result is anything with ``logits`` (T, N, K) and ``spikes`` (per synaptic layer (T, N, ...)):
:class:`netx_export.results.SimResult`, :class:`netx_export.lava_runtime.runner.LavaResult`, a
stock Lava run's ``.sim``. The Lava runtime and the simulators never import this module (they are
what it checks); the command line and the benchmarks do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from netx_export.timing import DEFAULT_TIMING

__all__ = ["compare", "merge", "StockComparison", "compare_stock"]


def _layer(i: int, compared: int, mismatches: int, first: list[int] | None) -> dict[str, Any]:
    return dict(layer=i, compared=compared, mismatches=mismatches,
                agreement=1.0 - mismatches / compared if compared else math.nan, first_mismatch=first)


def compare(a, b, *, atol: float = 0.0, samples: slice | None = None) -> dict[str, Any]:
    """``a`` against the reference ``b``: ``a``'s samples ``samples`` (default all) against as many of
    ``b``'s first samples (``b`` may hold more: a Lava run that stopped early is compared over the
    samples it finished). Returns counts over every layer, step and sample:

    ``samples``; ``layers`` (per synaptic layer: ``compared`` spike entries, ``mismatches``,
    ``agreement`` = 1 − mismatches/compared, ``first_mismatch`` [t, sample, ...] in ``a``'s sample
    numbering — the lowest sample with a mismatch, at its first step — or None); ``spikes_compared``, ``spike_mismatches``; ``logits_compared``,
    ``logit_mismatches`` (|difference| > ``atol``), ``max_logit_abs_diff``, ``logit_rows_equal``
    ((t, sample) pairs with identical logit vectors); ``prediction_mismatches`` and per step
    ``prediction_mismatches_per_step``; ``identical`` (no spike differs, no logit either)."""
    if a.spikes is None or b.spikes is None:
        raise ValueError("both results must have recorded spikes")
    la = np.asarray(a.logits)
    sel = slice(None) if samples is None else samples
    start = sel.indices(la.shape[1])[0]
    la = la[:, sel]
    n = int(la.shape[1])
    lb = np.asarray(b.logits)
    if lb.shape[1] < n:
        raise ValueError(f"the reference has {lb.shape[1]} samples, {n} to compare")
    lb = lb[:, :n]
    if la.shape != lb.shape:
        raise ValueError(f"logits {la.shape} vs reference {lb.shape}")
    if len(a.spikes) != len(b.spikes):
        raise ValueError(f"{len(a.spikes)} layers vs reference {len(b.spikes)}")
    layers = []
    for i, (x, y) in enumerate(zip(a.spikes, b.spikes)):
        x, y = np.asarray(x)[:, sel], np.asarray(y)[:, :n]
        if x.shape != y.shape:
            raise ValueError(f"layer {i}: spikes {x.shape} vs reference {y.shape}")
        diff = x != y
        m = int(np.count_nonzero(diff))
        first = None
        if m:   # the first sample with a mismatch, at its first such step: independent of how samples are batched
            first = [int(v) for v in np.argwhere(np.swapaxes(diff, 0, 1))[0]]
            first[0], first[1] = first[1], first[0] + start
        layers.append(_layer(i, int(x.size), m, first))
    dl = np.abs(la.astype(np.float64) - lb.astype(np.float64))
    pred = la.argmax(axis=2) != lb.argmax(axis=2)
    spike_bad = sum(r["mismatches"] for r in layers)
    return dict(samples=n, layers=layers, spikes_compared=sum(r["compared"] for r in layers),
                spike_mismatches=spike_bad, logits_compared=int(dl.size),
                logit_mismatches=int(np.count_nonzero(dl > atol)),
                max_logit_abs_diff=float(dl.max()) if dl.size else 0.0,
                logit_rows_equal=int(np.all(dl == 0, axis=2).sum()),
                prediction_mismatches=int(np.count_nonzero(pred)),
                prediction_mismatches_per_step=[int(v) for v in pred.sum(axis=1)],
                identical=bool(spike_bad == 0 and not np.any(dl)))


def merge(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The :func:`compare` result of consecutive sample ranges, combined as if compared at once."""
    if not parts:
        return dict(samples=0, layers=[], spikes_compared=0, spike_mismatches=0, logits_compared=0,
                    logit_mismatches=0, max_logit_abs_diff=0.0, logit_rows_equal=0, prediction_mismatches=0,
                    prediction_mismatches_per_step=[], identical=True)
    out = {k: sum(p[k] for p in parts) for k in ("samples", "spikes_compared", "spike_mismatches", "logits_compared",
                                                 "logit_mismatches", "logit_rows_equal", "prediction_mismatches")}
    out["max_logit_abs_diff"] = max(p["max_logit_abs_diff"] for p in parts)
    out["prediction_mismatches_per_step"] = [int(v) for v in np.sum([p["prediction_mismatches_per_step"]
                                                                     for p in parts], axis=0)]
    out["identical"] = all(p["identical"] for p in parts)
    layers = []
    for rows in zip(*(p["layers"] for p in parts)):
        first = next((r["first_mismatch"] for r in rows if r["first_mismatch"] is not None), None)
        layers.append(_layer(rows[0]["layer"], sum(r["compared"] for r in rows), sum(r["mismatches"] for r in rows),
                             first))
    out["layers"] = layers
    return out


# --------------------------------------------------------------------------- IF_SUB vs stock mode
@dataclass
class StockComparison:
    """IF_SUB (refsim) vs stock mode on the same images and timing."""
    T: int
    n: int
    timing: str
    accuracy_ifsub: list[float]             # index t−1: accuracy at t steps
    accuracy_stock: list[float]
    prediction_agreement: list[float]       # fraction of images with the same prediction at t
    logits_equal: float                     # fraction of (t, image) with identical logit vectors
    layer_compared: list[int]               # per synaptic layer: spike entries compared
    layer_mismatches: list[int]
    saturated_ifsub: int                    # refsim v saturations
    overflow_stock: int                     # stock u wraps + v clips

    @property
    def layer_agreement(self) -> list[float]:
        return [1.0 - m / c for m, c in zip(self.layer_mismatches, self.layer_compared)]


def compare_stock(qnet, batches: Iterable[tuple[np.ndarray, np.ndarray]], T: int, timing: str = DEFAULT_TIMING,
                  progress=None) -> StockComparison:
    """Both simulators (:mod:`netx_export.sim.refsim`, :mod:`netx_export.sim.stock`) on (normalised
    images, labels) batches, spikes compared layer by layer with :func:`compare`."""
    from netx_export.convert.fixedpoint import input_drive
    from netx_export.convert.stock_blocks import stock_network
    from netx_export.sim.refsim import simulate_drive as ref_simulate_drive
    from netx_export.sim.stock import simulate_drive as stock_simulate_drive
    snet = stock_network(qnet)
    ca, cb = np.zeros(T), np.zeros(T)
    parts = []
    sat = over = 0
    for x, y in batches:
        y = np.asarray(y).reshape(1, -1)
        d = input_drive(qnet, np.asarray(x, dtype=np.float64)).drive
        r = ref_simulate_drive(qnet, d, T, timing, record_spikes=True)
        s = stock_simulate_drive(snet, d, T, timing, record_spikes=True)
        ca += (r.predictions == y).sum(1)
        cb += (s.predictions == y).sum(1)
        parts.append(compare(r, s))
        sat += r.saturated
        over += s.saturated
        if progress is not None:
            progress(sum(p["samples"] for p in parts))
    c = merge(parts)
    n = c["samples"]
    if n == 0:
        raise ValueError("no samples to evaluate")
    agree = 1.0 - np.asarray(c["prediction_mismatches_per_step"], dtype=np.float64) / n
    return StockComparison(T, n, timing, (ca / n).tolist(), (cb / n).tolist(), agree.tolist(),
                           c["logit_rows_equal"] / (n * T), [r["compared"] for r in c["layers"]],
                           [r["mismatches"] for r in c["layers"]], sat, over)
