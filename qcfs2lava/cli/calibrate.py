"""``qcfs2lava calibrate``: low-latency calibration of the SNN for a target T (:mod:`qcfs2lava.low_latency`)."""
from __future__ import annotations

import argparse
import time

from qcfs2lava.cli.common import MAX_STEPS, RAW, integer, number, write_json
from qcfs2lava.util.errors import UserError

__all__ = ["register", "cmd_calibrate"]

EPILOG_CALIBRATE = """examples:
  qcfs2lava calibrate m.pt --method both --T 2 -o m_cal.pt
  qcfs2lava calibrate vgg.pt --data-dir D --method bias --T 4 --n 512 -o vgg_cal.pt --json cal.json
  qcfs2lava evaluate m_cal.pt --T 16          # the calibrated SNN (the ANN is unchanged)
  qcfs2lava export m_cal.pt -o m_cal.net      # per-step biases and per-neuron vInit in the NetX file
"""

def cmd_calibrate(a: argparse.Namespace) -> int:
    from qcfs2lava import data as D
    from qcfs2lava.checkpoint import load_checkpoint, save_checkpoint
    from qcfs2lava.low_latency import META_KEY, calibrate
    from qcfs2lava.qcfs import qcfs_layers
    from qcfs2lava.util.fileio import check_outputs
    from qcfs2lava.util.progress import Progress
    check_outputs([("-o", a.output), ("--json", a.json)], [a.checkpoint])
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
    bar = Progress(len(qcfs_layers(ck.model)), f"calibrate {a.method} T={a.T}", "layer")
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
    write_json(a.json, dict(checkpoint=a.checkpoint, sha256=ck.sha256, output=a.output, **meta[META_KEY]))
    return 0



def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("calibrate", help="low-latency calibration: per-channel bias and/or v(0) of the SNN "
                       "for a target T",
                       epilog=EPILOG_CALIBRATE, formatter_class=RAW)
    c.add_argument("checkpoint", help="QCFS model.pt")
    c.add_argument("-o", "--output", required=True, help="calibrated checkpoint to write")
    c.add_argument("--method", choices=["bias", "v0", "both"], default="both",
                   help="bias: shift biases so the mean SNN output matches the ANN (Li et al. 2021); "
                        "v0: per-channel initial potential (MSE); both: v0, then bias (default)")
    c.add_argument("--T", type=integer(1, MAX_STEPS), default=4, help="target time steps (default 4)")
    c.add_argument("--data-dir", help="data folder (not needed for digits)")
    c.add_argument("--n", type=integer(1), default=512, help="training images used (default 512)")
    c.add_argument("--batch-size", type=integer(1), default=128)
    c.add_argument("--v0-grid", type=integer(1, 1 << 16), default=32, help="v(0)/θ candidates k/G, k < G (default 32)")
    c.add_argument("--v0-z", type=number(0.0), default=2.0,
                   help="keep v(0) = θ/2 unless the MSE gain exceeds this many standard errors (default 2; 0: argmin)")
    c.add_argument("--seed", type=integer(0), default=0, help="which training images (random subset)")
    c.add_argument("--json", help="write the per-layer results as JSON")
    c.set_defaults(func=cmd_calibrate)
