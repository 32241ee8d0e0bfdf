#!/usr/bin/env python
"""Ctrl-C / SIGTERM while a Lava run starts (issue 19, cause 1): does every run end quickly and
leave nothing behind?

    python benchmarks/lava_interrupt.py --net /tmp/h5/m.net            # 10 SIGINT + 10 SIGTERM runs

Each run starts ``qcfs2lava simulate NET --backend lava --n N --T T`` in its own session and its own
``TMPDIR``, waits until its first child process appears, then a random delay in ``[0, --max-delay]``
s (seeded; ``--runs`` per signal, ``summary``), or until its first forked child appears (the Lava
runtime's start: its shared-memory server, then the model processes), then a delay in
``[0, --startup-max-delay]`` s (``--startup-runs`` per signal, ``summary.start_up``: the signal lands
while the processes are forked or in the first steps), and sends the signal to the command's process only (as ``kill -INT $P`` does; ``--group`` sends it to the whole process group,
as a terminal's Ctrl-C does). Measured per run:

* the exit code as a shell reports it (130 after SIGINT, 143 after SIGTERM; a process killed by the
  signal's default action, e.g. while Python still imports, reports 128 + N too; ``exit_code`` keeps
  Python's negative form), whether the CLI said so in one line, and the seconds from the signal to
  the exit; a run still alive after ``--kill-after`` s counts as hung and its processes are killed;
* leftover processes: every process seen as a descendant of the command during the run (polled
  every 20 ms), or in its session, still alive (not a zombie) ``--settle`` s after the exit;
* leftover ``/dev/shm/psm_*`` segments: new since the run started and not mapped by a live process
  outside the run (the machine may run other Lava jobs);
* leftover temporary folders in the run's ``TMPDIR``: ``qcfs2lava-lava-*``, ``qcfs2lava-stock-*``, ``pymp-*``.

Writes ``benchmarks/results/lava_interrupt.json`` (with the command) and prints one line per run.
If ``--net`` does not exist it is trained (tiny, digits, 2 epochs) and exported first.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "lava_interrupt.json")
TEMP_PREFIXES = ("qcfs2lava-lava-", "qcfs2lava-stock-", "pymp-")
EXPECTED = {signal.SIGINT: 130, signal.SIGTERM: 143}


# --------------------------------------------------------------------------- /proc
def proc_table() -> dict[int, tuple[str, int, int, int]]:
    """pid -> (state, ppid, pgid, sid) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        out[int(name)] = (fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]))
    return out


def tree(root: int, table: dict[int, tuple[str, int, int, int]]) -> set[int]:
    """``root``'s descendants, and every process in ``root``'s session (sid == root)."""
    kids: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    out |= {pid for pid, (_, _, _, sid) in table.items() if sid == root and pid != root}
    return out


def alive(pids: set[int]) -> list[int]:
    table = proc_table()
    return sorted(p for p in pids if p in table and table[p][0] not in ("Z", "X"))


def shm_segments() -> set[str]:
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith("psm_")}
    except OSError:
        return set()


def mapped_by_others(names: set[str], ours: set[int]) -> set[str]:
    """Of ``names``, those a live process outside ``ours`` has mapped (another job's segments)."""
    if not names:
        return set()
    out = set()
    for pid in proc_table():
        if pid in ours:
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                text = f.read()
        except OSError:
            continue
        out |= {n for n in names if f"/dev/shm/{n}" in text}
    return out


# --------------------------------------------------------------------------- one run
def forked(pid: int, parent: int) -> bool:
    """``pid`` runs its parent's command line: a fork (Lava's model processes, its shared-memory server),
    not a program started by a library (the resource tracker, a compiler probe)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f, open(f"/proc/{parent}/cmdline", "rb") as g:
            return f.read() == g.read()
    except OSError:
        return False


def one_run(cmd: list[str], sig: int, delay: float | None, *, group: bool = False, kill_after: float = 30.0,
            settle: float = 5.0, start_timeout: float = 120.0, anchor: str = "child") -> dict:
    """Run ``cmd``, send ``sig`` ``delay`` s after its first child appears (``anchor="fork"``: its
    first forked child, i.e. the Lava runtime's start; ``delay=None``: send nothing, the command
    signals itself; times then count from the first child), and look for what it left."""
    tmp = tempfile.mkdtemp(prefix="lava-interrupt-")
    env = dict(os.environ, TMPDIR=tmp, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    shm0 = shm_segments()
    log_path = os.path.join(tmp, "output.log")
    log = open(log_path, "wb")
    t_start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
    seen: set[int] = set()
    fork_polls: dict[int, int] = {}          # polls on which a child still ran the parent's command line
    t_child = t_signal = t_exit = None
    children_at_signal = 0
    killed = False

    def poll() -> None:
        seen.update(tree(p.pid, proc_table()))

    while p.poll() is None:
        poll()
        now = time.monotonic()
        if t_child is None:
            for c in seen if anchor == "fork" else ():
                if forked(c, p.pid):             # twice in a row: not a subprocess about to exec
                    fork_polls[c] = fork_polls.get(c, 0) + 1
            if seen if anchor == "child" else max(fork_polls.values(), default=0) >= 2:
                t_child = now
            elif now - t_start > start_timeout:
                break
        if delay is None and t_child is not None and t_signal is None:
            t_signal = t_child                   # the command signals itself
        if t_child is not None and t_signal is None and now >= t_child + delay:
            children_at_signal = len(alive(seen))
            (os.killpg if group else os.kill)(p.pid, sig)
            t_signal = now
        if t_signal is not None and now - t_signal > kill_after:
            break
        time.sleep(0.02)
    if p.poll() is None:                     # hung (or never started a child): kill everything it made
        killed = True
        poll()
        for pid in [p.pid] + alive(seen):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    rc = p.wait()
    t_exit = time.monotonic()
    log.close()
    deadline = time.monotonic() + settle         # the resource tracker exits once every child is gone
    left = alive(seen)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = alive(seen | tree(p.pid, proc_table()))
    new_shm = shm_segments() - shm0
    others = mapped_by_others(new_shm, seen | {p.pid})
    temp_left = sorted(n for n in os.listdir(tmp) if n.startswith(TEMP_PREFIXES))
    with open(log_path, "rb") as f:
        tail = f.read().decode(errors="replace").replace("\r", "\n").strip().splitlines()[-3:]
    for pid in left:                              # leave the machine clean for the next run
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for n in new_shm - others:
        try:
            os.unlink(os.path.join("/dev/shm", n))
        except OSError:
            pass
    shutil.rmtree(tmp, ignore_errors=True)
    return dict(signal=signal.Signals(sig).name, anchor=anchor, delay_s=None if delay is None else round(delay, 3),
                seconds_to_first_child=None if t_child is None else round(t_child - t_start, 3),
                signalled=t_signal is not None, children_at_signal=children_at_signal,
                exit_code=rc, shell_exit_code=shell_code(rc), expected_exit_code=EXPECTED[sig], hung=killed,
                one_line=any("qcfs2lava: interrupted" in t or "qcfs2lava: terminated" in t for t in tail),
                seconds_to_exit=None if t_signal is None or killed else round(t_exit - t_signal, 3),
                processes_seen=len(seen), leftover_processes=left, leftover_shm=sorted(new_shm - others),
                shm_of_other_jobs=len(others), leftover_temp=temp_left, output_tail=tail)


def shell_code(rc: int) -> int:
    """The exit status as a shell reports it: 128 + N for a process killed by signal N."""
    return 128 - rc if rc < 0 else rc


def ok(r: dict, limit: float) -> bool:
    return (r["signalled"] and not r["hung"] and shell_code(r["exit_code"]) == r["expected_exit_code"]
            and r["seconds_to_exit"] is not None and r["seconds_to_exit"] <= limit
            and not r["leftover_processes"] and not r["leftover_shm"] and not r["leftover_temp"])


def summarize(runs: list[dict], limit: float) -> dict:
    out: dict = {}
    for name in sorted({r["signal"] for r in runs}):
        rs = [r for r in runs if r["signal"] == name]
        codes: dict[str, int] = {}
        for r in rs:
            codes[str(r["exit_code"])] = codes.get(str(r["exit_code"]), 0) + 1
        secs = [r["seconds_to_exit"] for r in rs if r["seconds_to_exit"] is not None]
        out[name] = dict(runs=len(rs), exit_codes=codes, ok=sum(ok(r, limit) for r in rs),
                         reported_in_one_line=sum(r["one_line"] for r in rs),
                         killed_by_the_signal=sum(r["exit_code"] < 0 for r in rs),
                         hung=sum(r["hung"] for r in rs), not_signalled=sum(not r["signalled"] for r in rs),
                         max_seconds_to_exit=max(secs) if secs else None,
                         mean_seconds_to_exit=round(sum(secs) / len(secs), 3) if secs else None,
                         leftover_processes=sum(len(r["leftover_processes"]) for r in rs),
                         leftover_shm=sum(len(r["leftover_shm"]) for r in rs),
                         leftover_temp=sum(len(r["leftover_temp"]) for r in rs))
    out["all_ok"] = all(ok(r, limit) for r in runs)
    out["limit_s"] = limit
    return out


def ensure_net(path: str) -> None:
    if os.path.exists(path):
        return
    exe = [sys.executable, "-m", "qcfs2lava"]
    pt = os.path.splitext(path)[0] + ".pt"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    subprocess.run(exe + ["train", "--arch", "tiny", "--dataset", "digits", "--epochs", "2", "--threads", "1",
                          "--out", pt], check=True, cwd=ROOT)
    subprocess.run(exe + ["export", pt, "-o", path], check=True, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--net", default="/tmp/h5/m.net")
    ap.add_argument("--runs", type=int, default=10, help="runs per signal")
    ap.add_argument("--signals", default="INT,TERM")
    ap.add_argument("--max-delay", type=float, default=20.0, help="s after the first child, at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--startup-runs", type=int, default=5,
                    help="more runs per signal, each signalled in [0, --startup-max-delay] s after the first "
                         "fork (the Lava runtime's start: the model processes are being forked)")
    ap.add_argument("--startup-max-delay", type=float, default=1.0)
    ap.add_argument("--n", type=int, default=360, help="test images (360: long enough to outlast --max-delay)")
    ap.add_argument("--T", type=int, default=32)
    ap.add_argument("--group", action="store_true", help="signal the whole process group (a terminal's Ctrl-C)")
    ap.add_argument("--limit", type=float, default=15.0, help="s from the signal to the exit, at most")
    ap.add_argument("--kill-after", type=float, default=30.0, help="s after the signal: a run still alive is hung")
    ap.add_argument("--settle", type=float, default=5.0, help="s after the exit for the last processes to go")
    ap.add_argument("--out", default=OUT)
    a = ap.parse_args(argv)
    ensure_net(a.net)
    exe = os.path.join(os.path.dirname(sys.executable), "qcfs2lava")
    prog = [exe] if os.path.exists(exe) else [sys.executable, "-m", "qcfs2lava"]
    cmd = prog + ["simulate", a.net, "--backend", "lava", "--n", str(a.n), "--T", str(a.T)]
    rng = random.Random(a.seed)
    sigs = [getattr(signal, "SIG" + s.strip().upper()) for s in a.signals.split(",")]
    plan = [(s, rng.uniform(0.0, a.max_delay), "child") for s in sigs for _ in range(a.runs)]
    plan += [(s, rng.uniform(0.0, a.startup_max_delay), "fork") for s in sigs for _ in range(a.startup_runs)]
    runs = []
    t0 = time.time()
    for i, (sig, delay, anchor) in enumerate(plan):
        r = one_run(cmd, sig, delay, group=a.group, kill_after=a.kill_after, settle=a.settle, anchor=anchor)
        runs.append(r)
        print(f"[{i + 1}/{len(plan)}] {r['signal']} {delay:5.2f} s after the first {anchor}: exit {r['exit_code']} in "
              f"{r['seconds_to_exit']} s, left: {len(r['leftover_processes'])} processes, "
              f"{len(r['leftover_shm'])} segments, {len(r['leftover_temp'])} folders"
              f"{'' if ok(r, a.limit) else '  <-- FAIL'}", flush=True)
    summary = summarize([r for r in runs if r["anchor"] == "child"], a.limit)
    summary["start_up"] = summarize([r for r in runs if r["anchor"] == "fork"], a.limit)
    summary["all_ok"] = summary["all_ok"] and summary["start_up"]["all_ok"]
    doc = dict(benchmark="lava_interrupt", issue="19 (cause 1: interrupt during start-up)",
               command=" ".join(cmd), signal_target="process group" if a.group else "process",
               delay="uniform [0, %g] s after the first child process appears (summary); uniform [0, %g] s "
                     "after the first forked child, the Lava runtime's start (summary.start_up); seed %d"
                     % (a.max_delay, a.startup_max_delay, a.seed),
               argv=sys.argv[1:] if argv is None else argv, python=platform.python_version(),
               machine=f"{platform.machine()}, {os.cpu_count()} cpus", date=time.strftime("%Y-%m-%d"),
               seconds=round(time.time() - t0, 1), summary=summary, runs=runs)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp_out = a.out + ".tmp"
    with open(tmp_out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp_out, a.out)
    print(json.dumps(summary, indent=1))
    print(f"wrote {a.out}")
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
