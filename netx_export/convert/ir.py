"""The exporter's float graph IR: a QCFS network as a flat, typed list of NetX layers.

NetX wires layers strictly in sequence and knows only ``conv``, ``flatten`` and ``dense`` (plus
``input``), each synaptic layer owning one neuron population; residual networks add :class:`Skip`
shortcuts into a layer's neurons (format extension, docs/residual.md). :mod:`netx_export.convert.trace`
builds a :class:`Graph` from a PyTorch model, :mod:`netx_export.convert.graph` runs and checks it, and
:mod:`netx_export.convert.fixedpoint` quantizes it.

Weights are float64 numpy arrays in PyTorch layout: conv ``[C_out, C_in/groups, kH, kW]``,
dense ``[N_out, N_in]`` with N_in in PyTorch's (C, H, W) flatten order. Shapes are (C, H, W).
This module is numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

__all__ = ["Shape", "Pair", "Neuron", "Skip", "Conv", "Dense", "Flatten", "Layer", "Graph", "shape_in"]

Shape = tuple[int, int, int]
Pair = tuple[int, int]


def shape_in(s: Sequence[int]) -> Shape:
    """``s`` as a (C, H, W) tuple of ints."""
    return (int(s[0]), int(s[1]), int(s[2]))


@dataclass(frozen=True)
class Neuron:
    """Integrate-and-fire neuron with reset by subtraction (the paper's eq. 2-4): fires when v ≥ θ,
    v(0) = v0_frac·θ; by Theorem 2, θ = λ and v(0) = φ·θ for the QCFS activation it replaces.

    ``v0_frac`` is one float for the layer (φ), or a float64 array with one value per output
    channel (per neuron for dense layers) after a low-latency calibration
    (:func:`netx_export.convert.graph.apply_low_latency_calibration`)."""
    theta: float
    v0_frac: float | np.ndarray

    @property
    def per_channel(self) -> bool:
        return isinstance(self.v0_frac, np.ndarray)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Neuron):
            return NotImplemented
        return self.theta == other.theta and np.array_equal(np.asarray(self.v0_frac), np.asarray(other.v0_frac)) \
            and self.per_channel == other.per_channel

    def __hash__(self) -> int:
        v0 = tuple(np.asarray(self.v0_frac).reshape(-1).tolist()) if self.per_channel else self.v0_frac
        return hash((self.theta, v0))


@dataclass(frozen=True, eq=False)
class Skip:
    """A residual shortcut into a layer's neurons: a conv on the output of the earlier neuron layer
    ``source`` (an index into ``Graph.layers``), summed into the current with the layer's own synapse,
    as the ANN adds before its activation. An identity shortcut is a depthwise 1x1 conv of ones.
    The shortcut's folded bias (its BN shift) is already part of the layer's bias."""
    name: str
    source: int
    weight: np.ndarray             # [C_out, C_in/groups, kH, kW], float64
    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int
    in_shape: Shape


@dataclass(frozen=True, eq=False)
class Conv:
    name: str                      # the PyTorch module(s) it came from, e.g. "features.3+features.4"
    weight: np.ndarray             # [C_out, C_in/groups, kH, kW], float64
    bias: np.ndarray               # [C_out], float64
    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int
    in_shape: Shape
    out_shape: Shape
    neuron: Neuron | None
    skips: tuple[Skip, ...] = ()

    kind = "conv"


@dataclass(frozen=True, eq=False)
class Dense:
    name: str
    weight: np.ndarray             # [N_out, N_in], float64
    bias: np.ndarray               # [N_out], float64
    in_shape: Shape                # (N_in, 1, 1)
    out_shape: Shape               # (N_out, 1, 1)
    neuron: Neuron | None
    skips: tuple[Skip, ...] = ()   # always empty: shortcuts into dense layers are refused

    kind = "dense"


@dataclass(frozen=True, eq=False)
class Flatten:
    name: str
    in_shape: Shape
    out_shape: Shape               # (C·H·W, 1, 1), as slayer writes it

    kind = "flatten"


Layer = Union[Conv, Dense, Flatten]


@dataclass(frozen=True, eq=False)
class Graph:
    """A QCFS network: ``layers`` run in order on an input of ``input_shape``, each fed by the one
    before it and, for residual networks, by its :class:`Skip` shortcuts from earlier layers."""
    input_shape: Shape
    layers: tuple[Layer, ...]
    L: int
    phi: float
    fold_errors: tuple[tuple[str, float], ...] = ()   # (layer name, max relative error of the fold check)

    @property
    def synaptic(self) -> list[Conv | Dense]:
        return [lay for lay in self.layers if not isinstance(lay, Flatten)]

    @property
    def residual(self) -> bool:
        return any(getattr(lay, "skips", ()) for lay in self.layers)
