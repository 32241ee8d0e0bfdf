"""``qcfs2lava plan``: how many Loihi 2 cores and chips a NetX file needs, before booking hardware time."""
from __future__ import annotations

import argparse

from qcfs2lava.cli.common import RAW, integer, write_json

__all__ = ["register", "cmd_plan"]

EPILOG_PLAN = """examples:
  qcfs2lava plan model.net                        # microcode and stock mode, both synapse storages
  qcfs2lava plan model.net --mode stock --storage shared --json plan.json
  qcfs2lava plan lava-dl-pilotnet-lif.net         # any NetX file (planned as lava-dl's loader builds it)
  qcfs2lava plan model.net --axons-in 8192        # your own per-core figures

Every limit and what it rests on: netx_export/report/limits.py (docs/stock-mode.md, "Resource plan").
"""


def cmd_plan(a: argparse.Namespace) -> int:
    from netx_export.report.limits import Limits
    from netx_export.report.plan import format_plan, plan_file, plan_json
    from qcfs2lava.util.errors import UserError

    limits = Limits(neurons_per_core=a.neurons_per_core, synapse_bits_per_core=a.synapse_kib * 8192,
                    axons_in_per_core=a.axons_in, synapse_overhead_bits=a.synapse_bits)
    try:
        plans = plan_file(a.file, a.mode and [a.mode], a.storage and [a.storage], limits, a.timing)
    except ValueError as e:
        raise UserError(f"--mode {a.mode}: {e}") from None
    for k, p in enumerate(plans):
        print(("\n" if k else "") + format_plan(p))
    write_json(a.json, dict(file=a.file, plans=[plan_json(p) for p in plans]))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from netx_export.report.limits import LOIHI2
    from netx_export.report.plan import MODES, STORAGES

    p = sub.add_parser("plan", help="Loihi 2 resource plan of a NetX file: cores and chips per layer and mode",
                       epilog=EPILOG_PLAN, formatter_class=RAW)
    p.add_argument("file")
    p.add_argument("--mode", choices=MODES, help="deployment mode (default: every mode the file has)")
    p.add_argument("--storage", choices=STORAGES, help="conv synapse storage (default: both)")
    p.add_argument("--timing", choices=("lava", "aligned"), default="lava",
                   help="stock mode's timing (aligned adds the bias relay chain)")
    p.add_argument("--neurons-per-core", type=integer(1, 1 << 20), default=LOIHI2.neurons_per_core)
    p.add_argument("--synapse-kib", type=integer(1, 1 << 20), default=LOIHI2.synapse_bits_per_core // 8192,
                   help="synaptic memory per core in KiB")
    p.add_argument("--axons-in", type=integer(1, 1 << 24), default=LOIHI2.axons_in_per_core,
                   help="input axons per core (Loihi 2's figure is not public)")
    p.add_argument("--synapse-bits", type=integer(0, 64), default=LOIHI2.synapse_overhead_bits,
                   help="bits a stored synapse needs beside its 8-bit weight (not public; default 0)")
    p.add_argument("--json", help="write the plans here")
    p.set_defaults(func=cmd_plan)
