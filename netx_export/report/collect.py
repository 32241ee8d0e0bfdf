"""Compute a :class:`~netx_export.report.render.ReportData` from a checkpoint, its exported NetX file and
the test set: ANN and float SNN (``qcfs2lava.snn.evaluate``), the fixed-point SNN with per-neuron
spike counts (``netx_export.sim.refsim``), Lava accuracies from ``qcfs2lava simulate --backend lava
--json``, and the energy table (``netx_export.report.energy``) with the PyTorch model's own MACs.

This is the one report module that imports torch (the model and the float SNN need it).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from qcfs2lava.util.errors import UserError
from qcfs2lava.util.fileio import file_sha256

from netx_export.report.energy import energy_table
from netx_export.report.plan import STORAGES, plan_network
from netx_export.convert.fixedpoint import QNetwork, input_drive
from netx_export.sim.refsim import simulate_drive
from netx_export.report.render import RasterLayer, ReportData

__all__ = ["collect_report_data", "ann_layer_macs", "read_lava_json", "raster_sample", "SPIKE_BUFFER"]

SPIKE_BUFFER = 1 << 25      # recorded spike entries (bools) per reference-simulator chunk: 32 MB


def ann_layer_macs(model, input_shape: Sequence[int], net: QNetwork) -> list[int] | None:
    """MACs of one forward pass of the PyTorch ``model``, per synaptic layer of ``net``: every Conv2d
    (C_out·H_out·W_out·C_in/g·kH·kW) and Linear (N_out·N_in) module, matched to the exported layer whose
    name lists it (``"3+4+5"``). None if the modules and layers do not match one to one."""
    from torch import nn

    from qcfs2lava.models import output_shapes

    macs: dict[str, int] = {}
    for name, (mod, shape) in output_shapes(model, input_shape, (nn.Conv2d, nn.Linear)).items():
        per_output = (mod.in_channels // mod.groups) * int(np.prod(mod.kernel_size)) \
            if isinstance(mod, nn.Conv2d) else mod.in_features
        macs[name] = int(np.prod(shape[1:])) * per_output
    out: list[int] = []
    used: set[str] = set()
    for lay in net.synaptic:
        mine = [n for n in lay.name.split("+") if n in macs]
        if len(mine) != 1:
            return None
        shortcut = [n for sk in lay.skips for n in sk.name.split("+") if n in macs]   # 1x1 conv shortcuts
        out.append(macs[mine[0]] + sum(macs[n] for n in shortcut))
        used.update(mine + shortcut)
    return out if used == set(macs) else None


def read_lava_json(path: str) -> tuple[dict[int, float], int, dict[str, Any]]:
    """Accuracy at every t (t → fraction), samples and the raw object from ``simulate --backend lava --json``."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except OSError as e:
        raise UserError(f"cannot read Lava results {path}: {e.strerror or e}") from None
    except ValueError:
        raise UserError(f"{path} is not JSON (expected `qcfs2lava simulate --backend lava --json` output)") from None
    acc = obj.get("accuracy") if isinstance(obj, dict) else None
    if not isinstance(acc, list) or not acc or not all(isinstance(a, (int, float)) for a in acc):
        raise UserError(f"{path} has no accuracy list (expected `qcfs2lava simulate --backend lava --json` output)")
    if obj.get("backend") not in (None, "lava"):
        raise UserError(f"{path} holds '{obj.get('backend')}' results, not Lava's")
    return {t + 1: float(a) for t, a in enumerate(acc)}, int(obj.get("n") or 0), obj


def raster_sample(spikes: Sequence[np.ndarray], names: Sequence[str], layers: int = 4, neurons: int = 40
                  ) -> list[RasterLayer]:
    """Pick up to ``layers`` layers (evenly spread, first and last kept) and, in each, up to ``neurons``
    neurons evenly spaced among those that fire at least once (all neurons if none fire).
    ``spikes[j]`` is one sample's bool (T, ...) spikes of layer j."""
    idx = sorted({round(i * (len(spikes) - 1) / max(1, layers - 1)) for i in range(min(layers, len(spikes)))})
    out = []
    for j in idx:
        s = np.asarray(spikes[j], dtype=bool).reshape(spikes[j].shape[0], -1)
        active = np.flatnonzero(s.any(0))
        pool = active if active.size else np.arange(s.shape[1])
        pick = pool[np.unique(np.linspace(0, pool.size - 1, min(neurons, pool.size)).round().astype(int))]
        out.append(RasterLayer(names[j], s[:, pick], tuple(int(p) for p in pick), int(s.shape[1])))
    return out


@dataclass
class _Inputs:
    ck: Any
    net: QNetwork
    lava: tuple[dict[int, float], int, dict[str, Any]] | None
    xs: np.ndarray
    ys: np.ndarray
    dataset: str


def _load(checkpoint_path: str, net_path: str, data_dir: str | None, n: int | None,
          lava_json: str | None) -> _Inputs:
    """The checkpoint, its NetX file, the Lava results (if any) and the test images; refuses files
    that do not belong together."""
    from qcfs2lava.checkpoint import load_checkpoint

    from netx_export.netx.inputs import load_test_inputs
    from netx_export.netx.validate import load_netx

    ck = load_checkpoint(checkpoint_path)
    if ck.meta.get("activation", "qcfs") != "qcfs":
        raise UserError(f"{checkpoint_path} is a ReLU network; the report is for QCFS networks")
    net = load_netx(net_path)
    src = net.metadata.get("source_sha256")
    if src and src != ck.sha256:
        raise UserError(f"{net_path} was exported from another checkpoint (sha256 {str(src)[:12]}…, "
                        f"{checkpoint_path} is {ck.sha256[:12]}…)")
    lava = read_lava_json(lava_json) if lava_json else None
    if lava is not None and lava[2].get("source_sha256") not in (None, ck.sha256):
        raise UserError(f"{lava_json} holds results of another network (source sha256 "
                        f"{str(lava[2]['source_sha256'])[:12]}…, {checkpoint_path} is {ck.sha256[:12]}…)")
    xs, ys, dataset = load_test_inputs(net, net_path, ck.meta["dataset"], data_dir, n)
    return _Inputs(ck, net, lava, xs, ys, dataset)


@dataclass
class _FixedPoint:
    """The reference simulator's pass over the test images (aligned timing)."""
    accuracy: list[float]
    mean_spikes: list[np.ndarray]          # per layer: spikes per neuron per sample over T steps
    first: tuple[np.ndarray, ...]          # per layer: sample 0's spikes (T, ...)
    lava_correct: np.ndarray               # correct at every t on the first lava_n samples
    saturated: int
    clipped: int

    @property
    def rates(self) -> list[float]:
        return [float(c.sum()) / (c.size * len(self.accuracy)) for c in self.mean_spikes]


def _fixed_point(net: QNetwork, xs: np.ndarray, ys: np.ndarray, T: int, batch_size: int, lava_n: int
                 ) -> _FixedPoint:
    from qcfs2lava.util.progress import Progress

    syn = net.synaptic
    per_neuron = [np.zeros(int(np.prod(lay.shape))) for lay in syn]
    correct, lava_correct = np.zeros(T), np.zeros(T)
    chunk = max(1, min(batch_size, SPIKE_BUFFER // (T * sum(int(np.prod(lay.shape)) for lay in syn))))
    first: tuple[np.ndarray, ...] | None = None
    saturated = clipped = 0
    bar = Progress(len(ys), "fixed point", "img")
    for i in range(0, len(ys), chunk):
        d = input_drive(net, xs[i:i + chunk].astype(np.float64))
        r = simulate_drive(net, d.drive, T, "aligned", record_spikes=True, drive_clipped=d.clipped)
        assert r.spikes is not None
        hit = r.predictions == ys[i:i + chunk].reshape(1, -1)
        correct += hit.sum(1)
        lava_correct += hit[:, :max(0, lava_n - i)].sum(1)
        for j, s in enumerate(r.spikes):
            per_neuron[j] += s.reshape(s.shape[0], s.shape[1], -1).sum((0, 1))
        if first is None:
            first = tuple(s[:, 0] for s in r.spikes)
        saturated += r.saturated
        clipped += r.drive_clipped
        bar.update(hit.shape[1])
    bar.close()
    assert first is not None
    n = len(ys)
    return _FixedPoint((correct / n).tolist(), [c / n for c in per_neuron], first, lava_correct, saturated, clipped)


def _lava_points(lava, fixed: _FixedPoint, n_layers: int, n_used: int, T: int, log: Callable[[str], None]
                 ) -> tuple[dict[int, float], list[float]]:
    """Lava's accuracy at every t (aligned to the reference's steps) and the reference's accuracy on
    the same samples; logs whether they agree."""
    if lava is None:
        return {}, []
    pts, lava_n, obj = lava
    delay = n_layers - 1 if obj.get("timing") == "lava" else 0    # lava timing: readout lags depth − 1 steps
    acc = {t - delay: a for t, a in pts.items() if 1 <= t - delay <= T}
    ref: list[float] = []
    if 0 < lava_n <= n_used:
        ref = (fixed.lava_correct / lava_n).tolist()
        differ = [t for t, a in acc.items() if abs(a - ref[t - 1]) > 1e-9]
        log(f"      Lava vs fixed point on the same {lava_n} samples: "
            + (f"differ at t = {differ[:8]}" if differ else "equal at every t"))
    return acc, ref


def _provenance(inp: _Inputs, checkpoint_path: str, net_path: str, data_dir: str | None, T: int,
                fixed: _FixedPoint, lava_json: str | None, t_start: float) -> dict[str, Any]:
    from qcfs2lava.version import __version__
    prov: dict[str, Any] = {
        "checkpoint": os.path.abspath(checkpoint_path), "checkpoint sha256": inp.ck.sha256,
        "NetX file": os.path.abspath(net_path), "NetX file sha256": file_sha256(net_path),
        "architecture": inp.ck.meta.get("arch"), "dataset": inp.dataset, "data dir": data_dir or "(bundled)",
        "test samples": len(inp.ys), "time steps T": T, "L": inp.ck.meta.get("L"),
        "fixed point": f"{fixed.saturated} v saturations, {fixed.clipped} input-drive entries clipped",
    }
    if lava_json:
        prov["Lava results"] = os.path.abspath(lava_json)
    prov["qcfs2lava"] = __version__
    prov["generated"] = time.strftime("%Y-%m-%d %H:%M:%S") + f" ({time.perf_counter() - t_start:.1f} s)"
    return prov


def collect_report_data(checkpoint_path: str, net_path: str, data_dir: str | None = None, n: int | None = None,
                        T: int = 16, lava_json: str | None = None, batch_size: int = 250,
                        log: Callable[[str], None] = print) -> ReportData:
    """Everything :func:`~netx_export.report.render.write_report` shows, computed on the first ``n`` test samples
    (all if None) for ``T`` steps. ``log`` gets one line per stage. Bad input raises UserError."""
    import torch

    from qcfs2lava.snn import evaluate
    from qcfs2lava.util.progress import Progress

    for name, value in (("T", T), ("n", 1 if n is None else n), ("batch-size", batch_size)):
        if value < 1:
            raise UserError(f"--{name} must be >= 1, got {value}")
    t_start = time.perf_counter()
    inp = _load(checkpoint_path, net_path, data_dir, n, lava_json)
    ck, net, n_used = inp.ck, inp.net, len(inp.ys)
    batches = [(torch.from_numpy(inp.xs[i:i + batch_size]).float(), torch.from_numpy(inp.ys[i:i + batch_size]))
               for i in range(0, n_used, batch_size)]
    log(f"[1/4] ANN and float SNN on {n_used} {inp.dataset} test samples, T = 1..{T}")
    bar = Progress(n_used, "float SNN", "img")
    ev = evaluate(ck.model, batches, T, progress=lambda k, acc: bar.update(k, acc_T=acc))
    bar.close()
    log(f"[2/4] fixed-point SNN ({os.path.basename(net_path)}, reference simulator, aligned timing)")
    lava_n = inp.lava[1] if inp.lava is not None else 0
    fixed = _fixed_point(net, inp.xs, inp.ys, T, batch_size, lava_n)
    log(f"[3/4] Lava points from {lava_json} ({lava_n} samples)" if inp.lava is not None
        else "[3/4] no Lava results given (--lava), skipped")
    syn = net.synaptic
    lava_acc, lava_ref = _lava_points(inp.lava, fixed, len(syn), n_used, T, log)
    log("[4/4] operations and energy per sample")
    energy = energy_table(net, fixed.mean_spikes, T, ann_macs=ann_layer_macs(ck.model, net.input_shape, net))
    hidden = list(range(len(syn) - 1))     # the firing-rate chart: spiking layers (the readout only integrates)
    names = [syn[j].name for j in hidden]
    float_rates = []
    for j in hidden:
        match = [ev.firing_rates[k] for k in syn[j].name.split("+") if k in ev.firing_rates]
        float_rates.append(match[0] if len(match) == 1 else math.nan)
    return ReportData(
        title=f"{ck.meta.get('arch')} on {inp.dataset}: QCFS ANN → SNN → Loihi fixed point",
        T=T, L=int(ck.meta.get("L", net.metadata.get("L", 4))), n=n_used,
        phi=float(ck.meta.get("phi", net.metadata.get("phi", 0.5))),
        ann_accuracy=ev.ann_accuracy, float_accuracy=tuple(ev.snn_accuracy), fixed_accuracy=tuple(fixed.accuracy),
        lava_accuracy=lava_acc, lava_n=lava_n or None, lava_reference=tuple(lava_ref), layer_names=tuple(names),
        firing_rates={"float SNN": tuple(float_rates), "fixed-point SNN": tuple(fixed.rates[j] for j in hidden)},
        raster=tuple(raster_sample([fixed.first[j] for j in hidden], names)),
        raster_label=f"test sample 0 (label {int(inp.ys[0])}), fixed-point SNN, T={T}",
        quantization=tuple(net.report), energy=energy,
        plans=tuple(plan_network(net.layers, m, st) for m in ("microcode", "stock") for st in STORAGES),
        provenance=_provenance(
            inp, checkpoint_path, net_path, data_dir, T, fixed, lava_json, t_start))
