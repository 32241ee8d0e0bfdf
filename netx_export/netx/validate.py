"""Validate qcfs2lava's NetX files against NetX's reader and Loihi's fixed-point limits: every rule
broken, as one line each (:func:`validate`, :func:`validate_file`), or an error (:func:`check_file`)."""
from __future__ import annotations

import numpy as np

from netx_export.convert.conv import conv_output_shape
from netx_export.convert.fixedpoint import (BIAS_MAX, DENSE_MAX_EXPONENT, INPUT_LIMIT, MANT_MAX, MANT_MIN, OUTPUT_VTH,
                                            VTH_MAX, QNetwork, skip_delay, worst_case_input)
from netx_export.errors import NetxFileError
from netx_export.netx.read import layer_keys, open_netx, read_netx

__all__ = ["validate", "validate_file", "check_file"]


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
            hi, lo = worst_case_input(w, b, [sk.weight for sk in lay.skips if sk.source < len(net.layers)])
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
    with open_netx(path) as f:
        keys = layer_keys(f, path)
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
