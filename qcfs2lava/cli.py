"""The ``qcfs2lava`` command: a thin layer over the library.

Exit codes: 0 ok, 1 failure, 2 bad input (one-line message, no traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Sequence

from .errors import UserError

EPILOG_TRAIN = """examples:
  qcfs2lava train --arch tiny --dataset digits --epochs 30 --out m.pt
  qcfs2lava train --arch vgg16 --dataset cifar10 --data-dir D --L 4 --epochs 300 --out vgg16.pt
  torchrun --nproc_per_node 2 -m qcfs2lava train --arch resnet20 --dataset cifar10 --data-dir D --out r20.pt
"""
EPILOG_EVAL = """examples:
  qcfs2lava evaluate m.pt --T 16
  qcfs2lava evaluate vgg16.pt --data-dir D --T 64 --json eval.json --plot eval.png
  qcfs2lava evaluate relu.pt --data-dir D --balance max --v0 0.5     # ReLU net, threshold balancing
"""


def _bool_flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction, default=True,
                   help=help)


def _write_json(path: str | None, obj) -> None:
    if path:
        from .fileio import atomic_write_json
        atomic_write_json(path, obj)


def cmd_train(a: argparse.Namespace) -> int:
    from .train import TrainConfig, train
    cfg = TrainConfig(arch=a.arch, dataset=a.dataset, data_dir=a.data_dir, out=a.out, L=a.L, phi=a.phi,
                      activation=a.activation, lam_init=a.lam_init, epochs=a.epochs, batch_size=a.batch_size,
                      lr=a.lr, weight_decay=a.weight_decay, label_smoothing=a.label_smoothing, crop=a.crop,
                      flip=a.flip, autoaugment=a.autoaugment, cutout=a.cutout, augment=a.augment, seed=a.seed,
                      resume=a.resume, log=a.log, max_steps=a.max_steps, stop_after=a.stop_after,
                      device=a.device, threads=a.threads, workers=a.workers)
    metrics = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {a.out}: test accuracy {100 * metrics.get('test_accuracy', float('nan')):.2f}%")
        _write_json(a.json, metrics)
    return 0


def _eval_batches(ck, data_dir: str | None, n: int | None, batch_size: int):
    import torch
    from . import data as D
    split = D.load_split(ck.meta["dataset"], data_dir, train=False)
    if n and isinstance(split, D.ArraySplit):
        split = D.ArraySplit(split.x[:n], split.y[:n], split.max_value, split.class_names)
    elif n:
        split = torch.utils.data.Subset(split, range(min(n, len(split))))
    return list(D.batches(split, batch_size, _info_of(ck)))


def plot_accuracy_vs_T(path: str, curves: dict[str, list[float]], ann: dict[str, float], title: str) -> None:
    """Accuracy (%) vs time steps on a log-2 axis; ANN accuracies as dashed lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, (label, acc) in enumerate(curves.items()):
        ts = list(range(1, len(acc) + 1))
        line, = ax.plot(ts, [100 * v for v in acc], marker="o", ms=3, label=f"{label} SNN")
        if label in ann:
            ax.axhline(100 * ann[label], ls="--", color=line.get_color(), lw=1, label=f"{label} ANN")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from .fileio import atomic_write_bytes
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _eval_table(ev) -> str:
    from .tables import accuracy_table
    return accuracy_table(ev.snn_accuracy, ev.ann_accuracy)


def _snn_for(ck, a):
    """The checkpoint's SNN twin; ReLU nets get data-based thresholds (``--balance``)."""
    from . import data as D
    from .balance import activation_thresholds
    from .snn import convert
    if ck.meta["activation"] == "qcfs":
        return convert(ck.model, v0_frac=a.v0)
    info = D.dataset_info(ck.meta["dataset"])
    calib = D.load_split(info.name, a.data_dir, train=True)
    calib = D.ArraySplit(calib.x[:a.calib], calib.y[:a.calib], calib.max_value, calib.class_names)
    pct = 100.0 if a.balance == "max" else 99.9
    th = activation_thresholds(ck.model, D.iterate_batches(calib, 500, _info_of(ck)), pct)
    print(f"ReLU network: thresholds from the {a.balance} activation of {len(calib)} training images")
    return convert(ck.model, v0_frac=0.0 if a.v0 is None else a.v0, thresholds=th)


def _info_of(ck):
    from . import data as D
    info = D.dataset_info(ck.meta["dataset"])
    norm = ck.meta["normalization"]
    return D.DatasetInfo(info.name, info.num_classes, info.in_channels, info.input_size,
                         tuple(norm["mean"]), tuple(norm["std"]))


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .progress import Progress
    from .snn import evaluate, layer_errors
    if a.T < 1:
        raise UserError("--T must be >= 1")
    ck = load_checkpoint(a.checkpoint)
    batches = _eval_batches(ck, a.data_dir, a.n, a.batch_size)
    snn = _snn_for(ck, a)
    t0 = time.perf_counter()
    bar = Progress(sum(len(y) for _, y in batches), f"SNN T={a.T}", "img")
    ev = evaluate(ck.model, batches, a.T, snn=snn, progress=lambda k, acc: bar.update(k, acc_T=acc))
    dt = time.perf_counter() - t0
    print(f"{a.checkpoint}: {ck.meta['arch']} on {ck.meta['dataset']} ({ev.n} test images), "
          f"{ck.meta['activation']}, L={ck.meta['L']}, {dt:.1f} s")
    print(_eval_table(ev))
    errs = layer_errors(ck.model, batches[0][0], a.T, snn=snn) if ck.meta["activation"] == "qcfs" else {}
    if errs:
        print(f"per layer (conversion error φ(T)−a in units of θ, first {len(batches[0][1])} images, T={a.T}):")
        print("  layer            θ   firing rate   mean error   mean |error|")
        for name, e in errs.items():
            print(f"  {name:<12s} {e['theta']:7.3f}   {ev.firing_rates[name]:11.4f}   {e['mean_error']:+10.4f}   "
                  f"{e['mean_abs_error']:12.4f}")
    result = dict(checkpoint=a.checkpoint, sha256=ck.sha256, arch=ck.meta["arch"], dataset=ck.meta["dataset"],
                  activation=ck.meta["activation"], n=ev.n, T=ev.T, ann_accuracy=ev.ann_accuracy,
                  snn_accuracy=ev.snn_accuracy, firing_rates=ev.firing_rates, layer_errors=errs, seconds=dt)
    _write_json(a.json, result)
    if a.plot:
        plot_accuracy_vs_T(a.plot, {"SNN": ev.snn_accuracy}, {"SNN": ev.ann_accuracy},
                           f"{ck.meta['arch']} / {ck.meta['dataset']}, {ck.meta['activation']}, L={ck.meta['L']}")
        print(f"wrote {a.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qcfs2lava", description="QCFS ANN-to-SNN conversion, PyTorch to Lava.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a QCFS (or ReLU) ANN", epilog=EPILOG_TRAIN,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--arch", default="tiny", help="tiny, vgg-small, vgg16, resnet18, resnet20, resnet34")
    t.add_argument("--dataset", default="digits", help="digits (bundled), cifar10, cifar100, imagenet")
    t.add_argument("--data-dir", help="folder with the data set's standard layout")
    t.add_argument("--out", default="model.pt", help="checkpoint to write (atomically, every epoch)")
    t.add_argument("--L", type=int, default=4, help="quantization steps L (default 4)")
    t.add_argument("--phi", type=float, default=0.5, help="shift φ (0.5; 0 = QCF ablation)")
    t.add_argument("--activation", default="qcfs", choices=["qcfs", "relu"])
    t.add_argument("--lam-init", type=float, default=8.0, help="initial threshold λ (default 8)")
    t.add_argument("--epochs", type=int, help="default: the data set's recipe (300 for CIFAR, 30 for digits)")
    t.add_argument("--batch-size", type=int, help="global batch size (default: the recipe's)")
    t.add_argument("--lr", type=float, help="initial learning rate (default: the recipe's)")
    t.add_argument("--weight-decay", type=float, help="default 5e-4 (CIFAR, digits), 1e-4 (ImageNet)")
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="data augmentation on/off (default: the data set's recipe)")
    _bool_flag(t, "crop", "random crop with 4-px padding")
    _bool_flag(t, "flip", "random horizontal flip")
    _bool_flag(t, "autoaugment", "AutoAugment (CIFAR-10 policy)")
    _bool_flag(t, "cutout", "Cutout 16 px")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue an interrupted run from --out")
    t.add_argument("--log", help="append per-epoch metrics as JSON lines")
    t.add_argument("--json", help="write final metrics as JSON")
    t.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (smoke tests)")
    t.add_argument("--stop-after", type=int, help="stop after this many epochs, resumable")
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=int)
    t.add_argument("--workers", type=int, default=4, help="data loader workers (ImageNet)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="ANN and float SNN accuracy at T = 1..T", epilog=EPILOG_EVAL,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("checkpoint", help="model.pt written by `qcfs2lava train`")
    e.add_argument("--data-dir", help="data folder (not needed for digits)")
    e.add_argument("--T", type=int, default=64, help="time steps; accuracy is reported at every t <= T (default 64)")
    e.add_argument("--n", type=int, help="only the first n test images")
    e.add_argument("--batch-size", type=int, default=250)
    e.add_argument("--json", help="write the results as JSON")
    e.add_argument("--plot", help="PNG: accuracy vs T")
    e.add_argument("--v0", type=float, help="v(0)/θ for every layer (default: φ of the checkpoint; 0 for ReLU)")
    e.add_argument("--balance", choices=["max", "p99.9"], default="p99.9",
                   help="ReLU checkpoints: threshold = max or 99.9th percentile activation (default p99.9)")
    e.add_argument("--calib", type=int, default=1000, help="training images for --balance")
    e.set_defaults(func=cmd_evaluate)

    from netx_export.commands import register
    register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserError as e:
        print(f"qcfs2lava: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qcfs2lava: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
