"""Describe any NetX HDF5 file as text (``qcfs2lava inspect``): ours or lava-dl's, every group and
dataset with its shape, type and a short value."""
from __future__ import annotations

import h5py
import numpy as np

from netx_export.netx.read import decode_str as _str, open_netx

__all__ = ["describe"]


def _dataset(ds: h5py.Dataset) -> str:
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


def describe(path: str) -> str:
    """A readable outline of any NetX HDF5 file (ours or lava-dl's): one line per layer with its
    type, shape, weight/bias summary and neuron parameters, then every other group's datasets."""
    lines = [path]
    with open_netx(path) as f:
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
                        parts.append(f"{key} {_dataset(g[key])}")
                geo = [f"{key} {_dataset(g[key])}" for key in ("stride", "padding", "dilation", "groups")
                       if key in g]
                if geo:
                    parts.append(", ".join(geo))
                lines.append("; ".join(parts))
                if "neuron" in g and isinstance(g["neuron"], h5py.Group):
                    n = g["neuron"]
                    lines.append("        neuron " + ", ".join(
                        f"{key}={_dataset(n[key])}" for key in n.keys() if isinstance(n[key], h5py.Dataset)))
                if "skip" in g and isinstance(g["skip"], h5py.Group):      # format version 2: shortcuts
                    for sk in sorted(g["skip"].keys()):
                        h = g["skip"][sk]
                        lines.append(f"        skip {sk}: " + ", ".join(
                            f"{key}={_dataset(h[key])}" for key in h.keys() if isinstance(h[key], h5py.Dataset)))
                other = [key for key in g.keys() if key not in ("type", "shape", "weight", "bias", "stride",
                                                                 "padding", "dilation", "groups", "neuron", "skip")]
                if other:
                    lines.append("        also " + ", ".join(
                        f"{key}={_dataset(g[key])}" if isinstance(g[key], h5py.Dataset) else f"{key}/"
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
                    text = _dataset(item)
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
                lines.append(f"{top} = {_dataset(f[top])}")
    return "\n".join(lines)
