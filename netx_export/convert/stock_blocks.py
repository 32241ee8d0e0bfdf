"""Stock-block mode: QCFS's integrate-and-fire with reset by subtraction built only from blocks that
Loihi 2 runs today (stock LIF neurons, Dense/Sparse/Conv synapses, an always-on source) — no custom
neuron microcode. This module is the mapping QNetwork → stock parameters and the per-layer
schedule (numpy only); its integer-exact simulation is :mod:`netx_export.sim.stock`, and
:mod:`netx_export.lava_runtime.stock` builds the same thing in Lava.

Why it works. A stock LIF resets v to 0 after a spike, so v cannot carry the membrane. The current u
can: with du = −1 (Lava's decay constant du + 1 = 0, NetX's iDecay 0) u never decays, so u is an exact
24-bit integrator, and a self-connection of weight −θ (one-step synaptic delay) subtracts θ after
each spike. v only serves the threshold test: dv = 4095 keeps trunc(v/4096) of the previous v, so
v ≈ u every step.

Per spiking layer with IF_SUB parameters θ = vThMant, vInit, per-step bias b (weight units; state
units = weight units · 64), LIF parameters ``du = −1, dv = 4095, vth = θ, bias_mant = o, bias_exp = 0,
u(0) = 64·vInit, v(0) = 0`` and, per step t, synaptic input (weight units)

    a[t] = W·s_in + b (+ d, layer 0's host drive) − θ·s[t−1]
    u[t] = wrap24(u[t−1] + 64·a[t])
    v[t] = clip24(trunc(v[t−1]/4096) + u[t] + o)          (v[t−1] after the zero reset)
    s[t] = v[t] > 64·θ;   v[t] = 0 where s[t]

So u[t] = 64·(vInit + Σ_{τ≤t} a_ext[τ]) − 64θ·Σ_{τ<t} s[τ]: exactly IF_SUB's membrane V[t] before its
threshold test, which fires iff V[t] ≥ 64θ. The stock test differs from it only by the residual
r[t] = trunc(v[t−1]/4096) and the offset o. u is a multiple of 64, so the two tests agree iff

    −o < r[t] ≤ 64 − o.

r[t] = 0 after a spike; otherwise v[t−1] ≤ 64θ (it did not fire), so r[t] ≤ ⌊θ/64⌋. The offset
o = 64 − ⌊θ/64⌋ (:func:`comparator_offset`) therefore makes the test exact for every positive residual
when θ < 4096, and the only remaining difference is a strongly negative previous v:
v[t−1] ≤ −64·o·64 state units (−64·o weight units: −2048 to −4096) gives r ≤ −o, and then a step
that jumps u from there to within (−r − o)/64 weight units above θ misses a spike that IF_SUB fires.
A plain ``vth = θ − 1`` without offset (the usual trick for ≥ with a strict comparator) is exact only
while r = 0 and fires one weight unit early whenever r > 0.

Everything else enters u through synapses: b from an always-on source (a LIF that spikes every step,
:data:`ALWAYS_ON`) through Dense synapses whose 8-bit weights sum exactly to b, −θ likewise; an 8-bit
weight with one exponent cannot hold every integer, so values are split into coarse + fine stock
synapses (:func:`split_weights`). Layer 0's drive arrives as graded spikes through an identity
synapse of weight 1.

Settle step. Every synapse delivers one step late, so in the first hardware step nothing arrives:
u stays u(0) and v becomes u(0) + o. The simulation starts from that state and its step t is hardware
step t + 1; with the bias and the drive also delayed by one step, the stock network then reproduces
refsim's timings exactly: ``"lava"`` (layer l sees layer l−1's spikes of t − 1, bias and drive from
t = 1) and ``"aligned"`` (same step, the float SNN's timing). :mod:`netx_export.lava_runtime.stock` runs both:
``"lava"`` with every layer's bias from :data:`ALWAYS_ON`; ``"aligned"`` by starting layer j's bias j
steps later (a chain of :data:`RELAY` delay neurons), so that layer j's step t is hardware step
t + 1 + j, exactly when layer j − 1's spikes of step t arrive.

Idle steps. Before its input and bias arrive (the settle step; j more steps for layer j in the aligned
Lava timing) a neuron only holds u(0) = 64·vInit; v climbs to :func:`idle_peak` ≤ 64θ and it cannot
fire, for every 0 ≤ vInit < θ < 4096 (proof in :func:`idle_peak`; :func:`stock_network` checks the exact
peak for every layer). So a layer that has not started is silent, and waiting changes nothing but v's
residual, which the comparator window already covers.

Readout. The last layer does not spike: its u integrates the summed input (vth = 131071, no
self-inhibition) and the logits are read from u every step, unwrapped on the host
(:func:`unwrap_current`, exact while |per-step input| < 2^17). The logits equal
refsim's except where refsim's readout v saturates at −131071 (very negative logits); here they
never saturate.

Limits. u wraps at ±2^23 state units (±2^17 weight units) where IF_SUB's v saturates: a strongly
inhibited neuron that sinks below −131072 weight units wraps to about +2^23 and fires every step
until self-inhibition and its input bring u back below θ — up to 2^17/θ steps (counted in
``SimResult.saturated`` of :func:`netx_export.sim.stock.simulate_drive` together with v clips; IF_SUB
would sit at −131071 and stay silent). Biases and θ are exact for any integer (more synapses for
larger values, :func:`split_weights`); the comparator is exact as above for θ < 4096 (o = 1 beyond,
exact only while r ≤ 63).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from netx_export.convert.fixedpoint import STATE_SHIFT, VTH_MAX, QLayer, QNetwork, v_init_array
from netx_export.errors import ExportError
from netx_export.loihi import UV_MAX, decay
from netx_export.timing import DEFAULT_TIMING, check_timing

__all__ = ["unwrap_current", "WEIGHT_EXP_MIN", "WEIGHT_EXP_MAX", "STOCK_DU", "STOCK_DV", "LifParams", "ALWAYS_ON", "RELAY",
           "WeightTerm", "split_weights", "terms_value", "comparator_offset", "exact_window", "idle_peak",
           "StockLayer", "StockNetwork", "stock_network", "layer_starts", "steps_per_sample"]

WEIGHT_EXP_MIN, WEIGHT_EXP_MAX = -8, 7      # synapse weight exponent range assumed (Loihi 1's; Lava does not check)
STOCK_DU = -1                               # Lava decay constant du + 1 = 0: u persists (NetX iDecay = 0)
STOCK_DV = 4095                             # v keeps trunc(v/4096): v ≈ u


@dataclass(frozen=True, eq=False)
class LifParams:
    """Keyword arguments of a stock Lava ``LIF`` (``fixed_pt`` units: vth and bias in their own
    units, u and v in state units = weight units · 64). ``u`` is one int, or an int64 array of the
    layer's shape (C, H, W) when vInit is per channel (low-T calibrated files)."""
    vth: int
    du: int
    dv: int
    bias_mant: int
    bias_exp: int
    u: int | np.ndarray
    v: int = 0


#: The always-on source: v = 0 + 0 + 1 > 0 every step, reset to 0, so it spikes every step from t = 1.
ALWAYS_ON = LifParams(vth=0, du=4095, dv=0, bias_mant=1, bias_exp=0, u=0, v=0)

#: A one-step delay neuron (the always-on source without its bias): u holds only this step's input
#: (du = 4095 clears it), so with a weight-1 synapse from its predecessor it spikes at step s exactly
#: when the predecessor spiked at s − 1. A chain of them started by :data:`ALWAYS_ON` gives sources that
#: switch on one step later each and then spike every step; they start layer j's bias j steps late for
#: the aligned timing (:mod:`netx_export.lava_runtime.stock`). Nothing accumulates, so no run is too long.
RELAY = LifParams(vth=0, du=4095, dv=0, bias_mant=0, bias_exp=0, u=0, v=0)


# --------------------------------------------------------------------------- weights
@dataclass(frozen=True, eq=False)
class WeightTerm:
    """One stock synapse process in Lava's fixed-point convention: effective weight
    ``weights · 2^weight_exp``. ``weights`` obey Lava's 8-bit rule for their sign mode (mixed sign:
    even in [−256, 254]; all ≥ 0: [0, 255]; all ≤ 0: [−255, 0]) so Lava's clip/truncate keeps them."""
    weights: np.ndarray     # int64
    weight_exp: int

    @property
    def values(self) -> np.ndarray:
        w = np.asarray(self.weights, dtype=np.int64)
        return w << self.weight_exp if self.weight_exp >= 0 else w >> -self.weight_exp


def terms_value(terms: Iterable[WeightTerm], shape: tuple[int, ...] = ()) -> np.ndarray:
    """Σ of the terms' effective weights (zeros of ``shape`` for no terms)."""
    total = np.zeros(shape, np.int64)
    for t in terms:
        total = total + t.values
    return total


def _one_term(r: np.ndarray, max_exp: int) -> WeightTerm:
    """The coarsest-first term for residual ``r``: smallest unit 2^k whose mantissa fits, clipped at
    the largest exponent (then further terms carry the rest)."""
    pos, neg = bool((r > 0).any()), bool((r < 0).any())
    if pos and neg:
        lo, hi, shift = -128, 127, 1            # w = 2m, weight_exp = k − 1 (Lava: mixed sign → even weights)
    elif pos:
        lo, hi, shift = 0, 255, 0
    else:
        lo, hi, shift = -255, 0, 0
    k_max = max_exp + shift
    k = 0
    while k < k_max and (np.rint(r / (1 << k)).max() > hi or np.rint(r / (1 << k)).min() < lo):
        k += 1
    m = np.clip(np.rint(r / (1 << k)), lo, hi).astype(np.int64)
    return WeightTerm(m << shift, k - shift)


def split_weights(values: np.ndarray | int, max_terms: int = 6, max_exp: int = WEIGHT_EXP_MAX
                  ) -> tuple[WeightTerm, ...]:
    """Exact decomposition of integer ``values`` into stock 8-bit synapses (coarse first, then fine):
    Σ term.values == values. One synapse holds m·2^k only; e.g. θ = 1566 becomes −196·2^3 + 2 as
    self-inhibition. Raises ValueError if ``max_terms`` do not suffice."""
    v = np.asarray(values, dtype=np.int64)
    r = v.copy()
    terms: list[WeightTerm] = []
    while r.any():
        if len(terms) == max_terms:
            raise ValueError(f"values up to {int(np.abs(v).max())} need more than {max_terms} 8-bit synapses")
        t = _one_term(r, max_exp)
        terms.append(t)
        r = r - t.values
    return tuple(terms)


# --------------------------------------------------------------------------- comparator
def comparator_offset(theta: int) -> int:
    """o = 64 − ⌊θ/64⌋ (state units, ≥ 1): the stock test ``u + r + o > 64θ`` then equals IF_SUB's
    ``u ≥ 64θ`` for every residual r in (−o, 64 − o], which contains all positive residuals a
    non-firing neuron can have (r ≤ ⌊θ/64⌋) when θ < 4096."""
    return max(1, (1 << STATE_SHIFT) - (int(theta) >> STATE_SHIFT))


def exact_window(theta: int) -> tuple[int, int]:
    """(lo, hi): residuals r = trunc(v[t−1]/4096) with lo < r ≤ hi keep the stock test exact."""
    o = comparator_offset(theta)
    return -o, (1 << STATE_SHIFT) - o


def idle_peak(u0: np.ndarray | int, offset: np.ndarray | int) -> np.ndarray:
    """The largest v a stock neuron reaches while nothing arrives (before its input and bias start):
    the least fixed point of v ← trunc(v/4096) + u0 + o, approached from v(0) = 0 (the sequence only
    grows, so it is also the maximum over any number of idle steps). The neuron can never fire while
    idle iff this is ≤ 64θ. For θ < 4096 and 0 ≤ vInit < θ it always is: [0, 64θ] is invariant, since
    v ≤ 64θ gives trunc(v/4096) ≤ ⌊θ/64⌋ and u0 + o + ⌊θ/64⌋ ≤ 64(θ − 1) + 64 = 64θ. For θ ≥ 4096
    (o = 1) it depends on vInit, hence the exact computation."""
    c = np.asarray(u0, dtype=np.int64) + np.asarray(offset, dtype=np.int64)
    v = np.zeros_like(c)
    while True:
        nxt = decay(v, STOCK_DV) + c
        if np.array_equal(nxt, v):
            return v
        v = nxt


# --------------------------------------------------------------------------- the mapping
@dataclass(frozen=True, eq=False)
class StockLayer:
    """One synaptic layer of the network in stock blocks (shapes in PyTorch order C, H, W)."""
    index: int                          # position in QNetwork.layers
    name: str
    kind: str                           # "conv" | "dense"
    role: str                           # "input" | "hidden" | "readout"
    shape: tuple[int, int, int]
    lif: LifParams
    theta: int                          # the IF_SUB threshold emulated (0: readout, no self-inhibition)
    v_init: int | np.ndarray            # IF_SUB vInit (weight units; per neuron (C, H, W) if per channel): u(0) = 64·v_init
    inhibition: tuple[WeightTerm, ...]  # self-connection, scalar terms summing to −θ (diagonal synapses)
    bias: tuple[WeightTerm, ...]        # per output channel, terms summing to the layer bias (from ALWAYS_ON);
                                        # () for layer 0, whose bias is inside the host drive
    weight: tuple[WeightTerm, ...]      # dense layers: the layer's weights in Lava's convention (conv: ())

    @property
    def bias_values(self) -> np.ndarray:
        return terms_value(self.bias, (self.shape[0],))


@dataclass(frozen=True, eq=False)
class StockNetwork:
    qnet: QNetwork
    layers: tuple[StockLayer, ...]      # per synaptic layer of qnet

    @property
    def aligned_relays(self) -> int:
        """:data:`RELAY` neurons the aligned Lava timing adds (each with one weight-1 Dense synapse):
        layer j's bias comes from relay j, so the chain runs up to the last layer that has a bias."""
        return max((j for j, lay in enumerate(self.layers) if lay.bias), default=0)

    @property
    def synapse_processes(self) -> int:
        """Stock synapse processes per network copy: the input's identity synapse, then per layer its
        weights (one Conv, or the Dense terms), its self-inhibition terms and its bias terms. The
        aligned Lava timing adds :attr:`aligned_relays` weight-1 Dense synapses (and as many LIFs)."""
        n = 1
        for j, lay in enumerate(self.layers):
            n += (0 if j == 0 else 1 if lay.kind == "conv" else len(lay.weight)) + len(lay.inhibition) + len(lay.bias)
        return n


def stock_network(qnet: QNetwork, max_terms: int = 6) -> StockNetwork:
    """Stock-block parameters for every synaptic layer of ``qnet`` (see the module docstring)."""
    if any(lay.skips for lay in qnet.layers):
        raise ExportError("stock mode builds sequential networks only; residual networks (format version 2) "
                          "run with the IF_SUB microcode neuron (--mode microcode)")
    syn = [i for i, lay in enumerate(qnet.layers) if lay.kind != "flatten"]
    out: list[StockLayer] = []
    for j, i in enumerate(syn):
        lay: QLayer = qnet.layers[i]
        assert lay.neuron is not None and lay.bias is not None and lay.weight is not None
        role = "input" if j == 0 else "readout" if j == len(syn) - 1 else "hidden"
        if lay.neuron.type != "IF_SUB":
            raise ValueError(f"layer {lay.name}: neuron type {lay.neuron.type} is not IF_SUB")
        per_channel = isinstance(lay.neuron.v_init, np.ndarray)
        v0: int | np.ndarray = v_init_array(lay.neuron, lay.shape) if per_channel else int(lay.neuron.v_init)
        u0 = np.asarray(v0, dtype=np.int64) << STATE_SHIFT if per_channel else int(v0) << STATE_SHIFT
        if role == "readout":
            theta, inhibition = 0, ()
            lif = LifParams(vth=VTH_MAX, du=STOCK_DU, dv=STOCK_DV, bias_mant=0, bias_exp=0, u=u0)
        else:
            theta = int(lay.neuron.vth)
            o = comparator_offset(theta)
            hi, lo = int(np.max(v0)), int(np.min(v0))
            # The settle step, and in the aligned Lava timing the j steps before layer j's input and
            # bias arrive, are idle steps: v climbs to idle_peak and must not cross 64θ.
            if lo < 0 or int(idle_peak(hi << STATE_SHIFT, o)) > theta << STATE_SHIFT:
                raise ValueError(f"layer {lay.name}: vInit up to {hi} would fire in the settle step or while "
                                 f"waiting for its input (θ = {theta})")
            lif = LifParams(vth=theta, du=STOCK_DU, dv=STOCK_DV, bias_mant=o, bias_exp=0, u=u0)
            inhibition = split_weights(-theta, max_terms)
        weight = () if lay.kind == "conv" or j == 0 else split_weights(lay.weight, max_terms)
        # Layer 0's bias is part of the host drive (fixedpoint.input_drive); its file bias is not added again.
        bias = () if j == 0 else split_weights(lay.bias, max_terms)
        out.append(StockLayer(i, lay.name, lay.kind, role, tuple(int(s) for s in lay.shape),  # type: ignore[arg-type]
                              lif, theta, v0, inhibition, bias, weight))
    return StockNetwork(qnet, tuple(out))


# --------------------------------------------------------------------------- the schedule
def layer_starts(n_layers: int, timing: str) -> list[int]:
    """Per synaptic layer, how many hardware steps after layer 0 it starts integrating: j for
    ``"aligned"`` (layer j's input needs j synapse hops to arrive), 0 for ``"lava"``."""
    check_timing(timing)
    return list(range(n_layers)) if timing == "aligned" else [0] * n_layers


def steps_per_sample(net: StockNetwork | QNetwork, T: int, timing: str = DEFAULT_TIMING) -> int:
    """Hardware (Lava) steps one sample runs: the settle step, T steps, and for ``"aligned"`` the L − 1
    steps the readout waits for its input. A profiler on hardware must be sized for this."""
    n_layers = len(net.layers) if isinstance(net, StockNetwork) else len(net.synaptic)
    return T + 1 + layer_starts(n_layers, timing)[-1]


# --------------------------------------------------------------------------- readout
def unwrap_current(u: np.ndarray, axis: int = 0) -> np.ndarray:
    """The readout rule of the stock construction: undo u's 24-bit wrap along ``axis`` (a record of
    u at every step, starting from its known initial value), on the host; exact while every true
    per-step change is below 2^23 state units."""
    u = np.asarray(u, dtype=np.int64)
    d = np.diff(u, axis=axis)
    d = ((d + UV_MAX) % (2 * UV_MAX)) - UV_MAX
    first = np.take(u, [0], axis=axis)
    return np.concatenate([first, first + np.cumsum(d, axis=axis)], axis=axis)
