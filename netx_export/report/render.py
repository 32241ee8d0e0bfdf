"""One self-contained report of a converted network: what it computes, how well, and at what cost.

:class:`ReportData` holds results already computed (accuracy at every t for the ANN, float SNN,
fixed-point SNN and Lava; firing rates; one sample's spikes; the quantization and energy tables;
the Loihi 2 resource plan; provenance); :func:`write_report` turns it into ``report.html`` (figures embedded as base64 PNG)
or ``report.md`` (PNG files beside it). Figures, from :mod:`netx_export.report.figures`:

    (a) accuracy vs T     (b) the paper's Figure 2 for this L     (c) firing rates per layer
    (d) spike raster      (e) quantization table                  (f) energy table (appendix A.8)
    (g) Loihi 2 resource plan (:mod:`netx_export.report.plan`)

Nothing here computes results (``report_collect.collect_report_data`` does, from files), so
anything that has the numbers (``qcfs2lava demo``) can build a ``ReportData`` itself. Every
figure is rendered before the first byte is written and each file is written atomically, so a
failure leaves no half-written report.
"""
from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from qcfs2lava.util.errors import UserError
from qcfs2lava.util.fileio import atomic_write_bytes, atomic_write_text

from netx_export.report.energy import EnergyTable, format_joules
from netx_export.report.plan import Plan, verdict
from netx_export.convert.fixedpoint import LayerReport
from netx_export.report import figures as F

__all__ = ["RasterLayer", "ReportData", "write_report", "FORMATS", "FIGURES"]

FORMATS = ("html", "md")
# figure key (file report_<key>.png in Markdown): heading, caption
FIGURES = {
    "accuracy": ("(a) Accuracy vs time steps",
                 "Test accuracy at every t = 1..T: the QCFS ANN (dotted line), the float SNN (qcfs2lava.snn), "
                 "the Loihi fixed-point SNN (netx_export.sim.refsim, integer-exact) and Lava CPU-simulator points."),
    "activation": ("(b) QCFS activation vs the IF neuron (the paper's Figure 2)",
                   "Eq. 15 with this network's L and φ against the mean output φ(T) of the converted IF neuron "
                   "(reset by subtraction, θ = λ, v(0) = φ·θ, constant input; eq. 11) for T ≠ L. "
                   "Theorem 2: with φ = ½ the conversion error averages to zero over z ∈ [0, λ] for every T (its "
                   "mean |error| does not)."),
    "firing_rates": ("(c) Firing rates per layer", "Mean spikes per neuron per step over the test samples."),
    "raster": ("(d) Spike raster of one sample",
               "Every spike of up to 40 neurons per layer, chosen evenly among those that fire at least once in "
               "this sample; on the right, their mean rate."),
}


@dataclass(frozen=True, eq=False)
class RasterLayer:
    """A few neurons of one layer during one sample."""
    name: str
    spikes: np.ndarray          # bool (T, k): the k shown neurons at every step
    neurons: tuple[int, ...]    # their flat indices in the layer
    total: int                  # neurons in the layer


@dataclass(frozen=True, eq=False)
class ReportData:
    """Everything a report shows. Accuracies are fractions, index t−1 = after t steps; ``firing_rates``
    maps a series name to one rate per entry of ``layer_names``; empty fields leave their part out."""
    title: str
    T: int
    L: int
    n: int                                          # test samples behind the accuracies and rates
    phi: float = 0.5
    ann_accuracy: float | None = None
    float_accuracy: Sequence[float] = ()            # float SNN
    fixed_accuracy: Sequence[float] = ()            # fixed-point SNN (reference simulator)
    lava_accuracy: Mapping[int, float] = field(default_factory=dict)   # t → accuracy, Lava CPU simulator
    lava_n: int | None = None
    lava_reference: Sequence[float] = ()            # fixed-point SNN on Lava's samples (should equal Lava's)
    layer_names: Sequence[str] = ()
    firing_rates: Mapping[str, Sequence[float]] = field(default_factory=dict)
    raster: Sequence[RasterLayer] = ()
    raster_label: str = ""                          # e.g. "test sample 0 (label 3), fixed-point SNN"
    quantization: Sequence[LayerReport] = ()
    energy: EnergyTable | None = None
    plans: Sequence[Plan] = ()                      # Loihi 2 resource plans (mode x synapse storage)
    provenance: Mapping[str, object] = field(default_factory=dict)


# --------------------------------------------------------------------------- checks
def _check(data: ReportData, fmt: str, out_dir: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"unknown report format '{fmt}'; use html or md")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"report folder {out_dir} exists and is not a folder")
    if data.T < 1 or data.L < 1:
        raise UserError(f"report needs T >= 1 and L >= 1 (got T={data.T}, L={data.L})")
    for label, acc in (("float SNN", data.float_accuracy), ("fixed-point SNN", data.fixed_accuracy)):
        if len(acc) > data.T:
            raise UserError(f"{label}: {len(acc)} accuracies for T={data.T}")
    for label, r in data.firing_rates.items():
        if len(r) != len(data.layer_names):
            raise UserError(f"firing rates '{label}': {len(r)} values for {len(data.layer_names)} layers")
    bad = [t for t in data.lava_accuracy if not 1 <= int(t) <= data.T]
    if bad:
        raise UserError(f"Lava accuracy at t={bad[0]} outside 1..{data.T}")


# --------------------------------------------------------------------------- figures
def _render_figures(data: ReportData) -> dict[str, bytes]:
    figs: dict[str, bytes] = {}
    curves = {}
    if len(data.float_accuracy):
        curves["float SNN"] = data.float_accuracy
    if len(data.fixed_accuracy):
        curves["fixed-point SNN (Loihi arithmetic)"] = data.fixed_accuracy
    # Lava markers at t = 1, 2, 4, …, T: at every t they would hide the curves they are compared with.
    shown = {int(t): float(a) for t, a in data.lava_accuracy.items() if int(t) & (int(t) - 1) == 0 or int(t) == data.T}
    points = {f"Lava CPU sim ({data.lava_n} samples)" if data.lava_n else "Lava CPU sim": shown} if shown else {}
    if curves or points or data.ann_accuracy is not None:
        figs["accuracy"] = F.accuracy_png(data.T, data.ann_accuracy, curves, points,
                                          f"{data.title}: {data.n} test samples, L={data.L}")
    figs["activation"] = F.activation_png(data.L, data.phi)
    if data.firing_rates and len(data.layer_names):
        figs["firing_rates"] = F.firing_rates_png(list(data.layer_names), data.firing_rates,
                                                  f"firing rate per layer, T={data.T}, {data.n} samples")
    if data.raster:
        figs["raster"] = F.raster_png([(r.name, r.spikes, r.total) for r in data.raster],
                                      data.raster_label or "spike raster")
    return figs


# --------------------------------------------------------------------------- tables (rows of strings)
def _fmt_pct(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def _accuracy_rows(data: ReportData) -> tuple[list[str], list[list[str]]]:
    from qcfs2lava.util.tables import REPORT_T
    ts = [t for t in REPORT_T if t <= data.T]
    if data.T not in ts:
        ts.append(data.T)
    head = ["", "ANN"] + [f"T={t}" for t in ts]
    rows = []
    ann = _fmt_pct(data.ann_accuracy) if data.ann_accuracy is not None else "-"
    for label, acc in (("float SNN", data.float_accuracy), ("fixed-point SNN", data.fixed_accuracy)):
        if len(acc):
            rows.append([label, ann] + [_fmt_pct(acc[t - 1]) if t <= len(acc) else "-" for t in ts])
    if data.lava_accuracy:
        rows.append([f"Lava ({data.lava_n} samples)" if data.lava_n else "Lava", "-"]
                    + [_fmt_pct(data.lava_accuracy[t]) if t in data.lava_accuracy else "-" for t in ts])
    if len(data.lava_reference):
        ref = data.lava_reference
        rows.append([f"fixed-point SNN, Lava's {data.lava_n} samples", "-"]
                    + [_fmt_pct(ref[t - 1]) if t <= len(ref) else "-" for t in ts])
    return head, rows


def _quant_rows(report: Sequence[LayerReport]) -> tuple[list[str], list[list[str]]]:
    head = ["#", "layer", "kind", "role", "scale σ", "k", "|m| max", "clip %", "max err %", "rms err %", "θ",
            "vThMant", "v(0)", "|bias| max", "max |input|", "warnings"]
    rows = []
    for r in report:
        rows.append([str(r.index), r.name, r.kind, r.role, f"{r.scale:.3f}", str(r.exponent), str(r.mantissa_max),
                     f"{100 * r.clipped_fraction:.2f}", f"{100 * r.max_rel_error:.3f}", f"{100 * r.rms_rel_error:.3f}",
                     "-" if math.isnan(r.theta) else f"{r.theta:.3f}", str(r.vth), str(r.v_init), str(r.bias_max),
                     str(r.input_max), "; ".join(r.warnings) or "-"])
    return head, rows


def _num(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 or float(x).is_integer() else f"{x:.1f}"


def _energy_rows(e: EnergyTable) -> tuple[list[str], list[list[str]]]:
    head = ["#", "layer", "kind", "neurons", "synapses", "fan-out (mean)", "ANN MACs", "spikes in / sample",
            "SOPs / sample", "spikes out / sample", "firing rate"]
    rows = []
    last = len(e.layers) - 1
    for j, c in enumerate(e.layers):
        rows.append([str(c.index), c.name, c.kind, _num(c.neurons), _num(c.synapses),
                     "analog input" if j == 0 else f"{c.fan_out:.1f}", _num(c.macs),
                     "host drive" if j == 0 else _num(c.spikes_in),
                     _num(c.sops) + ("" if c.exact else " *"), _num(c.spikes_out),
                     "readout" if j == last else f"{c.spikes_out / (c.neurons * e.T):.4f}"])
    rows.append(["", "total", "", _num(sum(c.neurons for c in e.layers)), _num(sum(c.synapses for c in e.layers)),
                 "", _num(e.ann_macs), "", _num(e.sops), _num(e.spikes), ""])
    return head, rows


def _plan_rows(plans: Sequence[Plan]) -> tuple[list[str], list[list[str]]]:
    head = ["mode", "synapse storage", "neurons", "synapses", "cores", "chips", "fits"]
    return head, [[p.mode, p.storage, _num(p.neurons), _num(p.synapses), str(p.cores), str(p.chips), verdict(p)]
                  for p in plans]


PLAN_NOTE = ("Cores per neuron process by tiling its output under the per-core limits of "
             "netx_export/report/limits.py (neurons, synaptic memory, input axons); Lava's own partition is not "
             "public, so this is an estimate; `qcfs2lava plan` prints it per process.")


def _energy_summary(e: EnergyTable) -> tuple[list[str], list[list[str]]]:
    head = ["quantity (per sample)", "operations", "energy", "how"]
    ratio = e.ann_energy_j / e.snn_energy_j if e.snn_energy_j > 0 else math.inf
    rows = [
        ["ANN, one forward pass", f"{_num(e.ann_flops)} FLOP", format_joules(e.ann_energy_j),
         f"2 × {_num(e.ann_macs)} MACs × 12.5 pJ/FLOP (MACs of the {e.macs_source})"],
        [f"SNN synaptic operations, T={e.T}", f"{_num(e.sops)} SOP", format_joules(e.sop_energy_j),
         "SOPs × 77 fJ/SOP (the paper's Table S5 counting)"],
        ["SNN first layer on the host", f"{_num(e.host_flops)} FLOP", format_joules(e.host_energy_j),
         "analog input: conv(x, W₀) once per sample × 12.5 pJ/FLOP"],
        ["SNN total", "", format_joules(e.snn_energy_j), f"{ratio:.3g}× less than the ANN"],
        ["Loihi on-chip estimate", f"{_num(e.sops)} SOP, {_num(e.neuron_updates)} neuron updates, "
         f"{_num(e.spikes)} spikes", format_joules(e.loihi_estimate_j),
         "estimate: 23.6 pJ/SOP, 81/52 pJ per (firing/quiet) neuron update, 1.7 pJ/spike (Davies et al. 2018, "
         "Table 2; Loihi 1)"],
        ["algorithmic latency on Loihi", f"{e.latency_steps} steps", "",
         f"T={e.T} + {len(e.layers) - 1} synaptic delays (one per layer after the bias-driven first)"],
    ]
    return head, rows


ENERGY_NOTE = ("Energy follows the paper's appendix A.8 (77 fJ per SOP and 12.5 pJ per FLOP, ROLLS figures from "
               "Qiao et al. 2015; memory access not counted). FLOPs = 2 × MACs of one forward pass. SOPs = spikes "
               "of layer l−1 × the synapses each drives in layer l, exact per neuron (edge pixels of a padded conv "
               "drive fewer); * marks layers counted with the mean fan-out. The first layer sees the constant "
               "analog image: the host computes its drive once per sample, so it costs MACs once and no SOPs. "
               "The Loihi figures are for the first Loihi chip and leave out tile hops, host I/O and static power: "
               "an estimate, not a measurement.")


# --------------------------------------------------------------------------- HTML
_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f2f2f2}.accuracy td:first-child,.quantization td:nth-child(2),
.energy td:nth-child(2),.energy-summary td,.provenance td{text-align:left}figure{margin:1em 0 2em}
figcaption{font-size:13px;color:#555;max-width:900px}img{max-width:100%;border:1px solid #eee}
.note{font-size:13px;color:#555;max-width:900px}code{background:#f6f6f6;padding:0 3px}"""


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _html(data: ReportData, figs: Mapping[str, bytes]) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(data.title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(data.title)}</h1>"]
    head, rows = _accuracy_rows(data)
    if rows:
        parts += ["<h2>Accuracy (%)</h2>", _html_table(head, rows, "accuracy")]
    for key, (title, caption) in FIGURES.items():
        if key in figs:
            b64 = base64.b64encode(figs[key]).decode("ascii")
            parts.append(f'<h2>{e(title)}</h2><figure id="fig-{key}"><img alt="{e(title)}" '
                         f'src="data:image/png;base64,{b64}"><figcaption>{e(caption)}</figcaption></figure>')
    if data.quantization:
        parts += ["<h2>(e) Quantization per layer</h2>", _html_table(*_quant_rows(data.quantization), "quantization"),
                  '<p class="note">σ: integer units per float unit of membrane potential; weights are m·2^k with '
                  "8-bit m; errors relative to the float weights·θ at that scale (netx_export.convert.fixedpoint).</p>"]
    if data.energy is not None:
        parts += ["<h2>(f) Operations and energy per sample</h2>", _html_table(*_energy_rows(data.energy), "energy"),
                  _html_table(*_energy_summary(data.energy), "energy-summary"), f'<p class="note">{e(ENERGY_NOTE)}</p>']
    if data.plans:
        parts += ["<h2>(g) Loihi 2 resource plan</h2>", _html_table(*_plan_rows(data.plans), "plan"),
                  f'<p class="note">{e(PLAN_NOTE)}</p>']
    if data.provenance:
        parts += ["<h2>Provenance</h2>",
                  _html_table(["item", "value"], [[str(k), str(v)] for k, v in data.provenance.items()], "provenance")]
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- Markdown
def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(c: str) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(c) for c in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _md(data: ReportData, files: Mapping[str, str]) -> str:
    parts = [f"# {data.title}", ""]
    head, rows = _accuracy_rows(data)
    if rows:
        parts += ["## Accuracy (%)", "", _md_table(head, rows), ""]
    for key, (title, caption) in FIGURES.items():
        if key in files:
            parts += [f"## {title}", "", f"![{title}]({files[key]})", "", f"*{caption}*", ""]
    if data.quantization:
        parts += ["## (e) Quantization per layer", "", _md_table(*_quant_rows(data.quantization)), ""]
    if data.energy is not None:
        parts += ["## (f) Operations and energy per sample", "", _md_table(*_energy_rows(data.energy)), "",
                  _md_table(*_energy_summary(data.energy)), "", ENERGY_NOTE, ""]
    if data.plans:
        parts += ["## (g) Loihi 2 resource plan", "", _md_table(*_plan_rows(data.plans)), "", PLAN_NOTE, ""]
    if data.provenance:
        parts += ["## Provenance", "", _md_table(["item", "value"], [[str(k), str(v)] for k, v in
                                                                     data.provenance.items()]), ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- entry point
def write_report(data: ReportData, out_dir: str, fmt: str = "html") -> str:
    """Write ``out_dir/report.html`` (self-contained) or ``out_dir/report.md`` plus ``report_<figure>.png``
    beside it; returns the report's path. Raises UserError for a bad format, folder or data."""
    _check(data, fmt, out_dir)
    figs = _render_figures(data)        # every figure first: a plotting error writes nothing
    os.makedirs(out_dir, exist_ok=True)
    if fmt == "html":
        path = os.path.join(out_dir, "report.html")
        atomic_write_text(path, _html(data, figs))
        return path
    files = {key: f"report_{key}.png" for key in figs}
    for key, png in figs.items():
        atomic_write_bytes(os.path.join(out_dir, files[key]), png)
    path = os.path.join(out_dir, "report.md")
    atomic_write_text(path, _md(data, files))
    return path
