"""``qcfs2lava merge``: the JSON (and per-sample .npz) files of ``simulate --shard K/N`` runs joined
into what one unsharded run writes (:mod:`qcfs2lava.cli.scale_out`)."""
from __future__ import annotations

import argparse
import json

from qcfs2lava.cli.common import RAW, write_json
from qcfs2lava.util.errors import UserError

__all__ = ["register", "cmd_merge"]

EPILOG = """examples:
  qcfs2lava simulate vgg.net --n 3000 --shard 0/3 --json s0.json     # and 1/3, 2/3, e.g. as three batch jobs
  qcfs2lava merge s0.json s1.json s2.json --json all.json
  qcfs2lava merge s*.json --json all.json --outputs s0.npz s1.npz s2.npz --save-outputs all.npz
"""


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise UserError(f"{path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not JSON ({e})") from None


def _join_files(opt: str, paths: list[str] | None, records: list[dict], out: str | None) -> None:
    """Check ``paths`` (one per shard JSON, in the same order) and join them into ``out``."""
    from qcfs2lava.util.outputs import join_arrays, load_npz, write_npz
    if not paths and not out:
        return
    if not (paths and out):
        raise UserError(f"{opt} FILES and its --save-{opt[2:]} OUT go together")
    if len(paths) != len(records):
        raise UserError(f"{opt}: {len(paths)} files for {len(records)} shard JSON files (one each, same order)")
    order = sorted(range(len(records)), key=lambda i: records[i]["shard"]["index"])
    parts = []
    for i in order:
        try:
            parts.append(load_npz(paths[i]))
        except (OSError, ValueError) as e:
            raise UserError(f"{paths[i]}: not a per-sample .npz file ({e})") from None
    try:
        arrays = join_arrays(parts)
    except ValueError as e:
        raise UserError(f"{opt}: the files do not fit together: {e}") from None
    n = sum(r["n"] for r in records)
    have = arrays["labels" if "labels" in arrays else "layer0"].shape[-1]
    if have != n:
        raise UserError(f"{opt}: the files hold {have} samples, the shards' JSON {n} (wrong files or order?)")
    write_npz(out, arrays)
    print(f"{opt[2:]} joined: {out}")


def cmd_merge(a: argparse.Namespace) -> int:
    from qcfs2lava.cli.scale_out import merge_records
    from qcfs2lava.cli.simulate import print_record
    from qcfs2lava.util.fileio import check_outputs

    check_outputs([("--json", a.json), ("--save-outputs", a.save_outputs), ("--save-spikes", a.save_spikes)],
                  [*a.shards, *(a.outputs or []), *(a.spikes or [])])
    records = [_read_json(p) for p in a.shards]
    rec = merge_records(records)
    print_record(rec)
    _join_files("--outputs", a.outputs, records, a.save_outputs)
    _join_files("--spikes", a.spikes, records, a.save_spikes)
    write_json(a.json, rec)
    c = rec.get("compare")
    return 1 if c and not c["bit_exact"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("merge", help="join the JSON (and .npz) files of `simulate --shard K/N` runs",
                       epilog=EPILOG, formatter_class=RAW)
    s.add_argument("shards", nargs="+", help="the shards' --json files (any order)")
    s.add_argument("--json", help="the joined record: what one unsharded run writes")
    s.add_argument("--outputs", nargs="+", metavar="NPZ", help="the shards' --save-outputs files, in the order of the JSON files")
    s.add_argument("--save-outputs", metavar="FILE.npz", help="where to write them joined")
    s.add_argument("--spikes", nargs="+", metavar="NPZ", help="the shards' --save-spikes files, in the order of the JSON files")
    s.add_argument("--save-spikes", metavar="FILE.npz", help="where to write them joined")
    s.set_defaults(func=cmd_merge)
