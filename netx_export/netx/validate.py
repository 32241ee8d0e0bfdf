"""Validate qcfs2lava's NetX files against NetX's reader and Loihi's fixed-point limits: every rule
broken, as one line each (:func:`validate`, :func:`validate_file`), or an error (:func:`load_netx`).

:func:`load_netx` is the reader of every command that runs a file (``simulate``, ``report``,
``hardware_runs/run_on_loihi.py``, the Lava runner): it reads the file once, validates what it read
and refuses what Loihi cannot hold, so a malformed or out-of-range file is one line, never a run."""
from __future__ import annotations

import h5py
import numpy as np

from netx_export.convert.conv import conv_output_shape
from netx_export.convert.fixedpoint import (BIAS_MAX, DENSE_MAX_EXPONENT, INPUT_LIMIT, MANT_MAX, MANT_MIN, OUTPUT_VTH,
                                            VTH_MAX, QNetwork, skip_delay, worst_case_input)
from netx_export.errors import NetxFileError
from netx_export.netx.read import layer_keys, open_netx, read_netx

__all__ = ["validate", "validate_file", "load_netx", "check_file"]


def _mantissa_ok(w: np.ndarray) -> bool:
    nz = np.abs(w[w != 0])
    k = int(np.log2(nz & -nz).min()) if nz.size else 0   # largest power of two dividing every weight
    return not (nz.size and (np.any(w >> k < MANT_MIN) or np.any(w >> k > MANT_MAX)))


def _geometry_problem(stride, padding, dilation, groups: int) -> str | None:
    """What makes a conv's geometry impossible (None: nothing); checked before any shape arithmetic."""
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0 or groups < 1:
        return (f"stride {tuple(stride)}, padding {tuple(padding)}, dilation {tuple(dilation)}, groups {groups}: "
                "stride, dilation and groups must be >= 1, padding >= 0")
    return None


def _bad_shape(shape) -> bool:
    return len(shape) != 3 or min(shape) < 1


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
        geometry = _geometry_problem(sk.stride, sk.padding, sk.dilation, sk.groups)
        if geometry:
            problems.append(f"{at}: {geometry}")
            continue
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
    """Every way ``net`` breaks NetX's reader or Loihi's fixed-point limits (empty list: valid). Shapes
    are checked before the arithmetic that depends on them, so any network read from a file gets a list,
    never an exception."""
    shape = tuple(net.input_shape)
    syn = net.synaptic
    if _bad_shape(shape):
        return [f"input shape {shape} is not (C, H, W) of positive sizes"]
    if not syn:
        return ["no conv or dense layer: there is nothing to simulate"]
    problems: list[str] = []
    for i, lay in enumerate(net.layers):
        where = f"layer {i} ({lay.kind} {lay.name})"
        if _bad_shape(lay.shape):          # every later layer's shape depends on this one
            return problems + [f"{where}: shape {tuple(lay.shape)} is not (C, H, W) of positive sizes"]
        if lay.kind == "flatten":
            if int(np.prod(lay.shape)) != int(np.prod(shape)) or tuple(lay.shape[1:]) != (1, 1):
                problems.append(f"{where}: shape {lay.shape} does not flatten {shape}")
            shape = tuple(lay.shape)
            continue
        w, b, n = lay.weight, lay.bias, lay.neuron
        if w is None or b is None or n is None:
            problems.append(f"{where}: missing weight, bias or neuron")
            continue
        if w.ndim < 2 or w.size == 0:
            problems.append(f"{where}: weight has shape {w.shape}")
            shape = tuple(lay.shape)
            continue
        fits = True                         # weight and bias shapes agree (the input bound needs them)
        if lay.kind == "conv":
            geometry = _geometry_problem(lay.stride, lay.padding, lay.dilation, lay.groups)
            if geometry:
                problems.append(f"{where}: {geometry}")
            elif w.ndim != 4 or w.shape[1] * lay.groups != shape[0] or w.shape[0] % lay.groups:
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
            fits = False
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
        if lay is not syn[0] and fits:
            hi, lo = worst_case_input(w, b, [sk.weight for sk in lay.skips if sk.source < len(net.layers)])
            limit = OUTPUT_VTH if lay is syn[-1] else INPUT_LIMIT
            if hi.max() >= limit or lo.min() <= -limit:
                problems.append(f"{where}: worst-case per-step input {int(max(hi.max(), -lo.min()))} ≥ {limit} "
                                "(24-bit current would wrap)")
        shape = tuple(lay.shape)
    return problems + _drive_problems(net)


def _drive_problems(net: QNetwork) -> list[str]:
    """The host-side input drive: layer 0's geometry, finite values, a limit the bias register holds."""
    d, first, problems = net.drive, net.synaptic[0], []
    if first.weight is not None and d.weight.shape != first.weight.shape:
        problems.append(f"input drive weight {d.weight.shape} != layer 0 weight {first.weight.shape}")
    elif first.weight is not None and d.bias.size not in (1, first.weight.shape[0]):
        problems.append(f"input drive bias has {d.bias.size} values for {first.weight.shape[0]} channels")
    if not (np.isfinite(d.weight).all() and np.isfinite(d.bias).all()):
        problems.append("input drive weight or bias is not finite")
    if not 0 < d.limit <= BIAS_MAX:
        problems.append(f"input drive limit {d.limit} outside 1..{BIAS_MAX}")
    return problems


def _layout_problems(f: h5py.File, path: str) -> list[str]:
    """The raw layout NetX depends on, beyond what :func:`read_netx` needs to parse the file."""
    try:
        keys = layer_keys(f, path)
    except NetxFileError:
        return []                           # read_netx says so
    problems: list[str] = []
    for k in keys:
        g = f["layer"][k]
        if not isinstance(g, h5py.Group):
            continue                        # read_netx says so
        t = g.get("type")
        if isinstance(t, h5py.Dataset) and not (t.shape == (1,) and t.dtype.kind == "S"):
            problems.append(f"layer {k}: type is not a (1,) bytes dataset as slayer writes it")
        for key in ("weight", "bias"):
            if isinstance(g.get(key), h5py.Dataset) and g[key].dtype.kind not in "iu":
                problems.append(f"layer {k}: {key} is {g[key].dtype}; NetX truncates floats, write integers")
        if isinstance(g.get("neuron"), h5py.Group):
            if "messageBits" in g["neuron"]:
                problems.append(f"layer {k}: neuron/messageBits breaks NetX's loader")
            for key in ("iDecay", "vDecay", "vInit"):       # (type and vThMant: read_netx needs them)
                if key not in g["neuron"]:
                    problems.append(f"layer {k}: neuron/{key} missing")
        if len(g.attrs):
            problems.append(f"layer {k}: HDF5 attributes are ignored by NetX")
    return problems


def _read_checked(path: str) -> tuple[QNetwork | NetxFileError, list[str]]:
    """The network read from ``path`` (or why it cannot be read) and every problem of the readable part."""
    with open_netx(path) as f:
        problems = _layout_problems(f, path)
    try:
        net = read_netx(path)
    except NetxFileError as e:
        return e, problems
    return net, problems + validate(net)


def validate_file(path: str) -> list[str]:
    """:func:`validate` on the IR read back, plus the raw layout NetX depends on; a file the reader
    cannot parse lists why as its last problem (one that is not HDF5 at all raises NetxFileError)."""
    net, problems = _read_checked(path)
    return problems + [str(net)] if isinstance(net, NetxFileError) else problems


def load_netx(path: str) -> QNetwork:
    """The reader for running a file: read ``path`` once and validate it; a file that cannot be parsed
    raises the reader's NetxFileError, one that breaks NetX's layout or Loihi's limits raises
    NetxFileError "PATH is not a valid qcfs2lava NetX file: <the first problems>"."""
    net, problems = _read_checked(path)
    if isinstance(net, NetxFileError):
        raise net
    if problems:
        raise NetxFileError(f"{path} is not a valid qcfs2lava NetX file: " + "; ".join(problems[:3])
                            + (f" (+{len(problems) - 3} more; `qcfs2lava inspect --validate` lists them)"
                               if len(problems) > 3 else ""))
    return net


check_file = load_netx      # its name in `qcfs2lava export --check` and older scripts
