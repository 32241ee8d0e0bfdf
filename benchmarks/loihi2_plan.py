#!/usr/bin/env python
"""Loihi 2 resource plans of the zoo and of lava-dl's own example files: cores and chips per network,
deployment mode and synapse storage (``qcfs2lava plan`` on each file).

    python benchmarks/loihi2_plan.py                 # untrained exports: a plan needs shapes, not accuracy

The zoo networks are exported untrained (``untrained.py``: random weights, λ = 1) at their data sets'
sizes: digits (1 x 8 x 8) for ``tiny``, CIFAR-10 (3 x 32 x 32) for the rest; their core counts depend on the
weights only through stock mode's number of weight terms. lava-dl's files are planned as its NetX
loader builds them. The one published figure, lava-dl's PilotNet LIF at 74 Loihi 2 cores, is drawn
beside its plan. Writes ``benchmarks/results/loihi2_plan.{json,md,png}`` (``--out``).
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "loihi2_plan")
EXAMPLES = os.path.join(ROOT, "..", "shared", "data", "netx-examples")
ZOO = (("tiny", "digits"), ("vgg-small", "cifar10"), ("vgg16", "cifar10"), ("resnet18", "cifar10"),
       ("resnet20", "cifar10"), ("resnet34", "cifar10"))
PILOTNET_PUBLISHED_CORES = 74       # lava-dl pilotnet_snn/benchmark.ipynb on Loihi 2 (loihi2-facts.md)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=OUT)
    p.add_argument("--archs", nargs="*", default=[z[0] for z in ZOO], help="zoo networks to plan")
    a = p.parse_args()
    from untrained import export_untrained
    from qcfs2lava.util.fileio import atomic_write_json, atomic_write_png, atomic_write_text
    from netx_export.report.limits import LOIHI2, SOURCES
    from netx_export.report.plan import plan_file, plan_json
    from dataclasses import asdict

    wd = tempfile.mkdtemp(prefix="loihi2-plan-")
    files = []
    for arch, dataset in ZOO:
        if arch in a.archs:
            path = os.path.join(wd, f"{arch}.net")
            t0 = time.perf_counter()
            export_untrained(arch, path, dataset)
            print(f"exported {arch} ({dataset}) in {time.perf_counter() - t0:.1f} s", flush=True)
            files.append((f"{arch} ({dataset}, untrained)", path))
    files += [(f"lava-dl {os.path.basename(f)[8:-4]}", f) for f in sorted(glob.glob(os.path.join(EXAMPLES, "*.net")))]
    rows = []
    for name, path in files:
        for timing in ("lava", "aligned"):
            plans = plan_file(path, timing=timing)
            for pl in plans:
                if timing == "aligned" and pl.mode != "stock":
                    continue
                j = plan_json(pl)
                j.pop("limits")
                rows.append(dict(network=name, timing=timing if pl.mode == "stock" else None, **j))
        print(f"planned {name}", flush=True)
    result = dict(command="python benchmarks/loihi2_plan.py " + " ".join(sys.argv[1:]),
                  machine=dict(platform=platform.platform()), date=time.strftime("%Y-%m-%d %H:%M"),
                  limits=asdict(LOIHI2), sources=SOURCES, pilotnet_published_cores=PILOTNET_PUBLISHED_CORES,
                  plans=rows)
    atomic_write_json(a.out + ".json", result)
    md = ["| network | mode | storage | neurons | synapses | cores | chips | fits |",
          "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        mode = r["mode"] + (f" ({r['timing']})" if r["timing"] else "")
        fits = ("1 chip" if r["fits_one_chip"] else "Kapoho Point" if r["fits_kapoho_point"] else
                "no (> 8 chips)" if r["fits"] else "no: " + ", ".join(p["name"] for p in r["processes"]
                                                                       if not p["fits"]))
        md.append(f"| {r['network']} | {mode} | {r['storage']} | {r['neurons']:,} | {r['synapses']:,} | "
                  f"{r['cores']} | {r['chips']} | {fits} |")
    atomic_write_text(a.out + ".md", "\n".join(md) + "\n")
    _figure(rows, a.out + ".png", atomic_write_png)
    print("\n".join(md))
    print(f"wrote {a.out}.json, .md, .png")
    return 0


def _figure(rows: list[dict], path: str, write) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    nets = list(dict.fromkeys(r["network"] for r in rows))
    series = list(dict.fromkeys((r["mode"], r["timing"], r["storage"]) for r in rows if r["timing"] != "aligned"))
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(nets) + 1.5))
    h = 0.8 / len(series)
    colors = {"microcode": "#47c", "stock": "#c74", "netx": "#4a7"}
    for k, (mode, timing, storage) in enumerate(series):
        first = True
        for i, n in enumerate(nets):
            for r in rows:
                if (r["network"], r["mode"], r["timing"], r["storage"]) == (n, mode, timing, storage):
                    ax.barh(i + (k - (len(series) - 1) / 2) * h, r["cores"], height=h, color=colors[mode],
                            alpha=1.0 if storage == "shared" else 0.45, hatch=None if r["fits"] else "///",
                            edgecolor="k" if not r["fits"] else None, lw=0,
                            label=f"{mode}, {storage}" if first else None)
                    first = False
    for i, n in enumerate(nets):
        if "pilotnet" in n:
            ax.plot([PILOTNET_PUBLISHED_CORES], [i], "k*", ms=12, label="PilotNet LIF, published (74 cores)")
    ax.axvline(128, color="k", lw=0.8, ls="--")
    ax.text(128, -0.7, " 1 chip", fontsize=8)
    ax.axvline(1024, color="k", lw=0.8, ls=":")
    ax.text(1024, -0.7, " Kapoho Point", fontsize=8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(nets)))
    ax.set_yticklabels(nets, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("Loihi 2 cores (plan; log scale)")
    ax.set_title("qcfs2lava plan: cores per network, mode and synapse storage (lava timing; hatched: a layer "
                 "fits no core)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    write(path, fig)


if __name__ == "__main__":
    sys.exit(main())
