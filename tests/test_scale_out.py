"""Sharded runs of ``simulate``: ``--shard K/N`` + ``merge``, ``--workers N`` and ``torchrun`` give
the record and per-sample files of one unsharded run (apart from run costs), on the reference
simulator and on Lava; a stopped or failing run leaves no worker behind."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, require_lava, run_cli
from qcfs2lava.cli import main
from qcfs2lava.cli.scale_out import COST_FIELDS, merge_records, namespace_argv, without_costs
from qcfs2lava.util.errors import UserError
from qcfs2lava.util.shards import Shard, parse_shard


def test_shards_cover_every_sample_once_in_order():
    for n in (1, 2, 7, 10, 101):
        for count in range(1, min(n, 6) + 1):
            spans = [Shard(k, count).span(n) for k in range(count)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            assert all(b - a in (n // count, n // count + 1) for a, b in spans)
    assert parse_shard("2/3") == Shard(2, 3) and str(Shard(2, 3)) == "2/3"
    for bad in ("3/3", "1", "a/b", "-1/2", "1/0", "1/2/3"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_namespace_argv_parses_back_to_the_same_run():
    from qcfs2lava.cli import build_parser
    from qcfs2lava.cli import simulate
    build_parser()
    argv = ["simulate", "m.net", "--backend", "lava", "--n", "40", "--T", "6", "--compare", "--conv", "lava",
            "--time-budget", "2.5", "--workers", "3", "--json", "x.json"]
    a = build_parser().parse_args(argv)
    b = build_parser().parse_args(["simulate", *namespace_argv(simulate._PARSER, a)])
    assert vars(a) == vars(b)
    c = build_parser().parse_args(["simulate", *namespace_argv(simulate._PARSER, a, shard=Shard(1, 3),
                                                              workers=None, json=None)])
    assert c.shard == Shard(1, 3) and c.workers == 1 and c.json is None and c.compare and c.T == 6


def _same_run(joined: dict, single: dict) -> None:
    assert "shard" not in joined and len(joined["shards"]) > 1
    assert without_costs(joined) == without_costs(single)


def _npz(path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _equal_npz(a, b) -> None:
    a, b = _npz(a), _npz(b)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_reference_shards_merge_into_one_run(digits_netx, tmp_path, capsys):
    """Three shards of 31 images, joined by ``merge`` (given in a shuffled order), equal one run:
    every count, rate and per-sample array; missing, repeated or foreign shards are refused."""
    path = digits_netx[0]
    base = ["simulate", path, "--n", "31", "--T", "5", "--batch-size", "4", "--neuron-spikes"]
    one = tmp_path / "one"
    assert main([*base, "--json", f"{one}.json", "--save-outputs", f"{one}.npz", "--save-spikes", f"{one}.s.npz"]) == 0
    shards = []
    for k in range(3):
        s = tmp_path / f"s{k}"
        assert main([*base, "--shard", f"{k}/3", "--json", f"{s}.json", "--save-outputs", f"{s}.npz",
                     "--save-spikes", f"{s}.s.npz"]) == 0
        rec = json.load(open(f"{s}.json"))
        assert rec["shard"]["count"] == 3 and rec["n"] == rec["shard"]["stop"] - rec["shard"]["start"]
        assert rec["n_total"] == 31
        shards.append(s)
    assert _npz(f"{shards[1]}.npz")["indices"][0] == json.load(open(f"{shards[1]}.json"))["shard"]["start"]
    order = [2, 0, 1]
    j = tmp_path / "joined"
    rc = main(["merge", *[f"{shards[k]}.json" for k in order], "--json", f"{j}.json",
               "--outputs", *[f"{shards[k]}.npz" for k in order], "--save-outputs", f"{j}.npz",
               "--spikes", *[f"{shards[k]}.s.npz" for k in order], "--save-spikes", f"{j}.s.npz"])
    assert rc == 0
    single, joined = json.load(open(f"{one}.json")), json.load(open(f"{j}.json"))
    _same_run(joined, single)
    assert single["correct"] == [round(a * 31) for a in single["accuracy"]]
    _equal_npz(f"{one}.npz", f"{j}.npz")
    _equal_npz(f"{one}.s.npz", f"{j}.s.npz")
    assert "3 shards joined" in capsys.readouterr().out
    recs = [json.load(open(f"{s}.json")) for s in shards]
    with pytest.raises(UserError, match="once"):
        merge_records(recs[:2])
    with pytest.raises(UserError, match="once"):
        merge_records([recs[0], recs[0], recs[2]])
    with pytest.raises(UserError, match="'T' differs"):
        merge_records([recs[0], dict(recs[1], T=6), recs[2]])
    with pytest.raises(UserError, match="not the JSON"):
        merge_records([single, *recs[1:]])
    # on the command line: one line, exit 2, nothing written
    r = run_cli("merge", f"{shards[0]}.json", f"{shards[1]}.json", "--json", tmp_path / "bad.json")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "once" in r.stderr
    r = run_cli("merge", f"{shards[0]}.json", f"{shards[1]}.json", f"{shards[2]}.json", "--outputs",
                f"{shards[0]}.npz", "--save-outputs", tmp_path / "bad.npz")
    assert r.returncode == 2 and "1 files for 3" in r.stderr
    r = run_cli("merge", path, "--json", tmp_path / "bad.json")
    assert r.returncode == 2 and "not JSON" in r.stderr
    assert not (tmp_path / "bad.json").exists() and not (tmp_path / "bad.npz").exists()


def test_reference_workers_equal_one_run(digits_netx, tmp_path, capsys):
    """``--workers 3`` (three processes, one bar) writes what one process writes."""
    path = digits_netx[0]
    base = ["simulate", path, "--n", "40", "--T", "6", "--batch-size", "8"]
    assert main([*base, "--json", str(tmp_path / "one.json"), "--save-outputs", str(tmp_path / "one.npz")]) == 0
    r = run_cli(*base, "--workers", "3", "--json", tmp_path / "w.json", "--save-outputs", tmp_path / "w.npz")
    assert r.returncode == 0, r.stderr
    assert "3 shards joined" in r.stdout
    _same_run(json.load(open(tmp_path / "w.json")), json.load(open(tmp_path / "one.json")))
    _equal_npz(tmp_path / "one.npz", tmp_path / "w.npz")
    capsys.readouterr()
    for argv, msg in ((["--workers", "2", "--shard", "0/2"], "drop --workers"),
                      (["--workers", "41"], "at most one worker per sample"),
                      (["--shard", "2/2"], "0 <= K < N")):
        try:
            rc = main([*base, *argv])
        except SystemExit as e:             # a parse error
            rc = e.code
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


def test_torchrun_two_nodes_over_loopback_equal_one_run(digits_netx, tmp_path):
    """A 2-node torchrun launch on one machine (two ``--node_rank``s, one rank each, over loopback):
    rank 0 gathers over gloo and writes the record and the per-sample file of one run; rank 1 writes
    nothing."""
    path = digits_netx[0]
    base = ["simulate", path, "--samples", "23", "--T", "4"]    # torchrun would take --n for its own --nnodes
    assert main([*base, "--json", str(tmp_path / "one.json"), "--save-outputs", str(tmp_path / "one.npz")]) == 0
    port = _free_port()
    procs = [_torchrun("--nnodes", 2, "--node_rank", r, "--nproc_per_node", 1, "--master_addr", "127.0.0.1",
                       "--master_port", port, "-m", "qcfs2lava", *base, "--json", tmp_path / "tr.json",
                       "--save-outputs", tmp_path / "tr.npz") for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert "2 shards joined" in outs[0][0] and "joined" not in outs[1][0]
    _same_run(json.load(open(tmp_path / "tr.json")), json.load(open(tmp_path / "one.json")))
    _equal_npz(tmp_path / "one.npz", tmp_path / "tr.npz")
    r = _torchrun("--standalone", "--nproc_per_node", 2, "-m", "qcfs2lava", *base, "--workers", "2")
    r.communicate(timeout=300)
    assert r.returncode != 0


# --------------------------------------------------------------------------- Lava
def _lava_net(digits_netx):
    require_lava()
    return digits_netx[0]


def test_lava_workers_equal_one_run_and_compare(digits_netx, tmp_path):
    """``--backend lava --workers 2 --compare``: two Lava runtimes, one record equal to one runtime's
    (accuracies, per-layer mismatch counts, first mismatches, per-sample spikes), bit-exact."""
    path = _lava_net(digits_netx)
    base = ["simulate", path, "--backend", "lava", "--n", "6", "--T", "4", "--compare", "--batch-size", "2"]
    assert main([*base, "--json", str(tmp_path / "one.json"), "--save-spikes", str(tmp_path / "one.npz")]) == 0
    r = run_cli(*base, "--workers", "2", "--json", tmp_path / "w.json", "--save-spikes", tmp_path / "w.npz")
    assert r.returncode == 0, r.stderr
    one, w = json.load(open(tmp_path / "one.json")), json.load(open(tmp_path / "w.json"))
    _same_run(w, one)
    assert w["compare"]["bit_exact"] and w["compare"]["spikes_compared"] > 0 and w["n"] == 6
    assert [s["shard"] for s in w["shards"]] == ["0/2", "1/2"] and w["steps"] == sum(s["steps"] for s in w["shards"])
    _equal_npz(tmp_path / "one.npz", tmp_path / "w.npz")


def _workers_alive(T: int, shard: str = "") -> list[int]:
    """Live processes run with ``--shard {shard}...`` and ``--T T`` (a worker and its forked Lava model
    processes, which keep its command line)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        pairs = list(zip(argv, argv[1:]))
        if state != "Z" and ("--T", str(T)) in pairs and any(a == "--shard" and b.startswith(shard) for a, b in pairs):
            pids.append(int(pid))
    return pids


@pytest.mark.parametrize("how", ["sigint", "worker-killed"])
def test_lava_workers_stop_together_and_leave_no_process(digits_netx, tmp_path, how):
    """Ctrl-C to the parent, or one worker killed: every worker and its Lava model processes end, the
    parent exits 130 / 1 with one line, and no JSON is written. (SIGTERM takes Ctrl-C's path: both
    unwind through run_workers' ``finally``, as ``Terminated`` and ``KeyboardInterrupt``; SIGTERM
    itself is tests/test_sigterm.py's.)"""
    path = _lava_net(digits_netx)
    T = 61 + ["sigint", "worker-killed"].index(how)                  # marks this test's workers
    out = tmp_path / "w.json"
    p = subprocess.Popen([sys.executable, "-m", "qcfs2lava", "simulate", path, "--backend", "lava", "--n", "400",
                          "--T", str(T), "--workers", "2", "--json", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while len(_workers_alive(T)) < 4 and p.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.2)                      # two workers, each with its Lava model processes
        assert p.poll() is None and len(_workers_alive(T)) >= 4
        time.sleep(2.0)
        if how == "sigint":
            p.send_signal(signal.SIGINT)
        else:
            os.kill(min(_workers_alive(T, "0/")), signal.SIGKILL)       # the worker (its model processes are younger)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == {"sigint": 130, "worker-killed": 1}[how], err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("lava x2")]
    assert len(lines) == 1, err
    assert ("worker 0/2 failed" if how == "worker-killed" else "interrupted") in lines[0], err
    deadline = time.monotonic() + 30
    while _workers_alive(T) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _workers_alive(T)
    assert not out.exists()


def test_cost_fields_are_only_run_costs():
    assert all(k.startswith(("seconds", "steps")) or k == "shards" for k in COST_FIELDS)


def test_core_groups_split_this_process_cores_disjointly():
    from qcfs2lava.cli.scale_out import core_groups
    mine = sorted(os.sched_getaffinity(0))
    for count in range(1, len(mine) + 1):
        groups = core_groups(count)
        assert len(groups) == count and all(groups)
        assert sorted(c for g in groups for c in g) == mine           # disjoint, and every core used
    assert core_groups(len(mine) + 1) == []                           # more workers than cores: not pinned
