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

from netx_export.convert.conv import max_abs_fan_in
from netx_export.convert.fixedpoint import STATE_SHIFT, QLayer, QNetwork, input_drive, v_init_array
from netx_export.loihi import DECAY_SHIFT, UV_MAX, decay, wrap_current
from netx_export.results import SimResult
from netx_export.sim.backends import backend
from netx_export.timing import DEFAULT_TIMING, TIMINGS, check_timing

__all__ = ["UV_MAX", "DECAY_SHIFT", "decay", "wrap_current", "lif_step", "SimResult", "simulate", "simulate_drive",
           "evaluate", "RefEvaluation", "TIMINGS"]


def lif_step(u, v, a, bias, vth: int, du: int, dv: int, subtractive: bool = True, *, may_wrap: bool = True):
    """One Loihi neuron step in state units (see module docstring). ``a`` and ``bias`` are in weight
    units (int64 arrays, or 0). Returns (u, v, spikes, number of v values that saturated). Operators
    only: ``u``, ``v``, ``a``, ``bias`` may be numpy arrays or torch tensors (:mod:`~netx_export.sim.backends`).
    ``may_wrap=False`` skips u's wrap where the caller has proved it cannot happen (|u| < 2^23)."""
    kept = decay(u, du + 1)
    u = a << STATE_SHIFT if isinstance(kept, int) and kept == 0 else kept + (a << STATE_SHIFT)
    if may_wrap:
        u = wrap_current(u)
    v = decay(v, dv) + u              # a new array: the caller's v is not changed
    v += bias << STATE_SHIFT
    sat = 0
    if v.max() > UV_MAX - 1 or v.min() < -(UV_MAX - 1):      # one reduction each; saturation is rare
        v_raw, v = v, v.clip(-(UV_MAX - 1), UV_MAX - 1)
        sat = int((v != v_raw).sum())
    th = int(vth) << STATE_SHIFT
    if subtractive:
        s = v >= th
        v -= s * th
    else:
        s = v > th
        v *= ~s
    return u, v, s, sat


def _may_wrap(lay: QLayer) -> bool:
    """Whether u can leave the 24-bit range: only if a current that persists (iDecay < 4096) or the
    largest input, Σ|w| over the fan-in of the main synapse plus every shortcut's (0/1 spikes), in state
    units, reaches 2^23."""
    assert lay.neuron is not None and lay.weight is not None
    if lay.neuron.i_decay != 1 << DECAY_SHIFT:
        return True
    w = max_abs_fan_in(lay.weight) + sum(max_abs_fan_in(sk.weight) for sk in lay.skips)
    return (w << STATE_SHIFT) >= UV_MAX


def _initial_state(lay: QLayer, n: int, xp, kind: str) -> list:
    """[u, v] of ``n`` samples at the start: u = 0, v = vInit << 6 (per channel if the file has it so)."""
    assert lay.neuron is not None
    shp = (n,) + tuple(lay.shape)
    v0 = np.broadcast_to(v_init_array(lay.neuron, lay.shape) << STATE_SHIFT, shp)
    return [xp.zeros(shp, kind), xp.asarray(v0, kind)]


def _narrow(lay: QLayer, may_wrap: bool) -> bool:
    """Whether 32-bit state holds every value of the layer's update: no decay arithmetic (iDecay 4096,
    vDecay 0), so |v| < 2^23 after each clip, u = a·64 < 2^23, and v + u + bias·64 < 2^31."""
    assert lay.neuron is not None
    return lay.neuron.i_decay == 1 << DECAY_SHIFT and lay.neuron.v_decay == 0 and not may_wrap


def simulate_drive(net: QNetwork, drive: np.ndarray, T: int, timing: str = DEFAULT_TIMING,
                   record_spikes: bool = False, drive_clipped: int = 0, *, count_neurons: bool = False,
                   device: str | None = None) -> SimResult:
    """Run ``T`` steps with layer 0's per-step bias ``drive`` (int, (N,) + layer-0 shape). The result
    always has each layer's spikes per step (``step_counts``); ``count_neurons`` adds each neuron's
    spikes over all steps (``neuron_counts``), ``record_spikes`` every spike.

    ``device`` None computes in numpy; ``"cpu"`` or ``"cuda"`` with PyTorch convolutions on exact
    integers (:mod:`netx_export.sim.backends`): the same integers, faster."""
    check_timing(timing)
    if T < 1:
        raise ValueError("T must be >= 1")
    xp = backend(device)
    syn = [i for i, lay in enumerate(net.layers) if lay.kind != "flatten"]
    n = drive.shape[0]
    may_wrap = {i: _may_wrap(net.layers[i]) for i in syn[1:]}
    may_wrap[syn[0]] = False                      # layer 0: u = 0 (its input is the drive, a bias)
    kind = {i: "state" if _narrow(net.layers[i], may_wrap[i]) else "int" for i in syn}
    drive = xp.asarray(np.asarray(drive, dtype=np.int64).reshape((n,) + tuple(net.layers[syn[0]].shape)),
                       kind[syn[0]])
    state = {i: _initial_state(net.layers[i], n, xp, kind[i]) for i in syn}
    bias = {i: xp.asarray(net.layers[i].bias.reshape((1, -1) + (1,) * (len(net.layers[i].shape) - 1)), kind[i])
            for i in syn[1:]}
    bias[syn[0]] = drive
    # the backend's fused IF_SUB update, where it has one, for the layers whose state is 32-bit
    fused = {i: getattr(xp, "if_sub_step", None) if kind[i] == "state" and net.layers[i].neuron.type == "IF_SUB"
             else None for i in syn}
    bias64 = {i: bias[i] << STATE_SHIFT for i in syn if fused[i] is not None}
    counts = {i: xp.zeros((n,), "int") for i in syn}
    per_step: dict[int, list] = {i: [] for i in syn}
    fired = {i: xp.zeros((n,) + tuple(net.layers[i].shape), "int") for i in syn}   # readout needs per-neuron
    rec: dict[int, list] | None = {i: [] for i in syn} if record_spikes else None
    last = {i: xp.zeros((n,) + tuple(net.layers[i].shape), "bool") for i in syn}   # spikes of step t−1
    # Shortcut sources: past[j][d] = spikes of layer j at step t − 1 − d (lava timing).
    depth: dict[int, int] = {}
    for lay in net.layers:
        for sk in lay.skips:
            depth[sk.source] = max(depth.get(sk.source, 0), sk.delay + 1)
    past = {j: [xp.zeros((n,) + tuple(net.layers[j].shape), "bool") for _ in range(d)] for j, d in depth.items()}
    out = syn[-1]
    lay_out = net.layers[out]
    assert lay_out.neuron is not None
    v0_out = xp.asarray(v_init_array(lay_out.neuron, lay_out.shape)[None])
    logits: list = []
    saturated = 0
    for t in range(T):
        cur: dict[int, object] = {}
        for i in syn:
            lay = net.layers[i]
            neu = lay.neuron
            assert neu is not None and lay.bias is not None
            a = 0
            if i != syn[0]:
                prev = syn[syn.index(i) - 1]
                a = xp.synapse(i, lay, cur[prev] if timing == "aligned" else last[prev])
                for k, sk in enumerate(lay.skips):
                    a = a + xp.skip(i, k, sk, cur[sk.source] if timing == "aligned" else past[sk.source][sk.delay])
            u, v = state[i]
            if fused[i] is not None:
                v, s, sat = fused[i](v, a, bias64[i], int(neu.vth) << STATE_SHIFT)
            else:
                u, v, s, sat = lif_step(u, v, a, bias[i], neu.vth, neu.i_decay - 1, neu.v_decay,
                                        subtractive=neu.type == "IF_SUB", may_wrap=may_wrap[i])
            state[i] = [u, v]
            saturated += sat
            cur[i] = s
            c = xp.count(s)
            counts[i] += c
            per_step[i].append(c)
            if i == out or count_neurons:
                fired[i] += s
            if rec is not None:
                rec[i].append(s)
        last = cur
        for j in past:
            past[j] = [cur[j]] + past[j][:-1]
        logits.append((int(lay_out.neuron.vth) * fired[out] + (state[out][1] >> STATE_SHIFT) - v0_out).reshape(n, -1))
    return SimResult(xp.numpy(xp.stack(logits)), tuple(xp.numpy(counts[i]) for i in syn),
                     tuple(int(np.prod(net.layers[i].shape)) for i in syn),
                     tuple(xp.numpy(xp.stack(rec[i])) for i in syn) if rec is not None else None,
                     saturated, drive_clipped, timing, tuple(xp.numpy(xp.stack(per_step[i])) for i in syn),
                     tuple(xp.numpy(fired[i]) for i in syn) if count_neurons else None)


def simulate(net: QNetwork | str, x: np.ndarray, T: int, timing: str = DEFAULT_TIMING,
             record_spikes: bool = False, *, device: str | None = None) -> SimResult:
    """Simulate normalised images ``x`` (N, C, H, W) for ``T`` steps; ``net`` may be a NetX file path.
    ``device``: None (numpy), "cpu" or "cuda" (PyTorch), as in :func:`simulate_drive`."""
    if isinstance(net, str):
        from netx_export.netx.validate import load_netx
        net = load_netx(net)
    d = input_drive(net, x)
    return simulate_drive(net, d.drive, T, timing, record_spikes, d.clipped, device=device)


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
    correct: list[int]                      # index t−1: samples right at t steps (accuracy · n, exact)
    spike_totals: list[int]                 # per synaptic layer: spikes over all neurons, steps, samples
    neurons: list[int]                      # per synaptic layer: neurons per sample

    def at(self, t: int) -> float:
        return self.accuracy[t - 1]


def evaluate(net: QNetwork, batches: Iterable[tuple[np.ndarray, np.ndarray]], T: int,
             timing: str = DEFAULT_TIMING, progress=None, *, simulate=None,
             on_batch: Callable[[SimResult, np.ndarray], None] | None = None,
             count_neurons: bool = False, device: str | None = None) -> RefEvaluation:
    """Accuracy at every t = 1..T over (normalised images, labels) batches. ``simulate`` replaces
    :func:`simulate_drive` for another construction of the same file (``net.qnet`` then gives the
    input drive), e.g. :func:`netx_export.sim.stock.simulate_drive`. ``on_batch(result, labels)``
    sees every batch's :class:`SimResult` (with ``neuron_counts`` if ``count_neurons``). ``device``: see
    :func:`simulate_drive` (numpy if None)."""
    sim = simulate or simulate_drive
    drive_net = getattr(net, "qnet", net)
    correct = np.zeros(T, dtype=np.int64)
    spikes = None
    n = sat = clipped = total = 0
    neurons: tuple[int, ...] = ()
    for x, y in batches:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
        d = input_drive(drive_net, x)
        kw = dict({"count_neurons": True} if count_neurons else {}, **({"device": device} if device else {}))
        r = sim(net, d.drive, T, timing, False, d.clipped, **kw)
        if on_batch is not None:
            on_batch(r, y)
        correct += (r.predictions == y.reshape(1, -1)).sum(1)
        c = np.array([int(s.sum()) for s in r.spike_counts], dtype=np.int64)
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
    return RefEvaluation(T, n, (correct / n).tolist(), rates, sat, clipped, total, timing,
                         [int(c) for c in correct], [int(s) for s in spikes], [int(k) for k in neurons])
