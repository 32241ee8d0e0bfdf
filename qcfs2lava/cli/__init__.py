"""The ``qcfs2lava`` command: a thin layer over the two libraries, and the only code that imports both.

One module per subcommand, each with ``register(subparsers)`` and its handler; handlers raise
:class:`~qcfs2lava.util.errors.UserError` for bad input. Exit codes: 0 ok, 1 failure (e.g. a spike
mismatch), 2 bad input (one-line message, no traceback), 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from qcfs2lava.cli import calibrate, demo, evaluate, export, import_cmd, inspect, merge, plan, report, simulate, train
from qcfs2lava.cli.common import Parser
from qcfs2lava.util.errors import run_reporting_errors

__all__ = ["build_parser", "main", "COMMANDS"]

COMMANDS = (train, import_cmd, evaluate, calibrate, export, inspect, plan, simulate, merge, report, demo)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="qcfs2lava", description="QCFS ANN-to-SNN conversion, PyTorch to Lava.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return run_reporting_errors("qcfs2lava", func, args)


if __name__ == "__main__":
    sys.exit(main())
