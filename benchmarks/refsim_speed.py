#!/usr/bin/env python
"""The integer-exact reference simulator against the float SNN, on the same batch, images and T.

    python benchmarks/refsim_speed.py --data-dir D --n 256 --T 8          # CIFAR-10 test images
    python benchmarks/refsim_speed.py --checkpoint m.pt --data-dir D      # your trained network

One run, one process, one after the other on the same images: T forward passes of the ANN, the float
SNN (``qcfs2lava.snn.simulate``), and the reference simulator on its numpy backend and its torch
backend (``simulate --engine numpy|torch``; the input drive, computed once on the host, is timed
apart and added to both). Each is timed ``--repeat`` times and the best is kept. The two reference
backends must agree on every logit and spike (``identical``). Without ``--checkpoint`` the network is
vgg-small with random weights and λ = 1 (a realistic spiking regime; the cost of dense convolutions
does not depend on the weights), exported with the CIFAR-10 normalisation.

Writes ``benchmarks/results/refsim_speed.{json,png}`` (``--out``) with the command and the machine.
Goals (issue 17): torch refsim ≤ 1.3x the float SNN and ≥ 3x faster than the numpy refsim.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "refsim_speed")


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _model_and_images(a: argparse.Namespace):
    from qcfs2lava import data as D
    if a.checkpoint:
        from qcfs2lava.checkpoint import load_checkpoint
        ck = load_checkpoint(a.checkpoint)
        model, meta = ck.model, ck.meta
    else:
        from untrained import untrained_model
        model, meta = untrained_model("vgg-small", "cifar10")
    norm = meta["normalization"]
    if a.data_dir:
        split = D.load_split(meta["dataset"], a.data_dir, train=False)
        x = D.normalize(split.x[:a.n], norm["max_value"], norm["mean"], norm["std"])
        source = f"{meta['dataset']} test images 0..{len(x) - 1} (JPEG-recompressed CIFAR-10 here)"
    else:
        x = torch.randn(a.n, *meta["input_shape"])
        source = "random normal images"
    return model.eval(), meta, x, source


@torch.no_grad()
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a trained QCFS model.pt (default: random vgg-small, λ = 1)")
    p.add_argument("--data-dir", help="CIFAR-10 folder (default: random images)")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--timing", default="aligned", choices=["aligned", "lava"])
    p.add_argument("--out", default=OUT)
    a = p.parse_args()
    from netx_export.convert.fixedpoint import input_drive
    from netx_export.convert.pipeline import convert_module
    from netx_export.sim.refsim import simulate_drive
    from qcfs2lava.snn import convert, simulate
    from qcfs2lava.util.fileio import atomic_write_json, atomic_write_png
    model, meta, x, source = _model_and_images(a)
    net = convert_module(model, tuple(x.shape[1:]), metadata=dict(normalization=meta["normalization"])).net
    snn = convert(model)
    model(x[:2]); simulate(snn, x[:2], 2); simulate_drive(net, input_drive(net, x[:2].numpy()).drive, 2, device="cpu")
    T, n = a.T, len(x)
    t_ann, _ = best_of(lambda: [model(x) for _ in range(T)], a.repeat)
    t_snn, _ = best_of(lambda: simulate(snn, x, T), a.repeat)
    t_drive, d = best_of(lambda: input_drive(net, x.numpy()), a.repeat)
    t_torch, r_torch = best_of(lambda: simulate_drive(net, d.drive, T, a.timing, device="cpu"), a.repeat)
    t_numpy, r_numpy = best_of(lambda: simulate_drive(net, d.drive, T, a.timing), 1)
    full_t, full_n = simulate_drive(net, d.drive, T, a.timing, record_spikes=True, device="cpu"), \
        simulate_drive(net, d.drive, T, a.timing, record_spikes=True)
    identical = bool(np.array_equal(full_t.logits, full_n.logits)
                     and all(np.array_equal(s, q) for s, q in zip(full_t.spikes, full_n.spikes)))
    steps = n * T
    rows = {"ANN, T passes": t_ann, "float SNN": t_snn, "refsim numpy (+ drive)": t_numpy + t_drive,
            "refsim torch (+ drive)": t_torch + t_drive}
    result = dict(command="python benchmarks/refsim_speed.py " + " ".join(sys.argv[1:]),
                  machine=dict(platform=platform.platform(), cpus=os.cpu_count(), threads=torch.get_num_threads(),
                               torch=torch.__version__),
                  date=time.strftime("%Y-%m-%d %H:%M"), network=a.checkpoint or "vgg-small, random weights, λ = 1",
                  images=source, n=n, T=T, timing=a.timing, repeat=a.repeat,
                  seconds=dict(ann_T_passes=t_ann, float_snn=t_snn, input_drive=t_drive, refsim_torch=t_torch,
                               refsim_numpy=t_numpy),
                  image_steps_per_second={k: steps / v for k, v in rows.items()},
                  ratios=dict(refsim_torch_over_float_snn=(t_torch + t_drive) / t_snn,
                              refsim_numpy_over_refsim_torch=(t_numpy + t_drive) / (t_torch + t_drive),
                              float_snn_over_ann_T_passes=t_snn / t_ann),
                  identical=identical, spikes_compared=int(sum(s.size for s in full_t.spikes)),
                  torch_matches_numpy_predictions=bool(np.array_equal(r_torch.predictions, r_numpy.predictions)))
    atomic_write_json(a.out + ".json", result)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = list(rows)
    ax.barh(names, [1e3 * v / steps for v in rows.values()], color=["#888", "#4a7", "#c66", "#47c"])
    for i, v in enumerate(rows.values()):
        ax.text(1e3 * v / steps, i, f" {1e3 * v / steps:.2f} ms", va="center", fontsize=8)
    ax.set_xlabel("ms per image-step (lower is better)")
    ax.set_title(f"{n} images, T = {T}, {a.timing} timing; torch = numpy refsim: {identical}", fontsize=9)
    ax.invert_yaxis()
    fig.tight_layout()
    atomic_write_png(a.out + ".png", fig)
    print(f"ANN {t_ann:.2f} s, float SNN {t_snn:.2f} s, drive {t_drive:.2f} s, refsim torch {t_torch:.2f} s, "
          f"numpy {t_numpy:.2f} s; identical: {identical}")
    print({k: round(v, 3) for k, v in result["ratios"].items()})
    print(f"wrote {a.out}.json, .png")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
