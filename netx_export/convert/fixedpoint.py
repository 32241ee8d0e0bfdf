"""Loihi fixed point: every layer of a :class:`~netx_export.convert.ir.Graph` in its own integer units.

Units. A spike of layer l−1 carries θ_{l−1} in the float SNN (the paper's eq. 5), so layer l's float
input per step is ``W_l·θ_{l−1}·s + b_l`` against threshold θ_l. IF dynamics with reset by
subtraction (eq. 2-4) do not change when input, bias, θ and v(0) are all multiplied by one factor,
so each layer gets its own scale σ_l (integer units per float unit of membrane potential):

    weight = m·2^k ≈ σ_l·W_l·θ_{l−1}   (m ∈ [−128, 127], one exponent k per layer)
    vThMant = σ_l·θ_l (σ_l trimmed so this is an exact even integer), vInit = vThMant/2 (φ = ½, Theorem 2),
    bias = round(σ_l·b_l)

σ_l = 127·2^k / max|W_l·θ_{l−1}|, so the 8-bit mantissa is always used in full, and k is the
largest exponent that keeps every Loihi limit (constants below): vThMant ≤ 131071/v_headroom
(v saturates at ±131071 weight units; headroom lets a neuron sink v_headroom·θ below zero before
it saturates), |bias| ≤ 4095 (13-bit bias mantissa, bias_exp = 6), and per-step input
|Σ w·s + b| < 2^17 for any spike pattern (u wraps at 24 bits = 2^17 weight units). Dense layers
keep k ≤ 1: NetX's dense loader clips mixed-sign weights to [−256, 254]. Only if k = 0 still breaks a
limit is σ lowered below full mantissa (reported as fewer mantissa bits).

Residual shortcuts (format version 2). A shortcut into layer l from layer j carries j's spikes
(θ_j each) into l's neurons, so it is quantized in l's units: ``m·2^k' ≈ σ_l·W_skip·θ_j`` with its
own exponent k' (an identity shortcut is one weight per channel, σ_l·θ_j), and σ_l is chosen so that
the worst-case input of both synapses together stays below 2^17. Its ``delay`` (:func:`skip_delay`)
keeps both paths in step on Lava/Loihi (docs/residual.md).

First layer. Its input is the analog image: the host computes ``drive = σ_0·(conv(x, W_0) + b_0)``
once per sample (float weights, no 8-bit loss), rounds it and injects it as the neurons' constant
per-step bias — exact for constant input. Hardware allows |drive| ≤ 4095, so σ_0 is chosen from a
worst-case bound of the drive over the whole input box [(0−μ)/s, (1−μ)/s] per channel: within that
box no value can clip. Inputs outside it (other normalisation, corrupt data) are clipped to ±4095
and counted by :func:`input_drive`. The layer's weights are still written (8-bit, same units) so
the file is a complete NetX network.

Readout. The logits layer gets an IF_SUB neuron with vThMant = 2^16, vInit = 0 and input
|per step| < 2^16, so its v never saturates upward: the summed input (= t · mean logits of the
float SNN, scaled by σ) is ``vThMant·(spikes so far) + v``, exact as long as v stays above −131071
(only very negative logits can saturate, which do not win the argmax). Predictions at every t
are the argmax of that sum.

This module is numpy only (no torch): the fixed-point IR it defines is what the HDF5 writer, the
reader and the reference simulator share.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from netx_export.convert.conv import conv2d, dense
from netx_export.errors import QuantizationError

__all__ = ["MANT_MIN", "MANT_MAX", "VTH_MAX", "BIAS_MAX", "INPUT_LIMIT", "STATE_SHIFT", "DENSE_MAX_EXPONENT",
           "OUTPUT_VTH", "QuantConfig", "QNeuron", "QSkip", "QLayer", "skip_delay", "InputDrive", "LayerReport",
           "QNetwork", "quantize", "quantize_weights", "v_init_array", "quantize_v_init", "exact_theta_scale",
           "input_bound", "worst_case_input", "drive_bound", "input_drive", "DriveResult", "format_report"]

MANT_MIN, MANT_MAX = -128, 127      # 8-bit signed weight mantissa
VTH_MAX = 131071                    # vThMant: unsigned 17 bits
BIAS_MAX = 4095                     # bias_mant: signed 13 bits (we keep it symmetric)
INPUT_LIMIT = 1 << 17               # |per-step input| in weight units; u = input << 6 wraps at 2^23
STATE_SHIFT = 6                     # u, v, vth are weight units << 6 inside the neuron
DENSE_MAX_EXPONENT = 1              # NetX clips mixed-sign dense weights to [-256, 254]
OUTPUT_VTH = 1 << 16                # readout neuron threshold; its input is kept below this too


@dataclass(frozen=True)
class QuantConfig:
    v_headroom: float = 64.0        # vThMant ≤ 131071 / v_headroom
    max_exponent: int = 7           # largest weight exponent k for conv layers
    weight_clip: float = 1.0        # quantile of |W·θ| mapped to the full mantissa (1.0: max, nothing clips)
    rms_tol: float = 0.02           # warn when a layer's RMS weight error relative to RMS weight exceeds this
    theta_tol: float = 0.01         # warn when θ's relative rounding error exceeds this
    recommended_T: int = 32
    drive_limit: int = BIAS_MAX


@dataclass(frozen=True)
class QNeuron:
    """NetX neuron group. ``IF_SUB``: fires when v ≥ vThMant, subtracts vThMant, starts at vInit.

    ``v_init`` is one int for the whole layer, or an int64 array with one value per output channel
    (per neuron for dense layers) for a low-latency calibrated layer (:func:`v_init_array` broadcasts it)."""
    vth: int
    v_init: int | np.ndarray = 0
    i_decay: int = 4096             # 4096: the current does not persist between steps (u = input)
    v_decay: int = 0                # no leak
    type: str = "IF_SUB"

    @property
    def per_channel(self) -> bool:
        return isinstance(self.v_init, np.ndarray)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QNeuron):
            return NotImplemented
        return (self.vth, self.i_decay, self.v_decay, self.type, self.per_channel) == \
            (other.vth, other.i_decay, other.v_decay, other.type, other.per_channel) and \
            np.array_equal(np.asarray(self.v_init), np.asarray(other.v_init))

    def __hash__(self) -> int:
        v0 = tuple(np.asarray(self.v_init).reshape(-1).tolist()) if self.per_channel else self.v_init
        return hash((self.vth, v0, self.i_decay, self.v_decay, self.type))


def v_init_array(neuron: QNeuron, shape: Sequence[int]) -> np.ndarray:
    """The neuron group's vInit (weight units) for every neuron of a layer of ``shape`` (C, H, W),
    int64: a scalar everywhere, or per channel (C,) broadcast over H and W."""
    shape = tuple(int(s) for s in shape)
    v = np.asarray(neuron.v_init, dtype=np.int64)
    if v.ndim == 0:
        return np.full(shape, int(v), np.int64)
    if v.shape != (shape[0],):
        raise ValueError(f"vInit has {v.size} values for {shape[0]} channels")
    return np.broadcast_to(v.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()


def quantize_v_init(v0_frac: float | np.ndarray, vth: int) -> int | np.ndarray:
    """vInit = round(v0_frac·vThMant) in weight units: an int for a scalar v(0)/θ (φ = ½ gives
    vThMant/2 exactly, vThMant being even), an int64 array clipped to [0, vThMant − 1] per channel."""
    if isinstance(v0_frac, np.ndarray):
        return np.clip(np.rint(v0_frac * vth), 0, max(vth - 1, 0)).astype(np.int64)
    return int(round(v0_frac * vth))


@dataclass(frozen=True, eq=False)
class QSkip:
    """A residual shortcut in integer weight units (format version 2): a conv from the spikes of the
    earlier layer ``source`` (an index into ``QNetwork.layers``) into this layer's neurons.

    ``delay``: extra steps the shortcut's spikes wait, so that with one step of synaptic delay per
    layer they reach the neurons together with the main path's (Lava/Loihi timing): the number of
    synaptic layers from ``source`` to this layer, minus one. Realised by relay neurons in Lava."""
    name: str
    source: int
    weight: np.ndarray              # int64 [C_out, C_in/groups, kH, kW]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    delay: int = 0


@dataclass(frozen=True, eq=False)
class QLayer:
    """One NetX layer in integer weight units (PyTorch layouts, shapes C, H, W)."""
    kind: str                       # "conv" | "dense" | "flatten"
    name: str
    in_shape: tuple[int, int, int]
    shape: tuple[int, int, int]     # output shape, as NetX's `shape` (C, H, W)
    weight: np.ndarray | None = None            # int64
    bias: np.ndarray | None = None              # int64, per output channel / neuron
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    neuron: QNeuron | None = None
    skips: tuple[QSkip, ...] = ()


def skip_delay(layers: Sequence[QLayer], source: int, target: int) -> int:
    """Extra delay of a shortcut from ``layers[source]`` to ``layers[target]``: synaptic layers on the
    main path (source, target], minus the shortcut's own one."""
    return sum(1 for lay in layers[source + 1:target + 1] if lay.kind != "flatten") - 1


@dataclass(frozen=True, eq=False)
class InputDrive:
    """Host-side first-layer drive: ``clip(round(conv(x, weight) + bias), ±limit)`` in layer-0 units."""
    weight: np.ndarray              # float64, σ_0·W_0 (layer 0's geometry)
    bias: np.ndarray                # float64, σ_0·b_0
    limit: int = BIAS_MAX


@dataclass(frozen=True)
class LayerReport:
    index: int
    name: str
    kind: str
    role: str                       # "input drive" | "hidden" | "readout"
    scale: float                    # σ: integer units per float unit of potential
    exponent: int                   # k: weights are m·2^k
    mantissa_max: int               # max |m| used (127 = full 8 bits)
    clipped_fraction: float
    max_rel_error: float            # max |Wq − σWθ| / max |σWθ|
    rms_rel_error: float            # rms(Wq − σWθ) / rms(σWθ)
    theta: float                    # float θ (NaN for the readout)
    vth: int
    v_init: int                     # per-channel vInit: its rounded mean over channels
    theta_rel_error: float
    bias_max: int                   # max |bias| (for the input layer: |drive| bound)
    input_max: int                  # worst-case |per-step input| in weight units
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class QNetwork:
    input_shape: tuple[int, int, int]
    layers: tuple[QLayer, ...]
    drive: InputDrive
    metadata: dict[str, Any] = field(default_factory=dict)   # JSON-able; see hdf5_write
    report: tuple[LayerReport, ...] = ()

    @property
    def synaptic(self) -> list[QLayer]:
        return [lay for lay in self.layers if lay.kind != "flatten"]


# --------------------------------------------------------------------------- pure functions
def exact_theta_scale(theta: float, scale: float) -> tuple[float, int]:
    """(σ', vThMant) with σ' ≤ σ and σ'·θ = vThMant exactly (an even integer, so vInit = vThMant/2 is
    exact too): the threshold carries no rounding error, which for a small vThMant (the input layer,
    whose σ the 13-bit drive limits) would otherwise be a systematic gain error of up to 1/vThMant."""
    vth = 2 * int(math.floor(theta * scale / 2))
    if vth < 2:
        return scale, 2             # θ too small for this σ: keep σ, report the θ rounding error
    return vth / theta, vth


def quantize_weights(w: np.ndarray, scale: float, exponent: int) -> tuple[np.ndarray, float]:
    """``m = clip(round(scale·w / 2^k), −128, 127)``; returns (m·2^k as int64, fraction of m clipped)."""
    m = np.rint(w * scale / (1 << exponent))
    clipped = float(np.mean((m < MANT_MIN) | (m > MANT_MAX))) if m.size else 0.0
    return np.clip(m, MANT_MIN, MANT_MAX).astype(np.int64) << exponent, clipped


def input_bound(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest and smallest per-step input per output channel over all binary spike patterns:
    ``Σ max(w, 0) + b`` and ``Σ min(w, 0) + b`` (all fan-in spiking, or only the positive/negative half)."""
    w = weight.reshape(weight.shape[0], -1)
    return np.maximum(w, 0).sum(1) + bias, np.minimum(w, 0).sum(1) + bias


def worst_case_input(weight: np.ndarray, bias: np.ndarray | float, skip_weights: Sequence[np.ndarray] = ()
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Largest and smallest per-step input per output channel of a layer *with its residual shortcuts*
    over all binary spike patterns: :func:`input_bound` of the layer's synapse plus, for every shortcut,
    ``Σ max(w_skip, 0)`` and ``Σ min(w_skip, 0)`` (its bias is in the layer's). This is the bound behind
    the paper's max-input threshold θ_l = max_{s∈{0,1}^n} max(θ_{l−1}·W_l·s) (appendix A.4, Theorem 3),
    here the limit the 24-bit current must not wrap at. A shortcut whose output channels do not match
    the layer's (only in a malformed file) is left out."""
    hi, lo = input_bound(weight, bias)
    for ws in skip_weights:
        h2, l2 = input_bound(ws, 0)
        if h2.shape == hi.shape:
            hi, lo = hi + h2, lo + l2
    return hi, lo


def drive_bound(weight: np.ndarray, bias: np.ndarray, lo: Sequence[float], hi: Sequence[float]) -> float:
    """max |conv(x, W) + b| over every input with channel c in [lo_c, hi_c] (zero padding included)."""
    lo_a = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi_a = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    w = weight.reshape(weight.shape[0], -1, weight.shape[-2] * weight.shape[-1]) if weight.ndim == 4 \
        else weight.reshape(weight.shape[0], len(lo_a), -1)
    groups = len(lo_a) // w.shape[1]
    per_in = np.repeat(np.arange(len(lo_a)).reshape(groups, -1), w.shape[0] // groups, axis=0)  # (O, C/g)
    wl, wh = w * lo_a[per_in][..., None], w * hi_a[per_in][..., None]
    top = np.maximum(wl, wh).sum((1, 2)) + bias
    bot = np.minimum(wl, wh).sum((1, 2)) + bias
    return float(max(np.abs(top).max(), np.abs(bot).max()))


def _errors(wq: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    err = wq - ref
    amax = float(np.abs(ref).max())
    rms = float(np.sqrt(np.mean(ref ** 2)))
    return float(np.abs(err).max()) / amax, float(np.sqrt(np.mean(err ** 2))) / rms


def _smallest_exponent(w: np.ndarray) -> int:
    """Smallest k ≥ 0 with round(w / 2^k) inside the mantissa range."""
    k = 0
    while np.rint(w.max() / (1 << k)) > MANT_MAX or np.rint(w.min() / (1 << k)) < MANT_MIN:
        k += 1
    return k


@dataclass
class _Choice:
    scale: float
    exponent: int
    wq: np.ndarray
    clipped: float
    vth: int
    bias: np.ndarray
    problems: list[str]
    skips: list[np.ndarray] = field(default_factory=list)


def _try(w_eff: np.ndarray, b: np.ndarray, theta: float | None, scale: float, exponent: int,
         vth_cap: int, in_limit: int, skips: Sequence[np.ndarray] = ()) -> _Choice:
    vth = OUTPUT_VTH
    if theta is not None:
        scale, vth = exact_theta_scale(theta, scale)
    wq, clipped = quantize_weights(w_eff, scale, exponent)
    bq = np.rint(b * scale).astype(np.int64)
    # Same σ (same neurons), each shortcut its own exponent.
    sq = [quantize_weights(ws, scale, _smallest_exponent(ws * scale))[0] for ws in skips]
    hi, lo = worst_case_input(wq, bq, sq)
    problems = []
    if theta is not None and vth > vth_cap:
        problems.append(f"vThMant {vth} > {vth_cap}")
    if bq.size and np.abs(bq).max() > BIAS_MAX:
        problems.append(f"|bias| {int(np.abs(bq).max())} > {BIAS_MAX}")
    if hi.max() >= in_limit or lo.min() <= -in_limit:
        problems.append(f"per-step input up to {int(max(hi.max(), -lo.min()))} ≥ {in_limit}")
    return _Choice(scale, exponent, wq, clipped, vth, bq, problems, sq)


def _choose(w_eff: np.ndarray, b: np.ndarray, theta: float | None, max_k: int, vth_cap: int, in_limit: int,
            clip_q: float, name: str, skips: Sequence[np.ndarray] = ()) -> _Choice:
    """Largest exponent k whose full-mantissa scale keeps every limit; else a reduced scale at k = 0.
    ``skips``: shortcut weights (σ-free, like ``w_eff``) whose input adds to the bound."""
    a = np.abs(w_eff)
    amax = float(np.quantile(a, clip_q)) if clip_q < 1.0 else float(a.max())
    if amax == 0.0:
        raise QuantizationError(f"layer {name}: all weights are zero (NetX cannot load an all-zero matrix)")
    pos, neg = worst_case_input(w_eff, 0.0, skips)
    bmax = float(np.abs(b).max(initial=0.0))

    def fits_roughly(scale: float, cap: int) -> bool:
        # Float estimates first: quantizing millions of weights for every candidate is what costs time.
        in_max = max(float((pos * scale + b * scale).max()), float(-(neg * scale + b * scale).min()))
        return ((theta is None or theta * scale <= cap + 2) and bmax * scale <= BIAS_MAX + 0.5
                and in_max <= in_limit * 1.01)

    for k in range(max_k, -1, -1):
        scale = MANT_MAX * (1 << k) / amax
        if fits_roughly(scale, vth_cap):
            c = _try(w_eff, b, theta, scale, k, vth_cap, in_limit, skips)
            if not c.problems:
                return c
    scale = MANT_MAX / amax
    if theta is not None:
        # Full 8-bit weights matter more than v headroom: relax the θ cap to the hard 17-bit limit first.
        c = _try(w_eff, b, theta, scale, 0, VTH_MAX, in_limit, skips)
        if not c.problems:
            return c
    # Even k = 0 breaks a hard limit: shrink σ (fewer mantissa bits) until it fits.
    in_max = max(float((pos + b).max()), float(-(neg + b).min()), 1e-30)
    f = min(1.0, VTH_MAX / (theta * scale) if theta else 1.0, BIAS_MAX / (bmax * scale) if bmax else 1.0,
            (in_limit - 1) / (in_max * scale))
    for _ in range(100):
        c = _try(w_eff, b, theta, scale * f, 0, VTH_MAX, in_limit, skips)
        if not c.problems:
            return c
        f *= 0.98
    raise QuantizationError(f"layer {name} cannot meet Loihi's limits: {'; '.join(c.problems)}")


@dataclass
class _Quantized:
    """One synaptic layer in integer units (its :class:`_Choice`), with what its report row needs."""
    choice: _Choice
    ref: np.ndarray                 # σ·W·θ_{l−1} (σ·W_0 for the input layer): what wq approximates
    role: str
    theta: float
    bias_max: int
    input_max: int
    v_init: int | np.ndarray
    skips: tuple[QSkip, ...] = ()
    warnings: list[str] = field(default_factory=list)


def _default_input_range(graph, meta: dict[str, Any]) -> tuple[list[float], list[float]]:
    """The pixel box [0, 1] after ``meta['normalization']`` (mean, std), else [−1, 1], per channel."""
    norm = meta.get("normalization")
    if norm:
        mean, std = np.asarray(norm["mean"], float), np.asarray(norm["std"], float)
        return list((0 - mean) / std), list((1 - mean) / std)
    return [-1.0] * graph.input_shape[0], [1.0] * graph.input_shape[0]


def _quantize_input_layer(lay, input_range: tuple[Sequence[float], Sequence[float]], config: QuantConfig,
                          vth_cap: int) -> tuple[_Quantized, InputDrive]:
    """Input layer: σ from the worst-case drive and the θ cap; weights follow at that σ."""
    if lay.neuron is None:
        raise QuantizationError("the first layer has no neuron: nothing to inject the input into")
    w, b, theta = lay.weight, lay.bias, lay.neuron.theta
    bound = drive_bound(w, b, *input_range)
    scale = min(config.drive_limit / bound if bound > 0 else math.inf, (vth_cap - 1) / theta)
    scale, vth = exact_theta_scale(theta, scale)
    k = _smallest_exponent(w * scale)
    wq, clipped = quantize_weights(w, scale, k)
    bq = np.rint(b * scale).astype(np.int64)
    drive_max = int(math.ceil(bound * scale))
    q = _Quantized(_Choice(scale, k, wq, clipped, vth, bq, []), w * scale, "input drive", theta, drive_max, drive_max,
                   quantize_v_init(lay.neuron.v0_frac, vth))
    return q, InputDrive(w * scale, b * scale, config.drive_limit)


def _quantize_shortcuts(lay, qskips: Sequence[np.ndarray], skip_eff: Sequence[np.ndarray], scale: float,
                        layers: list[QLayer], idx: int, offset: int, config: QuantConfig
                        ) -> tuple[tuple[QSkip, ...], list[str]]:
    """The layer's shortcuts as :class:`QSkip` (sources shifted by ``offset`` dropped layers, delays
    from :func:`skip_delay`), and a warning for each whose RMS weight error exceeds ``config.rms_tol``."""
    out, warn = [], []
    here = layers + [QLayer(lay.kind, lay.name, lay.in_shape, lay.out_shape)]
    for sk, q, ws in zip(lay.skips, qskips, skip_eff):
        src = sk.source - offset
        out.append(QSkip(sk.name, src, q, sk.stride, sk.padding, sk.dilation, sk.groups, skip_delay(here, src, idx)))
        s_err = _errors(q, ws * scale)[1]
        if s_err > config.rms_tol:
            warn.append(f"shortcut {sk.name}: RMS weight error {100 * s_err:.1f}%")
    return tuple(out), warn


def _quantize_layer(graph, lay, theta_prev: float, config: QuantConfig, vth_cap: int, layers: list[QLayer],
                    offset: int) -> _Quantized:
    """A hidden or readout layer: :func:`_choose` its scale and exponent, with its shortcuts."""
    w_eff = lay.weight * theta_prev
    readout = lay.neuron is None
    max_k = DENSE_MAX_EXPONENT if lay.kind == "dense" else config.max_exponent
    # A shortcut carries its source layer's spikes (θ_source each), into the same neurons (σ_l).
    skip_eff = [sk.weight * graph.layers[sk.source].neuron.theta for sk in lay.skips]
    c = _choose(w_eff, lay.bias, None if readout else lay.neuron.theta, 0 if readout else max_k, vth_cap,
                OUTPUT_VTH if readout else INPUT_LIMIT, config.weight_clip, lay.name, skip_eff)
    hi, lo = worst_case_input(c.wq, c.bias, c.skips)
    qskips, warn = _quantize_shortcuts(lay, c.skips, skip_eff, c.scale, layers, len(layers), offset, config)
    return _Quantized(c, w_eff * c.scale,
                      "readout" if readout else "hidden", float("nan") if readout else lay.neuron.theta,
                      int(np.abs(c.bias).max(initial=0)), int(max(hi.max(), -lo.min())),
                      0 if readout else quantize_v_init(lay.neuron.v0_frac, c.vth), qskips, warn)


def _report(idx: int, lay, q: _Quantized, config: QuantConfig, vth_cap: int) -> LayerReport:
    """The layer's report row: weight and θ rounding errors, mantissa use, and warnings."""
    c = q.choice
    max_err, rms_err = _errors(c.wq, q.ref)
    mant = int(np.abs(c.wq >> c.exponent).max())
    scaled_theta = q.theta * c.scale
    th_err = abs(c.vth - scaled_theta) / scaled_theta if not math.isnan(q.theta) else 0.0
    warn = list(q.warnings)
    if c.clipped > 0:
        warn.append(f"{100 * c.clipped:.2f}% of weights clipped")
    if rms_err > config.rms_tol:
        warn.append(f"RMS weight error {100 * rms_err:.1f}% > {100 * config.rms_tol:.1f}%")
    if mant < 64:
        warn.append(f"only {mant.bit_length() + 1} mantissa bits used")
    if th_err > config.theta_tol:
        warn.append(f"θ rounding error {100 * th_err:.1f}%")
    if q.role == "hidden" and c.vth > vth_cap:
        warn.append(f"v saturates {VTH_MAX / c.vth:.1f}·θ below zero (< {config.v_headroom:g}·θ headroom)")
    v_init = int(np.rint(np.mean(q.v_init))) if isinstance(q.v_init, np.ndarray) else int(q.v_init)
    return LayerReport(idx, lay.name, lay.kind, q.role, float(c.scale), int(c.exponent), mant, float(c.clipped),
                       max_err, rms_err, float(q.theta), int(c.vth), v_init, float(th_err), q.bias_max, q.input_max,
                       tuple(warn))


def quantize(graph, input_range: tuple[Sequence[float], Sequence[float]] | None = None,
             config: QuantConfig = QuantConfig(), metadata: dict[str, Any] | None = None) -> QNetwork:
    """Quantize a :class:`~netx_export.convert.ir.Graph` (duck-typed: this module does not import torch).

    ``input_range`` = (lo, hi) per input channel of the normalised image, for the first-layer drive
    bound; default: the pixel box [0, 1] after ``metadata['normalization']`` (mean, std), else [−1, 1].
    """
    meta = dict(metadata or {})
    if len([lay for lay in graph.layers if lay.kind != "flatten"]) < 2:
        raise QuantizationError("the network needs at least two synaptic layers (input and readout)")
    if input_range is None:
        input_range = _default_input_range(graph, meta)
    vth_cap = int(VTH_MAX // config.v_headroom)
    layers: list[QLayer] = []
    reports: list[LayerReport] = []
    drive: InputDrive | None = None
    theta_prev: float | None = None
    skip_leading_flatten = graph.layers[0].kind == "flatten"   # an MLP's input flatten happens on the host
    for lay in graph.layers[1:] if skip_leading_flatten else graph.layers:
        if lay.kind == "flatten":
            layers.append(QLayer("flatten", lay.name, lay.in_shape, lay.out_shape))
            continue
        if drive is None:
            q, drive = _quantize_input_layer(lay, input_range, config, vth_cap)
        else:
            q = _quantize_layer(graph, lay, theta_prev, config, vth_cap, layers, int(skip_leading_flatten))
        geo = dict(stride=lay.stride, padding=lay.padding, dilation=lay.dilation, groups=lay.groups) \
            if lay.kind == "conv" else {}
        reports.append(_report(len(layers), lay, q, config, vth_cap))
        layers.append(QLayer(lay.kind, lay.name, lay.in_shape, lay.out_shape, q.choice.wq, q.choice.bias,
                             neuron=QNeuron(q.choice.vth, q.v_init), skips=q.skips, **geo))
        theta_prev = None if lay.neuron is None else lay.neuron.theta
    assert drive is not None
    meta.update(L=int(graph.L), phi=float(graph.phi), recommended_T=int(config.recommended_T),
                input_range=[list(map(float, input_range[0])), list(map(float, input_range[1]))],
                readout="summed input = vThMant * spike count + v (vInit 0), per step",
                v_headroom=float(config.v_headroom))
    return QNetwork(tuple(int(s) for s in graph.input_shape),  # type: ignore[arg-type]
                    tuple(layers), drive, meta, tuple(reports))


# --------------------------------------------------------------------------- host-side input
@dataclass(frozen=True, eq=False)
class DriveResult:
    drive: np.ndarray               # int64 (N, C0, H0, W0): per-step bias of layer 0's neurons
    clipped: int                    # entries beyond ±limit, clipped
    total: int

    @property
    def clipped_fraction(self) -> float:
        return self.clipped / max(1, self.total)


def input_drive(net: QNetwork, x: np.ndarray) -> DriveResult:
    """Layer 0's per-step bias for normalised images ``x`` (N, C, H, W): ``round(conv(x, σW_0) + σb_0)``,
    clipped to ±limit (13-bit bias mantissa on hardware); clipped entries are counted, not hidden."""
    first = net.synaptic[0]
    x = np.asarray(x, dtype=np.float64)
    if tuple(x.shape[1:]) != tuple(net.input_shape):
        raise ValueError(f"input shape {tuple(x.shape[1:])} != network input {tuple(net.input_shape)}")
    if first.kind == "conv":
        d = conv2d(x, net.drive.weight, first.stride, first.padding, first.dilation, first.groups)
        d += net.drive.bias.reshape(1, -1, 1, 1)
    else:
        d = (dense(x, net.drive.weight) + net.drive.bias).reshape(x.shape[0], *first.shape)
    q = np.rint(d).astype(np.int64)
    lim = net.drive.limit
    over = int(np.count_nonzero(np.abs(q) > lim))
    return DriveResult(np.clip(q, -lim, lim), over, int(q.size))


# --------------------------------------------------------------------------- report
def format_report(report: Sequence[LayerReport]) -> str:
    """The per-layer table printed by ``qcfs2lava export``."""
    head = (f"{'#':>2} {'layer':<14} {'kind':<5} {'role':<11} {'scale':>9} {'k':>2} {'|m|':>4} {'clip%':>6} "
            f"{'maxerr%':>7} {'rms%':>6} {'θ':>7} {'vThMant':>7} {'v(0)':>6} {'|bias|':>6} {'max|in|':>7}")
    rows = [head]
    for r in report:
        th = "-" if math.isnan(r.theta) else f"{r.theta:.3f}"
        rows.append(f"{r.index:>2} {r.name[-14:]:<14} {r.kind:<5} {r.role:<11} {r.scale:9.3f} {r.exponent:>2} "
                    f"{r.mantissa_max:>4} {100 * r.clipped_fraction:6.2f} {100 * r.max_rel_error:7.3f} "
                    f"{100 * r.rms_rel_error:6.3f} {th:>7} {r.vth:>7} {r.v_init:>6} {r.bias_max:>6} "
                    f"{r.input_max:>7}")
        for w in r.warnings:
            rows.append(f"   warning: layer {r.index} ({r.name}): {w}")
    return "\n".join(rows)
