"""Checkpoint → graph → fixed point, in one call: what ``qcfs2lava export`` and the benchmarks
share. Writing the file is left to :func:`netx_export.hdf5_write.write_netx`.

A checkpoint calibrated for low T (``qcfs2lava calibrate``, :mod:`qcfs2lava.lowt`) exports with its
per-channel bias shifts folded into the layer biases and its per-channel v(0) as per-neuron vInit
(:func:`netx_export.graph.calibrate_graph`); an uncalibrated one exports exactly as before."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .calibrate import BiasCorrection, bias_correction, input_rates
from .errors import ExportError
from .fixedpoint import QNetwork, QuantConfig, quantize
from .graph import Graph, calibrate_graph, check_graph, trace

__all__ = ["Exported", "quantize_checkpoint"]


@dataclass(frozen=True, eq=False)
class Exported:
    graph: Graph
    net: QNetwork
    graph_error: float          # max |Δlogit| between the folded graph and the PyTorch model
    corrections: tuple[BiasCorrection, ...] = ()    # per layer after the first, if calibrated


def quantize_checkpoint(ck, recommended_T: int = 32, v_headroom: float = 64.0,
                        calib_x: torch.Tensor | None = None) -> Exported:
    """Trace, fold and quantize a loaded :class:`qcfs2lava.checkpoint.Checkpoint`; with normalised
    calibration images ``calib_x`` (a few hundred training images), also correct every layer's bias
    for the mean weight-rounding error (:mod:`netx_export.calibrate`)."""
    meta = ck.meta
    if meta.get("activation", "qcfs") != "qcfs":
        raise ExportError(f"{ck.path or 'checkpoint'} is a ReLU network; only QCFS networks are exported")
    from qcfs2lava.lowt import calibration_of
    graph = trace(ck.model, meta["input_shape"])
    x = torch.randn((8,) + tuple(graph.input_shape), generator=torch.Generator().manual_seed(0))
    graph_err = check_graph(ck.model, graph, x)
    ann_graph = graph                   # weight-rounding calibration targets the ANN's activations
    snn_cal = calibration_of(ck)
    if snn_cal:
        graph = calibrate_graph(graph, snn_cal)
    md = dict(source_sha256=ck.sha256, source=os.path.basename(ck.path) if ck.path else None,
              arch=meta.get("arch"), dataset=meta.get("dataset"), class_names=list(meta.get("class_names") or []),
              normalization=meta.get("normalization"))
    if calib_x is not None:
        md["calibration"] = {"method": "bias correction of the mean 8-bit weight-rounding error",
                             "images": int(len(calib_x))}
    if snn_cal:
        c = meta["snn_calibration"]
        md["snn_calibration"] = {"method": str(c["method"]), "T": int(c["T"]), "images": int(c["n"])}
    net = quantize(graph, config=QuantConfig(v_headroom=v_headroom, recommended_T=recommended_T), metadata=md)
    if calib_x is None:
        return Exported(graph, net, graph_err)
    net, corrections = bias_correction(graph, net, input_rates(ann_graph, calib_x))
    return Exported(graph, net, graph_err, tuple(corrections))
