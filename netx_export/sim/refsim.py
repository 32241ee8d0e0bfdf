"""Fixed-point reference simulator: a NetX network with exactly Loihi's integer arithmetic.

Independent of Lava and torch (numpy, int64 state, batched over samples). Each neuron step is
Lava's bit-accurate LIF (``lava/proc/lif/models.py``, ``PyLifModelBitAcc``), in state units
(weight units << 6):

    u ← sgn(u·(4096 − (du+1)))·(|u·(4096 − (du+1))| >> 12) + (a << 6);   u wraps into (−2^23, 2^23]
    v ← sgn(v·(4096 − dv))·(|v·(4096 − dv)| >> 12) + u + (bias << 6);   v saturates at ±(2^23 − 1)
    IF_SUB:      s = v ≥ vth << 6;  v ← v − s·(vth << 6)     (our neuron: QCFS needs ≥ and subtraction)
    CUBA/LOIHI:  s = v > vth << 6;  v ← 0 where s             (stock Lava LIF)

with du = iDecay − 1, dv = vDecay (NetX's mapping); IF_SUB files use iDecay 4096, vDecay 0, so
u = a and v integrates without leak. Each sample starts from u = 0, v = vInit << 6 (vInit one value
per layer, or per output channel for low-T calibrated files, broadcast over positions).

Timing. ``"aligned"``: layer l sees layer l−1's spikes of the same step (no synaptic delay), as the
float SNN does — for accuracy studies. ``"lava"``: every Dense/Conv synapse delivers at step t what
it received at step t−1 (Lava's and Loihi's behaviour), so the readout lags the input by one step
per synaptic layer after the first. The first layer is driven by its bias (the host-computed input
drive, :func:`netx_export.convert.fixedpoint.input_drive`), which needs no synapse and so has no delay.

Residual shortcuts (:class:`~netx_export.convert.fixedpoint.QSkip`) add a conv of their source layer's
spikes to the layer's input: of the same step (aligned), or, in Lava timing, of step t − 1 − delay,
so that both paths into a neuron carry spikes the source emitted at the same step.

Readout (last layer): the summed input ``vThMant·(spikes so far) + v/64 − vInit``, i.e. t times the
float SNN's mean logits (scaled by σ), predictions = its argmax at every t.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from netx_export.convert.conv import int_conv2d, int_dense
from netx_export.convert.fixedpoint import STATE_SHIFT, QLayer, QNetwork, input_drive, v_init_array
from netx_export.loihi import DECAY_SHIFT, UV_MAX, decay, wrap_current
from netx_export.results import SimResult
from netx_export.timing import DEFAULT_TIMING, TIMINGS, check_timing

__all__ = ["UV_MAX", "DECAY_SHIFT", "decay", "wrap_current", "lif_step", "SimResult", "simulate", "simulate_drive",
           "evaluate", "RefEvaluation", "TIMINGS"]


def lif_step(u: np.ndarray, v: np.ndarray, a: np.ndarray | int, bias: np.ndarray | int, vth: int,
             du: int, dv: int, subtractive: bool = True
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One Loihi neuron step in state units (see module docstring). ``a`` and ``bias`` are in weight
    units. Returns (u, v, spikes, number of v values that saturated)."""
    u = wrap_current(decay(u, du + 1) + (np.asarray(a, dtype=np.int64) << STATE_SHIFT))
    v_raw = decay(v, dv) + u + (np.asarray(bias, dtype=np.int64) << STATE_SHIFT)
    v = np.clip(v_raw, -(UV_MAX - 1), UV_MAX - 1)
    sat = int(np.count_nonzero(v != v_raw))
    th = int(vth) << STATE_SHIFT
    if subtractive:
        s = v >= th
        v = v - s * th
    else:
        s = v > th
        v = np.where(s, 0, v)
    return u, v, s, sat


def _synapse(lay: QLayer, x: np.ndarray) -> np.ndarray:
    assert lay.weight is not None
    if lay.kind == "conv":
        return int_conv2d(x, lay.weight, lay.stride, lay.padding, lay.dilation, lay.groups)
    return int_dense(x, lay.weight).reshape((x.shape[0],) + tuple(lay.shape))


def _skip_synapse(sk, x: np.ndarray) -> np.ndarray:
    return int_conv2d(x, sk.weight, sk.stride, sk.padding, sk.dilation, sk.groups)


def _initial_state(lay: QLayer, n: int) -> list[np.ndarray]:
    """[u, v] of ``n`` samples at the start: u = 0, v = vInit << 6 (per channel if the file has it so)."""
    assert lay.neuron is not None
    shp = (n,) + tuple(lay.shape)
    if lay.neuron.per_channel:
        v0 = np.broadcast_to(v_init_array(lay.neuron, lay.shape) << STATE_SHIFT, shp).copy()
    else:
        v0 = np.full(shp, int(lay.neuron.v_init) << STATE_SHIFT, np.int64)
    return [np.zeros(shp, np.int64), v0]


def simulate_drive(net: QNetwork, drive: np.ndarray, T: int, timing: str = DEFAULT_TIMING,
                   record_spikes: bool = False, drive_clipped: int = 0, *, count_neurons: bool = False) -> SimResult:
    """Run ``T`` steps with layer 0's per-step bias ``drive`` (int, (N,) + layer-0 shape). The result
    always has each layer's spikes per step (``step_counts``); ``count_neurons`` adds each neuron's
    spikes over all steps (``neuron_counts``), ``record_spikes`` every spike."""
    check_timing(timing)
    if T < 1:
        raise ValueError("T must be >= 1")
    syn = [i for i, lay in enumerate(net.layers) if lay.kind != "flatten"]
    n = drive.shape[0]
    drive = np.asarray(drive, dtype=np.int64).reshape((n,) + tuple(net.layers[syn[0]].shape))
    state = {i: _initial_state(net.layers[i], n) for i in syn}
    counts = {i: np.zeros(n, np.int64) for i in syn}
    per_step: dict[int, list[np.ndarray]] = {i: [] for i in syn}
    fired = {i: np.zeros((n,) + tuple(net.layers[i].shape), np.int64) for i in syn}   # readout needs per-neuron
    rec = {i: [] for i in syn} if record_spikes else None
    last = {i: np.zeros((n,) + tuple(net.layers[i].shape), bool) for i in syn}   # spikes of step t−1
    # Shortcut sources: past[j][d] = spikes of layer j at step t − 1 − d (lava timing).
    depth: dict[int, int] = {}
    for lay in net.layers:
        for sk in lay.skips:
            depth[sk.source] = max(depth.get(sk.source, 0), sk.delay + 1)
    past = {j: [np.zeros((n,) + tuple(net.layers[j].shape), bool) for _ in range(d)] for j, d in depth.items()}
    out = syn[-1]
    lay_out = net.layers[out]
    assert lay_out.neuron is not None
    logits = np.zeros((T, n, int(np.prod(lay_out.shape))), np.int64)
    saturated = 0
    for t in range(T):
        cur: dict[int, np.ndarray] = {}
        for i, lay in enumerate(net.layers):
            if lay.kind == "flatten":
                continue
            neu = lay.neuron
            assert neu is not None and lay.bias is not None
            if i == syn[0]:
                a: np.ndarray | int = 0
                bias = drive
            else:
                prev = syn[syn.index(i) - 1]
                spk = cur[prev] if timing == "aligned" else last[prev]
                a = _synapse(lay, spk.reshape(n, -1) if lay.kind == "dense" else spk)
                for sk in lay.skips:
                    a = a + _skip_synapse(sk, cur[sk.source] if timing == "aligned" else past[sk.source][sk.delay])
                bias = lay.bias.reshape((1, -1) + (1,) * (len(lay.shape) - 1))
            u, v = state[i]
            u, v, s, sat = lif_step(u, v, a, bias, neu.vth, neu.i_decay - 1, neu.v_decay,
                                    subtractive=neu.type == "IF_SUB")
            state[i] = [u, v]
            saturated += sat
            cur[i] = s
            c = s.reshape(n, -1).sum(1)
            counts[i] += c
            per_step[i].append(c)
            if i == out or count_neurons:
                fired[i] += s
            if rec is not None:
                rec[i].append(s.copy())
        last = cur
        for j in past:
            past[j] = [cur[j]] + past[j][:-1]
        v_out = state[out][1]
        logits[t] = (int(lay_out.neuron.vth) * fired[out] + (v_out >> STATE_SHIFT)
                     - v_init_array(lay_out.neuron, lay_out.shape)[None]).reshape(n, -1)
    return SimResult(logits, tuple(counts[i] for i in syn),
                     tuple(int(np.prod(net.layers[i].shape)) for i in syn),
                     tuple(np.stack(rec[i]) for i in syn) if rec is not None else None,
                     saturated, drive_clipped, timing, tuple(np.stack(per_step[i]) for i in syn),
                     tuple(fired[i] for i in syn) if count_neurons else None)


def simulate(net: QNetwork | str, x: np.ndarray, T: int, timing: str = DEFAULT_TIMING,
             record_spikes: bool = False) -> SimResult:
    """Simulate normalised images ``x`` (N, C, H, W) for ``T`` steps; ``net`` may be a NetX file path."""
    if isinstance(net, str):
        from netx_export.netx.validate import load_netx
        net = load_netx(net)
    d = input_drive(net, x)
    return simulate_drive(net, d.drive, T, timing, record_spikes, d.clipped)


@dataclass
class RefEvaluation:
    T: int
    n: int
    accuracy: list[float]                   # index t−1: accuracy at t steps
    firing_rates: list[float]               # per synaptic layer: spikes per neuron per step
    saturated: int
    drive_clipped: int
    drive_total: int
    timing: str

    def at(self, t: int) -> float:
        return self.accuracy[t - 1]


def evaluate(net: QNetwork, batches: Iterable[tuple[np.ndarray, np.ndarray]], T: int,
             timing: str = DEFAULT_TIMING, progress=None, *, simulate=None,
             on_batch: Callable[[SimResult, np.ndarray], None] | None = None,
             count_neurons: bool = False) -> RefEvaluation:
    """Accuracy at every t = 1..T over (normalised images, labels) batches. ``simulate`` replaces
    :func:`simulate_drive` for another construction of the same file (``net.qnet`` then gives the
    input drive), e.g. :func:`netx_export.sim.stock.simulate_drive`. ``on_batch(result, labels)``
    sees every batch's :class:`SimResult` (with ``neuron_counts`` if ``count_neurons``)."""
    sim = simulate or simulate_drive
    drive_net = getattr(net, "qnet", net)
    correct = np.zeros(T)
    spikes = None
    n = sat = clipped = total = 0
    neurons: tuple[int, ...] = ()
    for x, y in batches:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
        d = input_drive(drive_net, x)
        r = sim(net, d.drive, T, timing, False, d.clipped, **({"count_neurons": True} if count_neurons else {}))
        if on_batch is not None:
            on_batch(r, y)
        correct += (r.predictions == y.reshape(1, -1)).sum(1)
        c = np.array([float(s.sum()) for s in r.spike_counts])
        spikes = c if spikes is None else spikes + c
        neurons = r.neurons
        n += len(y)
        sat += r.saturated
        clipped += d.clipped
        total += d.total
        if progress is not None:
            progress(n)
    if n == 0:
        raise ValueError("no samples to evaluate")
    assert spikes is not None
    rates = [float(s) / (n * k * T) for s, k in zip(spikes, neurons)]
    return RefEvaluation(T, n, (correct / n).tolist(), rates, sat, clipped, total, timing)
