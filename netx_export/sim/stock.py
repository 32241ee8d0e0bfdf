"""Stock-block mode, simulated: the integer-exact reference of the construction that
:mod:`netx_export.convert.stock_blocks` maps a QNetwork to (stock LIF neurons, Dense/Sparse/Conv
synapses, an always-on source; the module docstring there explains why it reproduces IF_SUB), batched
over samples, numpy only. :mod:`netx_export.lava_runtime.stock` builds the same network in Lava.

* :func:`simulate_drive` runs the construction per layer, in refsim's result layout and timings
  (``"aligned"``, ``"lava"``; the settle step is skipped: step t is hardware step t + 1);
* :func:`simulate_schedule` steps it exactly as the Lava network is wired (every block, every delay),
  to check the wiring without Lava;
* :func:`evaluate` is a drop-in for :func:`netx_export.sim.refsim.evaluate`.

IF_SUB vs stock on the same images: :func:`netx_export.comparison.compare_stock`.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from netx_export.convert.conv import int_conv2d, int_dense
from netx_export.convert.fixedpoint import STATE_SHIFT, QLayer, QNetwork, input_drive
from netx_export.convert.stock_blocks import (ALWAYS_ON, RELAY, LifParams, StockNetwork, layer_starts,
                                              steps_per_sample, stock_network)
from netx_export.convert.stock_blocks import unwrap_current
from netx_export.loihi import UV_MAX, decay, wrap_current
from netx_export.results import SimResult
from netx_export.sim.refsim import RefEvaluation
from netx_export.sim.refsim import evaluate as _ref_evaluate
from netx_export.timing import DEFAULT_TIMING, check_timing

__all__ = ["stock_step", "simulate_drive", "simulate_schedule", "simulate", "evaluate"]


# --------------------------------------------------------------------------- the neuron
def stock_step(u: np.ndarray, v: np.ndarray, a: np.ndarray | int, lif: LifParams
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One step of Lava's bit-accurate stock LIF (``PyLifModelBitAcc``), state units in and out, ``a``
    in weight units. Returns (u, v, spikes, u wraps + v clips)."""
    u_raw = decay(u, lif.du + 1) + (np.asarray(a, dtype=np.int64) << STATE_SHIFT)
    u_new = wrap_current(u_raw)
    bias = lif.bias_mant << lif.bias_exp if lif.bias_exp >= 0 else lif.bias_mant >> -lif.bias_exp
    v_raw = decay(v, lif.dv) + u_new + bias
    v_new = np.clip(v_raw, -(UV_MAX - 1), UV_MAX - 1)
    over = int(np.count_nonzero(u_new != u_raw)) + int(np.count_nonzero(v_new != v_raw))
    s = v_new > (int(lif.vth) << STATE_SHIFT)
    return u_new, np.where(s, 0, v_new), s, over


# --------------------------------------------------------------------------- the simulation
def _synapse(lay: QLayer, x: np.ndarray) -> np.ndarray:
    assert lay.weight is not None
    if lay.kind == "conv":
        return int_conv2d(x, lay.weight, lay.stride, lay.padding, lay.dilation, lay.groups)
    return int_dense(x.reshape(x.shape[0], -1), lay.weight).reshape((x.shape[0],) + tuple(lay.shape))


def simulate_drive(snet: StockNetwork, drive: np.ndarray, T: int, timing: str = DEFAULT_TIMING,
                   record_spikes: bool = False, drive_clipped: int = 0) -> SimResult:
    """Run the stock construction for ``T`` steps (after the settle step) with layer 0's per-step drive
    (int, (N,) + layer-0 shape); same result type and timings as :func:`netx_export.sim.refsim.simulate_drive`.
    ``saturated`` counts u wraps and v clips; the readout's logits are its exact summed input."""
    check_timing(timing)
    if T < 1:
        raise ValueError("T must be >= 1")
    qnet, layers = snet.qnet, snet.layers
    n = int(drive.shape[0])
    drive = np.asarray(drive, dtype=np.int64).reshape((n,) + layers[0].shape)
    u, v, last = [], [], []
    over = 0
    for lay in layers:
        shp = (n,) + lay.shape
        u0 = np.broadcast_to(np.asarray(lay.lif.u, dtype=np.int64), shp).copy()
        ui, vi, s, o = stock_step(u0, np.full(shp, lay.lif.v, np.int64), 0, lay.lif)
        if s.any():
            raise AssertionError(f"layer {lay.name} fired in the settle step")
        u.append(ui)
        v.append(vi)
        last.append(np.zeros(shp, bool))
        over += o
    L = len(layers)
    K = int(np.prod(layers[-1].shape))
    summed = np.zeros((n, K), np.int64)
    logits = np.zeros((T, n, K), np.int64)
    counts = [np.zeros(n, np.int64) for _ in layers]
    rec: list[list[np.ndarray]] | None = [[] for _ in layers] if record_spikes else None
    for t in range(T):
        cur: list[np.ndarray] = []
        for j, lay in enumerate(layers):
            bias = lay.bias_values.reshape((1, -1) + (1,) * (len(lay.shape) - 1))
            if j == 0:
                a = drive + bias
            else:
                spk = cur[j - 1] if timing == "aligned" else last[j - 1]
                a = _synapse(qnet.layers[lay.index], spk.astype(np.int64)) + bias
            if lay.theta:
                a = a - lay.theta * last[j]
            u[j], v[j], s, o = stock_step(u[j], v[j], a, lay.lif)
            over += o
            cur.append(s)
            counts[j] += s.reshape(n, -1).sum(1)
            if rec is not None:
                rec[j].append(s)
            if j == L - 1:
                summed += a.reshape(n, -1)
        last = cur
        logits[t] = summed
    return SimResult(logits, tuple(counts), tuple(int(np.prod(lay.shape)) for lay in layers),
                     tuple(np.stack(r) for r in rec) if rec is not None else None, over, drive_clipped, timing)


def simulate_schedule(snet: StockNetwork, drive: np.ndarray, T: int, timing: str = DEFAULT_TIMING
                      ) -> tuple[SimResult, tuple[int, ...]]:
    """The network step by step exactly as :mod:`netx_export.lava_runtime.stock` wires it, every block
    included: the settle step, every synapse's one-step delay, the always-on source and the
    :data:`RELAY` chain that starts layer j's bias j steps late (aligned), idle layers stepping with
    nothing arriving, and the readout read from its wrapped u. :func:`simulate_drive` skips all of
    that; this exists to check, without Lava, that the wiring reproduces it. Returns the result read
    back as :mod:`netx_export.lava_runtime.stock` does (each layer's T steps from its own start) and,
    per layer, the spikes fired before its start (0 by
    :func:`netx_export.convert.stock_blocks.idle_peak`)."""
    qnet, layers = snet.qnet, snet.layers
    n, L = int(drive.shape[0]), len(snet.layers)
    drive = np.asarray(drive, dtype=np.int64).reshape((n,) + layers[0].shape)
    starts = layer_starts(L, timing)
    steps = steps_per_sample(snet, T, timing)
    n_relays = 1 + snet.aligned_relays if timing == "aligned" else 1
    ru = [np.zeros(1, np.int64) for _ in range(n_relays)]
    rv = [np.zeros(1, np.int64) for _ in range(n_relays)]
    r_last = [np.zeros(1, bool) for _ in range(n_relays)]       # relay spikes of the previous step
    u = [np.broadcast_to(np.asarray(lay.lif.u, dtype=np.int64), (n,) + lay.shape).copy() for lay in layers]
    v = [np.full((n,) + lay.shape, lay.lif.v, np.int64) for lay in layers]
    last = [np.zeros((n,) + lay.shape, bool) for lay in layers]   # layer spikes of the previous step
    rec: list[list[np.ndarray]] = [[] for _ in layers]
    u_out: list[np.ndarray] = []
    src_last = False                                              # the RingBuffer sends from step 1
    for _ in range(steps):
        r_cur = []
        for k in range(n_relays):
            a_r = 0 if k == 0 else r_last[k - 1].astype(np.int64)   # weight-1 Dense from relay k − 1
            ru[k], rv[k], sr, _ = stock_step(ru[k], rv[k], a_r, ALWAYS_ON if k == 0 else RELAY)
            r_cur.append(sr)
        cur = []
        for j, lay in enumerate(layers):
            if j == 0:
                a = drive * int(src_last)                             # identity Sparse: one step late
            else:
                a = _synapse(qnet.layers[lay.index], last[j - 1].astype(np.int64))
            on = int(r_last[starts[j]][0]) if lay.bias else 0         # bias Dense from relay starts[j]
            a = a + on * lay.bias_values.reshape((1, -1) + (1,) * (len(lay.shape) - 1))
            if lay.theta:
                a = a - lay.theta * last[j]                           # self-inhibition Sparse
            u[j], v[j], s, _ = stock_step(u[j], v[j], a, lay.lif)
            cur.append(s)
            rec[j].append(s)
        last, r_last, src_last = cur, r_cur, True
        u_out.append(u[-1].reshape(n, -1).copy())
    early = tuple(int(np.sum(rec[j][:1 + s0])) for j, s0 in enumerate(starts))
    spikes = tuple(np.stack(rec[j][1 + s0: 1 + s0 + T]) for j, s0 in enumerate(starts))
    lin = unwrap_current(np.stack(u_out))
    u0 = np.broadcast_to(np.asarray(layers[-1].lif.u, dtype=np.int64), layers[-1].shape).reshape(1, 1, -1)
    logits = (lin[1 + starts[-1]: 1 + starts[-1] + T] - u0) >> STATE_SHIFT
    counts = tuple(sp.reshape(T, n, -1).sum((0, 2)).astype(np.int64) for sp in spikes)
    return SimResult(logits, counts, tuple(int(np.prod(lay.shape)) for lay in layers), spikes, -1, 0, timing), early


def simulate(snet: StockNetwork | QNetwork | str, x: np.ndarray, T: int, timing: str = DEFAULT_TIMING,
             record_spikes: bool = False) -> SimResult:
    """Normalised images ``x`` (N, C, H, W) through the stock construction; ``snet`` may also be a
    QNetwork or a NetX file path (mapped with :func:`stock_network`)."""
    if isinstance(snet, str):
        from netx_export.netx.validate import load_netx
        snet = load_netx(snet)
    if isinstance(snet, QNetwork):
        snet = stock_network(snet)
    d = input_drive(snet.qnet, x)
    return simulate_drive(snet, d.drive, T, timing, record_spikes, d.clipped)


def evaluate(qnet: QNetwork | StockNetwork, batches: Iterable[tuple[np.ndarray, np.ndarray]], T: int,
             timing: str = DEFAULT_TIMING, progress=None) -> RefEvaluation:
    """Stock-mode accuracy at every t = 1..T over (normalised images, labels) batches: a drop-in for
    :func:`netx_export.sim.refsim.evaluate` (``saturated`` counts u wraps + v clips)."""
    snet = qnet if isinstance(qnet, StockNetwork) else stock_network(qnet)
    return _ref_evaluate(snet, batches, T, timing, progress, simulate=simulate_drive)
