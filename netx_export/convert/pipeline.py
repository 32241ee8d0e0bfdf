"""Any QCFS ``nn.Module`` (or a checkpoint) → graph → fixed point (→ bias correction), in one call:
what ``qcfs2lava export``, the Python API and the benchmarks share. Writing the file is
:func:`netx_export.netx.write.write_netx`; :func:`netx_export.netx.write.export` does both.

A network calibrated for low latency (``qcfs2lava calibrate``, :mod:`qcfs2lava.low_latency`) exports
with its per-channel bias shifts folded into the layer biases and its per-channel v(0) as per-neuron
vInit (:func:`netx_export.convert.graph.apply_low_latency_calibration`); an uncalibrated one exports exactly as before."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from netx_export.convert.bias_correction import BiasCorrection, bias_correction, input_rates
from netx_export.convert.fixedpoint import QNetwork, QuantConfig, quantize
from netx_export.convert.graph import apply_low_latency_calibration, check_graph
from netx_export.convert.ir import Graph
from netx_export.convert.trace import trace
from netx_export.errors import ExportError

__all__ = ["Exported", "convert_module", "quantize_checkpoint"]


@dataclass(frozen=True, eq=False)
class Exported:
    graph: Graph
    net: QNetwork
    graph_error: float          # max |Δlogit| between the folded graph and the PyTorch model
    corrections: tuple[BiasCorrection, ...] = ()    # per layer after the first, with bias correction


def convert_module(model: nn.Module, input_shape: Sequence[int], *, metadata: dict[str, Any] | None = None,
                   snn_calibration: dict | None = None, recommended_T: int = 32, v_headroom: float = 64.0,
                   calib_x: torch.Tensor | None = None) -> Exported:
    """Trace, fold and quantize a QCFS network (any ``nn.Module`` of supported layers: Conv2d, Linear,
    BatchNorm, AvgPool, Flatten, Dropout, QCFS, residual adds before a QCFS; the first other module
    is named in the :class:`ExportError`). ``input_shape`` is (C, H, W) of one sample; ``metadata``
    goes into the file (``dataset``, ``normalization``, ``class_names``, ...). With normalised
    training images ``calib_x`` (a few hundred), every layer's bias is also corrected for the mean
    8-bit weight-rounding error (:mod:`netx_export.convert.bias_correction`)."""
    graph = trace(model, input_shape)
    x = torch.randn((8,) + tuple(graph.input_shape), generator=torch.Generator().manual_seed(0))
    graph_err = check_graph(model, graph, x)
    ann_graph = graph                   # bias correction targets the ANN's activations
    if snn_calibration:
        graph = apply_low_latency_calibration(graph, snn_calibration)
    md = dict(metadata or {})
    if calib_x is not None:
        md["calibration"] = {"method": "bias correction of the mean 8-bit weight-rounding error",
                             "images": int(len(calib_x))}
    net = quantize(graph, config=QuantConfig(v_headroom=v_headroom, recommended_T=recommended_T), metadata=md)
    if calib_x is None:
        return Exported(graph, net, graph_err)
    net, corrections = bias_correction(graph, net, input_rates(ann_graph, calib_x))
    return Exported(graph, net, graph_err, tuple(corrections))


def quantize_checkpoint(ck, recommended_T: int = 32, v_headroom: float = 64.0,
                        calib_x: torch.Tensor | None = None) -> Exported:
    """:func:`convert_module` of a loaded :class:`qcfs2lava.checkpoint.Checkpoint`, with the file's
    metadata (source hash, architecture, data set, classes, normalisation) taken from it."""
    meta = ck.meta
    if meta.get("activation", "qcfs") != "qcfs":
        raise ExportError(f"{ck.path or 'checkpoint'} is a ReLU network; only QCFS networks are exported")
    from qcfs2lava.low_latency import calibration_of
    snn_cal = calibration_of(ck)
    md = dict(source_sha256=ck.sha256, source=os.path.basename(ck.path) if ck.path else None,
              arch=meta.get("arch"), dataset=meta.get("dataset"), class_names=list(meta.get("class_names") or []),
              normalization=meta.get("normalization"))
    if snn_cal:
        c = meta["snn_calibration"]
        md["snn_calibration"] = {"method": str(c["method"]), "T": int(c["T"]), "images": int(c["n"])}
    return convert_module(ck.model, meta["input_shape"], metadata=md, snn_calibration=snn_cal,
                          recommended_T=recommended_T, v_headroom=v_headroom, calib_x=calib_x)

