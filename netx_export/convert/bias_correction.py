"""Bias correction: remove the mean shift that 8-bit weight rounding adds to every neuron's input.

Rounding ``σ·W·θ`` to 8-bit mantissas leaves an error ΔW = W_q − σ·W·θ per weight (1–1.5 % RMS for
CIFAR-sized layers). Per step, neuron c of layer l then integrates an extra ``Σ_i ΔW_ci·s_i``; its
expectation over the data, ``Σ_i ΔW_ci·E[s_i]``, is a systematic offset that moves every floor
boundary of eq. 15 the same way, for every sample. Subtracting it from the per-step bias removes
it (the bias correction of Nagel et al., ICCV 2019, "Data-free quantization", eq. 6, with the
expectation measured on data instead of estimated from BatchNorm):

    b_q ← b_q − round(mean_positions(ΔW ⊛ E[s_{l−1}]))

E[s_{l−1}] is the spike rate of the previous layer, which QCFS makes equal in expectation to the
ANN's activation divided by θ (the paper's Theorem 2), so it is measured with the folded graph's
ANN forward pass on a few hundred training images. Conv biases are per channel, so the correction
is averaged over output positions (borders with zero padding see slightly less input). The input
layer needs none: its drive is computed on the host with float weights.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from netx_export.convert.conv import conv2d, dense
from netx_export.errors import QuantizationError
from netx_export.convert.fixedpoint import BIAS_MAX, INPUT_LIMIT, OUTPUT_VTH, QNetwork, worst_case_input
from netx_export.convert.graph import graph_forward
from netx_export.convert.ir import Graph, Layer

__all__ = ["BiasCorrection", "input_rates", "bias_correction"]


@dataclass(frozen=True)
class BiasCorrection:
    """Per synaptic layer: the integer correction added to its bias (weight units)."""
    name: str
    max_abs: int
    mean_abs: float
    relative_to_vth: float          # max |correction| / vThMant: how far the uncorrected boundaries moved


def input_rates(graph: Graph, x: torch.Tensor, batch: int = 100) -> list[np.ndarray]:
    """E[s] at the input of every synaptic layer after the first (shape = the layer's ``in_shape``):
    the ANN activation of the previous neuron layer over its θ, averaged over the images ``x``."""
    syn = graph.synaptic
    thetas = {id(nxt): prev.neuron.theta for prev, nxt in zip(syn, syn[1:]) if prev.neuron is not None}
    sums: dict[int, np.ndarray] = {}

    def add(lay: Layer, h: torch.Tensor) -> None:
        if id(lay) in thetas:
            m = (h / thetas[id(lay)]).sum(0).reshape(lay.in_shape).numpy()
            sums[id(lay)] = sums.get(id(lay), 0) + m

    for i in range(0, len(x), batch):
        graph_forward(graph, x[i:i + batch], on_input=add)
    return [sums[id(lay)] / len(x) for lay in syn[1:]]


def bias_correction(graph: Graph, net: QNetwork, rates: list[np.ndarray]) -> tuple[QNetwork, list[BiasCorrection]]:
    """``net`` with every layer's bias (after the first) corrected for the mean weight-rounding error
    of its synapse and of its residual shortcuts (whose input rate is their source layer's output)."""
    gsyn, qsyn = graph.synaptic, net.synaptic
    if len(gsyn) != len(qsyn) or len(rates) != len(qsyn) - 1:
        raise ValueError("graph, network and rates do not match")
    syn_pos = {i: k for k, i in enumerate(i for i, lay in enumerate(net.layers) if lay.kind != "flatten")}
    corrected = {}
    out: list[BiasCorrection] = []
    theta_prev = gsyn[0].neuron.theta if gsyn[0].neuron else None
    for g, q, rep, r in zip(gsyn[1:], qsyn[1:], net.report[1:], rates):
        ref = g.weight * rep.scale * theta_prev
        dw = q.weight.astype(np.float64) - ref
        if q.kind == "conv":
            shift = conv2d(r[None], dw, q.stride, q.padding, q.dilation, q.groups)[0].mean(axis=(1, 2))
        else:
            shift = dense(r.reshape(1, -1), dw)[0]
        for gs, qs in zip(g.skips, q.skips):
            k = syn_pos[qs.source]
            dws = qs.weight.astype(np.float64) - gs.weight * rep.scale * gsyn[k].neuron.theta
            shift = shift + conv2d(rates[k][None], dws, qs.stride, qs.padding, qs.dilation, qs.groups)[0].mean(
                axis=(1, 2))
        corr = -np.rint(shift).astype(np.int64)
        bias = q.bias + corr
        hi, lo = worst_case_input(q.weight, bias, [qs.weight for qs in q.skips])
        limit = OUTPUT_VTH if rep.role == "readout" else INPUT_LIMIT
        if np.abs(bias).max(initial=0) > BIAS_MAX or hi.max() >= limit or lo.min() <= -limit:
            raise QuantizationError(f"layer {q.name}: bias correction would break Loihi's bias or input limits")
        corrected[id(q)] = dataclasses.replace(q, bias=bias)
        out.append(BiasCorrection(q.name, int(np.abs(corr).max(initial=0)), float(np.abs(corr).mean()),
                                  float(np.abs(shift).max() / q.neuron.vth)))
        theta_prev = g.neuron.theta if g.neuron else None
    layers = tuple(corrected.get(id(lay), lay) for lay in net.layers)
    return dataclasses.replace(net, layers=layers), out
