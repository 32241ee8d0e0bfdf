"""Write a :class:`~netx_export.convert.fixedpoint.QNetwork` as a lava-dl NetX HDF5 file, atomically.

Layout (what ``lava.lib.dl.netx.hdf5.Network`` reads, see docs/netx-format.md):

    layer/<i>/type        (1,) S10, e.g. b'conv'             (slayer's form)
    layer/<i>/shape       int64 (3,) C, H, W                  (dense and flatten: N, 1, 1)
    layer/<i>/weight      int32, conv [C_out, C_in/g, kH, kW], dense [N_out, N_in]
    layer/<i>/bias        int32 [C_out] / [N_out]             (per-step bias, weight units)
    layer/<i>/stride, padding, dilation  int64 (2,) (H, W);  groups int64
    layer/<i>/inChannels, outChannels, kernelSize / inFeatures, outFeatures   (informational)
    layer/<i>/neuron/type 'IF_SUB' (scalar str), iDecay 4096, vDecay 0, vThMant, vInit,
                     refDelay 1, gradedSpike False             (never messageBits: it breaks NetX)
                     vInit: int64 scalar, or int64 (C,) per output channel (per neuron for dense)
                     after low-T calibration (ours; NetX ignores it, our IF_SUB hook reads it)
    layer/<i>/skip/<k>/…  (format version 2, ours; NetX ignores it) residual shortcut k into layer i's
                     neurons: type b'conv', source (int64: index of the layer whose spikes it reads),
                     weight int32 [C_out, C_in/g, kH, kW], stride, padding, dilation, groups,
                     delay (int64: extra steps on Lava/Loihi, see docs/residual.md)
    simulation/Ts 1, simulation/tSample = recommended T        (optional, ignored by NetX)
    metadata/…                                                 (ours; NetX reads only `layer`)

Weights and biases are written as integer datasets: NetX casts them with ``astype(int)``, which
would silently truncate any float that is not integral. Everything is a dataset, no attributes.
The file is written to a temporary name beside the target and renamed: a failed export leaves
neither a partial file nor a stray temporary.
"""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

import h5py
import numpy as np

from qcfs2lava.util.fileio import atomic_write

from netx_export.convert.fixedpoint import QLayer, QNetwork

__all__ = ["FORMAT", "FORMAT_VERSION", "write_netx", "export"]

FORMAT = "qcfs2lava-netx"
FORMAT_VERSION = 2                  # 1: sequential; 2: + layer/<i>/skip (residual shortcuts)


def _type(g: h5py.Group, name: str) -> None:
    g.create_dataset("type", (1,), "S10", [name.encode("ascii")])


def _str_array(g: h5py.Group, key: str, values) -> None:
    g.create_dataset(key, data=np.array([str(v) for v in values], dtype=object), dtype=h5py.string_dtype())


def _write_layer(g: h5py.Group, lay: QLayer) -> None:
    _type(g, lay.kind)
    g["shape"] = np.asarray(lay.shape, dtype=np.int64)
    if lay.kind == "flatten":
        return
    assert lay.weight is not None and lay.bias is not None and lay.neuron is not None
    g.create_dataset("weight", data=lay.weight.astype(np.int32))
    g.create_dataset("bias", data=lay.bias.astype(np.int32))
    if lay.kind == "conv":
        g["stride"] = np.asarray(lay.stride, dtype=np.int64)
        g["padding"] = np.asarray(lay.padding, dtype=np.int64)
        g["dilation"] = np.asarray(lay.dilation, dtype=np.int64)
        g["groups"] = np.int64(lay.groups)
        g["inChannels"] = np.int64(lay.in_shape[0])
        g["outChannels"] = np.int64(lay.shape[0])
        g["kernelSize"] = np.asarray(lay.weight.shape[2:], dtype=np.int64)
    else:
        g["inFeatures"] = np.int64(lay.weight.shape[1])
        g["outFeatures"] = np.int64(lay.weight.shape[0])
    n = g.create_group("neuron")
    n.create_dataset("type", data=lay.neuron.type)           # scalar str, as slayer writes it
    n["iDecay"] = np.int64(lay.neuron.i_decay)
    n["vDecay"] = np.int64(lay.neuron.v_decay)
    n["vThMant"] = np.int64(lay.neuron.vth)
    if lay.neuron.per_channel:                              # ours: v(0) in weight units (NetX ignores it)
        n["vInit"] = np.asarray(lay.neuron.v_init, dtype=np.int64).reshape(-1)
    else:
        n["vInit"] = np.int64(lay.neuron.v_init)
    n["refDelay"] = np.int64(1)
    n["gradedSpike"] = False
    if lay.skips:
        sg = g.create_group("skip")
        for k, sk in enumerate(lay.skips):
            h = sg.create_group(str(k))
            _type(h, "conv")
            _str_array(h, "name", [sk.name])
            h["source"] = np.int64(sk.source)
            h.create_dataset("weight", data=sk.weight.astype(np.int32))
            h["stride"] = np.asarray(sk.stride, dtype=np.int64)
            h["padding"] = np.asarray(sk.padding, dtype=np.int64)
            h["dilation"] = np.asarray(sk.dilation, dtype=np.int64)
            h["groups"] = np.int64(sk.groups)
            h["delay"] = np.int64(sk.delay)


def _put(g: h5py.Group, key: str, value: Any) -> None:
    """A plain dataset for a JSON-like value (str, number, list of numbers or strings, dict → group)."""
    if value is None:
        return
    if isinstance(value, dict):
        sub = g.create_group(key)
        for k, v in value.items():
            _put(sub, str(k), v)
    elif isinstance(value, str):
        g.create_dataset(key, data=value)
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        _str_array(g, key, value)
    else:
        g[key] = np.asarray(value)


def _write_metadata(f: h5py.File, net: QNetwork) -> None:
    from qcfs2lava.version import __version__
    m = f.create_group("metadata")
    meta = dict(net.metadata)
    # Sequential files stay version 1, so readers that predate shortcuts keep reading them.
    version = FORMAT_VERSION if any(lay.skips for lay in net.layers) else 1
    meta.update(format=FORMAT, format_version=version, tool_version=__version__,
                input_shape=list(net.input_shape))
    for key in ("format", "format_version", "tool_version", "source_sha256", "source", "arch", "dataset", "L",
                "phi", "recommended_T", "v_headroom", "input_shape", "class_names", "normalization",
                "readout", "calibration", "snn_calibration"):
        _put(m, key, meta.get(key))
    lo, hi = meta.get("input_range", (None, None))
    if lo is not None:
        _put(m, "input_range", {"lo": lo, "hi": hi})
    # Per NetX layer (flatten included, so indices match layer/<i>): name, role, θ, σ, k.
    by_index = {r.index: r for r in net.report}
    nan = float("nan")
    lay_g = m.create_group("layers")
    _str_array(lay_g, "name", [lay.name for lay in net.layers])
    _str_array(lay_g, "role", [by_index[i].role if i in by_index else "flatten" for i in range(len(net.layers))])
    lay_g["theta"] = np.array([by_index[i].theta if i in by_index else nan for i in range(len(net.layers))])
    lay_g["scale"] = np.array([by_index[i].scale if i in by_index else nan for i in range(len(net.layers))])
    lay_g["exponent"] = np.array([by_index[i].exponent if i in by_index else -1 for i in range(len(net.layers))],
                                 dtype=np.int64)
    d = m.create_group("drive")
    d["weight"] = net.drive.weight.astype(np.float64)    # host-side only: float σ_0·W_0
    d["bias"] = net.drive.bias.astype(np.float64)
    d["limit"] = np.int64(net.drive.limit)
    m.create_dataset("quantization_report", data=json.dumps(
        [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.__dict__.items()}
         for r in net.report]))


def write_netx(net: QNetwork, path: str) -> None:
    """Write ``net`` to ``path`` (NetX layout + metadata) atomically."""
    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            sim = f.create_group("simulation")
            sim["Ts"] = np.int64(1)
            sim["tSample"] = np.int64(net.metadata.get("recommended_T", 32))
            layers = f.create_group("layer")
            for i, lay in enumerate(net.layers):
                _write_layer(layers.create_group(str(i)), lay)
            _write_metadata(f, net)
    atomic_write(path, write)


def export(model: Any, path: str, input_shape: Sequence[int], *, dataset: str | None = None,
           normalization: dict[str, Any] | None = None, class_names: Sequence[str] = (),
           calib_x: Any = None, recommended_T: int = 32, v_headroom: float = 64.0) -> Any:
    """Convert a QCFS ``nn.Module`` (:func:`netx_export.convert.pipeline.convert_module`) and write it
    to the NetX file ``path``; returns the :class:`~netx_export.convert.pipeline.Exported` network.

    ``normalization`` = ``{"mean": [...], "std": [...], "max_value": 255}`` says how raw pixels become
    the model's input; with ``dataset`` it lets ``qcfs2lava simulate`` feed the file test images."""
    from netx_export.convert.pipeline import convert_module
    md: dict[str, Any] = dict(dataset=dataset, class_names=list(class_names), normalization=normalization,
                              arch=type(model).__name__)
    ex = convert_module(model, input_shape, metadata=md, recommended_T=recommended_T, v_headroom=v_headroom,
                        calib_x=calib_x)
    write_netx(ex.net, path)
    return ex
