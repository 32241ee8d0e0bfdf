"""``qcfs2lava export``: QCFS checkpoint → Loihi fixed point → NetX HDF5 (:mod:`netx_export.convert`)."""
from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

from qcfs2lava.cli.common import MAX_STEPS, RAW, deprecated_alias, integer, number, write_json
from qcfs2lava.util.errors import UserError

__all__ = ["register", "cmd_export"]

EPILOG_EXPORT = """examples:
  qcfs2lava export model.pt -o model.net
  qcfs2lava export model.pt -o model.net --check --json export.json
"""


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v



def cmd_export(a: argparse.Namespace) -> int:
    from qcfs2lava.checkpoint import load_checkpoint
    from qcfs2lava.util.fileio import check_outputs

    from netx_export.convert.pipeline import quantize_checkpoint
    from netx_export.convert.fixedpoint import format_report
    from netx_export.netx.validate import load_netx
    from netx_export.netx.write import write_netx
    from netx_export.report.plan import STORAGES, plan_json, plan_network, plan_summary

    out = a.output or os.path.splitext(a.checkpoint)[0] + ".net"
    check_outputs([("-o", out), ("--json", a.json)], [a.checkpoint])
    ck = load_checkpoint(a.checkpoint)
    meta = ck.meta
    t0 = time.perf_counter()
    calib = _bias_correction_images(meta, a.data_dir, a.bias_correction) if a.bias_correction else None
    ex = quantize_checkpoint(ck, recommended_T=a.T, v_headroom=a.v_headroom, calib_x=calib)
    graph, net, graph_err = ex.graph, ex.net, ex.graph_error
    write_netx(net, out)
    dt = time.perf_counter() - t0
    print(f"{a.checkpoint}: {meta.get('arch')} on {meta.get('dataset')}, L={graph.L}, φ={graph.phi:g}")
    print(format_report(net.report))
    syn = net.synaptic
    kinds = ", ".join(f"{sum(1 for lay in net.layers if lay.kind == k)} {k}" for k in ("conv", "flatten", "dense"))
    neurons = sum(int(math.prod(lay.shape)) for lay in syn)
    synapses = sum(int(lay.weight.size) for lay in syn if lay.weight is not None)
    warnings = sum(len(r.warnings) for r in net.report)
    worst = max(r.rms_rel_error for r in net.report)
    print(f"wrote {out}: {len(net.layers)} NetX layers ({kinds}), {neurons} neurons, {synapses} weights; "
          f"max RMS weight error {100 * worst:.2f}%, fold check {max((e for _, e in graph.fold_errors), default=0):.1e}, "
          f"graph vs model |Δlogit| {graph_err:.1e}; {warnings} warning(s); recommended T={a.T} ({dt:.1f} s)")
    if ex.corrections:
        worst_c = max(ex.corrections, key=lambda c: c.relative_to_vth)
        print(f"bias correction from {len(calib)} training images: mean rounding shift up to "
              f"{100 * worst_c.relative_to_vth:.2f}% of θ per step removed (layer {worst_c.name})")
    checked, plans = None, []
    if a.check:
        back = load_netx(out)
        checked = True
        print(f"check: {out} reloads and validates ({len(back.layers)} layers, NetX layout and Loihi limits OK)")
        plans = [plan_network(back.layers, m, s) for m in ("microcode", "stock") for s in STORAGES]
        print(plan_summary(plans) + " (`qcfs2lava plan` for the table)")
    write_json(a.json, dict(checkpoint=a.checkpoint, sha256=ck.sha256, output=out, L=graph.L, phi=graph.phi,
                             recommended_T=a.T, neurons=neurons, weights=synapses, graph_max_logit_error=graph_err,
                             fold_errors=dict(graph.fold_errors), check=checked,
                             loihi2_plan=[{k: v for k, v in plan_json(p).items() if k != "processes"} for p in plans],
                             bias_correction_images=len(calib) if calib is not None else 0,
                             bias_corrections=[c.__dict__ for c in ex.corrections],
                             layers=[{k: _clean(v) for k, v in r.__dict__.items()} for r in net.report]))
    return 0


def _bias_correction_images(meta: dict, data_dir: str | None, n: int):
    """``n`` normalised training images (a fixed random subset) of the checkpoint's data set."""
    from qcfs2lava import data as D

    dataset = meta.get("dataset")
    try:
        split = D.load_split(dataset, data_dir, train=True)
    except UserError as e:
        raise UserError(f"{e} (bias correction reads training images; pass --data-dir, or --bias-correction 0)") from None
    if not isinstance(split, D.ArraySplit):
        raise UserError(f"bias correction reads in-memory data sets (digits, CIFAR), not '{dataset}' folders; "
                        "pass --bias-correction 0")
    return D.sample(split, n, meta["normalization"])



def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("export", help="QCFS checkpoint → Loihi fixed point → NetX HDF5 (.net)",
                       epilog=EPILOG_EXPORT, formatter_class=RAW)
    e.add_argument("checkpoint", help="model.pt written by `qcfs2lava train`")
    e.add_argument("-o", "--output", help="NetX file to write (default: the checkpoint's name with .net)")
    e.add_argument("--check", action="store_true", help="reload the written file and validate it")
    e.add_argument("--bias-correction", type=integer(0), default=256, metavar="N",
                   help="correct each layer's bias for the mean weight-rounding error, measured on N training "
                        "images of the checkpoint's data set (default 256; 0: off)")
    e.add_argument("--calibrate", dest="bias_correction", type=integer(0), metavar="N", help=argparse.SUPPRESS,
                   action=deprecated_alias("--bias-correction"))
    e.add_argument("--data-dir", help="data set folder, for --bias-correction (digits need none)")
    e.add_argument("--json", help="write the per-layer quantization report as JSON")
    e.add_argument("--T", type=integer(1, MAX_STEPS), default=32, help="recommended time steps, stored in the file (default 32)")
    e.add_argument("--v-headroom", type=number(1.0, 1 << 17), default=64.0,
                   help="keep vThMant ≤ 131071/H so v can sink H·θ below 0 before saturating (default 64)")
    e.set_defaults(func=cmd_export)
