#!/usr/bin/env python
"""Lava runs that scale out: one process against ``--workers 2`` and two torchrun ranks, and the
joins (``merge`` of 3 shards, a 2-node torchrun launch over loopback) against one unsharded run.

    python benchmarks/lava_scale_out.py --data-dir D --n 64 --T 8        # vgg-small (random λ = 1) on CIFAR-10
    python benchmarks/lava_scale_out.py --net study.net --data-dir D     # your exported network

Every run is the real command line (``python -m qcfs2lava simulate --backend lava --compare``),
one after the other on the same images. Throughput is samples per second of the whole command (n /
wall time: start-up, build, compile, run, reference check), and of the simulation itself (n / the
slowest shard's ``seconds_run`` where shards run together, n / their sum where they run one after
the other). Two more rows confine each Lava runtime to one core (``taskset``): one run, and two
torchrun nodes side by side, one core each. Every sharded run must
give the record of the unsharded one apart from run costs (``scale_out.without_costs``) and be
bit-exact against the reference simulator.

Before and after, a pure-Python loop in one process against two side by side measures what two busy
processes get on this machine (``machine_parallelism``: 2.0 on two free cores; the shared 2-vCPU
machine gives less, and it varies). Writes ``benchmarks/results/lava_scale_out.{json,png}`` (``--out``). Goal (issue 17): 2 workers (and
2 torchrun ranks) ≥ 1.7x the samples/s of 1 worker on 2 cores, the same spikes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "lava_scale_out")


def _spin(_: int = 0) -> float:
    """A fixed pure-Python loop; its seconds."""
    t, s = time.perf_counter(), 0
    for i in range(10_000_000):
        s += i
    return time.perf_counter() - t


def machine_parallelism() -> float:
    """What two busy processes get here: 2 x one loop's time / the time of two loops side by side
    (2.0 on two free cores; less where the host shares them)."""
    import multiprocessing as mp
    one = _spin()
    with mp.get_context("fork").Pool(2) as pool:
        t = time.perf_counter()
        pool.map(_spin, [0, 1])
        two = time.perf_counter() - t
    return 2 * one / two


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argvs: list[list[str]], label: str) -> float:
    """Start the commands together, wait for all; the wall time. Exit code 0 required."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv in argvs]
    outs = [p.communicate() for p in procs]
    dt = time.perf_counter() - t0
    for p, (o, e) in zip(procs, outs):
        if p.returncode != 0:
            raise SystemExit(f"{label}: exit code {p.returncode}\n{e[-3000:]}")
    print(f"{label}: {dt:.1f} s", flush=True)
    return dt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", help="a NetX file (default: vgg-small with random weights, λ = 1, for CIFAR-10)")
    p.add_argument("--data-dir", required=True, help="the data set's folder (CIFAR-10 for the default net)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--out", default=OUT)
    a = p.parse_args()
    from qcfs2lava.cli.scale_out import without_costs
    from untrained import export_untrained
    from qcfs2lava.util.fileio import atomic_write_json, atomic_write_png

    parallel_before = machine_parallelism()
    print(f"machine: two busy processes run {parallel_before:.2f}x as fast as one", flush=True)
    wd = tempfile.mkdtemp(prefix="lava-scale-out-")
    net = a.net or os.path.join(wd, "vgg_small.net")
    if not a.net:
        export_untrained("vgg-small", net)
    py = [sys.executable, "-m"]
    base = ["qcfs2lava", "simulate", net, "--backend", "lava", "--compare", "--data-dir", a.data_dir,
            "--samples", str(a.n), "--T", str(a.T)]
    j = lambda name: os.path.join(wd, name + ".json")          # noqa: E731
    runs: dict[str, dict] = {}
    wall = {}
    wall["1 worker"] = _run([py + base + ["--json", j("one")]], "1 worker")
    wall["2 workers"] = _run([py + base + ["--workers", "2", "--json", j("w2")]], "2 workers")
    port = _port()
    tr = ["torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--master_port", str(port), "-m"]
    wall["torchrun, 2 ranks"] = _run([py + tr + base + ["--json", j("tr2")]], "torchrun 2 ranks")
    port = _port()
    nodes = [py + ["torch.distributed.run", "--nnodes", "2", "--node_rank", str(r), "--nproc_per_node", "1",
                   "--master_addr", "127.0.0.1", "--master_port", str(port), "-m"] + base + ["--json", j("nodes")]
             for r in (0, 1)]
    wall["torchrun, 2 nodes"] = _run(nodes, "torchrun 2 nodes over loopback")
    t0 = time.perf_counter()
    for k in range(3):          # one after the other, as independent scheduler jobs would
        _run([py + base + ["--shard", f"{k}/3", "--json", j(f"s{k}")]], f"shard {k}/3")
    _run([py + ["qcfs2lava", "merge", *[j(f"s{k}") for k in range(3)], "--json", j("merged")]], "merge")
    wall["3 shards + merge (serial)"] = time.perf_counter() - t0
    # Each Lava runtime confined to one core (taskset): one run, and two torchrun nodes side by side.
    wall["1 worker, 1 core"] = _run([["taskset", "-c", "0"] + py + base + ["--json", j("pin1")]], "1 worker, 1 core")
    port = _port()
    pinned = [["taskset", "-c", str(r)] + argv for r, argv in enumerate(
        py + ["torch.distributed.run", "--nnodes", "2", "--node_rank", str(r), "--nproc_per_node", "1",
              "--master_addr", "127.0.0.1", "--master_port", str(port), "-m"] + base + ["--json", j("pin2")]
        for r in (0, 1))]
    wall["torchrun, 2 nodes, 1 core each"] = _run(pinned, "torchrun 2 nodes, 1 core each")
    names = {"1 worker": "one", "2 workers": "w2", "torchrun, 2 ranks": "tr2", "torchrun, 2 nodes": "nodes",
             "3 shards + merge (serial)": "merged", "1 worker, 1 core": "pin1",
             "torchrun, 2 nodes, 1 core each": "pin2"}
    for key, name in names.items():
        with open(j(name)) as f:
            runs[key] = json.load(f)
    parallel_after = machine_parallelism()
    one = runs["1 worker"]
    same = {k: without_costs(r) == without_costs(one) for k, r in runs.items()}
    rate_wall = {k: runs[k]["n"] / wall[k] for k in runs}
    rate_run = {}
    for k, r in runs.items():     # simulation only: shards that ran together take the slowest, serial ones add up
        runs_s = [s["seconds_run"] for s in r["shards"]] if "shards" in r else [r["seconds_run"]]
        rate_run[k] = r["n"] / (sum(runs_s) if "serial" in k else max(runs_s))
    result = dict(command="python benchmarks/lava_scale_out.py " + " ".join(sys.argv[1:]),
                  machine=dict(platform=platform.platform(), cpus=os.cpu_count()),
                  date=time.strftime("%Y-%m-%d %H:%M"), network=a.net or "vgg-small, random weights, λ = 1",
                  images=f"test images 0..{one['n'] - 1} of {one['dataset']} (JPEG-recompressed CIFAR-10 here)",
                  n=one["n"], T=a.T, timing=one["timing"],
                  samples_per_second_wall=rate_wall, samples_per_second_run=rate_run, wall_seconds=wall,
                  speedup_wall={k: v / rate_wall["1 worker"] for k, v in rate_wall.items()},
                  speedup_run={k: v / rate_run["1 worker"] for k, v in rate_run.items()},
                  machine_parallelism_before_after=[parallel_before, parallel_after],
                  speedup_one_core_each=rate_wall["torchrun, 2 nodes, 1 core each"] / rate_wall["1 worker, 1 core"],
                  cpu_note=("a Lava run is a tree of processes (one per neuron, synapse and recorder process, "
                            "pipelined): one run alone keeps both cores of this machine busy, so more workers "
                            "add throughput only where cores are free; the pinned rows confine each runtime "
                            "to one core"),
                  same_record_as_one_run=same,
                  bit_exact={k: r["compare"]["bit_exact"] for k, r in runs.items()},
                  spikes_compared=one["compare"]["spikes_compared"],
                  accuracy_at_T=one["final_accuracy"],
                  seconds_per_step_one_worker=one["seconds_per_step"])
    atomic_write_json(a.out + ".json", result)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.8))
    keys = list(rate_wall)
    ax.barh(keys, [rate_wall[k] for k in keys], color=["#888", "#47c", "#4a7", "#6a4", "#c96", "#bbb", "#7ad"])
    for i, k in enumerate(keys):
        ax.text(rate_wall[k], i, f" {rate_wall[k]:.2f}/s ({rate_wall[k] / rate_wall['1 worker']:.2f}x), "
                f"same record: {same[k]}", va="center", fontsize=8)
    ax.set_xlabel("samples per second, whole command (higher is better)")
    ax.set_title(f"Lava fixed_pt, {one['n']} images, T = {a.T}, {os.cpu_count()} cores (two busy processes: "
                 f"{parallel_before:.2f}x / {parallel_after:.2f}x one, before / after)", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.6 * max(rate_wall.values()))
    fig.tight_layout()
    atomic_write_png(a.out + ".png", fig)
    print(json.dumps(dict(speedup_wall=result["speedup_wall"], speedup_run=result["speedup_run"], same=same,
                          bit_exact=result["bit_exact"]), indent=1))
    print(f"wrote {a.out}.json, .png")
    return 0 if all(same.values()) and all(result["bit_exact"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
