"""Checkpoint → graph → fixed point, in one call: what ``qcfs2lava export`` and the benchmarks
share. Writing the file is left to :func:`netx_export.hdf5_write.write_netx`."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .errors import ExportError
from .fixedpoint import QNetwork, QuantConfig, quantize
from .graph import Graph, check_graph, trace

__all__ = ["Exported", "quantize_checkpoint"]


@dataclass(frozen=True, eq=False)
class Exported:
    graph: Graph
    net: QNetwork
    graph_error: float          # max |Δlogit| between the folded graph and the PyTorch model


def quantize_checkpoint(ck, recommended_T: int = 32, v_headroom: float = 64.0) -> Exported:
    """Trace, fold and quantize a loaded :class:`qcfs2lava.checkpoint.Checkpoint`."""
    meta = ck.meta
    if meta.get("activation", "qcfs") != "qcfs":
        raise ExportError(f"{ck.path or 'checkpoint'} is a ReLU network; only QCFS networks are exported")
    graph = trace(ck.model, meta["input_shape"])
    x = torch.randn((8,) + tuple(graph.input_shape), generator=torch.Generator().manual_seed(0))
    graph_err = check_graph(ck.model, graph, x)
    md = dict(source_sha256=ck.sha256, source=os.path.basename(ck.path) if ck.path else None,
              arch=meta.get("arch"), dataset=meta.get("dataset"), class_names=list(meta.get("class_names") or []),
              normalization=meta.get("normalization"))
    net = quantize(graph, config=QuantConfig(v_headroom=v_headroom, recommended_T=recommended_T), metadata=md)
    return Exported(graph, net, graph_err)
