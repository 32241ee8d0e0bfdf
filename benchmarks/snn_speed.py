#!/usr/bin/env python
"""Cost of the float reference SNN relative to T forward passes of its ANN, on one batch.

    python benchmarks/snn_speed.py --arch vgg-small --batch 250 --T 32

The SNN pass yields the accuracy at every t = 1..T; the target is within 1.3x of T ANN passes.
Writes ``benchmarks/results/snn_speed.{json,png}``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from qcfs2lava.util.fileio import atomic_write_png, atomic_write_text
from qcfs2lava.models import build_model
from qcfs2lava.qcfs import prepare_ann
from qcfs2lava.snn import convert, simulate


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@torch.no_grad()
def measure(arch, shape, batch, T, repeat):
    torch.manual_seed(0)
    model = prepare_ann(build_model(arch, 10, shape[0], shape[1]), L=4).eval()
    for m in model.modules():
        if hasattr(m, "lam"):
            m.lam.fill_(1.0)                # a realistic spiking regime for random weights
    x = torch.randn(batch, *shape)
    snn = convert(model)
    model(x); simulate(snn, x, 2)           # warm-up
    ann = best_of(lambda: [model(x) for _ in range(T)], repeat)
    s = best_of(lambda: simulate(snn, x, T), repeat)
    return dict(arch=arch, batch=batch, T=T, ann_T_passes_s=ann, snn_s=s, ratio=s / ann)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--T", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "snn_speed"))
    a = p.parse_args()
    rows = [measure("tiny", (1, 8, 8), a.batch, a.T, a.repeat),
            measure("vgg-small", (3, 32, 32), a.batch, a.T, a.repeat),
            measure("resnet20", (3, 32, 32), a.batch, a.T, a.repeat)]
    for r in rows:
        print(f"{r['arch']:>10s}: {a.T} ANN passes {r['ann_T_passes_s']:.3f} s, SNN {r['snn_s']:.3f} s, "
              f"ratio {r['ratio']:.2f}")
    res = dict(command=" ".join(["python", "benchmarks/snn_speed.py"] + sys.argv[1:]), threads=torch.get_num_threads(),
               target_ratio=1.3, rows=rows)
    atomic_write_text(a.out + ".json", json.dumps(res, indent=1) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.bar([r["arch"] for r in rows], [r["ratio"] for r in rows], color="tab:blue")
    ax.axhline(1.3, ls="--", color="tab:red", label="target 1.3x")
    ax.set_ylabel(f"SNN time / ({a.T} ANN passes)")
    ax.set_title(f"float SNN cost, batch {a.batch}, T={a.T}")
    ax.legend()
    fig.tight_layout()
    atomic_write_png(a.out + ".png", fig)


if __name__ == "__main__":
    main()
