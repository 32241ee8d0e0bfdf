"""Read NetX HDF5 files: our own back into a :class:`~netx_export.fixedpoint.QNetwork`, any file's
structure as text (:func:`inspect`), and a validator of our files against NetX's and Loihi's rules.

Reading follows NetX's own conventions (lava-dl ``netx/utils.py``): ``type`` may be a (1,) bytes
array or a scalar string; ``weight``/``bias`` are cast with ``astype(int)``; layer groups are
``'0'..'n-1'``; everything is a dataset.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import h5py
import numpy as np

from .errors import NetxFileError
from .fixedpoint import (BIAS_MAX, DENSE_MAX_EXPONENT, INPUT_LIMIT, MANT_MAX, MANT_MIN, OUTPUT_VTH, VTH_MAX,
                         InputDrive, LayerReport, QLayer, QNetwork, QNeuron, QSkip, input_bound, skip_delay)
from .conv import conv_output_shape
from .hdf5_write import FORMAT, FORMAT_VERSION

__all__ = ["read_netx", "read_layers", "validate", "validate_file", "check_file", "inspect"]


def _open(path: str) -> h5py.File:
    if not os.path.isfile(path):
        raise NetxFileError(f"NetX file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise NetxFileError(f"{path} is not an HDF5 file ({str(e).splitlines()[0][:120]})") from None


def _str(ds) -> str:
    """NetX's `str_keys` rule: value[0] if it is an array, else value[()], then decode."""
    v = ds[()]
    if isinstance(v, np.ndarray):
        v = v.reshape(-1)[0]
    return v.decode("ascii") if isinstance(v, bytes) else str(v)


def _val(g: h5py.Group, key: str, default=None):
    return g[key][()] if key in g else default


def _pair(v, default=(0, 0)) -> tuple[int, int]:
    if v is None:
        return default
    a = np.asarray(v).reshape(-1)
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def _layer_keys(f: h5py.File, path: str) -> list[str]:
    if "layer" not in f:
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
            kind = _str(h["type"])
            if kind != "conv":
                raise NetxFileError(f"{where}: shortcut {k} has type '{kind}'; only 'conv' shortcuts exist")
            src = int(h["source"][()])
            if src not in index:
                raise NetxFileError(f"{where}: shortcut {k} reads layer {src}, which is not an earlier layer")
            w = np.asarray(h["weight"][()]).astype(np.int64)
            if w.ndim != 4:
                raise NetxFileError(f"{where}: shortcut {k} weight has shape {w.shape}, expected 4 axes")
            name = _str(h["name"]) if "name" in h else f"skip{k}"
            out.append(QSkip(name, index[src], w, _pair(_val(h, "stride"), (1, 1)), _pair(_val(h, "padding")),
                             _pair(_val(h, "dilation"), (1, 1)), int(_val(h, "groups", 1)), int(h["delay"][()])))
        except KeyError as e:
            raise NetxFileError(f"{where}: shortcut {k} lacks {e}") from None
    return tuple(out)


def read_layers(path: str) -> tuple[tuple[int, int, int] | None, list[QLayer]]:
    """The conv/dense/flatten layers of any NetX file, in integer units, plus the `input` layer's
    shape if there is one. Our neuron keys (vInit) are read when present; other neuron types keep
    their decays and threshold (refsim treats CUBA/LOIHI as reset-to-zero with strict >)."""
    with _open(path) as f:
        keys = _layer_keys(f, path)
        input_shape = None
        layers: list[QLayer] = []
        prev_shape: tuple[int, int, int] | None = None
        index: dict[int, int] = {}          # file layer index -> index in `layers` (an `input` layer has none)
        for k in keys:
            g = f["layer"][k]
            kind = _str(g["type"])
            shape = tuple(int(s) for s in np.asarray(g["shape"][()]).reshape(-1)) if "shape" in g else None
            if kind == "input":
                input_shape = shape
                prev_shape = shape  # type: ignore[assignment]
                continue
            if kind not in ("conv", "dense", "flatten"):
                raise NetxFileError(f"{path}: layer {k} has type '{kind}', which refsim does not simulate")
            if shape is not None and len(shape) < 3:
                shape = shape + (1,) * (3 - len(shape))
            in_shape = prev_shape or (0, 0, 0)
            if kind == "flatten":
                lay = QLayer("flatten", k, in_shape, shape or (int(np.prod(in_shape)), 1, 1))
            else:
                w = np.asarray(g["weight"][()]).astype(int)
                if kind == "conv":
                    w = w.reshape(w.shape[:4])                 # slayer adds a trailing time axis of 1
                elif w.ndim == 1:
                    w = w.reshape(int(np.prod(shape)), -1)
                bias = np.asarray(g["bias"][()]).astype(int).reshape(-1) if "bias" in g else np.zeros(1, int)
                if bias.size == 1:
                    bias = np.full(w.shape[0], int(bias[0]))
                n = g["neuron"] if "neuron" in g else None
                if n is not None:
                    neuron = QNeuron(int(_val(n, "vThMant")), _v_init(_val(n, "vInit", 0)), int(_val(n, "iDecay", 0)),
                                     int(_val(n, "vDecay", 0)), _str(n["type"]))
                else:   # NetX's default for a dense layer without neuron: a non-spiking integrator
                    neuron = QNeuron(1 << 18 - 1, 0, 0, 4096, "CUBA")   # sic: 131072, NetX's precedence
                geo = {}
                if kind == "conv":
                    geo = dict(stride=_pair(_val(g, "stride"), (1, 1)), padding=_pair(_val(g, "padding")),
                               dilation=_pair(_val(g, "dilation"), (1, 1)), groups=int(_val(g, "groups", 1)))
                lay = QLayer(kind, k, in_shape, shape, w.astype(np.int64), bias.astype(np.int64), neuron=neuron,
                             skips=_read_skips(g, index, f"{path}: layer {k}"), **geo)  # type: ignore[arg-type]
            index[int(k)] = len(layers)
            layers.append(lay)
            prev_shape = lay.shape
        return input_shape, layers


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
    """Read a file written by :func:`~netx_export.hdf5_write.write_netx` back into the same IR."""
    input_shape, layers = read_layers(path)
    with _open(path) as f:
        if "metadata" not in f or "format" not in f["metadata"]:
            raise NetxFileError(f"{path} has no qcfs2lava metadata (not exported by qcfs2lava); "
                                "use `qcfs2lava inspect` to look at it")
        raw = _read_meta(f["metadata"])
        if raw.get("format") != FORMAT:
            raise NetxFileError(f"{path}: metadata format '{raw.get('format')}' is not '{FORMAT}'")
        if int(raw.get("format_version", 0)) > FORMAT_VERSION:
            raise NetxFileError(f"{path} has format version {raw['format_version']}; this reader knows "
                                f"up to {FORMAT_VERSION}")
        d = f["metadata/drive"]
        drive = InputDrive(np.asarray(d["weight"][()], dtype=np.float64), np.asarray(d["bias"][()], dtype=np.float64),
                           int(d["limit"][()]))
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


# --------------------------------------------------------------------------- validation
def _mantissa_ok(w: np.ndarray) -> bool:
    nz = np.abs(w[w != 0])
    k = int(np.log2(nz & -nz).min()) if nz.size else 0   # largest power of two dividing every weight
    return not (nz.size and (np.any(w >> k < MANT_MIN) or np.any(w >> k > MANT_MAX)))


def _validate_skips(net: QNetwork, i: int, where: str) -> list[str]:
    """Layer i's shortcuts: an earlier spiking conv source, matching shapes, 8-bit weights, aligned delay."""
    lay, problems = net.layers[i], []
    if lay.skips and lay.kind != "conv":
        return [f"{where}: shortcuts into a {lay.kind} layer are not supported (conv layers only)"]
    readout = net.synaptic[-1] if net.synaptic else None
    for k, sk in enumerate(lay.skips):
        at = f"{where}, shortcut {k} ({sk.name})"
        if not 0 <= sk.source < i:
            problems.append(f"{at}: source {sk.source} is not an earlier layer")
            continue
        src = net.layers[sk.source]
        if src.kind == "flatten" or src.neuron is None or src is readout:
            problems.append(f"{at}: source layer {sk.source} is not a spiking layer")
            continue
        w = sk.weight
        if w.ndim != 4 or w.shape[0] != lay.shape[0] or w.shape[1] * sk.groups != src.shape[0]:
            problems.append(f"{at}: weight {w.shape} does not map layer {sk.source}'s {src.shape} to {lay.shape}")
            continue
        got = conv_output_shape(tuple(src.shape), w.shape[0], w.shape[2:], sk.stride, sk.padding, sk.dilation)
        if got != tuple(lay.shape):
            problems.append(f"{at}: produces {got}, the layer is {lay.shape}")
        if not _mantissa_ok(w):
            problems.append(f"{at}: weights are not m·2^k with m in [-128, 127]")
        expect = skip_delay(net.layers, sk.source, i)
        if sk.delay != expect:
            problems.append(f"{at}: delay {sk.delay}, but the main path from layer {sk.source} needs {expect} "
                            "(spikes of both paths must arrive together)")
    return problems


def validate(net: QNetwork) -> list[str]:
    """Every way ``net`` breaks NetX's reader or Loihi's fixed-point limits (empty list: valid)."""
    problems: list[str] = []
    shape = tuple(net.input_shape)
    syn = net.synaptic
    for i, lay in enumerate(net.layers):
        where = f"layer {i} ({lay.kind} {lay.name})"
        if lay.kind == "flatten":
            if int(np.prod(lay.shape)) != int(np.prod(shape)) or tuple(lay.shape[1:]) != (1, 1):
                problems.append(f"{where}: shape {lay.shape} does not flatten {shape}")
            shape = tuple(lay.shape)
            continue
        w, b, n = lay.weight, lay.bias, lay.neuron
        if w is None or b is None or n is None:
            problems.append(f"{where}: missing weight, bias or neuron")
            continue
        if lay.kind == "conv":
            if w.ndim != 4 or w.shape[1] * lay.groups != shape[0]:
                problems.append(f"{where}: weight {w.shape} does not fit input {shape} with groups {lay.groups}")
            else:
                expect = conv_output_shape(shape, w.shape[0], w.shape[2:], lay.stride, lay.padding, lay.dilation)
                if tuple(lay.shape) != expect:
                    problems.append(f"{where}: shape {lay.shape} but the conv produces {expect} (NetX raises)")
        else:
            if w.ndim != 2 or w.shape[1] != int(np.prod(shape)) or w.shape[0] != int(np.prod(lay.shape)):
                problems.append(f"{where}: weight {w.shape} does not map {shape} to {lay.shape}")
            if not np.any(w):
                problems.append(f"{where}: all-zero dense weights crash NetX's loader")
            if w.min() < 0 < w.max() and (w.max() > 254 or w.min() < -256):
                problems.append(f"{where}: mixed-sign dense weights outside [-256, 254] are clipped by NetX")
            if w.min() >= 0 and w.max() > 255:
                problems.append(f"{where}: all-positive dense weights > 255 become 0 in NetX")
        if b.shape != (w.shape[0],):
            problems.append(f"{where}: bias shape {b.shape}, expected ({w.shape[0]},)")
        nz = np.abs(w[w != 0])
        k = int(np.log2(nz & -nz).min()) if nz.size else 0
        if not _mantissa_ok(w):
            problems.append(f"{where}: weights are not m·2^k with m in [-128, 127]")
        if lay.kind == "dense" and k > DENSE_MAX_EXPONENT and nz.size and w.min() < 0 < w.max():
            problems.append(f"{where}: dense weight exponent {k} > {DENSE_MAX_EXPONENT}")
        if np.abs(b).max(initial=0) > BIAS_MAX:
            problems.append(f"{where}: |bias| {int(np.abs(b).max())} > {BIAS_MAX} (13-bit bias mantissa)")
        if n.type != "IF_SUB":
            problems.append(f"{where}: neuron type '{n.type}', expected IF_SUB")
        if not 0 < n.vth <= VTH_MAX:
            problems.append(f"{where}: vThMant {n.vth} outside 1..{VTH_MAX}")
        v0 = np.asarray(n.v_init)
        if v0.ndim and v0.shape != (lay.shape[0],):
            problems.append(f"{where}: vInit has {v0.size} values for {lay.shape[0]} channels")
        elif v0.size and not (v0.min() >= 0 and v0.max() < max(n.vth, 1)):
            problems.append(f"{where}: vInit {v0.min() if v0.min() < 0 else v0.max()} outside [0, vThMant)")
        if (n.i_decay, n.v_decay) != (4096, 0):
            problems.append(f"{where}: iDecay/vDecay {n.i_decay}/{n.v_decay}, expected 4096/0 (IF, no leak)")
        problems += _validate_skips(net, i, where)
        if lay is not syn[0]:
            hi, lo = input_bound(w, b)
            for sk in lay.skips:
                if sk.source < len(net.layers):
                    h2, l2 = input_bound(sk.weight, np.zeros(sk.weight.shape[0], np.int64))
                    if h2.shape == hi.shape:
                        hi, lo = hi + h2, lo + l2
            limit = OUTPUT_VTH if lay is syn[-1] else INPUT_LIMIT
            if hi.max() >= limit or lo.min() <= -limit:
                problems.append(f"{where}: worst-case per-step input {int(max(hi.max(), -lo.min()))} ≥ {limit} "
                                "(24-bit current would wrap)")
        shape = tuple(lay.shape)
    first = syn[0] if syn else None
    if first is not None and first.weight is not None and net.drive.weight.shape != first.weight.shape:
        problems.append(f"input drive weight {net.drive.weight.shape} != layer 0 weight {first.weight.shape}")
    if net.drive.limit > BIAS_MAX:
        problems.append(f"input drive limit {net.drive.limit} > {BIAS_MAX}")
    return problems


def validate_file(path: str) -> list[str]:
    """:func:`validate` on the IR read back, plus the raw layout NetX depends on."""
    problems: list[str] = []
    with _open(path) as f:
        keys = _layer_keys(f, path)
        for k in keys:
            g = f["layer"][k]
            t = g["type"]
            if not (t.shape == (1,) and t.dtype.kind == "S"):
                problems.append(f"layer {k}: type is not a (1,) bytes dataset as slayer writes it")
            for key in ("weight", "bias"):
                if key in g and g[key].dtype.kind not in "iu":
                    problems.append(f"layer {k}: {key} is {g[key].dtype}; NetX truncates floats, write integers")
            if "neuron" in g:
                if "messageBits" in g["neuron"]:
                    problems.append(f"layer {k}: neuron/messageBits breaks NetX's loader")
                for key in ("type", "vThMant", "iDecay", "vDecay", "vInit"):
                    if key not in g["neuron"]:
                        problems.append(f"layer {k}: neuron/{key} missing")
            if len(g.attrs):
                problems.append(f"layer {k}: HDF5 attributes are ignored by NetX")
    try:
        net = read_netx(path)
    except NetxFileError as e:
        return problems + [str(e)]
    return problems + validate(net)


def check_file(path: str) -> QNetwork:
    """Read and validate; raise NetxFileError listing the problems."""
    problems = validate_file(path)
    if problems:
        raise NetxFileError(f"{path} is not a valid qcfs2lava NetX file: " + "; ".join(problems[:5])
                            + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
    return read_netx(path)


# --------------------------------------------------------------------------- inspect
def _describe(ds: h5py.Dataset) -> str:
    v = ds[()]
    if isinstance(v, bytes):
        return repr(v.decode("utf-8", "replace"))
    if isinstance(v, str):
        return repr(v)
    if ds.shape == () or ds.size == 1:
        x = np.asarray(v).reshape(-1)[0]
        return repr(x.decode("utf-8", "replace")) if isinstance(x, bytes) else f"{x}"
    a = np.asarray(v)
    if a.dtype.kind in "iuf" and a.size:
        if a.size <= 4:
            return f"{a.dtype} {list(a.shape)} {a.tolist()}"
        if a.dtype.kind == "f" and np.isnan(a).all():
            return f"{a.dtype} {list(a.shape)} all NaN"
        return f"{a.dtype} {list(a.shape)} range [{np.nanmin(a):g}, {np.nanmax(a):g}]"
    if a.dtype.kind in "OS" and a.size <= 12:
        return f"[{', '.join(x.decode() if isinstance(x, bytes) else str(x) for x in a.reshape(-1))}]"
    return f"{a.dtype} {list(a.shape)}"


def inspect(path: str) -> str:
    """A readable outline of any NetX HDF5 file (ours or lava-dl's): one line per layer with its
    type, shape, weight/bias summary and neuron parameters, then every other group's datasets."""
    lines = [path]
    with _open(path) as f:
        if "layer" in f:
            keys = sorted(f["layer"].keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
            lines.append(f"layer: {len(keys)} layers")
            for k in keys:
                g = f["layer"][k]
                kind = _str(g["type"]) if "type" in g else "?"
                shape = list(np.asarray(g["shape"][()]).reshape(-1)) if "shape" in g else "?"
                parts = [f"  {k:>3} {kind:<8} shape {shape}"]
                for key in ("weight", "bias"):
                    if key in g:
                        parts.append(f"{key} {_describe(g[key])}")
                geo = [f"{key} {_describe(g[key])}" for key in ("stride", "padding", "dilation", "groups")
                       if key in g]
                if geo:
                    parts.append(", ".join(geo))
                lines.append("; ".join(parts))
                if "neuron" in g and isinstance(g["neuron"], h5py.Group):
                    n = g["neuron"]
                    lines.append("        neuron " + ", ".join(
                        f"{key}={_describe(n[key])}" for key in n.keys() if isinstance(n[key], h5py.Dataset)))
                if "skip" in g and isinstance(g["skip"], h5py.Group):      # format version 2: shortcuts
                    for sk in sorted(g["skip"].keys()):
                        h = g["skip"][sk]
                        lines.append(f"        skip {sk}: " + ", ".join(
                            f"{key}={_describe(h[key])}" for key in h.keys() if isinstance(h[key], h5py.Dataset)))
                other = [key for key in g.keys() if key not in ("type", "shape", "weight", "bias", "stride",
                                                                 "padding", "dilation", "groups", "neuron", "skip")]
                if other:
                    lines.append("        also " + ", ".join(
                        f"{key}={_describe(g[key])}" if isinstance(g[key], h5py.Dataset) else f"{key}/"
                        for key in other))
        else:
            lines.append("no 'layer' group (NetX would find no network)")

        def walk(g: h5py.Group, prefix: str) -> None:
            for key in g.keys():
                item = g[key]
                if isinstance(item, h5py.Group):
                    lines.append(f"  {prefix}{key}/")
                    walk(item, prefix + key + "/")
                else:
                    text = _describe(item)
                    if len(text) > 100:
                        text = text[:97] + "..."
                    lines.append(f"  {prefix}{key} = {text}")
        for top in f.keys():
            if top == "layer":
                continue
            if isinstance(f[top], h5py.Group):
                lines.append(f"{top}/")
                walk(f[top], "")
            else:
                lines.append(f"{top} = {_describe(f[top])}")
    return "\n".join(lines)
