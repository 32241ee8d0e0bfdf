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
  qcfs2lava train --arch vgg-small --dataset cifar10 --data-dir D --init m.pt --noise-p 0.1 --epochs 3 \
      --lr 0.005 --out m_noise.pt                     # noise-injected fine-tuning (±1 spike)
  qcfs2lava train --arch vgg-small --dataset cifar10 --data-dir D --init m.pt --snn-T 2 --epochs 2 \
      --lr 0.005 --out m_snn2.pt                      # spike-aware fine-tuning through the IF twin at T=2
"""
EPILOG_CALIBRATE = """examples:
  qcfs2lava calibrate m.pt --method both --T 2 -o m_cal.pt
  qcfs2lava calibrate vgg.pt --data-dir D --method bias --T 4 --n 512 -o vgg_cal.pt --json cal.json
  qcfs2lava evaluate m_cal.pt --T 16          # the calibrated SNN (the ANN is unchanged)
  qcfs2lava export m_cal.pt -o m_cal.net      # per-step biases and per-neuron vInit in the NetX file
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
                      device=a.device, threads=a.threads, workers=a.workers, init=a.init, noise_p=a.noise_p,
                      snn_T=a.snn_T, snn_weight=a.snn_weight)
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
    from .plotting import time_axis
    time_axis(ax)
    ax.set_title(title)
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
    from .lowt import calibration_of
    from .snn import convert
    if ck.meta["activation"] == "qcfs":
        cal = calibration_of(ck)
        if cal and a.v0 is not None:
            raise UserError(f"{a.checkpoint} is calibrated for T={ck.meta['snn_calibration']['T']}; "
                            "--v0 would override its calibrated initial potentials")
        if cal:
            c = ck.meta["snn_calibration"]
            print(f"calibrated SNN: method {c['method']}, target T={c['T']}, {c['n']} training images")
        ft = ck.meta.get("spike_finetune")
        if ft:
            print(f"spike-aware fine-tuned: target T={ft['T']}, SNN loss weight {ft['weight']:g}")
        return convert(ck.model, v0_frac=a.v0, calibration=cal)
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


def cmd_calibrate(a: argparse.Namespace) -> int:
    from . import data as D
    from .checkpoint import load_checkpoint, save_checkpoint
    from .lowt import META_KEY, calibrate
    from .progress import Progress
    if a.T < 1:
        raise UserError("--T must be >= 1")
    if a.n < 1:
        raise UserError("--n must be >= 1")
    if a.batch_size < 1 or a.v0_grid < 1:
        raise UserError("--batch-size and --v0-grid must be >= 1")
    if a.v0_z < 0:
        raise UserError("--v0-z must be >= 0")
    if os.path.abspath(a.output) == os.path.abspath(a.checkpoint):
        raise UserError("the output would overwrite the checkpoint; choose another -o")
    ck = load_checkpoint(a.checkpoint)
    if ck.meta.get("activation") != "qcfs":
        raise UserError(f"{a.checkpoint} is a ReLU network; calibration needs a QCFS checkpoint")
    if ck.training_state is not None:
        raise UserError(f"{a.checkpoint} is an unfinished training checkpoint; finish (--resume) it first")
    if ck.meta.get(META_KEY):
        print(f"note: {a.checkpoint} was calibrated before (T={ck.meta[META_KEY].get('T')}); "
              "recalibrating from the ANN")
    split = D.load_split(ck.meta["dataset"], a.data_dir, train=True)
    if not isinstance(split, D.ArraySplit):
        raise UserError(f"calibration reads in-memory data sets (digits, CIFAR), not '{ck.meta['dataset']}' folders")
    x = D.sample(split, a.n, ck.meta["normalization"], seed=a.seed)
    t0 = time.perf_counter()
    bar = Progress(len(_qcfs_names(ck.model)), f"calibrate {a.method} T={a.T}", "layer")
    rows: list = []

    def done(name, r) -> None:
        rows.append(r)
        bar.update(1, layer=name)

    cal = calibrate(ck.model, x, a.T, a.method, batch_size=a.batch_size, v0_grid=a.v0_grid, v0_z=a.v0_z,
                    progress=done)
    dt = time.perf_counter() - t0
    meta = dict(ck.meta, **{META_KEY: dict(cal.to_meta(), source_sha256=ck.sha256, seed=a.seed, seconds=dt)})
    save_checkpoint(a.output, ck.model, meta)
    print(f"{a.checkpoint}: {ck.meta['arch']} on {ck.meta['dataset']}, calibrated with '{a.method}' for T={a.T} "
          f"on {len(x)} training images ({dt:.1f} s)")
    print("per layer (errors a − φ(T) in units of θ, calibration images, earlier layers calibrated):")
    print("  layer            θ   mean err before → after   MSE before → after   mean|δ|/θ   mean v0/θ")
    for r in rows:
        db = sum(abs(v) for v in r.bias) / len(r.bias) / r.theta if r.bias else 0.0
        v0 = sum(r.v0_frac) / len(r.v0_frac) if r.v0_frac else float(ck.model.get_submodule(r.name).phi)
        print(f"  {r.name:<12s} {r.theta:7.3f}   {r.mean_error_before:+8.4f} → {r.mean_error_after:+8.4f}   "
              f"{r.mse_before:8.4f} → {r.mse_after:8.4f}   {db:9.4f}   {v0:9.3f}")
    print(f"wrote {a.output}")
    _write_json(a.json, dict(checkpoint=a.checkpoint, sha256=ck.sha256, output=a.output, **meta[META_KEY]))
    return 0


def _qcfs_names(model):
    from .qcfs import qcfs_layers
    return [n for n, _ in qcfs_layers(model)]


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
    t.add_argument("--init", metavar="CKPT", help="fine-tune: start from this checkpoint's weights (same arch, L, φ)")
    t.add_argument("--noise-p", type=float, default=0.0, metavar="P",
                   help="QCFS output noise: ±λ/L (one spike at T=L) with probability P while training (default 0)")
    t.add_argument("--snn-T", type=int, default=0, metavar="T",
                   help="spike-aware fine-tuning: also train the IF twin's mean output over T steps "
                        "(surrogate gradient; BatchNorm and dropout frozen; default 0 = off)")
    t.add_argument("--snn-weight", type=float, default=1.0, metavar="W",
                   help="weight of the SNN loss next to the ANN loss (default 1)")
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

    c = sub.add_parser("calibrate", help="per-channel bias and/or v(0) calibration of the SNN for a target T",
                       epilog=EPILOG_CALIBRATE, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("checkpoint", help="QCFS model.pt")
    c.add_argument("-o", "--output", required=True, help="calibrated checkpoint to write")
    c.add_argument("--method", choices=["bias", "v0", "both"], default="both",
                   help="bias: shift biases so the mean SNN output matches the ANN (Li et al. 2021); "
                        "v0: per-channel initial potential (MSE); both: v0, then bias (default)")
    c.add_argument("--T", type=int, default=4, help="target time steps (default 4)")
    c.add_argument("--data-dir", help="data folder (not needed for digits)")
    c.add_argument("--n", type=int, default=512, help="training images used (default 512)")
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--v0-grid", type=int, default=32, help="v(0)/θ candidates k/G, k < G (default 32)")
    c.add_argument("--v0-z", type=float, default=2.0,
                   help="keep v(0) = θ/2 unless the MSE gain exceeds this many standard errors (default 2; 0: argmin)")
    c.add_argument("--seed", type=int, default=0, help="which training images (random subset)")
    c.add_argument("--json", help="write the per-layer results as JSON")
    c.set_defaults(func=cmd_calibrate)

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
