#!/usr/bin/env python
"""IF_SUB (custom neuron) vs stock-block mode (Loihi 2 stock LIF + synapses, ``netx_export.convert.stock_blocks``):
accuracy at every T and per-layer spike agreement, with the integer reference simulators only.

    OMP_NUM_THREADS=1 python benchmarks/stock_mode.py --net /tmp/xc/vgg_small_qcfs.net \
        --data-dir /tmp/cifar --n 1000 --T 32

Both simulators see the same host drive (``fixedpoint.input_drive``) and the same timing; spike
agreement is the fraction of equal (t, image, neuron) spike entries per synaptic layer over all T
steps. Writes ``benchmarks/results/stock_mode.{json,png}``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from netx_export.netx.read import read_netx
from netx_export.comparison import compare_stock
from netx_export.convert.stock_blocks import stock_network
from qcfs2lava import data as D
from qcfs2lava.util.fileio import atomic_write_png, atomic_write_text
from qcfs2lava.util.fileio import file_sha256
from qcfs2lava.util.plotting import time_axis
from qcfs2lava.util.progress import Progress


def load_data(net, data_dir: str | None, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Test images normalised as ``qcfs2lava simulate`` does (qcfs2lava.cli.simulate.cmd_simulate)."""
    dataset = net.metadata.get("dataset")
    info = D.dataset_info(dataset)
    split = D.load_split(dataset, data_dir, train=False)
    norm = net.metadata.get("normalization") or {"mean": list(info.mean), "std": list(info.std),
                                                  "max_value": split.max_value}
    n = min(len(split), n)
    x = D.normalize(split.x[:n], float(norm.get("max_value", split.max_value)), norm["mean"], norm["std"]).numpy()
    return x.astype(np.float64), split.y[:n].numpy(), dataset


def isolate(net, drive: np.ndarray, T: int) -> list[dict]:
    """Where the differences come from. Every non-readout layer is fed the *same* input — refsim's
    spikes of the layer below (aligned timing) — and run once as IF_SUB and once as the stock
    construction; differing spike entries are split into those of neurons that had already
    overflowed (IF_SUB v saturated or stock u wrapped, at this or an earlier step) and the rest,
    which only the residual r = trunc(v[t-1]/4096) can cause. ``residual_outside`` counts
    neuron-steps whose r lay outside the exact window at all (harmless unless u sits at θ)."""
    from netx_export.convert.conv import int_conv2d, int_dense
    from netx_export.convert.fixedpoint import STATE_SHIFT
    from netx_export.sim.refsim import lif_step, simulate_drive, wrap_current
    from netx_export.convert.stock_blocks import exact_window
    from netx_export.sim.stock import stock_step
    snet = stock_network(net)
    ref = simulate_drive(net, drive, T, "aligned", record_spikes=True)
    n = drive.shape[0]
    rows = []
    for j, lay in enumerate(snet.layers[:-1]):
        q = net.layers[lay.index]
        shp = (n,) + lay.shape
        V = np.broadcast_to(np.asarray(lay.lif.u, np.int64), shp).copy()   # 64·vInit, per channel if calibrated so
        Vu = np.zeros(shp, np.int64)
        u, v, s0, _ = stock_step(V.copy(), np.zeros(shp, np.int64), 0, lay.lif)
        last = np.zeros(shp, bool)
        hit = np.zeros(shp, bool)
        lo, hi = exact_window(lay.theta)
        mism = after = outside = 0
        for t in range(T):
            if j == 0:
                a = drive.reshape(shp)
            else:
                x = ref.spikes[j - 1][t].astype(np.int64)
                a = (int_conv2d(x, q.weight, q.stride, q.padding, q.dilation, q.groups) if q.kind == "conv"
                     else int_dense(x.reshape(n, -1), q.weight).reshape(shp)) + lay.bias_values.reshape(
                         (1, -1) + (1,) * (len(lay.shape) - 1))
            r = np.sign(v) * (np.abs(v) >> 12)
            outside += int(np.count_nonzero((r <= lo) | (r > hi)))
            V_raw = V + (a << STATE_SHIFT)                  # IF_SUB: u = a (iDecay 4096), v += u, no bias here
            u_raw = u + ((a - lay.theta * last) << STATE_SHIFT)
            hit |= (np.abs(V_raw) > (1 << 23) - 1) | (wrap_current(u_raw) != u_raw)
            Vu, V, si, _ = lif_step(Vu, V, 0, a, q.neuron.vth, 4095, 0, subtractive=True)
            u, v, ss, _ = stock_step(u, v, a - lay.theta * last, lay.lif)
            last = ss
            d = ss != si
            mism += int(np.count_nonzero(d))
            after += int(np.count_nonzero(d & hit))
        rows.append(dict(index=j, name=lay.name, neuron_steps=int(np.prod(shp)) * T, mismatches=mism,
                         mismatches_after_overflow=after, mismatches_residual_only=mism - after,
                         residual_outside_window=outside))
    return rows


def plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    ts = np.arange(1, res["T"] + 1)
    ax.plot(ts, [100 * v for v in res["accuracy_ifsub"]], marker="o", ms=3, label="IF_SUB (custom neuron, refsim)")
    ax.plot(ts, [100 * v for v in res["accuracy_stock"]], marker="x", ms=4, ls=":",
            label="stock mode (stock LIF + synapses)")
    time_axis(ax, ylabel="top-1 test accuracy (%)")
    ax.set_title(f"{res['dataset']}, {os.path.basename(res['net'])}, n={res['n']}, {res['timing']} timing",
                 fontsize=9)
    ax.legend(fontsize=8)
    hidden = [r for r in res["layers"] if r["role"] != "readout"]      # readout spikes are bookkeeping only
    diff = [100 * (1 - r["agreement"]) for r in hidden]
    bars = bx.bar([str(r["index"]) for r in hidden], diff)
    bx.bar_label(bars, labels=[f"{d:.3g}" for d in diff], fontsize=7)
    bx.set_xlabel("synaptic layer index (readout excluded)")
    bx.set_ylabel("spike entries differing (%)")
    bx.set_title(f"IF_SUB vs stock spikes, T = 1..{res['T']}", fontsize=9)
    bx.grid(alpha=0.3, which="both", axis="y")
    fig.tight_layout()
    atomic_write_png(path, fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", default="/tmp/xc/vgg_small_qcfs.net", help="NetX file written by qcfs2lava export")
    p.add_argument("--data-dir")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--T", type=int, default=32)
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--timing", default="aligned", choices=("aligned", "lava"))
    p.add_argument("--isolate-n", type=int, default=100, help="images for the per-layer cause analysis (0: off)")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "stock_mode"))
    p.add_argument("--plot-only", action="store_true", help="redraw the PNG from the existing JSON")
    a = p.parse_args()
    if a.plot_only:
        with open(a.out + ".json") as f:
            plot(json.load(f), a.out + ".png")
        return 0
    net = read_netx(a.net)
    x, y, dataset = load_data(net, a.data_dir, a.n)
    n = len(y)
    snet = stock_network(net)
    bar = Progress(n, "IF_SUB vs stock", "img")
    t0 = time.perf_counter()
    ev = compare_stock(net, ((x[i:i + a.batch], y[i:i + a.batch]) for i in range(0, n, a.batch)), a.T, a.timing,
                        progress=bar.to)
    bar.close()
    dt = time.perf_counter() - t0
    iso = []
    if a.isolate_n:
        from netx_export.convert.fixedpoint import input_drive
        t1 = time.perf_counter()
        iso = isolate(net, input_drive(net, x[:a.isolate_n]).drive, a.T)
        print(f"cause analysis on {min(n, a.isolate_n)} images: {time.perf_counter() - t1:.0f} s")
    layers = [dict(index=i, name=lay.name, kind=lay.kind, role=lay.role, neurons=int(np.prod(lay.shape)),
                   theta=lay.theta, comparator_offset=lay.lif.bias_mant, inhibition_synapses=len(lay.inhibition),
                   bias_synapses=len(lay.bias), compared=c, mismatches=m, agreement=1 - m / c)
              for i, (lay, c, m) in enumerate(zip(snet.layers, ev.layer_compared, ev.layer_mismatches))]
    res = dict(command=" ".join(["python", "benchmarks/stock_mode.py"] + sys.argv[1:]),
               net=a.net, net_sha256=file_sha256(a.net), source_sha256=net.metadata.get("source_sha256"),
               dataset=dataset, data_dir=a.data_dir, n=ev.n, T=ev.T, timing=ev.timing,
               accuracy_ifsub=ev.accuracy_ifsub, accuracy_stock=ev.accuracy_stock,
               prediction_agreement=ev.prediction_agreement, logits_equal_fraction=ev.logits_equal,
               layers=layers, v_saturations_ifsub=ev.saturated_ifsub, overflow_stock=ev.overflow_stock,
               stock_synapse_processes=snet.synapse_processes, seconds=dt,
               isolated_layers=dict(n=min(n, a.isolate_n), T=a.T, timing="aligned", layers=iso),
               note=("reference simulators only (refsim IF_SUB vs stock.simulate_drive); overflow_stock counts u "
                     "wraps + v clips, v_saturations_ifsub counts refsim's v saturations (neuron-steps)"))
    atomic_write_text(a.out + ".json", json.dumps(res, indent=1) + "\n")
    plot(res, a.out + ".png")
    for t in (1, 2, 4, 8, 16, 32):
        if t <= ev.T:
            print(f"T={t:>2}: IF_SUB {100 * ev.accuracy_ifsub[t - 1]:.2f}%  stock {100 * ev.accuracy_stock[t - 1]:.2f}%  "
                  f"same prediction {100 * ev.prediction_agreement[t - 1]:.2f}%")
    print("spike agreement per layer: " + ", ".join(f"{r['index']}:{100 * r['agreement']:.4f}%" for r in layers))
    print(f"refsim v saturations {ev.saturated_ifsub}, stock u wraps + v clips {ev.overflow_stock}; {dt:.0f} s")
    for r in iso:
        print(f"isolated layer {r['index']}: {r['mismatches']} differing of {r['neuron_steps']} "
              f"({r['mismatches_after_overflow']} after an overflow, {r['mismatches_residual_only']} residual only; "
              f"residual outside the window at {r['residual_outside_window']} neuron-steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
