"""Lava processes of qcfs2lava: the ``IF_SUB`` neuron and a file-backed ``Recorder`` sink.

This package must hold **only** process and process-model modules: when Lava compiles a network
with one of these processes it imports (``exec``s) every ``.py`` module in this directory while
searching for ProcessModels (lava-nc ``compiler_graphs.py``, ``_find_proc_models``). Put nothing
else here; the NetX hook lives in :mod:`netx_export.lava_runtime.netx_registration` and the runner in
:mod:`netx_export.lava_runtime.runner`.

Importing the package installs the Python 3.11 shim (:mod:`netx_export.lava_compat`) first.
"""
from netx_export import lava_compat as _lava_compat

_lava_compat.install()

from netx_export.lava.process import IF_SUB, Recorder  # noqa: E402

__all__ = ["IF_SUB", "Recorder"]
