"""``qcfs2lava export | inspect | simulate``: the exporter's CLI subcommands.

``register(subparsers)`` adds them to the ``qcfs2lava`` parser; each handler returns an exit code
and raises ``UserError`` subclasses for bad input (the CLI prints those as one line, exit 2).
"""
from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

from qcfs2lava.errors import UserError
from qcfs2lava.fileio import atomic_write_json
from qcfs2lava.progress import Progress
from qcfs2lava.tables import accuracy_table

__all__ = ["register", "cmd_export", "cmd_inspect", "cmd_simulate"]

EPILOG_EXPORT = """examples:
  qcfs2lava export model.pt -o model.net
  qcfs2lava export model.pt -o model.net --check --json export.json
"""
EPILOG_INSPECT = """examples:
  qcfs2lava inspect model.net
  qcfs2lava inspect lava-dl-tiny.net        # any NetX file, not only ours
"""
EPILOG_SIMULATE = """examples:
  qcfs2lava simulate model.net --backend reference --T 32
  qcfs2lava simulate vgg.net --backend reference --data-dir D --n 1000 --T 32 --json sim.json
  qcfs2lava simulate model.net --timing lava --T 40     # Lava's one-step delay per layer
  qcfs2lava simulate model.net --backend lava --n 100 --T 8 --json out.json --compare
"""


def _write_json(path: str | None, obj: Any) -> None:
    if path:
        atomic_write_json(path, obj)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


# --------------------------------------------------------------------------- export
def cmd_export(a: argparse.Namespace) -> int:
    from qcfs2lava.checkpoint import load_checkpoint

    from .export import quantize_checkpoint
    from .fixedpoint import format_report
    from .hdf5_read import check_file
    from .hdf5_write import write_netx

    if a.T < 1:
        raise UserError("--T must be >= 1")
    if a.v_headroom < 1:
        raise UserError("--v-headroom must be >= 1")
    out = a.output or os.path.splitext(a.checkpoint)[0] + ".net"
    if os.path.abspath(out) == os.path.abspath(a.checkpoint):
        raise UserError("the output would overwrite the checkpoint; choose another -o")
    if a.calibrate < 0:
        raise UserError("--calibrate must be >= 0")
    ck = load_checkpoint(a.checkpoint)
    meta = ck.meta
    t0 = time.perf_counter()
    calib = _calibration_images(meta, a.data_dir, a.calibrate) if a.calibrate else None
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
    checked = None
    if a.check:
        back = check_file(out)
        checked = True
        print(f"check: {out} reloads and validates ({len(back.layers)} layers, NetX layout and Loihi limits OK)")
    _write_json(a.json, dict(checkpoint=a.checkpoint, sha256=ck.sha256, output=out, L=graph.L, phi=graph.phi,
                             recommended_T=a.T, neurons=neurons, weights=synapses, graph_max_logit_error=graph_err,
                             fold_errors=dict(graph.fold_errors), check=checked,
                             calibration_images=len(calib) if calib is not None else 0,
                             bias_corrections=[c.__dict__ for c in ex.corrections],
                             layers=[{k: _clean(v) for k, v in r.__dict__.items()} for r in net.report]))
    return 0


def _calibration_images(meta: dict, data_dir: str | None, n: int):
    """``n`` normalised training images (a fixed random subset) of the checkpoint's data set."""
    from qcfs2lava import data as D

    dataset = meta.get("dataset")
    try:
        split = D.load_split(dataset, data_dir, train=True)
    except UserError as e:
        raise UserError(f"{e} (bias calibration reads training images; pass --data-dir, or --calibrate 0)") from None
    if not isinstance(split, D.ArraySplit):
        raise UserError(f"bias calibration reads in-memory data sets (digits, CIFAR), not '{dataset}' folders; "
                        "pass --calibrate 0")
    return D.sample(split, n, meta["normalization"])


# --------------------------------------------------------------------------- inspect
def cmd_inspect(a: argparse.Namespace) -> int:
    from .hdf5_read import inspect, validate_file

    print(inspect(a.file))
    if a.validate:
        problems = validate_file(a.file)
        if problems:
            print("validation: " + str(len(problems)) + " problem(s)")
            for p in problems:
                print(f"  - {p}")
            return 1
        print("validation: OK")
    return 0


# --------------------------------------------------------------------------- simulate
def cmd_simulate(a: argparse.Namespace) -> int:
    import numpy as np

    from .hdf5_read import read_netx
    from .inputs import load_test_inputs
    from .refsim import evaluate

    if a.T < 1:
        raise UserError("--T must be >= 1")
    if a.n is not None and a.n < 1:
        raise UserError("--n must be >= 1")
    if a.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if a.backend not in ("reference", "lava"):
        raise UserError(f"unknown backend '{a.backend}'; use --backend reference or lava")
    if a.compare and a.backend != "lava":
        raise UserError("--compare checks the Lava backend against the reference; use it with --backend lava")
    net = read_netx(a.file)
    xs, ys, dataset = load_test_inputs(net, a.file, a.dataset, a.data_dir, a.n)
    n = len(ys)
    if a.backend == "lava":
        return _simulate_lava(a, net, xs, ys, dataset)
    batches = [(xs[i:i + a.batch_size], ys[i:i + a.batch_size]) for i in range(0, n, a.batch_size)]
    t0 = time.perf_counter()

    bar = Progress(n, "refsim", "img")
    ev = evaluate(net, batches, a.T, timing=a.timing, progress=lambda done: bar.update(done - bar.n))
    bar.close()
    dt = time.perf_counter() - t0
    print(f"{a.file}: reference fixed-point simulation ({a.timing} timing) on {dataset}, {ev.n} test images")
    print(accuracy_table(ev.accuracy))
    names = [lay.name for lay in net.synaptic]
    print("firing rates (spikes/neuron/step): " + ", ".join(f"{nm}={r:.4f}" for nm, r in zip(names, ev.firing_rates)))
    print(f"v saturations: {ev.saturated}; input drive clipped: {ev.drive_clipped}/{ev.drive_total}; "
          f"{dt:.1f} s ({ev.n * a.T / max(dt, 1e-9):.0f} sample-steps/s)")
    _write_json(a.json, dict(file=a.file, backend=a.backend, timing=a.timing, dataset=dataset, n=ev.n, T=ev.T,
                             accuracy=ev.accuracy, firing_rates=dict(zip(names, ev.firing_rates)),
                             saturated=ev.saturated, drive_clipped=ev.drive_clipped, drive_total=ev.drive_total,
                             source_sha256=net.metadata.get("source_sha256"), seconds=dt,
                             final_accuracy=float(np.asarray(ev.accuracy)[-1])))
    return 0


def _simulate_lava(a: argparse.Namespace, net, xs, ys, dataset: str) -> int:
    """``qcfs2lava simulate FILE --backend lava [--compare]``, once ``cmd_simulate`` has loaded the
    network (QNetwork) and the data (numpy): accuracy at every t, wall time per sample and per step; with
    ``--compare`` the reference simulator runs on the same inputs and every layer's spikes are
    compared (exit code 1 on any mismatch)."""
    import numpy as np

    from .fixedpoint import input_drive
    from .lava_run import LavaResult, compare, run_lava
    from .refsim import simulate_drive

    n = len(ys)
    d = input_drive(net, xs)
    bar = Progress(n, "lava", "img")
    res = run_lava(a.file, T=a.T, drive=d.drive, timing=a.timing, tag=a.tag, record_spikes=a.compare,
                   budget_s=a.time_budget, qnet=net, progress=lambda done: bar.update(done - bar.n),
                   conv=a.conv)
    bar.close()
    acc = res.accuracy(ys)
    print(f"{a.file}: Lava CPU simulator (Loihi2SimCfg, {a.tag}, {a.timing} timing) on {dataset}, "
          f"{res.n} of {n} test images")
    if res.n:
        print(accuracy_table(acc))
    print(f"build {res.seconds_build:.2f} s, compile {res.seconds_compile:.2f} s, run {res.seconds_run:.2f} s: "
          f"{1000 * res.seconds_per_sample:.1f} ms/sample, {1000 * res.seconds_per_step:.2f} ms/step "
          f"({res.steps / max(res.seconds_run, 1e-9):.1f} steps/s, {res.steps} steps)")
    if res.stopped:
        print(f"stopped: {res.stopped}")
    out: dict[str, Any] = dict(file=a.file, dataset=dataset, source_sha256=net.metadata.get("source_sha256"),
                               accuracy=acc.tolist() if res.n else [],
                               final_accuracy=float(acc[-1]) if res.n else None,
                               drive_clipped=d.clipped, drive_total=d.total, conv=a.conv, **res.summary())
    rc = 0
    if a.compare:
        t0 = time.perf_counter()
        tot = {"spikes_compared": 0, "spike_mismatches": 0, "logits_compared": 0, "logit_mismatches": 0,
               "prediction_mismatches": 0}
        per_layer: list[dict[str, int]] = []
        ref_correct = np.zeros(a.T)
        step = max(1, int(getattr(a, "batch_size", 250)))
        for i in range(0, res.n, step):
            j = min(res.n, i + step)
            ref = simulate_drive(net, d.drive[i:j], a.T, a.timing, record_spikes=True)
            part = LavaResult(res.logits[:, i:j], tuple(s[:, i:j] for s in res.spikes or ()), (), j - i, j - i, a.T,
                              res.timing, res.tag, 0, 0.0, 0.0, 0.0, 0.0)
            c = compare(part, ref)
            for k in tot:
                tot[k] += c[k]
            for lay in c["layers"]:
                if len(per_layer) <= lay["layer"]:
                    per_layer.append(dict(layer=lay["layer"], compared=0, mismatches=0))
                per_layer[lay["layer"]]["compared"] += lay["compared"]
                per_layer[lay["layer"]]["mismatches"] += lay["mismatches"]
            ref_correct += (ref.predictions == ys[i:j].reshape(1, -1)).sum(1)
        dt = time.perf_counter() - t0
        ok = tot["spike_mismatches"] == 0 and tot["logit_mismatches"] == 0
        print(f"compare with the reference ({a.timing} timing): {tot['spikes_compared']} spike entries "
              f"(every layer, step and sample), {tot['spike_mismatches']} mismatches; readout "
              f"{tot['logit_mismatches']} of {tot['logits_compared']} logits differ; "
              f"{'bit-exact' if ok else 'NOT bit-exact'} ({dt:.1f} s)")
        out["compare"] = dict(reference="refsim", timing=a.timing, layers=per_layer, seconds_reference=dt,
                              reference_accuracy=(ref_correct / max(1, res.n)).tolist(), bit_exact=ok, **tot)
        out["spike_mismatches"] = tot["spike_mismatches"]
        rc = 0 if ok else 1
    if a.json:
        atomic_write_json(a.json, out)
    return rc


# --------------------------------------------------------------------------- registration
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export``, ``inspect``, ``simulate``, ``report`` and ``demo`` to the ``qcfs2lava`` subcommand parsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    e = subparsers.add_parser("export", help="QCFS checkpoint → Loihi fixed point → NetX HDF5 (.net)",
                              epilog=EPILOG_EXPORT, formatter_class=fmt)
    e.add_argument("checkpoint", help="model.pt written by `qcfs2lava train`")
    e.add_argument("-o", "--output", help="NetX file to write (default: the checkpoint's name with .net)")
    e.add_argument("--check", action="store_true", help="reload the written file and validate it")
    e.add_argument("--calibrate", type=int, default=256, metavar="N",
                   help="correct each layer's bias for the mean weight-rounding error, measured on N training "
                        "images of the checkpoint's data set (default 256; 0: off)")
    e.add_argument("--data-dir", help="data set folder, for --calibrate (digits need none)")
    e.add_argument("--json", help="write the per-layer quantization report as JSON")
    e.add_argument("--T", type=int, default=32, help="recommended time steps, stored in the file (default 32)")
    e.add_argument("--v-headroom", type=float, default=64.0,
                   help="keep vThMant ≤ 131071/H so v can sink H·θ below 0 before saturating (default 64)")
    e.set_defaults(func=cmd_export)

    i = subparsers.add_parser("inspect", help="print the structure of any NetX HDF5 file",
                              epilog=EPILOG_INSPECT, formatter_class=fmt)
    i.add_argument("file")
    i.add_argument("--validate", action="store_true", help="also check it against qcfs2lava's rules")
    i.set_defaults(func=cmd_inspect)

    s = subparsers.add_parser("simulate", help="accuracy at every t of an exported network",
                              epilog=EPILOG_SIMULATE, formatter_class=fmt)
    s.add_argument("file", help="NetX file written by `qcfs2lava export`")
    s.add_argument("--backend", default="reference", choices=["reference", "lava"],
                   help="reference: integer-exact numpy simulator; lava: Lava's CPU simulator (Loihi2SimCfg)")
    s.add_argument("--dataset", help="data set (default: the one stored in the file)")
    s.add_argument("--data-dir")
    s.add_argument("--n", type=int, help="only the first n test images")
    s.add_argument("--T", type=int, default=32)
    s.add_argument("--timing", default="aligned", choices=["aligned", "lava"],
                   help="aligned: no synaptic delay (accuracy studies); lava: one step per layer, as on Loihi")
    s.add_argument("--batch-size", type=int, default=250)
    s.add_argument("--compare", action="store_true",
                   help="lava: also run the reference on the same inputs and count spike mismatches "
                        "(every layer, step, sample); exit 1 if any")
    s.add_argument("--tag", default="fixed_pt", choices=["fixed_pt", "floating_pt"],
                   help="lava: ProcessModel tag (default fixed_pt, bit-accurate)")
    s.add_argument("--conv", default="fast", choices=["fast", "stock"],
                   help="lava fixed_pt: conv synapse model, fast (im2col, bit-exact with stock) or Lava's stock "
                        "(one scipy convolve2d per channel pair; much slower)")
    s.add_argument("--time-budget", type=float, metavar="S",
                   help="lava: stop cleanly after about S seconds and report the samples finished")
    s.add_argument("--json")
    s.set_defaults(func=cmd_simulate)

    from .demo import register_demo
    from .report_command import register_report
    register_report(subparsers)
    register_demo(subparsers)
