#!/usr/bin/env python
"""Checkpoints of the QCFS authors' code through ``qcfs2lava import`` (issue 15): does our network
compute exactly what theirs computes, and does it reach Lava bit-exact?

    python benchmarks/official_import.py                  # every architecture, both layouts
    python benchmarks/official_import.py --quick          # CIFAR ResNet-20 and VGG-16 only

For each architecture and both layouts (new code ``IF.thresh``, old code ``MyFloor.up`` with the
``module.`` prefix of DistributedDataParallel), a state dict with the authors' exact key names and
shapes is built with random weights, randomised BatchNorm statistics and thresholds in [0.5, 4]
(``tests/test_official_import.py``, whose independent re-implementation of their forward passes is
used here too), written to a ``.pth`` and imported. Measured on ``--n`` random-pixel images,
normalised as the authors' test transform does:

* ``ann``: max |Δlogit| of our ANN against their ANN formula;
* ``snn_T{1,2,4,8}``: max |Δ| of our float SNN's mean output against their ``IF`` neuron (the new
  code's; for the old layout also ``snn_scaled_T8``, their ``ScaledNeuron``, which divides by θ
  first and so can round a potential on the threshold differently);
* after ``export`` (default settings): refsim and Lava (``Loihi2SimCfg``, fixed_pt) on ``--lava-n``
  images at T = ``--lava-T``, every spike of every layer compared (``lava_spike_mismatches`` of
  ``lava_spikes_compared``), and the fraction of hidden neurons that fired (so that the comparison is
  not over silent layers). ImageNet VGG-16 (224 px) is too large for Lava's CPU simulator here: its
  row says so instead of a number.

Writes ``benchmarks/results/official_import.{json,md,png}`` with the command and the machine.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "official_import")
CASES = [("vgg16", "cifar10"), ("vgg16", "cifar100"), ("vgg16", "imagenet"), ("resnet18", "cifar10"),
         ("resnet20", "cifar10"), ("resnet34", "cifar100")]
QUICK = [("resnet20", "cifar10"), ("vgg16", "cifar10")]


def _reference():
    """The state-dict builder and the authors' forward passes, from the test module (one copy)."""
    spec = importlib.util.spec_from_file_location("official_reference",
                                                  os.path.join(ROOT, "tests", "test_official_import.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lava_check(ref, imp_path: str, dataset: str, n: int, T: int, seed: int) -> dict:
    from netx_export.comparison import compare
    from netx_export.convert.pipeline import quantize_checkpoint
    from netx_export.lava_runtime.runner import run_lava
    from netx_export.netx.validate import load_netx
    from netx_export.netx.write import write_netx
    from netx_export.sim import refsim
    from qcfs2lava.checkpoint import load_checkpoint
    net_path = imp_path.replace(".pt", ".net")
    t0 = time.perf_counter()
    ex = quantize_checkpoint(load_checkpoint(imp_path))
    write_netx(ex.net, net_path)
    net = load_netx(net_path)
    x = ref._images(dataset, n, seed=seed).numpy()
    r = refsim.simulate(net, x, T, record_spikes=True)
    hidden = [s for s, lay in zip(r.spikes, net.synaptic) if lay.neuron is not None and lay is not net.synaptic[-1]]
    fired = float(np.mean(np.concatenate([s.any(axis=0).reshape(n, -1).ravel() for s in hidden])))
    c = compare(run_lava(net_path, x, T=T, qnet=net), r)
    return dict(lava_spike_mismatches=int(c["spike_mismatches"]), lava_spikes_compared=int(c["spikes_compared"]),
                lava_logit_mismatches=int(c["logit_mismatches"]), lava_identical=bool(c["identical"]),
                hidden_neurons_fired=fired, export_graph_error=float(ex.graph_error),
                lava_seconds=time.perf_counter() - t0)


def run_case(ref, arch: str, dataset: str, layout: str, a: argparse.Namespace, work: str) -> dict:
    from qcfs2lava.official_import import import_official, save_imported
    sd = ref.their_state(arch, dataset, layout, seed=a.seed)
    src = ref._save(sd, os.path.join(work, f"{arch}_{dataset}_{layout}.pth"),
                    prefix="module." if layout == "old" else "")
    t0 = time.perf_counter()
    imp = import_official(src, arch, dataset, L=a.L)
    out = os.path.join(work, f"{arch}_{dataset}_{layout}.pt")
    save_imported(imp, out)
    n = 1 if dataset == "imagenet" else a.n
    x = ref._images(dataset, n, seed=a.seed + 1)
    ann, snn = ref.max_deltas(imp.model, sd, arch, layout, x, a.L)
    row = dict(arch=arch, dataset=dataset, layout=layout, keys=len(sd), images=n, L=a.L, ann=ann,
               **{f"snn_T{t}": d for t, d in snn.items()},
               logit_scale=float(ref.their_forward(sd, arch, layout, x, a.L).abs().max()))
    if layout == "old":
        row["snn_scaled_T8"] = ref.max_deltas(imp.model, sd, arch, layout, x, a.L, steps=(8,), neuron="scaled")[1][8]
    if dataset == "imagenet":
        row["lava"] = "not run: 224 px VGG-16 (13 convs up to 224x224x64, a 25088x4096 dense layer) is beyond Lava's CPU simulator on this machine"
    elif not a.no_lava:
        row.update(_lava_check(ref, out, dataset, a.lava_n, a.lava_T, a.seed + 2))
    row["seconds"] = time.perf_counter() - t0
    return row


def _exact(r: dict) -> bool:
    """ANN and float SNN within float rounding of theirs (1e-5 of the logit scale), no Lava mismatch."""
    tol = 1e-5 * max(r["logit_scale"], 1.0)
    return (r["ann"] <= tol and all(r[f"snn_T{t}"] <= tol for t in (1, 2, 4, 8))
            and r.get("lava_spike_mismatches", 0) == 0)


def _markdown(rows: list[dict], command: str) -> str:
    head = ("| arch | data | layout | keys | max\\|Δ\\| ANN | SNN T=1 | T=2 | T=4 | T=8 | ScaledNeuron T=8 | "
            "Lava spike mismatches | hidden fired |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        lava = (f"{r['lava_spike_mismatches']} of {r['lava_spikes_compared']:,}" if "lava_spike_mismatches" in r
                else "not run" if "lava" in r else "-")
        fired = f"{100 * r['hidden_neurons_fired']:.0f}%" if "hidden_neurons_fired" in r else "-"
        scaled = f"{r['snn_scaled_T8']:.2g}" if "snn_scaled_T8" in r else "-"
        lines.append(f"| {r['arch']} | {r['dataset']} | {r['layout']} | {r['keys']} | {r['ann']:.2g} | "
                     f"{r['snn_T1']:.2g} | {r['snn_T2']:.2g} | {r['snn_T4']:.2g} | {r['snn_T8']:.2g} | {scaled} | "
                     f"{lava} | {fired} |")
    return (f"# The QCFS authors' checkpoints through `qcfs2lava import`\n\n`{command}`\n\n"
            "Random weights in the authors' exact layouts; max |Δ| of our output against an independent "
            "re-implementation of their forward (logit scale ~1). SNN columns: their `IF` neuron (new code); "
            "ScaledNeuron: the old code's neuron, which divides by θ first. Lava: every spike of every layer "
            "after export, against refsim.\n\n" + head + "\n".join(lines) + "\n")


def _plot(rows: list[dict], path: str) -> None:
    from qcfs2lava.util.fileio import atomic_write_png
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    floor = 1e-9
    fig, ax = plt.subplots(figsize=(9, 3.6))
    labels = [f"{r['arch']}\n{r['dataset']}\n{r['layout']}" for r in rows]
    keys = ["ann", "snn_T1", "snn_T2", "snn_T4", "snn_T8"]
    w = 0.8 / len(keys)
    for j, k in enumerate(keys):
        ax.bar(np.arange(len(rows)) + j * w, [max(r[k], floor) for r in rows], w, label=k.replace("_", " "))
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, 1)
    ax.axhline(floor, color="k", lw=0.5)
    ax.set_xticks(np.arange(len(rows)) + 0.4 - w / 2, labels, fontsize=7)
    ax.set_ylabel(f"max |Δ| vs their forward\n(bars at {floor:g} are 0)")
    ax.legend(fontsize=7, ncol=5)
    ax.set_title("imported QCFS checkpoints: our ANN and float SNN against the authors' formulas", fontsize=9)
    fig.tight_layout()
    atomic_write_png(path, fig)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CIFAR ResNet-20 and VGG-16 only")
    p.add_argument("--n", type=int, default=4, help="images for the ANN/SNN comparison (ImageNet: 1)")
    p.add_argument("--L", type=int, default=4)
    p.add_argument("--lava-n", type=int, default=2)
    p.add_argument("--lava-T", type=int, default=4)
    p.add_argument("--no-lava", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=OUT, help="path prefix of the .json/.md/.png written")
    a = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    ref = _reference()
    rows = []
    from qcfs2lava.util.progress import Progress     # (tqdm with a thread lock: Lava must select 'fork')
    cases = [(arch, ds, layout) for arch, ds in (QUICK if a.quick else CASES) for layout in ("new", "old")]
    bar = Progress(len(cases), "import cases", "case", interval=1.0)
    with tempfile.TemporaryDirectory(prefix="qcfs2lava-official-") as work:
        for arch, ds, layout in cases:
            rows.append(run_case(ref, arch, ds, layout, a, work))
            r = rows[-1]
            bar.write(f"{arch} {ds} {layout}: ANN {r['ann']:.2g}, SNN T=8 {r['snn_T8']:.2g}, "
                      f"Lava {r.get('lava_spike_mismatches', r.get('lava', '-'))} ({r['seconds']:.0f} s)")
            bar.update(1)
    bar.close()
    command = "python benchmarks/official_import.py " + " ".join(sys.argv[1:])
    result = dict(command=command.strip(), machine=dict(platform=platform.platform(), cpus=os.cpu_count(),
                                                         torch=torch.__version__),
                  date=time.strftime("%Y-%m-%d"), rows=rows,
                  all_exact=all(_exact(r) for r in rows))
    from qcfs2lava.util.fileio import atomic_write_json, atomic_write_text
    atomic_write_json(a.out + ".json", result)
    atomic_write_text(a.out + ".md", _markdown(rows, command.strip()))
    _plot(rows, a.out + ".png")
    print(f"wrote {a.out}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
