#!/usr/bin/env python
"""ResNet-20 on CIFAR-10 from training to Lava (issue 7): ANN, float SNN, fixed-point SNN (integer
reference simulator) and Lava, accuracy at T = 1..64 in one table and plot.

    qcfs2lava train --arch resnet20 --dataset cifar10 --data-dir D --L 4 --lr 0.05 --lam-init 2 \\
        --label-smoothing 0.1 --no-autoaugment --no-cutout --batch-size 128 --epochs 20 --out M
    python benchmarks/resnet20_study.py --data-dir D --model M --work W

* ANN and float SNN (``qcfs2lava.snn``, aligned timing) on the first ``--n`` test images (and the
  ANN on the whole test set);
* the model exported as ``qcfs2lava export`` does (weight-rounding bias correction on 256 training
  images), written, read back, run in the reference simulator (aligned) on the same images;
* the same file in Lava's CPU simulator (pipelined, aligned schedule, shortcuts with relay delays)
  on the first ``--n-lava`` images, and in Lava's own timing (one step per synapse, the readout
  lags by the depth) on the first ``--n-lava-timing``, each cross-checked spike for spike against
  refsim in the same timing.

Writes ``benchmarks/results/resnet20_study.{json,md,png}``. The data is the JPEG-recompressed
CIFAR-10 copy (``../shared/data/make_cifar10.py``), so accuracies sit slightly below the original's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from netx_export.convert.pipeline import quantize_checkpoint
from netx_export.netx.read import read_netx
from netx_export.netx.write import write_netx
from netx_export.sim.refsim import evaluate as ref_evaluate, simulate
from qcfs2lava import data as D
from qcfs2lava.checkpoint import load_checkpoint
from qcfs2lava.util.fileio import atomic_write_png, atomic_write_text
from qcfs2lava.util.plotting import time_axis
from qcfs2lava.util.progress import Progress
from qcfs2lava.snn import evaluate

TS = (1, 2, 4, 8, 16, 32, 64)


def _cached(path: str, key: dict, make):
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("key") == key:
            return old["value"]
    value = make()
    atomic_write_text(path, json.dumps(dict(key=key, value=value)) + "\n")
    return value


def float_eval(ck, x: torch.Tensor, y: torch.Tensor, T: int, batch: int = 250) -> dict:
    bar = Progress(len(y), f"{'ANN + float SNN':>18s}", "img")
    t0 = time.perf_counter()
    ev = evaluate(ck.model, ((x[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)), T,
                  progress=lambda k, acc: bar.update(k, acc_T=acc))
    return dict(ann_accuracy=ev.ann_accuracy, snn_accuracy=ev.snn_accuracy, n=ev.n,
                firing_rates=list(ev.firing_rates.values()), seconds=time.perf_counter() - t0)


def fixed_eval(net, x: np.ndarray, y: np.ndarray, T: int, batch: int = 50) -> dict:
    bar = Progress(len(y), f"{'fixed point (refsim)':>18s}", "img")
    t0 = time.perf_counter()
    ev = ref_evaluate(net, ((x[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)), T,
                      progress=bar.to)
    return dict(accuracy=ev.accuracy, n=ev.n, saturated=ev.saturated, drive_clipped=ev.drive_clipped,
                firing_rates=ev.firing_rates, seconds=time.perf_counter() - t0)


def lava_eval(path: str, net, x: np.ndarray, y: np.ndarray, T: int, timing: str = "aligned") -> dict:
    from netx_export.comparison import compare
    from netx_export.lava_runtime.runner import run_lava
    bar = Progress(len(y), f"{'Lava (' + timing + ')':>18s}", "img")
    res = run_lava(path, x, T, timing=timing, qnet=net, record_spikes=True,
                   progress=bar.to)
    ref = simulate(net, x[:res.n], T, timing, record_spikes=True)
    c = compare(res, ref)
    acc = (res.logits.argmax(2) == y[:res.n].reshape(1, -1)).mean(1)
    return dict(accuracy=acc.tolist(), n=int(res.n), spikes_compared=int(c["spikes_compared"]),
                spike_mismatches=int(c["spike_mismatches"]), logit_mismatches=int(c["logit_mismatches"]),
                seconds_run=res.seconds_run, seconds_total=res.seconds_total, steps=int(res.steps))


def plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    rows = res["rows"]
    for label, r in rows.items():
        acc = r["accuracy"]
        if label.startswith("ANN"):
            ax.axhline(100 * acc[0], ls=":", lw=1.0, color="gray", label=f"{label} {100 * acc[0]:.2f}% (n={r['n']})")
            continue
        same = "Lava's images" in label       # identical to the Lava row: dashed, drawn on top of it
        ax.plot(range(1, len(acc) + 1), [100 * a for a in acc], marker=None if same else "o", ms=2.5,
                lw=2.0 if same else 1.3, ls="--" if same else "-", zorder=3 if same else 2,
                label=f"{label} (n={r['n']})")
    ax.axhline(100 * res["ann_accuracy"], ls="--", lw=1.0, color="black",
               label=f"ANN {100 * res['ann_accuracy']:.2f}% (n={res['n']})")
    time_axis(ax, ylim=(0, 100))
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"ResNet-20 (QCFS L={res['L']}, {res['epochs']} epochs), CIFAR-10 JPEG copy")
    fig.tight_layout()
    atomic_write_png(path, fig)


def table(res: dict) -> str:
    ts = [t for t in TS if t <= res["T"]]
    lines = ["| | n | " + " | ".join(f"T={t}" for t in ts) + " |", "|---|---|" + "---|" * len(ts),
             f"| ANN | {res['n']} | " + " | ".join(f"{100 * res['ann_accuracy']:.2f}" for _ in ts) + " |"]
    for label, r in res["rows"].items():
        acc = r["accuracy"]
        lines.append(f"| {label} | {r['n']} | "
                     + " | ".join(f"{100 * acc[t - 1]:.2f}" if t <= len(acc) else "–" for t in ts) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", required=True, help="the trained ResNet-20 QCFS checkpoint")
    p.add_argument("--work", default="runs/resnet20", help="NetX file and cached results")
    p.add_argument("--n", type=int, default=1000, help="test images (the first n of the test set)")
    p.add_argument("--n-lava", type=int, default=100, help="test images run in Lava (the first of the n)")
    p.add_argument("--n-lava-timing", type=int, default=50,
                   help="test images run in Lava with Lava's own timing (one step per synapse), also cross-checked")
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--calib", type=int, default=256, help="training images for the export's bias correction")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "resnet20_study"))
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    os.makedirs(a.work, exist_ok=True)
    t0 = time.perf_counter()
    ck = load_checkpoint(a.model)
    if ck.meta.get("arch") != "resnet20" or ck.training_state is not None:
        print(f"error: {a.model} is not a finished resnet20 checkpoint", file=sys.stderr)
        return 2
    norm = ck.meta["normalization"]
    test = D.load_split("cifar10", a.data_dir, train=False)
    x = D.normalize(test.x[:a.n], test.max_value, norm["mean"], norm["std"])
    y = test.y[:a.n]
    base = dict(sha256=ck.sha256, n=a.n, T=a.T)
    fl = _cached(os.path.join(a.work, "float.json"), base, lambda: float_eval(ck, x, y, a.T))
    print(f"ANN {100 * fl['ann_accuracy']:.2f}%  float SNN " + "  ".join(
        f"T={t} {100 * fl['snn_accuracy'][t - 1]:.2f}" for t in TS if t <= a.T), flush=True)
    net_path = os.path.join(a.work, "resnet20.net")
    calib = D.sample(D.load_split("cifar10", a.data_dir, train=True), a.calib, norm)
    ex = quantize_checkpoint(ck, recommended_T=a.T, calib_x=calib)
    write_netx(ex.net, net_path)
    net = read_netx(net_path)
    xs, ys = x.double().numpy(), y.numpy()

    def ann_full() -> float:
        xf = D.normalize(test.x, test.max_value, norm["mean"], norm["std"])
        with torch.no_grad():
            return sum(int((ck.model.eval()(xf[i:i + 500]).argmax(1) == test.y[i:i + 500]).sum())
                       for i in range(0, len(test.y), 500)) / len(test.y)
    ann_all = _cached(os.path.join(a.work, "ann_full.json"), dict(sha256=ck.sha256), ann_full)
    fx = _cached(os.path.join(a.work, "fixed.json"), dict(base, calib=a.calib), lambda: fixed_eval(net, xs, ys, a.T))
    print("fixed point " + "  ".join(f"T={t} {100 * fx['accuracy'][t - 1]:.2f}" for t in TS if t <= a.T), flush=True)
    lv = _cached(os.path.join(a.work, "lava.json"), dict(base, calib=a.calib, n_lava=a.n_lava),
                 lambda: lava_eval(net_path, net, xs[:a.n_lava], ys[:a.n_lava], a.T))
    print(f"Lava {lv['n']} images: {lv['spike_mismatches']} spike mismatches in {lv['spikes_compared']:,}; "
          + "  ".join(f"T={t} {100 * lv['accuracy'][t - 1]:.2f}" for t in TS if t <= a.T), flush=True)
    lt = _cached(os.path.join(a.work, "lava_timing.json"), dict(base, calib=a.calib, n_lava=a.n_lava_timing),
                 lambda: lava_eval(net_path, net, xs[:a.n_lava_timing], ys[:a.n_lava_timing], a.T, "lava"))
    print(f"Lava timing, {lt['n']} images: {lt['spike_mismatches']} spike mismatches in {lt['spikes_compared']:,}",
          flush=True)
    with torch.no_grad():
        ann_sub = float((ck.model.eval()(x[:lv["n"]]).argmax(1) == y[:lv["n"]]).double().mean())
    fx_sub = (np.asarray(simulate(net, xs[:lv["n"]], a.T, "aligned").predictions) == ys[:lv["n"]].reshape(1, -1)
              ).mean(1).tolist()
    meta = ck.meta
    res = dict(
        command=" ".join(["python", "benchmarks/resnet20_study.py"] + sys.argv[1:]),
        train_command=("qcfs2lava train --arch resnet20 --dataset cifar10 --data-dir D --L 4 --lr 0.05 --lam-init 2 "
                       "--label-smoothing 0.1 --no-autoaugment --no-cutout --batch-size 128 --epochs 20 --threads 2"),
        data="CIFAR-10, JPEG-recompressed copy (../shared/data/cifar10-jpeg.zip)", model_sha256=ck.sha256,
        L=int(meta.get("L", 4)), epochs=int(meta.get("metrics", {}).get("epoch", 0)), n=a.n, T=a.T,
        ann_accuracy=fl["ann_accuracy"], ann_accuracy_full_test_set=ann_all, shortcuts=sum(len(lay.skips) for lay in net.layers),
        graph_max_logit_error=ex.graph_error,
        rows={"float SNN (aligned)": dict(accuracy=fl["snn_accuracy"], n=fl["n"], firing_rates=fl["firing_rates"]),
              "fixed point, refsim (aligned)": dict(fx, n=fx["n"]),
              "ANN, Lava's images": dict(accuracy=[ann_sub] * a.T, n=lv["n"]),
              "fixed point, refsim (aligned), Lava's images": dict(accuracy=fx_sub, n=lv["n"]),
              "Lava CPU simulator (aligned)": lv,
              "Lava CPU simulator (Lava timing: one step per synapse)": lt},
        machine=dict(cpus=os.cpu_count(), torch=torch.__version__, python=platform.python_version()),
        seconds_this_run=time.perf_counter() - t0,
        seconds_note="wall time of this invocation; parts cached in --work from earlier runs keep their own "
                     "seconds in their rows")
    atomic_write_text(a.out + ".json", json.dumps(res, indent=1) + "\n")
    plot(res, a.out + ".png")
    atomic_write_text(a.out + ".md", f"Command: `{res['command']}`\n\nTraining: `{res['train_command']}`\n\n"
                      f"{res['data']}; first n test images (ANN on all 10,000: {100 * ann_all:.2f}%); "
                      f"{res['shortcuts']} shortcuts; Lava cross-check against the reference simulator: "
                      f"aligned {lv['spike_mismatches']} spike mismatches in {lv['spikes_compared']:,}, Lava timing "
                      f"{lt['spike_mismatches']} in {lt['spikes_compared']:,}.\n\n" + table(res) + "\n\n"
                      "Lava timing (last row): every layer starts at the first step but its input arrives one "
                      f"step per synapse later ({len(net.synaptic) - 1} steps at the readout), and meanwhile "
                      "integrates its bias alone, so this schedule is far from the ANN at every T; it is the "
                      "cross-check of the timing a freshly built NetX network has. The aligned (pipelined) "
                      "schedule runs the same file with NetX's staggered per-layer resets.\n")
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
