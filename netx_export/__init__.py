"""netx_export: QCFS networks → Loihi fixed point → lava-dl NetX HDF5 files, and the simulators that run
them (an integer-exact reference simulator, the stock-block mode, Lava's CPU simulator).

The Python API (``docs/api.md``); names are imported on first use, so Lava and torch load only when
needed:

* convert: :func:`export` (any QCFS ``nn.Module`` → NetX file), :func:`convert_module`,
  :func:`quantize_checkpoint` (a ``qcfs2lava`` checkpoint), :func:`trace` (the typed layer graph);
* files: :func:`write_netx`, :func:`read_netx`, :func:`validate_file`, :func:`load_test_inputs`;
* the reference simulator: :func:`input_drive`, :func:`simulate` (images → :class:`SimResult`),
  :func:`simulate_drive`;
* Lava: :func:`run_lava` (many samples in one Lava run), :func:`compare` (spike for spike);
* Loihi 2: :func:`plan_network` (cores and chips a file's layers need, per mode), :func:`format_plan`;
* errors: :class:`ExportError` (what the converter cannot represent, with the module named).
"""
from __future__ import annotations

import importlib
from typing import Any

_API = {
    "export": "netx_export.netx.write",
    "convert_module": "netx_export.convert.pipeline",
    "quantize_checkpoint": "netx_export.convert.pipeline",
    "trace": "netx_export.convert.trace",
    "input_drive": "netx_export.convert.fixedpoint",
    "write_netx": "netx_export.netx.write",
    "read_netx": "netx_export.netx.read",
    "validate_file": "netx_export.netx.validate",
    "load_test_inputs": "netx_export.netx.inputs",
    "simulate": "netx_export.sim.refsim",
    "simulate_drive": "netx_export.sim.refsim",
    "SimResult": "netx_export.sim.refsim",
    "run_lava": "netx_export.lava_runtime.runner",
    "compare": "netx_export.comparison",
    "plan_network": "netx_export.report.plan",
    "format_plan": "netx_export.report.plan",
    "ExportError": "netx_export.errors",
}

__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'netx_export' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
