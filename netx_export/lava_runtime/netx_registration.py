"""The one place where qcfs2lava's neuron type ``IF_SUB`` is registered with lava-dl's NetX loader.

NetX maps a file's ``neuron/type`` to a Lava process in the staticmethod
``lava.lib.dl.netx.hdf5.Network.get_neuron_params`` and calls it by class name
(``Network.get_neuron_params(...)``), so subclassing ``Network`` cannot extend it; :func:`register`
replaces the staticmethod with :func:`get_neuron_params`, which handles ``IF_SUB`` and delegates
every other type to NetX's original. Idempotent; other types behave exactly as before.

``IF_SUB`` mapping (all values Python ``int``: ``Var.get()`` hangs on numpy int64 scalars, which is
what h5py/NetX hand out)::

    neuron_proc = netx_export.lava.IF_SUB, bias_key = 'bias_mant', bias_exp = 6
    vth = vThMant, du = iDecay − 1, dv = vDecay,
    v = v_init = vInit << 6            (vInit: our key, read from the raw h5py group; a Python int,
                                       or for a low-T calibrated layer an int64 (C,) array, one value
                                       per output channel, which IF_SUB broadcasts over Lava's
                                       (x, y, channel) neuron layout — channel is the last axis)
    reset_interval / reset_offset      from Network(reset_interval=..., reset_offset=...):
                                       NetX staggers the offset one step per layer

lava-dl's import noise. ``lava.lib.dl.netx`` imports ``lava.lib.dl.slayer``, whose object-detection
data set module tries the Prophesee toolbox (``from src.io.psee_loader import ...``) and prints a
three-line "WARNING: Prophesee Dataset Toolbox could not be found!" to stdout when it is missing.
:func:`import_netx` is the one place lava-dl is imported first: it captures stdout during that import
and passes on everything but those three lines.

Usage::

    from netx_export.lava_runtime import netx_registration as lava_netx
    lava_netx.register()                       # before building the network
    hdf5 = lava_netx.import_netx().hdf5
    net = hdf5.Network(net_config='model.net', input_shape=(W, H, C), reset_interval=T)
"""
from __future__ import annotations

import contextlib
import io
import sys
from typing import Any

__all__ = ["NEURON_TYPE", "import_netx", "register", "unregister", "is_registered", "get_neuron_params"]

NEURON_TYPE = "IF_SUB"
_ORIGINAL: Any = None
_PROPHESEE = ("WARNING: Prophesee Dataset Toolbox could not be found!",
              "Only Prophesee DVS demo will not run properly.",
              "Please install it from https://github.com/prophesee-ai/prophesee-automotive-dataset-toolbox")


def import_netx() -> Any:
    """``lava.lib.dl.netx`` (with its ``hdf5``, ``blocks`` and ``utils``), imported without lava-dl's
    Prophesee toolbox warning (module docstring); any other output of the import still appears."""
    if "lava.lib.dl.netx" in sys.modules:
        return sys.modules["lava.lib.dl.netx"]
    import netx_export.lava  # noqa: F401  (installs the Python 3.11 shim before any Lava import)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            import lava.lib.dl.netx as netx
    finally:
        rest = [line for line in buf.getvalue().splitlines(keepends=True) if line.strip() not in _PROPHESEE]
        sys.stdout.write("".join(rest))
    return netx


def _scalar(neuron_config, key: str, default: int | None = None) -> int:
    raw = getattr(neuron_config, "f", None)          # NetDict wraps the h5py group; a plain dict has no .f
    if raw is not None:
        if key not in raw.keys():
            if default is None:
                raise KeyError(f"IF_SUB neuron group has no '{key}'")
            return int(default)
        v = raw[key][()]
    else:
        if key not in neuron_config:
            if default is None:
                raise KeyError(f"IF_SUB neuron config has no '{key}'")
            return int(default)
        v = neuron_config[key]
    import numpy as np
    a = np.asarray(v).reshape(-1)
    return int(a[0])


def _v_init(neuron_config) -> int | Any:
    """vInit << 6: a Python int for a scalar dataset, an int64 (C,) array for a per-channel one."""
    import numpy as np
    raw = getattr(neuron_config, "f", None)
    if raw is not None:
        v = raw["vInit"][()] if "vInit" in raw.keys() else 0
    else:
        v = neuron_config["vInit"] if "vInit" in neuron_config else 0
    a = np.asarray(v)
    if a.ndim == 0 or (a.ndim == 1 and a.size == 1 and raw is None):
        return int(a.reshape(-1)[0]) << 6
    return a.astype(np.int64).reshape(-1) << 6


def get_neuron_params(neuron_config, input: bool = False, reset_interval: int | None = None,  # noqa: A002
                      reset_offset: int = 0, spike_exp: int = 6) -> dict[str, Any] | None:
    """NetX's ``get_neuron_params`` plus the ``IF_SUB`` type (see the module docstring)."""
    ntype = neuron_config["type"]
    if isinstance(ntype, bytes):
        ntype = ntype.decode("ascii")
    if ntype != NEURON_TYPE:
        return _ORIGINAL(neuron_config, input=input, reset_interval=reset_interval, reset_offset=reset_offset,
                         spike_exp=spike_exp)
    from netx_export.lava import IF_SUB
    v0 = _v_init(neuron_config)
    params: dict[str, Any] = {
        "neuron_proc": IF_SUB,
        "bias_key": "bias_mant",
        "vth": _scalar(neuron_config, "vThMant"),
        "du": _scalar(neuron_config, "iDecay") - 1,
        "dv": _scalar(neuron_config, "vDecay"),
        "bias_exp": 6,
        "v": v0,
        "v_init": v0 if isinstance(v0, int) else v0.copy(),
        "num_message_bits": 0,
    }
    if reset_interval:
        params["reset_interval"] = int(reset_interval)
        params["reset_offset"] = int(reset_offset)
    return params


def register() -> None:
    """Install the hook into ``lava.lib.dl.netx.hdf5.Network`` (idempotent)."""
    global _ORIGINAL
    hdf5 = import_netx().hdf5
    current = hdf5.Network.__dict__["get_neuron_params"].__func__
    if current is get_neuron_params:
        return
    _ORIGINAL = current
    hdf5.Network.get_neuron_params = staticmethod(get_neuron_params)


def unregister() -> None:
    """Restore NetX's original ``get_neuron_params``."""
    global _ORIGINAL
    if _ORIGINAL is None:
        return
    hdf5 = import_netx().hdf5
    hdf5.Network.get_neuron_params = staticmethod(_ORIGINAL)
    _ORIGINAL = None


def is_registered() -> bool:
    hdf5 = import_netx().hdf5
    return hdf5.Network.__dict__["get_neuron_params"].__func__ is get_neuron_params
