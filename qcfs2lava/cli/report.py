"""``qcfs2lava report``: one HTML (or Markdown) report of a checkpoint and its exported NetX file.

``register(sub)`` adds the subcommand; the handler prints one line per stage, the
energy table, and the report's path. Bad input raises UserError (one line, exit code 2).
"""
from __future__ import annotations

import argparse

from qcfs2lava.cli.common import MAX_STEPS, integer
from qcfs2lava.cli.common import output_folder
from qcfs2lava.util.errors import UserError

__all__ = ["register", "cmd_report"]

EPILOG_REPORT = """examples:
  qcfs2lava report m.pt m.net -o report/                        # digits: no data folder needed
  qcfs2lava report vgg.pt vgg.net --data-dir D --n 500 --T 32 -o report/
  qcfs2lava simulate m.net --backend lava --n 50 --T 16 --json lava.json
  qcfs2lava report m.pt m.net --lava lava.json --format md -o report/
"""


def cmd_report(a: argparse.Namespace) -> int:
    from netx_export.report.energy import format_energy
    from netx_export.report.render import FORMATS, write_report
    from netx_export.report.collect import collect_report_data

    if a.format not in FORMATS:
        raise UserError(f"unknown format '{a.format}'; use html or md")
    output_folder(a.output, "-o", [a.checkpoint, a.net, a.lava])
    data = collect_report_data(a.checkpoint, a.net, data_dir=a.data_dir, n=a.n, T=a.T, lava_json=a.lava,
                               batch_size=a.batch_size, log=lambda s: print(s, flush=True))
    if data.energy is not None:
        print(format_energy(data.energy))
    print(f"writing the {a.format} report (6 parts: accuracy, Figure 2, firing rates, raster, quantization, energy)",
          flush=True)
    path = write_report(data, a.output, a.format)
    print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``report`` to the ``qcfs2lava`` subcommand parsers."""
    r = sub.add_parser("report", help="HTML/Markdown report: accuracy vs T, Figure 2, spikes, quantization, "
                              "energy", epilog=EPILOG_REPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("checkpoint", help="model.pt written by `qcfs2lava train`")
    r.add_argument("net", help="its NetX file written by `qcfs2lava export`")
    r.add_argument("--data-dir", help="data folder (not needed for digits)")
    r.add_argument("--n", type=integer(1), help="only the first n test images (default: all)")
    r.add_argument("--T", type=integer(1, MAX_STEPS), default=16, help="time steps; accuracy at every t <= T (default 16)")
    r.add_argument("--lava", metavar="JSON", help="Lava accuracies from `qcfs2lava simulate --backend lava --json`")
    r.add_argument("-o", "--output", default="report", help="folder for the report (default ./report)")
    r.add_argument("--format", default="html", choices=["html", "md"],
                   help="html: one self-contained file; md: report.md with PNG files beside it")
    r.add_argument("--batch-size", type=integer(1), default=250)
    r.set_defaults(func=cmd_report)
