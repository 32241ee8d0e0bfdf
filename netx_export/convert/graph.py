"""Operations on a traced :class:`~netx_export.convert.ir.Graph`: its ANN forward pass, the check
against the PyTorch model, and the application of a low-latency SNN calibration.

The graph itself is defined in :mod:`netx_export.convert.ir` and built by
:func:`netx_export.convert.trace.trace`.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from qcfs2lava.qcfs import qcfs

from netx_export.convert.ir import Conv, Dense, Flatten, Graph, Layer, Neuron, Skip
from netx_export.errors import ExportError

__all__ = ["layer_forward", "skip_forward", "graph_forward", "check_graph", "apply_low_latency_calibration"]


# --------------------------------------------------------------------------- forward
def layer_forward(lay: Layer, x: torch.Tensor) -> torch.Tensor:
    """The layer's synaptic current ``W·x + b`` (a flatten just reshapes)."""
    if isinstance(lay, Conv):
        return F.conv2d(x, torch.from_numpy(lay.weight), torch.from_numpy(lay.bias), lay.stride, lay.padding,
                        lay.dilation, lay.groups)
    if isinstance(lay, Dense):
        return F.linear(x.flatten(1), torch.from_numpy(lay.weight), torch.from_numpy(lay.bias))
    return x.flatten(1)


def skip_forward(skip: Skip, x: torch.Tensor) -> torch.Tensor:
    """The shortcut's contribution to its layer's current (no bias: that is in the layer's bias)."""
    return F.conv2d(x, torch.from_numpy(skip.weight).to(x.dtype), None, skip.stride, skip.padding, skip.dilation,
                    skip.groups)


@torch.no_grad()
def graph_forward(graph: Graph, x: torch.Tensor,
                  on_input: Callable[[Layer, torch.Tensor], None] | None = None) -> torch.Tensor:
    """The graph as an ANN (float64): every neuron is the QCFS activation of eq. 15,
    ``λ·clip(⌊z·L/λ + φ⌋/L, 0, 1)`` (:func:`qcfs2lava.qcfs.qcfs`, λ = θ).
    ``on_input(layer, h)`` sees every layer's input (the spike rates of bias correction); shortcut inputs are the
    outputs of their source layers. Residual layers add their :class:`Skip` currents before the neuron."""
    h = x.double()
    sources = {sk.source for lay in graph.layers for sk in getattr(lay, "skips", ())}
    kept: dict[int, torch.Tensor] = {}
    for i, lay in enumerate(graph.layers):
        if on_input is not None:
            on_input(lay, h)
        z = layer_forward(lay, h)
        for sk in getattr(lay, "skips", ()):
            z = z + skip_forward(sk, kept[sk.source])
        h = z
        if not isinstance(lay, Flatten) and lay.neuron is not None:
            h = qcfs(h, lay.neuron.theta, graph.L, graph.phi)
        if i in sources:
            kept[i] = h
    return h


@torch.no_grad()
def check_graph(model: nn.Module, graph: Graph, x: torch.Tensor) -> float:
    """Max |logit difference| between the model and its graph on ``x`` (both run in float64)."""
    m = copy.deepcopy(model).double().eval()
    return float((m(x.double()) - graph_forward(graph, x)).abs().max())


# --------------------------------------------------------------------------- low-latency calibration
def _neuron_owners(graph: Graph) -> dict[str, int]:
    """QCFS module name → index of the synaptic layer whose neuron it became."""
    owner: dict[str, int] = {}
    for i, lay in enumerate(graph.layers):
        if not isinstance(lay, Flatten) and lay.neuron is not None:
            for part in lay.name.split("+"):
                owner[part] = i
    return owner


def _calibrated(name: str, v0: float | np.ndarray, bias: np.ndarray, d: dict[str, Sequence[float]]
                ) -> tuple[np.ndarray, float | np.ndarray]:
    """(bias + δ, per-channel v(0)/θ) of one neuron layer from its calibration entry ``d``."""
    c = bias.shape[0]
    if d.get("bias") is not None:
        shift = np.asarray(d["bias"], dtype=np.float64).reshape(-1)
        if shift.shape != (c,):
            raise ExportError(f"calibration of {name}: {shift.size} bias shifts for {c} channels")
        bias = bias + shift
    if d.get("v0_frac") is not None:
        v0 = np.asarray(d["v0_frac"], dtype=np.float64).reshape(-1)
        if v0.shape != (c,):
            raise ExportError(f"calibration of {name}: {v0.size} initial potentials for {c} channels")
        if np.any(v0 < 0) or np.any(v0 >= 1):
            raise ExportError(f"calibration of {name}: v(0)/θ outside [0, 1)")
    return bias, v0


def apply_low_latency_calibration(graph: Graph, calibration: dict[str, dict[str, Sequence[float]]]) -> Graph:
    """``graph`` with a low-latency SNN calibration applied (:mod:`qcfs2lava.low_latency`): for each QCFS
    module name in ``calibration``, the synaptic layer that owns that neuron gets its per-channel bias
    shift δ added to the folded bias (the same float units: the QCFS input) and its per-channel
    v(0)/θ. Layers not named keep their bias and scalar φ; the fold checks are not repeated (the
    calibrated layer deliberately differs from the PyTorch ANN)."""
    owner = _neuron_owners(graph)
    missing = sorted(set(calibration) - set(owner))
    if missing:
        raise ExportError(f"calibration names {', '.join(missing)}, which are not neurons of the traced graph")
    layers = list(graph.layers)
    for name, d in calibration.items():
        i = owner[name]
        lay = layers[i]
        assert not isinstance(lay, Flatten) and lay.neuron is not None
        bias, v0 = _calibrated(name, lay.neuron.v0_frac, lay.bias, d)
        layers[i] = dataclasses.replace(lay, bias=bias, neuron=Neuron(lay.neuron.theta, v0))
    return dataclasses.replace(graph, layers=tuple(layers))
