"""Read qcfs2lava's NetX HDF5 files back into a :class:`~netx_export.convert.fixedpoint.QNetwork`.
Validating them is :mod:`netx_export.netx.validate`; describing any NetX file,
:mod:`netx_export.netx.describe`.

Reading follows NetX's own conventions (lava-dl ``netx/utils.py``): ``type`` may be a (1,) bytes
array or a scalar string; ``weight``/``bias`` are cast with ``astype(int)``; layer groups are
``'0'..'n-1'``; everything is a dataset. A file that cannot be parsed (a key missing, a string where
a number belongs, an array that does not reshape) raises :class:`NetxFileError` naming the file and the
layer or key; whether what was read is a network Loihi can hold is :func:`~netx_export.netx.validate.load_netx`'s
question.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import h5py
import numpy as np

from netx_export.errors import NetxFileError
from netx_export.convert.fixedpoint import InputDrive, LayerReport, QLayer, QNetwork, QNeuron, QSkip
from netx_export.netx.write import FORMAT, FORMAT_VERSION

__all__ = ["read_netx", "read_layers", "has_input_neurons", "open_netx", "layer_keys", "decode_str"]


def open_netx(path: str) -> h5py.File:
    if not os.path.isfile(path):
        raise NetxFileError(f"NetX file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise NetxFileError(f"{path} is not an HDF5 file ({str(e).splitlines()[0][:120]})") from None


def decode_str(ds) -> str:
    """NetX's `str_keys` rule: value[0] if it is an array, else value[()], then decode."""
    v = ds[()]
    if isinstance(v, np.ndarray):
        v = v.reshape(-1)[0]
    return v.decode("ascii") if isinstance(v, bytes) else str(v)


# What parsing a malformed file raises (h5py: KeyError for a missing key, OSError for a damaged block).
_MALFORMED = (KeyError, TypeError, ValueError, IndexError, OSError, AttributeError, OverflowError)


class _BadValue(ValueError):
    """A dataset of the wrong kind; the message names its key."""


def _malformed(where: str, e: Exception) -> NetxFileError:
    """One line for what parsing ``where`` (``"FILE: layer 3"``) raised."""
    if isinstance(e, _BadValue):
        return NetxFileError(f"{where}: {e}")
    if isinstance(e, KeyError):
        key = str(e.args[0]) if e.args else "?"
        m = re.search(r"object '([^']+)' doesn't exist", key)
        return NetxFileError(f"{where} lacks '{m.group(1) if m else key}'")
    text = (str(e).splitlines() or [""])[0][:120]
    return NetxFileError(f"{where} is malformed ({type(e).__name__}{': ' + text if text else ''})")


def _need(g: h5py.Group, key: str) -> h5py.Dataset:
    """The dataset ``g[key]`` (``key`` may be a path); KeyError naming the first missing part."""
    parts = key.split("/")
    for i in range(len(parts)):
        if "/".join(parts[:i + 1]) not in g:
            raise KeyError("/".join(parts[:i + 1]))
    ds = g[key]
    if not isinstance(ds, h5py.Dataset):
        raise _BadValue(f"{key} is a group, not a dataset")
    return ds


def _number(v, key: str) -> np.ndarray:
    """``v`` as a numeric array; a string, object or compound value raises, naming ``key``."""
    a = np.asarray(v)
    if a.dtype.kind not in "biuf":
        text = repr(v.tolist() if isinstance(v, np.ndarray) else v)
        raise _BadValue(f"{key} is {text[:40]}, not a number")
    return a


def _val(g: h5py.Group, key: str, default=None):
    """The numeric value of ``g[key]``; ``default`` if the key is absent."""
    return _number(_need(g, key)[()], key) if key in g else default


def _req(g: h5py.Group, key: str) -> np.ndarray:
    """The numeric value of ``g[key]``, which must be there."""
    return _number(_need(g, key)[()], key)


def _pair(v, default=(0, 0)) -> tuple[int, int]:
    if v is None:
        return default
    a = np.asarray(v).reshape(-1)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def layer_keys(f: h5py.File, path: str) -> list[str]:
    if not isinstance(f.get("layer"), h5py.Group):
        raise NetxFileError(f"{path} has no 'layer' group: not a NetX network")
    keys = list(f["layer"].keys())
    if sorted(keys, key=lambda k: int(k) if k.isdigit() else -1) != [str(i) for i in range(len(keys))]:
        raise NetxFileError(f"{path}: layer groups must be named 0..{len(keys) - 1}, found {sorted(keys)}")
    return [str(i) for i in range(len(keys))]


def _v_init(v) -> int | np.ndarray:
    """vInit: a scalar dataset → int; an array (per channel, low-T calibrated) → int64 (C,)."""
    a = np.asarray(v)
    return int(a) if a.ndim == 0 else a.astype(np.int64).reshape(-1)


def _read_skips(g: h5py.Group, index: dict[int, int], where: str) -> tuple[QSkip, ...]:
    """Layer group ``g``'s residual shortcuts (format version 2); sources mapped to list indices."""
    if "skip" not in g:
        return ()
    out = []
    for k in sorted(g["skip"].keys(), key=lambda s: int(s) if s.isdigit() else -1):
        h = g["skip"][k]
        try:
            kind = decode_str(_need(h, "type"))
            if kind != "conv":
                raise NetxFileError(f"{where}: shortcut {k} has type '{kind}'; only 'conv' shortcuts exist")
            src = int(_req(h, "source"))
            if src not in index:
                raise NetxFileError(f"{where}: shortcut {k} reads layer {src}, which is not an earlier layer")
            w = _req(h, "weight").astype(np.int64)
            if w.ndim != 4:
                raise NetxFileError(f"{where}: shortcut {k} weight has shape {w.shape}, expected 4 axes")
            name = decode_str(h["name"]) if "name" in h else f"skip{k}"
            out.append(QSkip(name, index[src], w, _pair(_val(h, "stride"), (1, 1)), _pair(_val(h, "padding")),
                             _pair(_val(h, "dilation"), (1, 1)), int(_val(h, "groups", 1)), int(_req(h, "delay"))))
        except _MALFORMED as e:
            raise _malformed(f"{where}: shortcut {k}", e) from None
    return tuple(out)


def read_layers(path: str) -> tuple[tuple[int, int, int] | None, list[QLayer]]:
    """The conv/dense/flatten layers of any NetX file, in integer units, plus the `input` layer's
    shape if there is one. Our neuron keys (vInit) are read when present; other neuron types keep
    their decays and threshold (refsim treats CUBA/LOIHI as reset-to-zero with strict >)."""
    with open_netx(path) as f:
        keys = layer_keys(f, path)
        input_shape = None
        layers: list[QLayer] = []
        prev_shape: tuple[int, int, int] | None = None
        index: dict[int, int] = {}          # file layer index -> index in `layers` (an `input` layer has none)
        for k in keys:
            try:
                lay = _read_layer(f["layer"][k], k, prev_shape, index, path)
            except _MALFORMED as e:
                raise _malformed(f"{path}: layer {k}", e) from None
            if lay.kind == "input":
                input_shape = prev_shape = lay.shape
                continue
            index[int(k)] = len(layers)
            layers.append(lay)
            prev_shape = lay.shape
        return input_shape, layers


def has_input_neurons(path: str) -> bool:
    """Whether the file's ``input`` layer (lava-dl's) has a neuron group: NetX then builds it as a
    neuron process of its own (ours have no input layer: the host drives layer 0)."""
    with open_netx(path) as f:
        keys = layer_keys(f, path)
        try:
            g = f["layer"][keys[0]] if keys else None
            return g is not None and decode_str(_need(g, "type")) == "input" and "neuron" in g
        except _MALFORMED as e:
            raise _malformed(f"{path}: layer {keys[0]}", e) from None


def _read_layer(g: h5py.Group, k: str, prev_shape: tuple[int, int, int] | None, index: dict[int, int],
                path: str) -> QLayer:
    """Layer group ``k`` (an ``input`` layer comes back as a QLayer of kind "input" holding its shape)."""
    kind = decode_str(_need(g, "type"))
    shape = tuple(int(s) for s in _val(g, "shape").reshape(-1)) if "shape" in g else None
    if kind == "input":
        return QLayer("input", k, shape, shape)  # type: ignore[arg-type]
    if kind not in ("conv", "dense", "flatten"):
        raise NetxFileError(f"{path}: layer {k} has type '{kind}', which refsim does not simulate")
    if shape is not None and len(shape) < 3:
        shape = shape + (1,) * (3 - len(shape))
    in_shape = prev_shape or (0, 0, 0)
    if kind == "flatten":
        return QLayer("flatten", k, in_shape, shape or (int(np.prod(in_shape)), 1, 1))
    if shape is None:
        raise KeyError("shape")
    w = _req(g, "weight").astype(int)
    if kind == "conv":
        w = w.reshape(w.shape[:4])                 # slayer adds a trailing time axis of 1
    elif w.ndim == 1:
        w = w.reshape(int(np.prod(shape)), -1)
    bias = _val(g, "bias", np.zeros(1, int)).astype(int).reshape(-1)
    if bias.size == 1:
        bias = np.full(w.shape[0], int(bias[0]))
    if "neuron" in g:
        neuron = QNeuron(int(_req(g, "neuron/vThMant")), _v_init(_val(g, "neuron/vInit", 0)),
                         int(_val(g, "neuron/iDecay", 0)), int(_val(g, "neuron/vDecay", 0)),
                         decode_str(_need(g, "neuron/type")))
    else:   # NetX's default for a dense layer without neuron: a non-spiking integrator
        neuron = QNeuron(1 << 18 - 1, 0, 0, 4096, "CUBA")   # sic: 131072, NetX's precedence
    geo = {}
    if kind == "conv":
        geo = dict(stride=_pair(_val(g, "stride"), (1, 1)), padding=_pair(_val(g, "padding")),
                   dilation=_pair(_val(g, "dilation"), (1, 1)), groups=int(_val(g, "groups", 1)))
    return QLayer(kind, k, in_shape, shape, w.astype(np.int64), bias.astype(np.int64), neuron=neuron,
                  skips=_read_skips(g, index, f"{path}: layer {k}"), **geo)  # type: ignore[arg-type]


def _read_meta(g: h5py.Group) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in g.items():
        if isinstance(v, h5py.Group):
            out[k] = _read_meta(v)
            continue
        x = v[()]
        if isinstance(x, bytes):
            x = x.decode("utf-8")
        elif isinstance(x, np.ndarray):
            x = [e.decode("utf-8") if isinstance(e, bytes) else e for e in x.tolist()]
        elif isinstance(x, np.generic):
            x = x.item()
        out[k] = x
    return out


def read_netx(path: str) -> QNetwork:
    """Read a file written by :func:`~netx_export.netx.write.write_netx` back into the same IR (not
    validated: :func:`~netx_export.netx.validate.load_netx` is the reader for running a file)."""
    input_shape, layers = read_layers(path)
    with open_netx(path) as f:
        if not isinstance(f.get("metadata"), h5py.Group) or "format" not in f["metadata"]:
            raise NetxFileError(f"{path} has no qcfs2lava metadata (not exported by qcfs2lava); "
                                "use `qcfs2lava inspect` to look at it")
        try:
            return _network(f["metadata"], path, input_shape, layers)
        except _MALFORMED as e:
            raise _malformed(f"{path}: metadata", e) from None


def _network(m: h5py.Group, path: str, input_shape, layers: list[QLayer]) -> QNetwork:
    """The QNetwork of ``layers`` (from :func:`read_layers`) and the metadata group ``m``."""
    raw = _read_meta(m)
    if raw.get("format") != FORMAT:
        raise NetxFileError(f"{path}: metadata format '{raw.get('format')}' is not '{FORMAT}'")
    if int(raw.get("format_version", 0)) > FORMAT_VERSION:
        raise NetxFileError(f"{path} has format version {raw['format_version']}; this reader knows "
                            f"up to {FORMAT_VERSION}")
    drive = InputDrive(_req(m, "drive/weight").astype(np.float64), _req(m, "drive/bias").astype(np.float64),
                       int(_req(m, "drive/limit")))
    report = tuple(LayerReport(**{k: (float("nan") if v is None else v) if k == "theta" else
                                  (tuple(v) if isinstance(v, list) else v) for k, v in r.items()})
                   for r in json.loads(raw.pop("quantization_report", "[]")))
    raw.pop("drive", None)
    names = raw.get("layers", {}).get("name", [])
    layers = [dataclasses.replace(lay, name=names[i] if i < len(names) else lay.name)
              for i, lay in enumerate(layers)]
    meta = {k: v for k, v in raw.items() if k not in ("layers", "input_range")}
    if "input_range" in raw:
        meta["input_range"] = [raw["input_range"]["lo"], raw["input_range"]["hi"]]
    shape = tuple(int(s) for s in raw.get("input_shape", input_shape or ()))
    # The first layer's in_shape is the network input (read_layers cannot know it without an input layer).
    if layers:
        layers[0] = dataclasses.replace(layers[0], in_shape=shape)
        for i in range(1, len(layers)):
            layers[i] = dataclasses.replace(layers[i], in_shape=layers[i - 1].shape)
    return QNetwork(shape, tuple(layers), drive, meta, report)  # type: ignore[arg-type]
