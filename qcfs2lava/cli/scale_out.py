"""``simulate`` over shards of its samples (:mod:`qcfs2lava.util.shards`), and joining them.

* ``--shard K/N``: this process runs shard K only; ``qcfs2lava merge`` joins the N JSON (and .npz)
  files — for batch schedulers that start independent jobs.
* ``--workers N``: N shard processes on this machine (``python -m qcfs2lava simulate ... --shard
  k/N``, each in its own session and pinned to its own cores, :func:`core_groups`), one progress bar
  for all, joined here. Ctrl-C, SIGTERM or one worker's failure stops every worker (SIGTERM, then
  SIGKILL to its process group, which holds its Lava model processes, after a grace period), so
  none is left behind.
* under ``torchrun`` (one or many nodes): rank r runs shard r of the world size, and rank 0 gathers
  every rank's record and per-sample arrays over ``torch.distributed`` (gloo) and writes.

Joined records equal one unsharded run's, field for field, except the run-cost fields
:data:`COST_FIELDS` (wall times and step counts, which depend on how the work was split): counts
are summed as integers and every rate is recomputed from them, as one run computes it.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from qcfs2lava.util.errors import UserError
from qcfs2lava.util.progress import REPORT_ENV, Progress
from qcfs2lava.util.shards import Shard

__all__ = ["COST_FIELDS", "without_costs", "compare_record", "merge_records", "namespace_argv", "core_groups",
           "run_workers", "gather"]

# depend on how the samples were split (joined: wall times the slowest shard's, steps summed; every
# shard's own in "shards")
COST_FIELDS = frozenset({"seconds", "seconds_build", "seconds_compile", "seconds_run", "seconds_total",
                         "seconds_per_sample", "seconds_per_step", "steps_per_second", "steps", "seconds_reference",
                         "shards"})
# must agree between the shards of one run
_SAME = ("file", "backend", "engine", "device", "tag", "conv", "timing", "dataset", "T", "source_sha256", "n_total")
_SUMMED = ("n", "requested", "saturated", "drive_clipped", "drive_total")
GRACE_S = 20.0          # a stopped worker's time to shut its Lava runtime down before SIGKILL


def without_costs(rec: Any) -> Any:
    """``rec`` without :data:`COST_FIELDS`, at any depth: what must be equal between a joined and an
    unsharded run."""
    if isinstance(rec, dict):
        return {k: without_costs(v) for k, v in rec.items() if k not in COST_FIELDS}
    if isinstance(rec, list):
        return [without_costs(v) for v in rec]
    return rec


def _ordered(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The shard records in shard order, checked to be the N shards of one run."""
    if not records:
        raise UserError("nothing to merge")
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not isinstance(r.get("shard"), dict) or "n_total" not in r:
            raise UserError(f"input {i + 1} is not the JSON of a `simulate --shard K/N` run")
    recs = sorted(records, key=lambda r: r["shard"]["index"])
    count = recs[0]["shard"]["count"]
    got = [r["shard"]["index"] for r in recs]
    if got != list(range(count)) or any(r["shard"]["count"] != count for r in recs):
        names = ", ".join(f"{r['shard']['index']}/{r['shard']['count']}" for r in recs)
        raise UserError(f"shards {names}: need each of 0/{count} .. {count - 1}/{count} once")
    for k in _SAME:
        vals = {repr(r.get(k)) for r in recs}
        if len(vals) > 1:
            raise UserError(f"the shards are not of one run: '{k}' differs ({', '.join(sorted(vals))})")
    pos = 0
    for r in recs:
        sh = r["shard"]
        if sh["start"] != pos:
            raise UserError(f"shard {sh['index']}/{count} starts at sample {sh['start']}, not {pos}")
        pos = sh["stop"]
    if pos != recs[0]["n_total"]:
        raise UserError(f"the shards cover {pos} of {recs[0]['n_total']} samples")
    return recs


def compare_record(c: dict[str, Any], ref_correct: list[int], n: int, info: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of ``--compare`` from a :func:`netx_export.comparison.merge` result ``c`` (also
    what ``merge`` rebuilds from shards)."""
    c = dict(c, layers=[dict(layer=r["layer"], compared=r["compared"], mismatches=r["mismatches"],
                             first_mismatch=r["first_mismatch"]) for r in c["layers"]])
    ok = c["spike_mismatches"] == 0 and c["logit_mismatches"] == 0
    return dict(info, **c, reference_correct=ref_correct,
                reference_accuracy=[k / max(1, n) for k in ref_correct], bit_exact=ok)


def merge_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The N shard records of one ``simulate`` run (any order) as the record of one unsharded run."""
    from netx_export.comparison import merge as merge_compare

    recs = _ordered(records)
    out = {k: v for k, v in recs[0].items() if k not in COST_FIELDS and k != "shard"}
    for k in _SUMMED:
        if k in out:
            out[k] = sum(int(r[k]) for r in recs)
    n, T = out["n"], int(out["T"])
    correct = [int(c) for c in np.sum([r["correct"] for r in recs if r["n"]], axis=0, dtype=np.int64)] if n else []
    out["correct"] = correct
    out["accuracy"] = [c / n for c in correct]
    out["final_accuracy"] = out["accuracy"][-1] if n else None
    if "spike_totals" in out:
        totals = [int(s) for s in np.sum([r["spike_totals"] for r in recs], axis=0, dtype=np.int64)]
        out["spike_totals"] = totals
        out["firing_rates"] = {name: float(s) / (n * k * T)
                               for name, s, k in zip(out["firing_rates"], totals, out["neurons"])}
    if "stopped" in out:
        out["stopped"] = next((r["stopped"] for r in recs if r.get("stopped")), None)
    if "compare" in out:
        cs = [r["compare"] for r in recs]
        ref_correct = [int(c) for c in np.sum([c["reference_correct"] for c in cs], axis=0, dtype=np.int64)]
        info = {k: cs[0][k] for k in ("reference", "engine", "device", "timing")}
        info["seconds_reference"] = max(c["seconds_reference"] for c in cs)
        out["compare"] = compare_record(merge_compare(cs), ref_correct, n, info)
        out["spike_mismatches"] = out["compare"]["spike_mismatches"]
    # run costs: wall times of the slowest shard, steps summed, every shard's own in "shards"
    for k in COST_FIELDS & recs[0].keys():
        if k.startswith("seconds") and k not in ("seconds_per_sample", "seconds_per_step"):
            out[k] = max(float(r[k]) for r in recs)
    if "steps" in recs[0]:
        out["steps"] = sum(int(r["steps"]) for r in recs)
        run = max(float(r["seconds_run"]) for r in recs)
        out["seconds_per_sample"] = run / max(1, n)
        out["seconds_per_step"] = sum(float(r["seconds_run"]) for r in recs) / max(1, out["steps"])
        out["steps_per_second"] = out["steps"] / max(run, 1e-9)
    out["shards"] = [dict(shard=f"{r['shard']['index']}/{r['shard']['count']}", start=r["shard"]["start"],
                          stop=r["shard"]["stop"], **{k: r[k] for k in COST_FIELDS & r.keys()}) for r in recs]
    return out


def namespace_argv(parser: argparse.ArgumentParser, ns: argparse.Namespace, **override: Any) -> list[str]:
    """The command line that makes ``parser`` parse ``ns`` again, with ``override``'s values (by
    ``dest``; None drops an option): how a worker is told to run what its parent was asked."""
    argv: list[str] = []
    for act in parser._actions:       # argparse keeps its options here (no public accessor)
        if isinstance(act, argparse._HelpAction) or act.dest == "func":
            continue
        v = override[act.dest] if act.dest in override else getattr(ns, act.dest, act.default)
        if not act.option_strings:
            argv.append(str(v))
        elif isinstance(act, argparse._StoreTrueAction):
            argv += [act.option_strings[-1]] if v else []
        elif v is not None and v != act.default:
            argv += [act.option_strings[-1], str(v)]
    return argv


def _terminate(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM to every running worker (it shuts its Lava runtime down and exits 143), then SIGKILL to
    each worker's process group (its model processes included) once it has ended or after GRACE_S."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        p.terminate()
    deadline = time.monotonic() + GRACE_S
    for p in live:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:        # the group too: a worker's Lava model processes must not outlive it
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        p.wait()


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def core_groups(count: int) -> list[set[int]]:
    """The cores this process may use, cut into ``count`` disjoint groups (worker k gets group k), or
    [] where there are fewer cores than workers or no affinity API. One Lava runtime is a tree of
    busy processes that does not run faster on two cores than on one (benchmarks/lava_scale_out.py),
    so workers that share every core slow each other down; pinned, each keeps its own."""
    try:
        mine = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return []
    if count > len(mine):
        return []
    return [set(mine[k * len(mine) // count:(k + 1) * len(mine) // count]) for k in range(count)]


def run_workers(a: argparse.Namespace, parser: argparse.ArgumentParser, n_total: int
                ) -> tuple[dict[str, Any] | None, tuple[dict | None, dict | None], int]:
    """``a``'s run as ``a.workers`` shard processes: (joined record, (outputs, spikes) arrays, exit
    code: 1 if any worker reported a mismatch). A worker that fails stops the others; its last line
    is reported, the record is None and the exit code 1."""
    from qcfs2lava.util.outputs import join_arrays, load_npz

    count = int(a.workers)
    cores = core_groups(count)
    threads = max(1, len(cores[0]) if cores else (os.cpu_count() or 1) // count)
    with tempfile.TemporaryDirectory(prefix="qcfs2lava-workers-") as wd:
        procs, files = [], []
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        bar = Progress(n_total, f"{a.backend} x{count}", "img")
        try:
            for k in range(count):
                f = {x: os.path.join(wd, f"{k}.{x}") for x in ("json", "out.npz", "spk.npz", "log", "progress")}
                argv = namespace_argv(parser, a, shard=Shard(k, count), workers=None, json=f["json"],
                                      save_outputs=f["out.npz"] if a.save_outputs else None,
                                      save_spikes=f["spk.npz"] if a.save_spikes else None)
                with open(f["log"], "w") as log:
                    procs.append(subprocess.Popen([sys.executable, "-m", "qcfs2lava", "simulate", *argv],
                                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                  env=dict(env, **{REPORT_ENV: f["progress"]}),
                                                  start_new_session=True))
                if cores:       # before the worker starts its Lava runtime, whose processes inherit it
                    try:
                        os.sched_setaffinity(procs[-1].pid, cores[k])
                    except OSError:     # it has already exited: its exit code tells
                        pass
                files.append(f)
            failed = None
            while failed is None and any(p.poll() is None for p in procs):
                time.sleep(0.25)
                bar.to(sum(_count(f["progress"]) for f in files))
                failed = next((k for k, p in enumerate(procs) if p.poll() not in (None, 0, 1)), None)
            failed = next((k for k, p in enumerate(procs) if p.poll() not in (None, 0, 1)), failed)
            bar.to(sum(_count(f["progress"]) for f in files))
        finally:
            bar.close()
            _terminate(procs)       # no-op when all have ended; after Ctrl-C / SIGTERM / a failure it stops the rest
        if failed is not None:
            code = procs[failed].returncode
            why = (f"killed by {signal.Signals(-code).name}" if code < 0 else
                   f"exit code {code}: {_last_line(files[failed]['log'])}")
            print(f"qcfs2lava: worker {failed}/{count} failed ({why}); the other workers were stopped",
                  file=sys.stderr)
            return None, (None, None), 1
        import json
        recs = []
        for f in files:
            with open(f["json"]) as fh:
                recs.append(json.load(fh))
        joined = []
        for key in ("out.npz", "spk.npz"):
            paths = [f[key] for f in files if os.path.exists(f[key])]
            joined.append(join_arrays([load_npz(p) for p in paths]) if paths else None)
    rc = max(p.returncode for p in procs)
    return merge_records(recs), (joined[0], joined[1]), rc


def _count(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read() or 0)
    except (OSError, ValueError):
        return 0


def gather(rec: dict[str, Any], out: dict | None, spk: dict | None
           ) -> tuple[dict[str, Any], dict | None, dict | None, int] | None:
    """Under torchrun: every rank's (record, outputs, spikes) to rank 0, which gets them joined (and
    exit code 1 if any rank found a mismatch); None on the other ranks."""
    import torch.distributed as dist

    from qcfs2lava.util.outputs import join_arrays
    rank = dist.get_rank()
    parts: list | None = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object((rec, out, spk), parts, dst=0)
    dist.barrier()
    dist.destroy_process_group()
    if rank != 0:
        return None
    assert parts is not None
    recs = [p[0] for p in parts]
    outs = [p[1] for p in parts if p[1] is not None]
    spks = [p[2] for p in parts if p[2] is not None]
    rc = 1 if any(r.get("compare") and not r["compare"]["bit_exact"] for r in recs) else 0
    return (merge_records(recs), join_arrays(outs) if outs else None, join_arrays(spks) if spks else None, rc)
