#!/usr/bin/env python
"""Lava CPU-simulator speed on the CIFAR-10 study network: Lava's stock fixed-point Conv model vs
the fast one (``netx_export.lava.conv_models``), and the integer reference simulator.

    OMP_NUM_THREADS=1 python benchmarks/lava_speed.py --net /tmp/study/vgg_small_qcfs.net \
        --data-dir /tmp/cifar --n 2 --T 8

Configurations (all ``timing="lava"``, the first ``n`` CIFAR-10 test images):

* Lava ``fixed_pt`` with ``conv="lava"`` (Lava's stock model) and ``conv="fast"``: ``run_lava`` with
  spikes recorded in every layer (needed for the check below); the time is the simulation itself
  (compile excluded); the stock run stops after ``--stock-budget`` seconds and reports the samples it finished.
* refsim, one sample at a time (the same n images) and batched (``--refsim-batch`` images at once).
* Each Conv synapse's model step alone (``run_spk`` outside Lava), stock vs fast, fed the spikes the
  fast run recorded for sample 0 (all T steps for fast, ``--stock-steps`` for stock): what the conv
  arithmetic costs, apart from Lava's messaging, neurons and recorders.

Speed is in sample-steps per second: one Lava step advances one sample by one time step.
Bit-exactness: the fast and stock runs' spikes (every layer, step, sample) and readout logits are
compared with each other, and each with refsim. Writes ``benchmarks/results/lava_speed.{json,png}``;
if ``--net`` does not exist it is exported from ``--checkpoint`` first.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from netx_export.convert.fixedpoint import input_drive
from netx_export.netx.read import read_netx
from qcfs2lava import data as D
from qcfs2lava.util.fileio import atomic_write_png, atomic_write_text
from qcfs2lava.util.progress import Progress


def _row(config: str, n: int, T: int, seconds: float, **extra) -> dict:
    steps = n * T
    return dict(config=config, n=n, T=T, sample_steps=steps, seconds=seconds,
                ms_per_step=1000 * seconds / max(steps, 1), steps_per_s=steps / max(seconds, 1e-12), **extra)


def lava_row(label: str, path: str, net, drive: np.ndarray, T: int, conv: str, budget: float | None):
    from netx_export.lava_runtime.runner import run_lava
    bar = Progress(len(drive), label, "img", interval=1.0)
    res = run_lava(path, T=T, drive=drive, timing="lava", qnet=net, conv=conv, budget_s=budget, chunk_samples=1,
                   progress=bar.to)
    bar.close()
    row = _row(label, res.n, T, res.seconds_run, backend="lava", conv=conv, tag=res.tag,
               seconds_build=res.seconds_build, seconds_compile=res.seconds_compile, stopped=res.stopped)
    return row, res


def refsim_row(label: str, net, drive: np.ndarray, T: int, batch: int) -> dict:
    from netx_export.sim.refsim import simulate_drive
    n = len(drive)
    bar = Progress(n, label, "img", interval=1.0)
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        simulate_drive(net, drive[i:i + batch], T, "lava")
        bar.update(min(batch, n - i))
    bar.close()
    return _row(label, n, T, time.perf_counter() - t0, backend="refsim", batch=batch)


class _Ports:
    """``s_in`` / ``a_out`` stand-ins to step a ProcessModel outside Lava's runtime."""

    def __init__(self, inputs: list[np.ndarray]):
        self.inputs, self.sent = list(inputs), []

    def recv(self) -> np.ndarray:
        return self.inputs.pop(0)

    def send(self, data: np.ndarray) -> None:
        self.sent.append(data)


def conv_model_rows(net, spikes, stock_steps: int) -> list[dict]:
    """Per Conv synapse: ms per ``run_spk`` of the stock and the fast model on recorded spikes, and
    whether their outputs are identical. Weights in Lava's layout as NetX builds them ([C_out, kW, kH, C_in], flipped)."""
    from lava.proc.conv.models import PyConvModelFixed

    from netx_export.lava.conv_models import PyConvModelFast
    from netx_export.lava_runtime.layout import lava_conv_weight, whc
    rows = []
    for i, lay in enumerate(net.synaptic):
        if i == 0 or lay.kind != "conv":
            continue
        w = lava_conv_weight(lay.weight)
        xs = [np.ascontiguousarray(whc(spikes[i - 1][t, 0])).astype(np.int32)
              for t in range(spikes[i - 1].shape[0])]
        out, ms = {}, {}
        for name, cls, k in (("fast", PyConvModelFast, len(xs)), ("stock", PyConvModelFixed, stock_steps)):
            m = cls({})
            m.weight, m.kernel_size = w, np.array(w.shape[1:3], np.int8)
            m.stride, m.padding = np.array(lay.stride[::-1], np.int8), np.array(lay.padding[::-1], np.int8)
            m.dilation, m.groups = np.array(lay.dilation[::-1], np.int8), np.array([lay.groups], np.int8)
            m.num_message_bits, m.weight_exp = np.array([0], np.int8), np.array([0], np.int32)
            m.a_buf = np.zeros(1, np.int32)
            m.s_in = m.a_out = ports = _Ports(xs[:k])
            m.run_spk()                                          # warm-up (fast: builds its buffers)
            t0 = time.perf_counter()
            for _ in range(k - 1):
                m.run_spk()
            ms[name] = 1000 * (time.perf_counter() - t0) / max(k - 1, 1)
            ports.inputs.append(np.zeros_like(xs[0]))
            m.run_spk()                                          # sends the output of input k − 1
            out[name] = ports.sent[1:]
        same = all(np.array_equal(a, b) for a, b in zip(out["stock"], out["fast"]))
        rows.append(dict(layer=i, weight_lava=list(w.shape), input_whc=list(xs[0].shape),
                         spike_density=float(np.mean([x.mean() for x in xs])), steps_fast=len(xs) - 1,
                         steps_stock=stock_steps - 1, ms_fast=ms["fast"], ms_stock=ms["stock"],
                         outputs_compared=min(len(out["stock"]), len(out["fast"])), identical=same))
        print(f"      layer {i} {tuple(w.shape)}: stock {ms['stock']:.1f} ms, fast {ms['fast']:.2f} ms, "
              f"{'identical' if same else 'DIFFERENT'}", flush=True)
    return rows


def spike_diff(a, b, n: int) -> dict:
    """Mismatching spike entries per layer and readout logits between two results, first n samples."""
    from netx_export.comparison import compare
    c = compare(a, b, samples=slice(0, n))
    return dict(samples=n, spikes_compared=c["spikes_compared"],
                mismatches_per_layer=[r["mismatches"] for r in c["layers"]], spike_mismatches=c["spike_mismatches"],
                logit_mismatches=c["logit_mismatches"], identical=c["identical"])


def plot(rows: list[dict], title: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=120)
    colors = {"lava": "tab:blue", "refsim": "tab:gray"}
    names = [r["config"] for r in rows]
    vals = [r["steps_per_s"] for r in rows]
    bars = ax.bar(names, vals, color=[colors[r["backend"]] for r in rows])
    for b, r in zip(bars, rows):
        ax.annotate(f"{r['steps_per_s']:.3g} steps/s\n{r['ms_per_step']:.3g} ms/step", (b.get_x() + b.get_width() / 2,
                    b.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(min(vals) / 3, max(vals) * 8)
    ax.set_ylabel("sample-steps per second (log scale)")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    atomic_write_png(path, fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", default="/tmp/study/vgg_small_qcfs.net", help="NetX file of the study model")
    p.add_argument("--checkpoint", default="/tmp/study/vgg_small_qcfs.pt", help="exported to --net if that is missing")
    p.add_argument("--data-dir", default="/tmp/cifar")
    p.add_argument("--n", type=int, default=2, help="test images for the Lava runs and single-sample refsim")
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--stock-budget", type=float, default=600.0, metavar="S", help="time budget of the stock run")
    p.add_argument("--refsim-batch", type=int, default=64, help="images in the batched refsim run")
    p.add_argument("--stock-steps", type=int, default=3, help="steps of the stock model alone per layer (>= 2)")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "lava_speed"))
    a = p.parse_args()
    if not os.path.exists(a.net):
        print(f"{a.net} missing: exporting {a.checkpoint}", flush=True)
        subprocess.run([sys.executable, "-m", "qcfs2lava", "export", a.checkpoint, "-o", a.net], check=True)
    load_before = os.getloadavg()
    net = read_netx(a.net)
    split = D.load_split(net.metadata.get("dataset", "cifar10"), a.data_dir, train=False)
    norm = net.metadata["normalization"]
    m = max(a.n, a.refsim_batch)
    x = D.normalize(split.x[:m], float(norm["max_value"]), norm["mean"], norm["std"]).numpy().astype(np.float64)
    drive_all = input_drive(net, x).drive
    drive = drive_all[:a.n]
    neurons = sum(int(np.prod(lay.shape)) for lay in net.synaptic)
    print(f"{a.net}: {len(net.synaptic)} synaptic layers, {neurons} neurons; n={a.n}, T={a.T}", flush=True)

    rows = []
    print("[1/5] Lava fixed_pt, fast conv", flush=True)
    r, fast = lava_row("Lava fast conv", a.net, net, drive, a.T, "fast", None)
    rows.append(r)
    print(f"      {r['ms_per_step']:.2f} ms/step, {r['steps_per_s']:.2f} steps/s (compile {r['seconds_compile']:.2f} s)",
          flush=True)
    print("[2/5] Lava fixed_pt, stock conv", flush=True)
    r, stock = lava_row("Lava stock conv", a.net, net, drive, a.T, "lava", a.stock_budget)
    rows.append(r)
    print(f"      {r['ms_per_step']:.2f} ms/step, {r['steps_per_s']:.2f} steps/s, {stock.n}/{a.n} samples"
          + (f" ({stock.stopped})" if stock.stopped else ""), flush=True)
    print("[3/5] refsim, one sample at a time", flush=True)
    rows.append(refsim_row("refsim single", net, drive, a.T, 1))
    print(f"      {rows[-1]['ms_per_step']:.2f} ms/step, {rows[-1]['steps_per_s']:.2f} steps/s", flush=True)
    print(f"[4/5] refsim, batch of {len(drive_all)}", flush=True)
    rows.append(refsim_row(f"refsim batch {len(drive_all)}", net, drive_all, a.T, len(drive_all)))
    print(f"      {rows[-1]['ms_per_step']:.3f} ms/sample-step, {rows[-1]['steps_per_s']:.1f} sample-steps/s",
          flush=True)

    print("[5/5] each Conv synapse's model step alone, on the spikes of the fast run (sample 0)", flush=True)
    layers = conv_model_rows(net, fast.spikes, max(2, a.stock_steps))
    print(f"      all conv layers: stock {sum(r['ms_stock'] for r in layers):.1f} ms/step, "
          f"fast {sum(r['ms_fast'] for r in layers):.2f} ms/step", flush=True)

    from netx_export.comparison import compare
    from netx_export.sim.refsim import simulate_drive
    ref = simulate_drive(net, drive, a.T, "lava", record_spikes=True)
    checks = dict(fast_vs_stock=spike_diff(fast, stock, min(fast.n, stock.n)),
                  fast_vs_refsim=compare(fast, ref), stock_vs_refsim=compare(stock, ref))
    fs = checks["fast_vs_stock"]
    print(f"fast vs stock on {fs['samples']} samples: {fs['spikes_compared']} spike entries, "
          f"{fs['spike_mismatches']} mismatches, {fs['logit_mismatches']} logit mismatches -> "
          f"{'IDENTICAL' if fs['identical'] else 'DIFFERENT'}; vs refsim: fast "
          f"{checks['fast_vs_refsim']['spike_mismatches']}, stock {checks['stock_vs_refsim']['spike_mismatches']} "
          "mismatches", flush=True)
    speedup = rows[1]["ms_per_step"] / rows[0]["ms_per_step"]
    print(f"speed-up fast/stock: {speedup:.1f}x", flush=True)

    from importlib.metadata import version
    res = dict(command="OMP_NUM_THREADS={} python benchmarks/lava_speed.py {}".format(
                   os.environ.get("OMP_NUM_THREADS", "(unset)"), " ".join(sys.argv[1:])),
               net=a.net, neurons=neurons, n=a.n, T=a.T, timing="lava",
               machine=dict(cpus=os.cpu_count(), load_avg_1_5_15_before=load_before,
                            load_avg_1_5_15_after=os.getloadavg(), python=platform.python_version(), numpy=np.__version__,
                            lava_nc=version("lava-nc"), lava_dl=version("lava-dl")),
               note="Lava runs record every layer's spikes; seconds exclude build and compile. "
                    "steps_per_s = sample-steps per second. The machine is shared: see the load averages.",
               rows=rows, speedup_fast_over_stock=speedup, bit_exact=checks, conv_models_alone=layers,
               conv_models_alone_ms_per_step=dict(stock=sum(r["ms_stock"] for r in layers),
                                                  fast=sum(r["ms_fast"] for r in layers)))
    atomic_write_text(a.out + ".json", json.dumps(res, indent=1) + "\n")
    plot(rows, f"vgg-small CIFAR-10 NetX ({neurons} neurons), T={a.T}, timing=lava; "
               f"Lava: n={a.n} ({stock.n} stock), {os.cpu_count()} CPUs", a.out + ".png")
    print(f"wrote {a.out}.json and .png")


if __name__ == "__main__":
    main()
