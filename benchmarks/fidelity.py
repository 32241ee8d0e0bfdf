#!/usr/bin/env python
"""Float SNN vs fixed-point SNN: what Loihi's integer arithmetic costs in accuracy.

    python benchmarks/fidelity.py --digits runs/demo/model.pt --cifar runs/study/vgg_small_qcfs.pt \
        --data-dir D --n-cifar 1000 --T 32

For each checkpoint: the float reference SNN (``qcfs2lava.snn``) and the exported NetX file run
through the integer reference simulator (``netx_export.sim.refsim``, aligned timing) on the same test
images; accuracy at every t, and how often the two predict the same class. The NetX file is
written and read back, so the file round trip is part of what is measured. Writes
``benchmarks/results/fidelity.{json,png}``. CIFAR-10 is the JPEG-recompressed copy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from netx_export.convert.pipeline import quantize_checkpoint
from netx_export.netx.read import read_netx
from netx_export.netx.write import write_netx
from netx_export.sim.refsim import simulate
from qcfs2lava import data as D
from qcfs2lava.checkpoint import load_checkpoint
from qcfs2lava.util.fileio import atomic_write_png, atomic_write_text
from qcfs2lava.util.plotting import time_axis
from qcfs2lava.util.progress import Progress
from qcfs2lava.snn import convert, simulate as snn_simulate


def measure(path: str, data_dir: str | None, n: int | None, T: int, batch: int, bias_correction: int) -> dict:
    ck = load_checkpoint(path)
    calib = D.sample(D.load_split(ck.meta["dataset"], data_dir, train=True), bias_correction,
                     ck.meta["normalization"]) if bias_correction else None
    ex = quantize_checkpoint(ck, recommended_T=T, calib_x=calib)   # as `qcfs2lava export` does by default
    with tempfile.TemporaryDirectory() as tmp:
        write_netx(ex.net, os.path.join(tmp, "m.net"))
        net = read_netx(os.path.join(tmp, "m.net"))
    split = D.load_split(ck.meta["dataset"], data_dir, train=False)
    n = min(n or len(split), len(split))
    norm = ck.meta["normalization"]
    x = D.normalize(split.x[:n], norm["max_value"], norm["mean"], norm["std"])
    y = split.y[:n]
    snn = convert(ck.model)
    cf, cq, agree = np.zeros(T), np.zeros(T), np.zeros(T)
    sat = 0
    bar = Progress(n, os.path.basename(path), "img")
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        xb, yb = x[i:i + batch], y[i:i + batch].numpy()
        with torch.no_grad():
            pf = snn_simulate(snn, xb, T).logits.argmax(2).numpy()
        r = simulate(net, xb.numpy().astype(np.float64), T, timing="aligned")
        pq = r.predictions
        sat += r.saturated
        cf += (pf == yb).sum(1)
        cq += (pq == yb).sum(1)
        agree += (pf == pq).sum(1)
        bar.update(len(yb), float_T=cf[-1] / (i + len(yb)), fixed_T=cq[-1] / (i + len(yb)))
    with torch.no_grad():
        ann = float((torch.cat([ck.model(x[i:i + 500]).argmax(1) for i in range(0, n, 500)]) == y).float().mean())
    return dict(checkpoint=path, sha256=ck.sha256, arch=ck.meta["arch"], dataset=ck.meta["dataset"], n=n, T=T,
                calibration_images=bias_correction,
                ann_accuracy=ann, float_snn=(cf / n).tolist(), fixed_point_snn=(cq / n).tolist(),
                prediction_agreement=(agree / n).tolist(), v_saturations=int(sat),
                layers=[dict(name=r.name, scale=r.scale, exponent=r.exponent, rms_rel_error=r.rms_rel_error,
                             clipped_fraction=r.clipped_fraction) for r in ex.net.report],
                seconds=time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--digits", help="digits checkpoint")
    p.add_argument("--cifar", help="CIFAR-10 checkpoint")
    p.add_argument("--data-dir")
    p.add_argument("--n-cifar", type=int, default=1000)
    p.add_argument("--T", type=int, default=32)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--bias-correction", type=int, default=256, help="bias-correction images, as export (0: off)")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "fidelity"))
    a = p.parse_args()
    rows = []
    if a.digits:
        rows.append(measure(a.digits, None, None, a.T, a.batch, a.bias_correction))
    if a.cifar:
        rows.append(measure(a.cifar, a.data_dir, a.n_cifar, a.T, a.batch, a.bias_correction))
    for r in rows:
        d = {t: 100 * (r["fixed_point_snn"][t - 1] - r["float_snn"][t - 1]) for t in (4, 8, 32) if t <= a.T}
        print(f"{r['arch']} / {r['dataset']} (n={r['n']}): ANN {100 * r['ann_accuracy']:.2f}%; "
              + ", ".join(f"T={t}: float {100 * r['float_snn'][t - 1]:.2f} fixed {100 * r['fixed_point_snn'][t - 1]:.2f}"
                          f" (Δ {d[t]:+.2f})" for t in d))
    res = dict(command=" ".join(["python", "benchmarks/fidelity.py"] + sys.argv[1:]),
               note="CIFAR-10 from the JPEG-recompressed copy; aligned timing (no synaptic delay)", rows=rows)
    atomic_write_text(a.out + ".json", json.dumps(res, indent=1) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(rows), figsize=(5.5 * len(rows), 4), dpi=120, squeeze=False)
    for ax, r in zip(axes[0], rows):
        ts = range(1, r["T"] + 1)
        ax.plot(ts, [100 * v for v in r["float_snn"]], marker="o", ms=3, label="float SNN")
        ax.plot(ts, [100 * v for v in r["fixed_point_snn"]], marker="x", ms=4, ls=":", label="fixed-point SNN (refsim)")
        ax.axhline(100 * r["ann_accuracy"], ls="--", color="gray", label=f"ANN {100 * r['ann_accuracy']:.2f}%")
        time_axis(ax)
        ax.set_title(f"{r['arch']} / {r['dataset']}, n={r['n']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_png(a.out + ".png", fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
