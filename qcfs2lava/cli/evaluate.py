"""``qcfs2lava evaluate``: ANN and float SNN accuracy at every t (:mod:`qcfs2lava.snn`)."""
from __future__ import annotations

import argparse
import time

from qcfs2lava.cli.common import MAX_STEPS, RAW, integer, number, write_json
from qcfs2lava.util.errors import UserError

__all__ = ["register", "cmd_evaluate"]

EPILOG_EVAL = """examples:
  qcfs2lava evaluate m.pt --T 16
  qcfs2lava evaluate vgg16.pt --data-dir D --T 64 --json eval.json --plot eval.png
  qcfs2lava evaluate relu.pt --data-dir D --balance max --v0 0.5     # ReLU net, threshold balancing
"""


def _snn_for(ck, a):
    """The checkpoint's SNN twin; ReLU nets get data-based thresholds (``--balance``)."""
    from qcfs2lava import data as D
    from qcfs2lava.balance import activation_thresholds
    from qcfs2lava.low_latency import calibration_of
    from qcfs2lava.snn import convert
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
    th = activation_thresholds(ck.model, D.iterate_batches(calib, 500, D.info_for(ck.meta)), pct)
    print(f"ReLU network: thresholds from the {a.balance} activation of {len(calib)} training images")
    return convert(ck.model, v0_frac=0.0 if a.v0 is None else a.v0, thresholds=th)


def cmd_evaluate(a: argparse.Namespace) -> int:
    from qcfs2lava import data as D
    from qcfs2lava.checkpoint import load_checkpoint
    from qcfs2lava.snn import evaluate, layer_errors
    from qcfs2lava.util.fileio import check_outputs
    from qcfs2lava.util.outputs import save_outputs, save_spikes
    from qcfs2lava.util.plotting import plot_accuracy_vs_T
    from qcfs2lava.util.progress import Progress
    from qcfs2lava.util.tables import accuracy_table
    check_outputs([("--json", a.json), ("--plot", a.plot), ("--save-outputs", a.save_outputs),
                   ("--save-spikes", a.save_spikes)], [a.checkpoint])
    if a.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UserError("--device cuda: torch sees no CUDA device here; use --device cpu")
    ck = load_checkpoint(a.checkpoint)
    batches = D.test_batches(ck.meta, a.data_dir, a.n, a.batch_size)
    snn = _snn_for(ck, a)
    t0 = time.perf_counter()
    bar = Progress(sum(len(y) for _, y in batches), f"SNN T={a.T}", "img")
    keep = bool(a.save_outputs or a.save_spikes)
    ev = evaluate(ck.model, batches, a.T, snn=snn, progress=lambda k, acc: bar.update(k, acc_T=acc),
                  keep_outputs=keep, device=a.device)
    bar.close()
    ck.model.cpu(), snn.cpu()                      # (the layer errors below run on the CPU)
    dt = time.perf_counter() - t0
    print(f"{a.checkpoint}: {ck.meta['arch']} on {ck.meta['dataset']} ({ev.n} test images), "
          f"{ck.meta['activation']}, L={ck.meta['L']}, {dt:.1f} s")
    print(accuracy_table(ev.snn_accuracy, ev.ann_accuracy))
    errs = layer_errors(ck.model, batches[0][0], a.T, snn=snn) if ck.meta["activation"] == "qcfs" else {}
    if errs:
        print(f"per layer (conversion error φ(T)−a in units of θ, first {len(batches[0][1])} images, T={a.T}):")
        print("  layer            θ   firing rate   mean error   mean |error|")
        for name, e in errs.items():
            print(f"  {name:<12s} {e['theta']:7.3f}   {ev.firing_rates[name]:11.4f}   {e['mean_error']:+10.4f}   "
                  f"{e['mean_abs_error']:12.4f}")
    result = dict(checkpoint=a.checkpoint, sha256=ck.sha256, arch=ck.meta["arch"], dataset=ck.meta["dataset"],
                  activation=ck.meta["activation"], n=ev.n, T=ev.T, ann_accuracy=ev.ann_accuracy,
                  snn_accuracy=ev.snn_accuracy, firing_rates=ev.firing_rates, layer_errors=errs, seconds=dt,
                  device=a.device)
    write_json(a.json, result)
    if a.save_outputs:
        save_outputs(a.save_outputs, ev.logits.numpy(), ev.labels.numpy(), ann_logits=ev.ann_logits.numpy())
        print(f"wrote {a.save_outputs}: per-sample logits at every t ({ev.n} samples, T={a.T})")
    if a.save_spikes:
        save_spikes(a.save_spikes, [v.numpy().astype("int64") for v in ev.step_spikes.values()],
                    names=list(ev.step_spikes))
        print(f"wrote {a.save_spikes}: spikes per layer, step and sample")
    if a.plot:
        plot_accuracy_vs_T(a.plot, {"SNN": ev.snn_accuracy}, {"SNN": ev.ann_accuracy},
                           f"{ck.meta['arch']} / {ck.meta['dataset']}, {ck.meta['activation']}, L={ck.meta['L']}")
        print(f"wrote {a.plot}")
    return 0



def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="ANN and float SNN accuracy at T = 1..T", epilog=EPILOG_EVAL,
                       formatter_class=RAW)
    e.add_argument("checkpoint", help="model.pt written by `qcfs2lava train`")
    e.add_argument("--data-dir", help="data folder (not needed for digits)")
    e.add_argument("--T", type=integer(1, MAX_STEPS), default=64, help="time steps; accuracy is reported at every t <= T (default 64)")
    e.add_argument("--n", type=integer(1), help="only the first n test images")
    e.add_argument("--batch-size", type=integer(1), default=250)
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the ANN and SNN compute")
    e.add_argument("--json", help="write the results as JSON")
    e.add_argument("--plot", help="PNG: accuracy vs T")
    e.add_argument("--save-outputs", metavar="NPZ",
                   help="per-sample logits and predictions at every t, labels and ANN logits (.npz)")
    e.add_argument("--save-spikes", metavar="NPZ", help="per-layer spike counts per sample and step (.npz)")
    e.add_argument("--v0", type=number(0.0, 1.0), help="v(0)/θ for every layer (default: φ of the checkpoint; 0 for ReLU)")
    e.add_argument("--balance", choices=["max", "p99.9"], default="p99.9",
                   help="ReLU checkpoints: threshold = max or 99.9th percentile activation (default p99.9)")
    e.add_argument("--calib", type=integer(1), default=1000, help="training images for --balance")
    e.set_defaults(func=cmd_evaluate)
