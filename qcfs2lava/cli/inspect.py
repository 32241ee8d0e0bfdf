"""``qcfs2lava inspect``: the structure of any NetX file, and optionally its validation."""
from __future__ import annotations

import argparse

from qcfs2lava.cli.common import RAW

__all__ = ["register", "cmd_inspect"]

EPILOG_INSPECT = """examples:
  qcfs2lava inspect model.net
  qcfs2lava inspect lava-dl-tiny.net        # any NetX file, not only ours
"""


def cmd_inspect(a: argparse.Namespace) -> int:
    from netx_export.netx.describe import describe
    from netx_export.netx.validate import validate_file

    print(describe(a.file))
    if a.validate:
        problems = validate_file(a.file)
        if problems:
            print("validation: " + str(len(problems)) + " problem(s)")
            for p in problems:
                print(f"  - {p}")
            return 1
        print("validation: OK")
    return 0



def register(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("inspect", help="print the structure of any NetX HDF5 file",
                              epilog=EPILOG_INSPECT, formatter_class=RAW)
    i.add_argument("file")
    i.add_argument("--validate", action="store_true", help="also check it against qcfs2lava's rules")
    i.set_defaults(func=cmd_inspect)
