#!/usr/bin/env python
"""Run an exported qcfs2lava network on Loihi 2 (INRC systems) — or, anywhere else, on Lava's CPU simulator.

    python hardware_runs/run_on_loihi.py model.net --T 8 --n 1000 [--mode stock|microcode]
        [--dataset cifar10 --data-dir D] [--partition oheogulch] [--out hardware_runs/results/NAME.json]

Modes (docs/stock-mode.md):
  stock      stock Loihi 2 blocks only: LIF with persistent current (du = −1, dv = 4095), a self-
             inhibitory synapse of −θ, biases from an always-on neuron (netx_export.sim.stock). Runs on
             any Loihi 2 today; one network per sample.
  microcode  the file's own IF_SUB neurons (subtractive reset, v ≥ θ). On the chip this needs an NC
             ProcessModel with INRC microcode for IF_SUB (--nc-model package.module:Class); on the CPU
             simulator it is netx_export.lava's bit-accurate model, all samples in one network.

Where lava-loihi is importable and a Loihi 2 system is reachable (SLURM), the network runs on
``Loihi2HwCfg`` with lava-loihi's power and execution-time profilers; otherwise the script says so in
one line and runs the same network on ``Loihi2SimCfg``. Either way it records accuracy at every t,
latency per sample and, on hardware, power and energy per sample, into a JSON file.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from netx_export.netx.inputs import load_test_inputs
from netx_export.convert.fixedpoint import input_drive
from netx_export.netx.validate import load_netx
from qcfs2lava.cli.common import MAX_STEPS, RAW, Parser, integer, number
from qcfs2lava.util.errors import UserError, run_reporting_errors
from qcfs2lava.util.fileio import atomic_write_json, check_outputs
from qcfs2lava.util.progress import Progress
from qcfs2lava.util.tables import accuracy_table

MODES = ("stock", "microcode")


# --------------------------------------------------------------------------- where are we?
def loihi2_reachable() -> tuple[bool, str]:
    """(True, "") where lava-loihi is installed and a SLURM Loihi 2 partition answers; else the reason."""
    from netx_export import lava as _lava  # noqa: F401  (Python 3.11 shim before Lava)
    from lava.utils import loihi, slurm
    if not loihi.is_installed():
        return False, "lava-loihi (INRC's Loihi 2 extension of Lava) is not installed"
    if not slurm.is_available():
        return False, "no SLURM controller answers (INRC Loihi 2 systems are reached through SLURM)"
    return True, ""


class EioBoundary:
    """Host ↔ chip crossings as lava-dl's Loihi 2 tutorials make them (lava-loihi ``embedded_io``):
    host sources reach the chip through ``PyToNxAdapter``, chip outputs reach host sinks through
    ``NxToPyAdapter``. Not used on the CPU simulator, where processes connect directly."""

    def __init__(self) -> None:
        from lava.proc import embedded_io as eio   # lava-loihi only
        self.eio = eio

    def to_chip(self, port: Any, shape: tuple[int, ...], bits: int) -> Any:
        a = self.eio.spike.PyToNxAdapter(shape=shape, num_message_bits=bits)
        port.connect(a.inp)
        return a.out

    def from_chip(self, port: Any, shape: tuple[int, ...], bits: int) -> Any:
        a = self.eio.spike.NxToPyAdapter(shape=shape, num_message_bits=bits)
        port.connect(a.inp)
        return a.out


class Profilers:
    """lava-loihi's Loihi2Power / Loihi2ExecutionTime, attached through the run config's pre/post hooks."""

    def __init__(self, num_steps: int) -> None:
        from lava.utils import loihi2_profiler as prof
        self.power = prof.Loihi2Power(num_steps=num_steps)
        self.runtime = prof.Loihi2ExecutionTime()

    def run_cfg(self, exception_map: dict | None = None):
        from lava.magma.core.run_configs import Loihi2HwCfg
        return Loihi2HwCfg(exception_proc_model_map=exception_map or {},
                           pre_run_fxs=[lambda b: self.power.attach(b), lambda b: self.runtime.attach(b)],
                           post_run_fxs=[lambda b: self.power.get_results(), lambda b: self.runtime.get_results()])

    def summary(self, steps_per_sample: int) -> dict[str, float]:
        total = float(np.mean(self.power.total_power))
        static = float(self.power.static_total_power)
        us = float(self.runtime.avg_time_per_step)
        return dict(total_power_w=total, static_power_w=static, dynamic_power_w=total - static,
                    us_per_step=us, latency_ms_per_sample=us * steps_per_sample / 1e3,
                    dynamic_energy_uj_per_sample=(total - static) * us * steps_per_sample,
                    total_energy_uj_per_sample=total * us * steps_per_sample)


def _nc_model(spec: str | None):
    if not spec:
        raise UserError("--mode microcode on Loihi 2 needs an NC ProcessModel for IF_SUB (INRC microcode): "
                        "pass --nc-model package.module:Class, or use --mode stock")
    mod, _, cls = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), cls)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"cannot load --nc-model {spec}: {e}") from None


# --------------------------------------------------------------------------- running
def run(a: argparse.Namespace) -> dict[str, Any]:
    if a.mode not in MODES:
        raise UserError(f"unknown mode '{a.mode}'; use one of {', '.join(MODES)}")
    if a.T < 1 or (a.n is not None and a.n < 1):
        raise UserError("--T and --n must be >= 1")
    net = load_netx(a.file)
    xs, ys, dataset = load_test_inputs(net, a.file, a.dataset, a.data_dir, a.n)
    d = input_drive(net, xs)
    on_chip, why = (False, "--cpu given") if a.cpu else loihi2_reachable()
    if on_chip:
        from lava.utils import loihi
        loihi.use_slurm_host(partition=a.partition)
        print(f"Loihi 2 reachable: running {a.mode} mode on Loihi2HwCfg (partition {a.partition or 'any'})")
    else:
        print(f"Loihi 2 not reachable here ({why}): running the same {a.mode}-mode network on Lava's CPU "
              f"simulator (Loihi2SimCfg)")
    n = len(ys)
    bar = Progress(n, f"{a.mode} {'loihi2' if on_chip else 'cpu'}", "img")
    t0 = time.perf_counter()
    hw: dict[str, float] = {}
    if a.mode == "stock":
        from netx_export.lava_runtime.stock import run_stock_lava
        from netx_export.convert.stock_blocks import steps_per_sample
        steps = steps_per_sample(net, a.T)   # T + depth: the settle step and each layer's delayed start
        prof = Profilers(steps * n) if on_chip else None
        cfg = prof.run_cfg() if prof else _cpu_cfg()
        res = run_stock_lava(net, drive=d.drive, T=a.T, timing="aligned", run_cfg=cfg, boundary=EioBoundary() if on_chip else None,
                             budget_s=a.time_budget, progress=bar.to)
        acc = res.sim.accuracy(ys[:res.n]) if res.n else np.zeros(0)
        done, stopped = res.n, res.stopped
        timing = "aligned (layer j starts j steps late through a relay chain; one network per sample)"
    else:
        from netx_export.lava import IF_SUB
        from netx_export.lava_runtime.runner import run_lava
        steps = a.T
        prof = Profilers(steps * n + len(net.synaptic)) if on_chip else None
        cfg = prof.run_cfg({IF_SUB: _nc_model(a.nc_model)}) if prof else None
        res = run_lava(a.file, drive=d.drive, T=a.T, timing="aligned", record_spikes=False, qnet=net,
                       budget_s=a.time_budget, run_cfg=cfg, boundary=EioBoundary() if on_chip else None,
                       progress=bar.to)
        acc = res.accuracy(ys[:res.n]) if res.n else np.zeros(0)
        done, stopped = res.n, res.stopped
        timing = "aligned (staggered per-layer resets, samples back to back)"
    bar.close()
    wall = time.perf_counter() - t0
    if prof is not None:
        hw = prof.summary(steps)
    if done:
        print(accuracy_table(acc))
    if stopped:
        print(f"stopped: {stopped}")
    print(f"{done} of {n} samples, {wall:.1f} s wall ({1000 * wall / max(done, 1):.1f} ms/sample incl. build)"
          + (f"; {hw['latency_ms_per_sample']:.3f} ms/sample on chip, {hw['total_energy_uj_per_sample']:.2f} µJ/sample"
             if hw else ""))
    return dict(command=" ".join(["python", "hardware_runs/run_on_loihi.py"] + sys.argv[1:]),
                file=a.file, source_sha256=net.metadata.get("source_sha256"), dataset=dataset, mode=a.mode,
                platform="loihi2" if on_chip else "lava-cpu-simulator", platform_note=why or None,
                host=platform.node(), T=a.T, n=done, requested=n, timing=timing,
                accuracy=[float(v) for v in acc], final_accuracy=float(acc[-1]) if done else None,
                wall_seconds=wall, wall_ms_per_sample=1000 * wall / max(done, 1), stopped=stopped,
                drive_clipped=d.clipped, loihi2=hw or None,
                date=time.strftime("%Y-%m-%d %H:%M:%S"))


def _cpu_cfg():
    """CPU simulator with the bit-exact fast Conv model (the stock one costs ~1 s/step on CIFAR nets)."""
    from netx_export import lava as _lava  # noqa: F401
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.process import Conv

    from netx_export.lava.conv_models import PyConvModelFast
    return Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map={Conv: PyConvModelFast})


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="run_on_loihi", description=__doc__, formatter_class=RAW)
    p.add_argument("file", help="NetX file written by `qcfs2lava export`")
    p.add_argument("--T", type=integer(1, MAX_STEPS), default=8, help="time steps per sample (default 8)")
    p.add_argument("--n", type=integer(1), default=1000, help="test images (default 1000)")
    p.add_argument("--mode", default="stock", choices=("stock", "microcode"), help="stock (stock Loihi 2 blocks) or microcode (IF_SUB)")
    p.add_argument("--dataset", help="default: the data set recorded in the file")
    p.add_argument("--data-dir")
    p.add_argument("--partition", help="SLURM partition of the INRC Loihi 2 system (e.g. oheogulch)")
    p.add_argument("--nc-model", help="microcode mode on Loihi 2: package.module:Class of the IF_SUB NC model")
    p.add_argument("--cpu", action="store_true", help="use the CPU simulator even where Loihi 2 is reachable")
    p.add_argument("--time-budget", type=number(above=0), metavar="S", help="stop cleanly after about S seconds")
    p.add_argument("--out", help="JSON to write (default hardware_runs/results/<file>_<mode>_<platform>.json)")
    return p


def _run_and_write(a: argparse.Namespace) -> int:
    check_outputs([("--out", a.out)], [a.file])
    res = run(a)
    out = a.out or os.path.join(ROOT, "hardware_runs", "results",
                                f"{os.path.splitext(os.path.basename(a.file))[0]}_{a.mode}_{res['platform']}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    atomic_write_json(out, res)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_reporting_errors("run_on_loihi", _run_and_write, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
