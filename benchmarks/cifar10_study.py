#!/usr/bin/env python
"""CIFAR-10 accuracy vs time steps: QCFS against QCF and ReLU threshold balancing (paper Fig. 4,
Table S1), measured on a 2-core CPU with a mid-size VGG (``vgg-small``).

    python benchmarks/cifar10_study.py --data-dir D --work runs/study

Trains (or resumes) three networks with one recipe, QCFS (φ = 1/2), QCF (φ = 0) and ReLU (the
baselines for fewer epochs than the QCFS study model: the 2-core budget; each model's epochs and
ANN accuracy are in the results, and the gap to its own ANN is the fair comparison), then
converts each and evaluates ANN and SNN accuracy at T = 1..64 on the test set. Writes
``benchmarks/results/cifar10_study.{json,png,md}``. The data is the JPEG-recompressed CIFAR-10
copy (``../shared/data/make_cifar10.py``), so accuracies sit slightly below the original's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from qcfs2lava import data as D
from qcfs2lava.balance import activation_thresholds, max_input_thresholds
from qcfs2lava.checkpoint import load_checkpoint
from qcfs2lava.util.fileio import atomic_write_png, atomic_write_text
from qcfs2lava.util.plotting import time_axis
from qcfs2lava.util.progress import Progress
from qcfs2lava.snn import convert, evaluate, layer_errors
from qcfs2lava.training import TrainConfig, train

RECIPE = dict(arch="vgg-small", dataset="cifar10", L=4, lr=0.05, lam_init=2.0, label_smoothing=0.1,
              autoaugment=False, cutout=False, batch_size=128, seed=0)
MODELS = {"qcfs": dict(activation="qcfs", phi=0.5), "qcf": dict(activation="qcfs", phi=0.0),
          "relu": dict(activation="relu", phi=0.0)}


def batches(split, info, n, bs=500):
    if n:
        split = D.ArraySplit(split.x[:n], split.y[:n], split.max_value, split.class_names)
    return list(D.iterate_batches(split, bs, info))


def run_config(label, model, snn, test, T):
    bar = Progress(sum(len(y) for _, y in test), f"{label:>18s}", "img")
    ev = evaluate(model, test, T, snn=snn, progress=lambda k, acc: bar.update(k, acc_T=acc))
    return dict(ann_accuracy=ev.ann_accuracy, snn_accuracy=ev.snn_accuracy, n=ev.n, firing_rates=ev.firing_rates)


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=120, gridspec_kw=dict(width_ratios=[3, 2]))
    for label, r in res["configs"].items():
        ts = range(1, len(r["snn_accuracy"]) + 1)
        ax.plot(ts, [100 * a for a in r["snn_accuracy"]], marker="o", ms=2.5, lw=1.3, label=label)
    for (m, r), ls in zip(res["models"].items(), ("--", ":", "-.")):
        ax.axhline(100 * r["ann_accuracy"], ls=ls, lw=1.0, color="black",
                   label=f"ANN {m}: {100 * r['ann_accuracy']:.2f}% ({r['train_metrics']['epoch']} epochs)")
    time_axis(ax, ylim=(0, 100))
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"vgg-small, CIFAR-10 (JPEG copy), L={RECIPE['L']}, n={res['n']}")
    for label in ("QCFS (θ=λ, v0=θ/2)", "QCF (θ=λ, v0=0)", "ReLU+99.9% (v0=θ/2)"):
        if label in res["configs"]:
            fr = res["configs"][label]["firing_rates"]
            ax2.plot(range(1, len(fr) + 1), list(fr.values()), marker="s", label=label)
    ax2.set_xlabel("spiking layer")
    ax2.set_ylabel(f"firing rate (spikes / neuron / step, T={res['T']})")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    atomic_write_png(path, fig)


def table(res) -> str:
    ts = [t for t in (1, 2, 4, 8, 16, 32, 64) if t <= res["T"]]
    lines = ["| method | n | ANN | " + " | ".join(f"T={t}" for t in ts) + " |",
             "|---|---|---|" + "---|" * len(ts)]
    for label, r in res["configs"].items():
        lines.append(f"| {label} | {r['n']} | {100 * r['ann_accuracy']:.2f} | "
                     + " | ".join(f"{100 * r['snn_accuracy'][t - 1]:.2f}" for t in ts) + " |")
    return "\n".join(lines)


def evaluate_model(name, ck, test, calib, a) -> tuple[dict, dict]:
    """All SNN configurations of one trained model: (model info, {label: result})."""
    model = dict(ann_accuracy=None, lam=ck.meta["lam"], sha256=ck.sha256, train_metrics=ck.meta["metrics"])
    if name == "qcfs":
        todo = {"QCFS (θ=λ, v0=θ/2)": convert(ck.model),
                "QCFS (θ=λ, v0=0)": convert(ck.model, v0_frac=0.0)}
        th = max_input_thresholds(ck.model, calib)
        for frac, tag in ((0.5, "θ/2"), (0.0, "0")):
            snn = convert(ck.model, v0_frac=frac)
            for lname, mod in snn.named_modules():
                if lname in th:
                    mod.theta.fill_(th[lname])
            todo[f"QCFS no-DT (θ=max input, v0={tag})"] = snn
        model["max_input_thresholds"] = th
        model["layer_errors"] = {T: layer_errors(ck.model, test[0][0], T) for T in (4, 16)}
    elif name == "qcf":
        todo = {"QCF (θ=λ, v0=0)": convert(ck.model)}
    else:
        th_max = activation_thresholds(ck.model, calib, 100.0)
        th_p = activation_thresholds(ck.model, calib, 99.9)
        model["thresholds"] = dict(max=th_max, p999=th_p)
        todo = {"ReLU+max (v0=0)": convert(ck.model, 0.0, th_max),
                "ReLU+max (v0=θ/2)": convert(ck.model, 0.5, th_max),
                "ReLU+99.9% (v0=0)": convert(ck.model, 0.0, th_p),
                "ReLU+99.9% (v0=θ/2)": convert(ck.model, 0.5, th_p)}
    configs = {}
    for label, snn in todo.items():
        sub = test[:max(1, a.n_ablation // 500)] if "no-DT" in label else test
        r = run_config(label, ck.model, snn, sub, a.T)
        r["model"] = name
        configs[label] = r
        if "no-DT" not in label:
            model["ann_accuracy"] = r["ann_accuracy"]
        print(f"{label}: ANN {100 * r['ann_accuracy']:.2f}%  T=4 {100 * r['snn_accuracy'][3]:.2f}%  "
              f"T=16 {100 * r['snn_accuracy'][15]:.2f}%  T={a.T} {100 * r['snn_accuracy'][-1]:.2f}%", flush=True)
    return model, configs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--work", default="runs/study", help="checkpoints and logs")
    p.add_argument("--epochs-qcfs", type=int, default=22, help="epochs for the QCFS model (the study model)")
    p.add_argument("--epochs", type=int, default=12, help="epochs for the QCF and ReLU baselines")
    p.add_argument("--n", type=int, default=2500, help="test images (the first n of the test set)")
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--n-ablation", type=int, default=1000,
                   help="test images for the Table S1 no-DT rows (near chance at T <= 64, as in the paper)")
    p.add_argument("--calib", type=int, default=2000, help="training images for threshold balancing")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "cifar10_study"))
    p.add_argument("--only", nargs="*", help="train/evaluate only these models (qcfs, qcf, relu)")
    p.add_argument("--train-only", action="store_true", help="stop after training (run trainings in parallel)")
    p.add_argument("--threads", type=int, help="torch threads")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    os.makedirs(a.work, exist_ok=True)
    t0 = time.perf_counter()
    ckpts = {}
    for name, kw in MODELS.items():
        if a.only and name not in a.only:
            continue
        path = os.path.join(a.work, f"vgg_small_{name}.pt")
        done = os.path.exists(path) and load_checkpoint(path).training_state is None
        if not done:
            epochs = a.epochs_qcfs if name == "qcfs" else a.epochs
            print(f"== training {name} ({epochs} epochs) -> {path}", flush=True)
            train(TrainConfig(data_dir=a.data_dir, out=path, epochs=epochs, resume=True,
                              log=os.path.join(a.work, f"{name}.jsonl"), **RECIPE, **kw))
        ckpts[name] = load_checkpoint(path)
    if a.train_only:
        return 0
    info = D.dataset_info("cifar10")
    test = batches(D.load_split("cifar10", a.data_dir, train=False), info, a.n)
    calib = batches(D.load_split("cifar10", a.data_dir, train=True), info, a.calib)
    configs, models = {}, {}
    for name, ck in ckpts.items():
        cache = os.path.join(a.work, f"eval_{name}.json")
        key = dict(sha256=ck.sha256, n=a.n, T=a.T, n_ablation=a.n_ablation, calib=a.calib)
        if os.path.exists(cache) and json.load(open(cache))["key"] == key:
            got = json.load(open(cache))          # evaluated earlier (e.g. by a parallel --only run)
        else:
            info_m, cfg_m = evaluate_model(name, ck, test, calib, a)
            got = dict(key=key, model=info_m, configs=cfg_m)
            atomic_write_text(cache, json.dumps(got) + "\n")
        models[name] = got["model"]
        configs.update(got["configs"])
    if a.only:
        return 0                                  # partial run: the cache holds its results
    res = dict(command=" ".join(["python", "benchmarks/cifar10_study.py"] + sys.argv[1:]),
               data="CIFAR-10, JPEG-recompressed copy (../shared/data/cifar10-jpeg.zip)", recipe=RECIPE,
               epochs={k: v["train_metrics"]["epoch"] for k, v in models.items()}, n=a.n, T=a.T,
               calib_images=a.calib, models=models, configs=configs,
               machine=dict(cpus=os.cpu_count(), torch=torch.__version__, python=platform.python_version()),
               seconds=time.perf_counter() - t0)
    atomic_write_text(a.out + ".json", json.dumps(res, indent=1) + "\n")
    plot(res, a.out + ".png")
    atomic_write_text(a.out + ".md", f"Command: `{res['command']}`\n\n{res['data']}; n = {a.n} test images.\n\n"
                      + table(res) + "\n")
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
