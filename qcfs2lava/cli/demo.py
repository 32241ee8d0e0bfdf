"""``qcfs2lava demo``: the whole path on the bundled digits, as a user would type it.

    train (tiny QCFS net, L=4) → export (NetX HDF5, bias-calibrated) → simulate --backend lava --compare
    (Lava CPU simulator, spike for spike against the reference simulator) → report (ANN, float SNN,
    fixed-point SNN and Lava accuracy at every t, Figure 2, firing rates, raster, quantization, energy)

Each stage is the very subcommand a user runs, so the demo exercises the public command line and
nothing else; it ends with one summary (accuracy at t = 1, 2, 4, …, T, agreement, files).
"""
from __future__ import annotations

import argparse
import json
import os
import time

from qcfs2lava.cli.common import MAX_STEPS, integer, output_folder

__all__ = ["register", "cmd_demo"]

EPILOG_DEMO = """examples:
  qcfs2lava demo                                  # runs/demo/: model.pt, model.net, lava.json, report/report.html
  qcfs2lava demo --out /tmp/d --lava-n 100 --T 8  # quicker
"""


def _stage_parser() -> argparse.ArgumentParser:
    """The subcommands the demo runs, registered exactly as ``qcfs2lava`` registers them."""
    from qcfs2lava.cli import export, simulate, train
    p = argparse.ArgumentParser(prog="qcfs2lava")
    sub = p.add_subparsers(dest="command", required=True)
    for command in (train, export, simulate):
        command.register(sub)
    return p


def _run(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    a = parser.parse_args(argv)
    return a.func(a)


def cmd_demo(a: argparse.Namespace) -> int:
    from netx_export.report.render import write_report
    from netx_export.report.collect import collect_report_data

    output_folder(a.out, "--out")
    os.makedirs(a.out, exist_ok=True)
    p = _stage_parser()
    t0 = time.perf_counter()
    model, net = os.path.join(a.out, "model.pt"), os.path.join(a.out, "model.net")
    lava_json, report_dir = os.path.join(a.out, "lava.json"), os.path.join(a.out, "report")
    stages = 4 if a.lava_n else 3

    def stage(k: int, text: str) -> None:
        print(f"\n[{k}/{stages}] {text}  ({time.perf_counter() - t0:.0f} s so far)", flush=True)

    stage(1, f"qcfs2lava train --arch tiny --dataset digits --L {a.L} --epochs {a.epochs}")
    # One thread: the tiny net gains nothing from two, and two threads on a busy 2-core machine spin
    # (measured: 30 epochs took 10 min instead of 6 s while another job held one core).
    _run(p, ["train", "--arch", "tiny", "--dataset", "digits", "--L", str(a.L), "--epochs", str(a.epochs),
             "--seed", str(a.seed), "--threads", "1", "--out", model])
    stage(2, f"qcfs2lava export {model} -o {net} --check")
    _run(p, ["export", model, "-o", net, "--check", "--T", str(a.T)])
    rc = 0
    if a.lava_n:
        stage(3, f"qcfs2lava simulate {net} --backend lava --compare --n {a.lava_n} --T {a.T} (aligned timing)")
        rc = _run(p, ["simulate", net, "--backend", "lava", "--compare", "--timing", "aligned", "--n",
                      str(a.lava_n), "--T", str(a.T), "--json", lava_json])
    stage(stages, f"qcfs2lava report {model} {net}" + (f" --lava {lava_json}" if a.lava_n else ""))
    data = collect_report_data(model, net, T=a.T, lava_json=lava_json if a.lava_n else None,
                               log=lambda s: print(s, flush=True))
    report = write_report(data, report_dir, "html")

    ts = [t for t in (1, 2, 4, 8, 16, 32, 64) if t <= a.T] + ([a.T] if a.T not in (1, 2, 4, 8, 16, 32, 64) else [])
    print(f"\nsummary ({data.n} digits test images; Lava on the first {a.lava_n}):")
    print("  t            " + "".join(f"{t:>8d}" for t in ts))
    print("  ANN          " + "".join(f"{100 * data.ann_accuracy:8.2f}" for _ in ts))
    for name, acc in (("float SNN", data.float_accuracy), ("fixed point", data.fixed_accuracy)):
        print(f"  {name:<13s}" + "".join(f"{100 * acc[t - 1]:8.2f}" for t in ts))
    if a.lava_n:
        lava = json.load(open(lava_json))
        c = lava.get("compare", {})
        print("  Lava         " + "".join(f"{100 * data.lava_accuracy[t]:8.2f}" if t in data.lava_accuracy
                                          else f"{'-':>8s}" for t in ts))
        print(f"  Lava vs reference simulator: {c.get('spikes_compared', 0):,} spike entries compared, "
              f"{c.get('spike_mismatches', 0)} mismatches ({'bit-exact' if c.get('bit_exact') else 'NOT bit-exact'})")
    if data.energy is not None:
        e = data.energy
        print(f"  energy estimate per sample at T={a.T}: SNN {e.snn_energy_j * 1e9:.3g} nJ vs ANN "
              f"{e.ann_energy_j * 1e9:.3g} nJ (paper's constants); latency {e.latency_steps} steps")
    print(f"  files: {model}, {net}" + (f", {lava_json}" if a.lava_n else "") + f", {report}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return rc


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``qcfs2lava`` subcommand parsers."""
    d = sub.add_parser("demo", help="the whole path on the bundled digits: train → export → Lava → report",
                              epilog=EPILOG_DEMO, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--out", default="runs/demo", help="folder for every file the demo writes (default runs/demo)")
    d.add_argument("--L", type=integer(1, 1024), default=4, help="quantization steps L (default 4)")
    d.add_argument("--T", type=integer(1, MAX_STEPS), default=16, help="time steps (default 16)")
    d.add_argument("--epochs", type=integer(1), default=30)
    d.add_argument("--seed", type=integer(0), default=0)
    d.add_argument("--lava-n", type=integer(0), default=360,
                   help="test images run on Lava and cross-checked spike for spike (default 360 = all; 0: skip)")
    d.set_defaults(func=cmd_demo)
