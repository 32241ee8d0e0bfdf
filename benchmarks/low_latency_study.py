#!/usr/bin/env python
"""Low-T accuracy (T = 1, 2, 4) of the CIFAR-10 study model: vanilla QCFS against layer-wise bias
calibration, calibrated per-channel v(0), noise-injected fine-tuning, spike-aware fine-tuning and
their combinations (issue #8).

    python benchmarks/low_latency_study.py --data-dir D --model runs/study/vgg_small_qcfs.pt --work runs/lowt

Every variant still deploys as a plain NetX file (weights, per-step biases, per-neuron vInit,
thresholds). On the same trained model (``vgg-small``, QCFS L = 4) and the same first ``--n``
CIFAR-10 test images (the JPEG-recompressed copy, ``../shared/data/make_cifar10.py``, so accuracies
sit slightly below the original's):

* float SNN accuracy at every t = 1..``--T`` (``qcfs2lava.snn.evaluate``, one pass) for the ANN,
  vanilla QCFS (v(0) = θ/2), bias calibration, v(0) calibration, both, noise fine-tuning, spike-aware
  fine-tuning (through the IF twin at ``--snn-T``), and the fine-tuned checkpoints followed by
  calibration — calibrations target ``--T-cal`` on ``--calib`` training images;
* the best low-T variant (and vanilla, for reference) exported to NetX fixed point and run in the
  integer reference simulator (aligned timing) at t = 1..``--T-fixed`` on the same images;
* with ``--lava N``, those NetX files on Lava's CPU simulator (fixed_pt, aligned) for the first N of
  the images, every layer's spikes compared with the reference simulator's.

The fine-tuned checkpoints are trained here if they do not exist (``qcfs2lava train --init MODEL
--noise-p P --epochs 3 --lr 0.01``, ``... --snn-T 2 --epochs 2 --lr 0.005``, the study recipe
otherwise).
Intermediate results are cached in ``--work`` (keyed by checkpoint hash and settings), so an
interrupted run continues. Writes ``benchmarks/results/low_latency_study.{json,png,md}``.
"""
from __future__ import annotations

import argparse
import json
import math
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
from netx_export.sim.refsim import evaluate as ref_evaluate
from qcfs2lava import data as D
from qcfs2lava.checkpoint import load_checkpoint, save_checkpoint
from qcfs2lava.util.fileio import atomic_write_png, atomic_write_text, file_sha256
from qcfs2lava.util.plotting import time_axis
from qcfs2lava.low_latency import META_KEY, calibrate, calibration_of
from qcfs2lava.util.progress import Progress
from qcfs2lava.qcfs import qcfs_layers
from qcfs2lava.snn import convert, evaluate
from qcfs2lava.training import TrainConfig, train

# The study model's recipe (benchmarks/cifar10_study.py), for the fine-tuning run.
RECIPE = dict(arch="vgg-small", dataset="cifar10", L=4, label_smoothing=0.1, autoaugment=False, cutout=False,
              batch_size=128, seed=0)
TS = (1, 2, 4, 8, 16, 32, 64)


def _cached(path: str, key: dict, make):
    if os.path.exists(path):
        got = json.load(open(path))
        if got.get("key") == key:
            return got["value"]
    value = make()
    atomic_write_text(path, json.dumps(dict(key=key, value=value)) + "\n")
    return value


def calibrated_checkpoint(ck, method: str, T: int, x: torch.Tensor, work: str, tag: str, v0_z: float) -> str:
    """Calibrate ``ck`` (method, target T) on ``x``, write it to ``work``; reuse an earlier result."""
    path = os.path.join(work, f"{tag}_{method}_T{T}" + ("" if v0_z == 2.0 or method == "bias" else f"_z{v0_z:g}")
                        + ".pt")
    if os.path.exists(path):
        old = load_checkpoint(path)
        c = old.meta.get(META_KEY, {})
        if c.get("source_sha256") == ck.sha256 and c.get("method") == method and c.get("T") == T \
                and c.get("n") == len(x) and (method == "bias" or c.get("v0_z") == v0_z):
            return path
    bar = Progress(len(qcfs_layers(ck.model)), f"calibrate {tag} {method} T={T}", "layer")
    t0 = time.perf_counter()
    cal = calibrate(ck.model, x, T, method, v0_z=v0_z, progress=lambda name, r: bar.update(1, layer=name))
    meta = dict(ck.meta, **{META_KEY: dict(cal.to_meta(), source_sha256=ck.sha256, seed=0,
                                           seconds=time.perf_counter() - t0)})
    save_checkpoint(path, ck.model, meta)
    return path


def float_eval(label: str, path: str, test, T: int, work: str) -> dict:
    ck = load_checkpoint(path)
    key = dict(sha256=ck.sha256, n=sum(len(y) for _, y in test), T=T)

    def run():
        snn = convert(ck.model, calibration=calibration_of(ck))
        bar = Progress(key["n"], f"{label[:28]:>28s}", "img")
        t0 = time.perf_counter()
        ev = evaluate(ck.model, test, T, snn=snn, progress=lambda k, acc: bar.update(k, acc_T=acc))
        return dict(ann_accuracy=ev.ann_accuracy, snn_accuracy=ev.snn_accuracy, n=ev.n,
                    firing_rates=ev.firing_rates, seconds=time.perf_counter() - t0)
    r = _cached(os.path.join(work, f"eval_{os.path.basename(path)}.json"), key, run)
    r = dict(r, checkpoint=os.path.basename(path), sha256=ck.sha256)
    if ck.meta.get(META_KEY):
        c = ck.meta[META_KEY]
        r["calibration"] = dict(method=c["method"], T=c["T"], n=c["n"], stats=c["stats"],
                                seconds=c.get("seconds"))
    return r


def fixed_eval(label: str, path: str, x: np.ndarray, y: np.ndarray, calib: torch.Tensor, T: int, work: str,
               batch: int = 100) -> dict:
    """Export (as ``qcfs2lava export`` does, weight-rounding correction on 256 training images),
    write + read the NetX file, run refsim (aligned) on ``x``."""
    ck = load_checkpoint(path)
    key = dict(sha256=ck.sha256, n=int(len(y)), T=T, calib=int(len(calib)))

    def run():
        net_path = os.path.join(work, os.path.splitext(os.path.basename(path))[0] + ".net")
        ex = quantize_checkpoint(ck, recommended_T=T, calib_x=calib)
        write_netx(ex.net, net_path)
        net = read_netx(net_path)
        bar = Progress(len(y), f"{'fixed ' + label[:22]:>28s}", "img")
        t0 = time.perf_counter()
        ev = ref_evaluate(net, ((x[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)), T,
                          progress=bar.to)
        return dict(accuracy=ev.accuracy, n=ev.n, saturated=ev.saturated, drive_clipped=ev.drive_clipped,
                    firing_rates=ev.firing_rates, timing=ev.timing, seconds=time.perf_counter() - t0,
                    net=os.path.basename(net_path))
    return dict(_cached(os.path.join(work, f"fixed_{os.path.basename(path)}.json"), key, run), label=label)


def lava_eval(label: str, net_path: str, x: np.ndarray, y: np.ndarray, T: int, work: str) -> dict:
    """Run the NetX file on Lava's CPU simulator (fixed_pt, aligned timing) and compare every layer's
    spikes with the reference simulator on the same images."""
    from netx_export.convert.fixedpoint import input_drive
    from netx_export.comparison import compare
    from netx_export.lava_runtime.runner import run_lava
    from netx_export.sim.refsim import simulate_drive
    key = dict(net_sha256=file_sha256(net_path), n=int(len(y)), T=T)

    def run():
        net = read_netx(net_path)
        d = input_drive(net, x)
        bar = Progress(len(y), f"{'lava ' + label[:23]:>28s}", "img")
        t0 = time.perf_counter()
        res = run_lava(net_path, T=T, drive=d.drive, timing="aligned", record_spikes=True, qnet=net,
                       progress=bar.to)
        seconds = time.perf_counter() - t0
        c = compare(res, simulate_drive(net, d.drive[:res.n], T, "aligned", record_spikes=True))
        return dict(accuracy=res.accuracy(y).tolist(), n=res.n, seconds=seconds,
                    **{k: c[k] for k in ("spikes_compared", "spike_mismatches", "logits_compared",
                                         "logit_mismatches")})
    return dict(_cached(os.path.join(work, f"lava_{os.path.basename(net_path)}.json"), key, run), label=label,
                net=os.path.basename(net_path))


def plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # The legend goes below both panels, three entries a row: one per method, fixed-point run and ANN line.
    rows = math.ceil((len(res["configs"]) + len(res.get("fixed_point", {})) + 3) / 3)
    height = 4.6 + 0.17 * rows
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, height), dpi=120, gridspec_kw=dict(width_ratios=[3, 2]))
    van = res["configs"][res["vanilla"]]["snn_accuracy"]
    colors = {label: plt.cm.tab20(i % 20) for i, label in enumerate(res["configs"])}   # 13+ distinct lines
    for label, r in res["configs"].items():
        acc = r["snn_accuracy"]
        ts = range(1, len(acc) + 1)
        ax.plot(ts, [100 * a for a in acc], marker="o", ms=2.5, lw=1.3, color=colors[label], label=label)
        ax2.plot(ts, [100 * (a - b) for a, b in zip(acc, van)], marker="o", ms=2.5, lw=1.3, color=colors[label])
    for label, r in res.get("fixed_point", {}).items():
        acc = r["accuracy"]
        ax.plot(range(1, len(acc) + 1), [100 * a for a in acc], ls=":", marker="x", ms=4, lw=1.3,
                color=colors.get(label, "black"), label=f"{label}, fixed point (refsim)")
    ax.axhline(100 * res["ann_accuracy"], ls="--", lw=1.0, color="black",
               label=f"ANN {100 * res['ann_accuracy']:.2f}%")
    for key, what, color in (("noise", "noise", "gray"), ("snn", "spike-aware", "tab:brown")):
        tuned = [r for r in res["configs"].values() if r["key"] == key]
        if tuned:
            ax.axhline(100 * tuned[0]["ann_accuracy"], ls=":", lw=1.0, color=color,
                       label=f"ANN after {what} fine-tuning {100 * tuned[0]['ann_accuracy']:.2f}%")
    time_axis(ax)
    time_axis(ax2, ylabel=None)
    # From 5 points below the ANN down to the lowest accuracy any method reaches at T >= 2.
    low = min(min(r["snn_accuracy"][1:]) for r in res["configs"].values())
    ax.set_ylim(max(0, 5 * math.floor(20 * low) - 2), min(100, 5 * math.ceil(20 * res["ann_accuracy"]) + 5))
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3, frameon=False)
    ax.set_title(f"{res.get('arch', 'vgg-small')}, CIFAR-10 (JPEG copy), L=4, n={res['n']}; "
                 f"calibration target T={res['T_cal']}",
                 fontsize=9)
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_ylabel("accuracy − vanilla QCFS (percentage points)")
    ax2.set_title("difference to vanilla QCFS (float SNN, same images)", fontsize=9)
    fig.tight_layout(rect=(0, (0.17 * rows + 0.1) / height, 1, 1))
    atomic_write_png(path, fig)


def table(res: dict) -> str:
    ts = [t for t in TS if t <= res["T"]]
    lines = ["| method | ANN | " + " | ".join(f"T={t}" for t in ts) + " |", "|---|---|" + "---|" * len(ts)]
    for label, r in res["configs"].items():
        lines.append(f"| {label} | {100 * r['ann_accuracy']:.2f} | "
                     + " | ".join(f"{100 * r['snn_accuracy'][t - 1]:.2f}" for t in ts) + " |")
    for label, r in res.get("fixed_point", {}).items():
        lines.append(f"| {label}, fixed point (refsim, aligned) | – | "
                     + " | ".join(f"{100 * r['accuracy'][t - 1]:.2f}" if t <= len(r["accuracy"]) else "–"
                                  for t in ts) + " |")
    lava = res.get("lava") or {}
    if lava:
        n, T = next(iter(lava.values()))["n"], len(next(iter(lava.values()))["accuracy"])
        lines += ["", f"Lava CPU simulator (fixed_pt, aligned timing), the first {n} test images, every layer's spikes "
                  f"compared with the reference simulator at t = 1..{T}:", "",
                  f"| file | accuracy at T={T} | spike entries compared | mismatches | readout logits differing |",
                  "|---|---|---|---|---|"]
        for label, r in lava.items():
            lines.append(f"| {label} ({r['net']}) | {100 * r['accuracy'][-1]:.2f} | {r['spikes_compared']:,} | "
                         f"{r['spike_mismatches']} | {r['logit_mismatches']} of {r['logits_compared']:,} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", required=True, help="the QCFS study checkpoint (vgg-small or resnet20, L=4)")
    p.add_argument("--noise-model", help="noise fine-tuned checkpoint (trained here if missing; "
                                         "default WORK/vgg_small_noise.pt)")
    p.add_argument("--ft-model", help="control: the same fine-tuning without noise (trained here if missing; "
                                      "default WORK/vgg_small_ft.pt)")
    p.add_argument("--noise-p", type=float, default=0.1)
    p.add_argument("--noise-epochs", type=int, default=3)
    p.add_argument("--noise-lr", type=float, default=0.01)
    p.add_argument("--snn-model", help="spike-aware fine-tuned checkpoint (trained here if missing; "
                                       "default WORK/<arch>_snn_T<T>.pt)")
    p.add_argument("--snn-T", type=int, help="its target T (default: --T-cal)")
    p.add_argument("--snn-epochs", type=int, default=2)
    p.add_argument("--snn-lr", type=float, default=0.005)
    p.add_argument("--snn-weight", type=float, default=1.0)
    p.add_argument("--work", default="runs/lowt", help="calibrated checkpoints, NetX files, cached results")
    p.add_argument("--T-cal", type=int, default=2, help="calibration target T (default 2)")
    p.add_argument("--calib", type=int, default=512, help="training images for calibration")
    p.add_argument("--v0-z", type=float, default=2.0, help="v(0) significance rule (qcfs2lava.low_latency.search_v0)")
    p.add_argument("--n", type=int, default=1000, help="test images (the first n of the test set)")
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--T-fixed", type=int, default=16, help="time steps of the fixed-point runs")
    p.add_argument("--lava", type=int, default=0, metavar="N",
                   help="also run the fixed-point files on Lava (CPU, aligned) for the first N test images and "
                        "compare their spikes with the reference simulator")
    p.add_argument("--T-lava", type=int, default=8)
    p.add_argument("--configs", nargs="*", help="only these configuration keys (see CONFIGS in the source)")
    p.add_argument("--partial", action="store_true",
                   help="stop after the float evaluations (their results stay in the --work caches)")
    p.add_argument("--fixed", nargs="*", help="also run these configuration keys in fixed point (besides vanilla "
                                              "and the best low-T variant)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "low_latency_study"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.work, exist_ok=True)
    t_start = time.perf_counter()
    commands = [" ".join(["python", "benchmarks/low_latency_study.py"] + sys.argv[1:])]
    ck = load_checkpoint(a.model)
    info = D.dataset_info("cifar10")
    train_split = D.load_split("cifar10", a.data_dir, train=True)
    test_split = D.load_split("cifar10", a.data_dir, train=False)
    calib_x = D.sample(train_split, a.calib, ck.meta["normalization"])
    sub = D.ArraySplit(test_split.x[:a.n], test_split.y[:a.n], test_split.max_value, test_split.class_names)
    test = list(D.iterate_batches(sub, 250, info))

    arch = str(ck.meta.get("arch", "vgg-small"))
    recipe = dict(RECIPE, arch=arch)
    stem = arch.replace("-", "_")
    noise_path = a.noise_model or os.path.join(a.work, f"{stem}_noise.pt")
    noise_cmd = (f"qcfs2lava train --arch {arch} --dataset cifar10 --data-dir {a.data_dir} --init {a.model} "
                 f"--noise-p {a.noise_p:g} --epochs {a.noise_epochs} --lr {a.noise_lr:g} --label-smoothing 0.1 "
                 f"--no-autoaugment --no-cutout --batch-size 128 --out {noise_path}")
    want = [k for k in ("vanilla", "bias", "v0", "v0-argmin", "both", "ft", "noise", "noise+v0", "noise+both",
                        "snn", "snn+v0", "snn+bias", "snn+both")
            if not a.configs or k in a.configs or k == "vanilla"]
    ft_path = a.ft_model or os.path.join(a.work, f"{stem}_ft.pt")
    snn_path = a.snn_model or os.path.join(a.work, f"{stem}_snn_T{a.snn_T or a.T_cal}.pt")
    snn_T = a.snn_T or a.T_cal
    snn_cmd = (noise_cmd.replace(f"--noise-p {a.noise_p:g} --epochs {a.noise_epochs} --lr {a.noise_lr:g}",
                                 f"--snn-T {snn_T} --snn-weight {a.snn_weight:g} --epochs {a.snn_epochs} "
                                 f"--lr {a.snn_lr:g}").replace(noise_path, snn_path))

    def finetuned(key: str, path: str, command: str, **overrides):
        """The fine-tuned checkpoint for ``key`` (trained here, resumably, if missing)."""
        if not any(k == key or k.startswith(key + "+") for k in want):
            return None
        if not os.path.exists(path) or load_checkpoint(path).training_state is not None:
            print(f"== fine-tuning ({key}) -> {path}", flush=True)
            train(TrainConfig(data_dir=a.data_dir, out=path, init=a.model, resume=True, threads=a.threads,
                              log=os.path.splitext(path)[0] + ".jsonl", **dict(recipe, **overrides)))
        c = load_checkpoint(path)
        if c.meta.get("init", {}).get("sha256") != ck.sha256:
            raise SystemExit(f"{path} was not fine-tuned from {a.model}")
        if bool(c.meta.get("spike_noise")) != (key == "noise") or bool(c.meta.get("spike_finetune")) != (key == "snn"):
            raise SystemExit(f"{path} is not the '{key}' fine-tuning")
        commands.append(command)
        return c

    # control: the same fine-tuning without noise
    ck_ft = finetuned("ft", ft_path, noise_cmd.replace(f"--noise-p {a.noise_p:g} ", "").replace(noise_path, ft_path),
                      epochs=a.noise_epochs, lr=a.noise_lr)
    ck_noise = finetuned("noise", noise_path, noise_cmd, epochs=a.noise_epochs, lr=a.noise_lr, noise_p=a.noise_p)
    ck_snn = finetuned("snn", snn_path, snn_cmd, epochs=a.snn_epochs, lr=a.snn_lr, snn_T=snn_T,
                       snn_weight=a.snn_weight)

    Tc = a.T_cal
    CONFIGS = {   # key: (label, checkpoint, calibration method or None[, v(0) significance z])
        "vanilla": ("vanilla QCFS (v0=θ/2)", ck, None),
        "bias": (f"bias calibration (T={Tc})", ck, "bias"),
        "v0": (f"v0 calibration (T={Tc})", ck, "v0"),
        "v0-argmin": (f"v0 calibration, plain argmin z=0 (T={Tc}, ablation)", ck, "v0", 0.0),
        "both": (f"v0 + bias calibration (T={Tc})", ck, "both"),
        "ft": (f"fine-tuning without noise ({a.noise_epochs} ep., control)", ck_ft, None),
        "noise": (f"noise fine-tuning (p={a.noise_p:g}, {a.noise_epochs} ep.)", ck_noise, None),
        "noise+v0": (f"noise fine-tuning + v0 cal. (T={Tc})", ck_noise, "v0"),
        "noise+both": (f"noise fine-tuning + v0 + bias cal. (T={Tc})", ck_noise, "both"),
        "snn": (f"spike-aware fine-tuning (T={snn_T}, {a.snn_epochs} ep.)", ck_snn, None),
        "snn+v0": (f"spike-aware fine-tuning + v0 cal. (T={Tc})", ck_snn, "v0"),
        "snn+bias": (f"spike-aware fine-tuning + bias cal. (T={Tc})", ck_snn, "bias"),
        "snn+both": (f"spike-aware fine-tuning + v0 + bias cal. (T={Tc})", ck_snn, "both"),
    }
    keys = want
    configs: dict[str, dict] = {}
    paths: dict[str, str] = {}
    for k in keys:
        label, c, method = CONFIGS[k][:3]
        z = CONFIGS[k][3] if len(CONFIGS[k]) > 3 else a.v0_z
        if method is None:
            path = c.path
        else:
            tag = "base" if c is ck else "noise" if c is ck_noise else "snn"
            path = calibrated_checkpoint(c, method, Tc, calib_x, a.work, tag, z)
            commands.append(f"qcfs2lava calibrate {c.path} --method {method} --T {Tc} --n {a.calib} "
                            + ("" if method == "bias" else f"--v0-z {z:g} ")
                            + f"--data-dir {a.data_dir} -o {path}")
        paths[k] = path
        r = float_eval(label, path, test, a.T, a.work)
        r["key"] = k
        configs[label] = r
        print(f"{label}: ANN {100 * r['ann_accuracy']:.2f}%  " + "  ".join(
            f"T={t} {100 * r['snn_accuracy'][t - 1]:.2f}" for t in TS if t <= a.T), flush=True)

    if a.partial:
        return 0                                   # partial run: the caches in --work hold its results
    configs_by_key = {r["key"]: lab for lab, r in configs.items()}
    floor = {}                                     # the ANN with L' = 1, 2 quantization levels (see README)
    for L2 in (ck.meta["L"], 2, 1):
        m = load_checkpoint(a.model).model
        for _, q in qcfs_layers(m):
            q.L = L2
        with torch.no_grad():
            floor[f"L={L2}"] = sum(int((m(xb).argmax(1) == yb).sum()) for xb, yb in test) / a.n
    # Best low-T variant: highest mean float accuracy over T = 1, 2, 4 (excluding vanilla).
    low = {lab: float(np.mean([r["snn_accuracy"][t - 1] for t in (1, 2, 4)])) for lab, r in configs.items()}
    best = max((lab for lab in configs if configs[lab]["key"] not in ("vanilla", "ft", "v0-argmin")),
               key=lambda lab: low[lab])
    xs = D.normalize(sub.x, sub.max_value, ck.meta["normalization"]["mean"], ck.meta["normalization"]["std"]).numpy()
    ys = sub.y.numpy()
    export_calib = D.sample(train_split, 256, ck.meta["normalization"])
    fixed = {}
    extra = [configs_by_key[k] for k in (a.fixed or []) if k in configs_by_key]
    for lab in dict.fromkeys([CONFIGS["vanilla"][0], best] + extra):
        key = configs[lab]["key"]
        fixed[lab] = fixed_eval(lab, paths[key], xs, ys, export_calib, a.T_fixed, a.work)
        net_path = os.path.join(a.work, fixed[lab]["net"])        # where fixed_eval wrote it
        commands.append(f"qcfs2lava export {paths[key]} -o {net_path} --data-dir {a.data_dir}")
        commands.append(f"qcfs2lava simulate {net_path} --backend reference --data-dir {a.data_dir} --n {a.n} "
                        f"--T {a.T_fixed}")
        print(f"{lab}, fixed point: " + "  ".join(f"T={t} {100 * fixed[lab]['accuracy'][t - 1]:.2f}"
                                                   for t in TS if t <= a.T_fixed), flush=True)
    lava = {}
    for lab in fixed if a.lava else ():
        net_path = os.path.join(a.work, fixed[lab]["net"])
        lava[lab] = lava_eval(lab, net_path, xs[:a.lava], ys[:a.lava], a.T_lava, a.work)
        commands.append(f"qcfs2lava simulate {net_path} --backend lava --compare --data-dir {a.data_dir} "
                        f"--n {a.lava} --T {a.T_lava}")
        print(f"{lab}, Lava: {lava[lab]['spike_mismatches']} mismatches in {lava[lab]['spikes_compared']} spikes",
              flush=True)

    van = configs[CONFIGS["vanilla"][0]]
    res = dict(
        commands=commands, model=a.model, model_sha256=ck.sha256, arch=arch,
        data="CIFAR-10, JPEG-recompressed copy (../shared/data/make_cifar10.py); the first n test images",
        n=a.n, T=a.T, T_cal=Tc, calib_images=a.calib, ann_accuracy=van["ann_accuracy"],
        noise=dict(p=a.noise_p, epochs=a.noise_epochs, lr=a.noise_lr, checkpoint=os.path.basename(noise_path),
                   sha256=ck_noise.sha256, ann_test_accuracy_10k=ck_noise.meta["metrics"]["test_accuracy"],
                   history=ck_noise.meta.get("history")) if ck_noise is not None else None,
        control=dict(checkpoint=os.path.basename(ft_path), sha256=ck_ft.sha256,
                     ann_test_accuracy_10k=ck_ft.meta["metrics"]["test_accuracy"],
                     history=ck_ft.meta.get("history")) if ck_ft is not None else None,
        spike_finetune=dict(T=snn_T, weight=a.snn_weight, epochs=a.snn_epochs, lr=a.snn_lr,
                            checkpoint=os.path.basename(snn_path), sha256=ck_snn.sha256,
                            ann_test_accuracy_10k=ck_snn.meta["metrics"]["test_accuracy"],
                            history=ck_snn.meta.get("history")) if ck_snn is not None else None,
        ann_with_L_levels=floor,
        best_low_T=best, best_rule="highest mean float-SNN accuracy over T = 1, 2, 4 (control excluded)",
        vanilla=CONFIGS["vanilla"][0],
        configs=configs, fixed_point=fixed, lava=lava,
        machine=dict(cpus=os.cpu_count(), torch=torch.__version__, python=platform.python_version(),
                     threads=a.threads, note="shared 2-core machine; timings include contention"),
        seconds=time.perf_counter() - t_start)
    atomic_write_text(a.out + ".json", json.dumps(res, indent=1) + "\n")
    plot(res, a.out + ".png")
    md = ("Commands:\n\n" + "\n".join(f"    {c}" for c in commands) + "\n\n"
          f"{res['data']}; n = {a.n}; calibration target T = {Tc} on {a.calib} training images; "
          f"best low-T variant ({res['best_rule']}): **{best}**.\n\n" + table(res) + "\n")
    atomic_write_text(a.out + ".md", md)
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
