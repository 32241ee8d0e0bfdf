"""Operation counts and energy per classified sample: the QCFS ANN against its fixed-point SNN.

The paper's method (Bu et al. 2022, appendix A.8 and Table S5, following Merolla et al. 2014):
the ANN costs FLOPs, the SNN synaptic operations (SOPs), priced at the ROLLS figures the paper
uses (Qiao et al. 2015), memory access not counted:

    E_ANN = FLOPs × 12.5 pJ,        E_SNN = SOPs × 77 fJ.

Conventions (ours; the paper does not spell them out):

* **MACs / FLOPs.** One ANN forward pass: a conv layer costs C_out·H_out·W_out·(C_in/g)·kH·kW MACs
  (every kernel tap, zero padding included, as PyTorch profilers count), a dense layer N_out·N_in;
  FLOPs = 2·MACs (a multiply and an add). This reproduces Table S5's ANN column: the 13 conv
  layers of VGG-16 at 32×32 px give 2 × 0.3132 G = 0.626 GFLOP against the table's 0.628
  (``tests/test_energy.py``). BatchNorm, activations and pooling are not counted. Callers with
  the PyTorch model pass its MACs (``ann_macs``): exported layers have pooling folded into the
  next synapse (a 2×2 AvgPool before a 3×3 conv becomes a 6×6 stride-2 conv), which would count
  the ANN 4× too expensive there.
* **Fan-out** of a presynaptic neuron: the synapses one of its spikes drives, counted exactly per
  input position (a conv's edge pixels reach fewer outputs; zero padding is no synapse); for a
  conv that is (C_out/g)·(taps covering the row)·(taps covering the column) ≈ C_out·kH·kW/stride².
* **SOPs** of layer l = Σ over the neurons of layer l−1 of spikes × fan-out. Exact when per-neuron
  spike counts are given; from a layer total it uses the mean fan-out (exact for dense layers,
  and for convs when spikes are spread evenly). Counted over all T steps, per sample.
* **The first layer** receives the analog image, which is constant: the host computes its drive
  ``conv(x, W₀)`` once per sample (``fixedpoint.input_drive``) and the chip adds it as a bias every
  step. So it costs layer 0's MACs once, priced like the ANN (``host_flops × 12.5 pJ``), and no
  SOPs. The SNN total is SOP energy + host energy.
* **Latency.** On Loihi every synapse delays a spike by one step, and the first layer has none
  (it is driven by its bias): a readout over T steps needs T + (synaptic layers − 1) steps
  (``refsim`` "lava" timing).

Loihi estimate (labelled *estimate* everywhere it is shown): figures measured/simulated for the
first Loihi chip, Davies et al. 2018, "Loihi: A Neuromorphic Manycore Processor with On-Chip
Learning", IEEE Micro 38(1), Table 2: energy per synaptic spike op (min) 23.6 pJ; energy per
neuron update (active / inactive) 81 pJ / 52 pJ; within-tile spike energy 1.7 pJ. We charge
every SOP 23.6 pJ (a minimum), every neuron every step a neuron update (81 pJ in the steps it
fires, 52 pJ otherwise: our reading of active/inactive) and every spike 1.7 pJ (tile hops,
3.0-4.0 pJ each in the same table, are not counted: they depend on placement). Loihi 2 has no
published per-operation figures we can cite; host I/O, static power and the input drive are
not in this estimate.

Numpy only, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from netx_export.convert.fixedpoint import QLayer, QNetwork, QSkip

__all__ = ["PAPER_FLOP_J", "PAPER_SOP_J", "LOIHI_SOP_J", "LOIHI_NEURON_ACTIVE_J", "LOIHI_NEURON_INACTIVE_J",
           "LOIHI_SPIKE_J", "taps_per_position", "fan_out", "layer_macs", "algorithmic_latency", "LayerCost",
           "EnergyTable", "energy_table", "format_energy", "format_joules"]

PAPER_FLOP_J = 12.5e-12        # J per ANN FLOP (Bu et al. 2022 A.8, from ROLLS, Qiao et al. 2015)
PAPER_SOP_J = 77e-15           # J per SNN synaptic operation (same source)
LOIHI_SOP_J = 23.6e-12         # Davies et al. 2018, Table 2: energy per synaptic spike op (min)
LOIHI_NEURON_ACTIVE_J = 81e-12     # Davies et al. 2018, Table 2: neuron update, active
LOIHI_NEURON_INACTIVE_J = 52e-12   # Davies et al. 2018, Table 2: neuron update, inactive
LOIHI_SPIKE_J = 1.7e-12        # Davies et al. 2018, Table 2: within-tile spike energy


# --------------------------------------------------------------------------- geometry
def taps_per_position(size: int, out_size: int, kernel: int, stride: int, padding: int, dilation: int
                      ) -> np.ndarray:
    """For each of the ``size`` input positions along one axis, how many (output position, kernel
    tap) pairs read it: ``#{(o, k): o·stride − padding + k·dilation = i}``. Padding reads nothing."""
    counts = np.zeros(size, dtype=np.int64)
    o = np.arange(out_size)
    for k in range(kernel):
        i = o * stride - padding + k * dilation
        np.add.at(counts, i[(i >= 0) & (i < size)], 1)
    return counts


def fan_out(layer: QLayer) -> np.ndarray:
    """Synapses driven by one spike of each presynaptic neuron, shaped like ``layer.in_shape``."""
    if layer.kind == "dense":
        return np.full(tuple(layer.in_shape), int(np.prod(layer.shape)), dtype=np.int64)
    if layer.kind != "conv" or layer.weight is None:
        raise ValueError(f"layer {layer.name} ({layer.kind}) has no synapses")
    c_in, h, w = layer.in_shape
    c_out, ho, wo = layer.shape
    kh, kw = layer.weight.shape[2:]
    rows = taps_per_position(h, ho, kh, layer.stride[0], layer.padding[0], layer.dilation[0])
    cols = taps_per_position(w, wo, kw, layer.stride[1], layer.padding[1], layer.dilation[1])
    per_channel = (c_out // layer.groups) * np.outer(rows, cols)
    return np.broadcast_to(per_channel, (c_in, h, w)).astype(np.int64)


def shortcut_layer(sk: QSkip, source: QLayer, target: QLayer) -> QLayer:
    """A residual shortcut as the conv layer it is (for counting its synapses and MACs)."""
    return QLayer("conv", sk.name, tuple(source.shape), tuple(target.shape), sk.weight, None, sk.stride, sk.padding,
                  sk.dilation, sk.groups)


def layer_macs(layer: QLayer) -> int:
    """Multiply-accumulates of one forward pass through ``layer`` (every kernel tap, padding included)."""
    if layer.kind == "dense":
        return int(np.prod(layer.shape)) * int(np.prod(layer.in_shape))
    if layer.kind == "conv" and layer.weight is not None:
        return int(np.prod(layer.shape)) * int(np.prod(layer.weight.shape[1:]))
    return 0


def algorithmic_latency(T: int, synaptic_layers: int) -> int:
    """Steps from the first input to the readout of T steps on Loihi: T + (synaptic layers − 1),
    one synaptic delay per layer after the bias-driven first one."""
    return int(T) + max(0, int(synaptic_layers) - 1)


# --------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class LayerCost:
    """One synaptic layer, per classified sample (spikes and SOPs summed over the T steps)."""
    index: int                  # position in QNetwork.layers (as LayerReport.index)
    name: str
    kind: str
    neurons: int
    synapses: int               # connections (padding taps excluded)
    fan_out: float              # mean synapses per presynaptic spike into this layer (0: analog input)
    macs: int                   # ANN MACs of one forward pass
    spikes_in: float            # presynaptic spikes (NaN for the first layer: analog input)
    spikes_out: float
    sops: float                 # synaptic operations driven by spikes_in
    exact: bool                 # SOPs from per-neuron spike counts (else from the mean fan-out)

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True)
class EnergyTable:
    """Costs of one classified sample: per layer, totals, and energies in joules."""
    layers: tuple[LayerCost, ...]
    T: int
    macs_source: str            # "PyTorch model" or "exported layers (pooling folded)"

    @property
    def ann_macs(self) -> int:
        return sum(c.macs for c in self.layers)

    @property
    def ann_flops(self) -> int:
        return 2 * self.ann_macs

    @property
    def host_flops(self) -> int:
        """The first layer's drive, computed once on the host."""
        return self.layers[0].flops if self.layers else 0

    @property
    def sops(self) -> float:
        return float(sum(c.sops for c in self.layers))

    @property
    def spikes(self) -> float:
        return float(sum(c.spikes_out for c in self.layers))

    @property
    def neuron_updates(self) -> int:
        return self.T * sum(c.neurons for c in self.layers)

    @property
    def latency_steps(self) -> int:
        return algorithmic_latency(self.T, len(self.layers))

    @property
    def ann_energy_j(self) -> float:
        return self.ann_flops * PAPER_FLOP_J

    @property
    def sop_energy_j(self) -> float:
        return self.sops * PAPER_SOP_J

    @property
    def host_energy_j(self) -> float:
        return self.host_flops * PAPER_FLOP_J

    @property
    def snn_energy_j(self) -> float:
        """The paper's pricing: SOPs × 77 fJ, plus the host-side first layer at 12.5 pJ/FLOP."""
        return self.sop_energy_j + self.host_energy_j

    @property
    def loihi_estimate_j(self) -> float:
        """On-chip estimate from Davies et al. 2018 Table 2 (see the module docstring)."""
        quiet = self.neuron_updates - self.spikes
        return (self.sops * LOIHI_SOP_J + self.spikes * (LOIHI_NEURON_ACTIVE_J + LOIHI_SPIKE_J)
                + quiet * LOIHI_NEURON_INACTIVE_J)


def _total_and_exact(spikes: np.ndarray | float, shape: tuple[int, ...], name: str) -> tuple[float, np.ndarray | None]:
    a = np.asarray(spikes, dtype=np.float64)
    if a.ndim == 0:
        return float(a), None
    if a.size != int(np.prod(shape)):
        raise ValueError(f"layer {name}: {a.size} spike counts for {int(np.prod(shape))} neurons")
    return float(a.sum()), a.reshape(-1)


def energy_table(net: QNetwork, spikes: Sequence[np.ndarray | float], T: int,
                 ann_macs: Sequence[int] | None = None) -> EnergyTable:
    """Per-layer costs of one sample through ``net`` run for ``T`` steps.

    ``spikes[j]`` is synaptic layer j's mean spike count per sample over the T steps: an array of
    the layer's shape (per neuron: exact SOPs) or one number (whole layer: mean fan-out).
    ``ann_macs[j]``: the source ANN's MACs for that layer (default: the exported layer's own)."""
    syn = net.synaptic
    position = {id(lay): i for i, lay in enumerate(net.layers)}
    if len(spikes) != len(syn):
        raise ValueError(f"{len(spikes)} spike counts for {len(syn)} synaptic layers")
    if ann_macs is not None and len(ann_macs) != len(syn):
        raise ValueError(f"{len(ann_macs)} ANN MAC counts for {len(syn)} synaptic layers")
    if T < 1:
        raise ValueError("T must be >= 1")
    rows: list[LayerCost] = []
    prev: tuple[float, np.ndarray | None] | None = None
    outs: list[tuple[float, np.ndarray | None]] = []
    syn_pos = {position[id(lay)]: j for j, lay in enumerate(syn)}
    for j, lay in enumerate(syn):
        neurons = int(np.prod(lay.shape))
        fo = fan_out(lay)
        inputs = int(fo.size)
        synapses = int(fo.sum())
        macs = int(ann_macs[j]) if ann_macs is not None else layer_macs(lay)
        out = _total_and_exact(spikes[j], tuple(lay.shape), lay.name)
        if prev is None:    # analog input: host-computed drive, no synaptic events
            spikes_in, sops, exact, mean_fo = math.nan, 0.0, True, 0.0
        else:
            spikes_in, per_neuron = prev
            mean_fo = synapses / inputs
            if per_neuron is not None:
                if per_neuron.size != inputs:
                    raise ValueError(f"layer {lay.name}: {inputs} inputs but {per_neuron.size} presynaptic neurons")
                sops, exact = float(per_neuron @ fo.reshape(-1).astype(np.float64)), True
            else:
                sops, exact = spikes_in * mean_fo, lay.kind == "dense"
        for sk in lay.skips:            # a shortcut's synapses are driven by its source layer's spikes
            sfo = fan_out(shortcut_layer(sk, net.layers[sk.source], lay))
            s_total, s_per = outs[syn_pos[sk.source]]
            synapses += int(sfo.sum())
            if ann_macs is None:
                macs += layer_macs(shortcut_layer(sk, net.layers[sk.source], lay))
            if s_per is not None:
                sops += float(s_per @ sfo.reshape(-1).astype(np.float64))
            else:
                sops, exact = sops + s_total * float(sfo.sum()) / sfo.size, False
        rows.append(LayerCost(position[id(lay)], lay.name, lay.kind, neurons, synapses, float(mean_fo), macs,
                              spikes_in, out[0], sops, exact))
        prev = out
        outs.append(out)
    src = "PyTorch model" if ann_macs is not None else "exported layers (pooling folded)"
    return EnergyTable(tuple(rows), int(T), src)


# --------------------------------------------------------------------------- text
def format_joules(e: float) -> str:
    """Engineering units: 7.85 mJ, 7.2 µJ, 340 nJ, 12 pJ."""
    if not math.isfinite(e):
        return "-"
    for unit, scale in (("J", 1.0), ("mJ", 1e-3), ("µJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(e) >= scale:
            return f"{e / scale:.3g} {unit}"
    return f"{e / 1e-15:.3g} fJ"


def _count(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def format_energy(table: EnergyTable) -> str:
    """The per-layer table and the totals, as printed by ``qcfs2lava report``."""
    head = (f"{'#':>2} {'layer':<14} {'kind':<5} {'neurons':>8} {'synapses':>9} {'fan-out':>8} {'ANN MACs':>9} "
            f"{'spikes in':>9} {'SOPs':>9} {'spikes out':>10}")
    lines = [head]
    for j, c in enumerate(table.layers):
        fo = "analog" if j == 0 else f"{c.fan_out:.1f}"
        lines.append(f"{c.index:>2} {c.name[-14:]:<14} {c.kind:<5} {c.neurons:>8} {_count(c.synapses):>9} {fo:>8} "
                     f"{_count(c.macs):>9} {_count(c.spikes_in):>9} {_count(c.sops):>9} {_count(c.spikes_out):>10}"
                     + ("" if c.exact else "  (mean fan-out)"))
    t = table
    ratio = f" ({t.ann_energy_j / t.snn_energy_j:.3g}× less than the ANN)" if t.snn_energy_j > 0 else ""
    lines.append(f"per sample, T={t.T}: ANN {_count(t.ann_flops)} FLOP ({_count(t.ann_macs)} MAC, {t.macs_source}) "
                 f"→ {format_joules(t.ann_energy_j)} at 12.5 pJ/FLOP")
    lines.append(f"SNN {_count(t.sops)} SOP → {format_joules(t.sop_energy_j)} at 77 fJ/SOP, + first layer on the "
                 f"host {_count(t.host_flops)} FLOP → {format_joules(t.host_energy_j)}; total "
                 f"{format_joules(t.snn_energy_j)}{ratio}")
    lines.append(f"Loihi estimate (Davies et al. 2018 figures, on chip): {format_joules(t.loihi_estimate_j)} "
                 f"({_count(t.sops)} SOP × 23.6 pJ, {_count(t.neuron_updates)} neuron updates × 52/81 pJ, "
                 f"{_count(t.spikes)} spikes × 1.7 pJ)")
    lines.append(f"algorithmic latency on Loihi: {t.latency_steps} steps (T={t.T} + {len(t.layers) - 1} synaptic "
                 "delays)")
    return "\n".join(lines)
