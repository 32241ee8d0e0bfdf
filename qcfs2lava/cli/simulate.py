"""``qcfs2lava simulate``: accuracy at every t of a NetX file, on the reference simulator or on Lava."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from netx_export.timing import DEFAULT_TIMING, TIMINGS
from qcfs2lava.cli.common import MAX_STEPS, RAW, integer, number, write_json
from qcfs2lava.util.errors import UserError
from qcfs2lava.util.progress import Progress
from qcfs2lava.util.tables import accuracy_table

__all__ = ["register", "cmd_simulate"]

EPILOG_SIMULATE = """examples:
  qcfs2lava simulate model.net --backend reference --T 32
  qcfs2lava simulate vgg.net --backend reference --data-dir D --n 1000 --T 32 --json sim.json
  qcfs2lava simulate model.net --timing lava --T 40     # Lava's one-step delay per layer
  qcfs2lava simulate model.net --backend lava --n 100 --T 8 --json out.json --compare
  qcfs2lava simulate model.net --n 500 --T 16 --save-outputs out.npz --save-spikes spikes.npz
"""

CONVS = ("fast", "lava")


def _conv_choice(value: str) -> str:
    """``--conv``'s value; the old ``stock`` (Lava's own model, not stock mode) means ``lava``."""
    if value == "stock":
        print("qcfs2lava: note: --conv stock is deprecated; use --conv lava", file=sys.stderr)
        return "lava"
    return value


class _Outputs:
    """Per-sample results for ``--save-outputs`` / ``--save-spikes``, gathered batch by batch and
    written with :mod:`qcfs2lava.util.outputs` (the same files from both backends)."""

    def __init__(self, a: argparse.Namespace, names: list[str]) -> None:
        import numpy as np
        self.outputs, self.spikes, self.names = a.save_outputs, a.save_spikes, names
        self.per_neuron = bool(a.save_spikes and a.neuron_spikes)
        # per-neuron counts are kept in the smallest type that holds T (10,000 CIFAR images of a VGG
        # hold ~10^9 counts: bytes, not int64)
        self.count_type = np.uint8 if a.T < 1 << 8 else np.uint16 if a.T < 1 << 16 else np.uint32
        self.logits: list = []
        self.labels: list = []
        self.steps: list[list] = []
        self.neurons: list[list] = []

    @property
    def wanted(self) -> bool:
        return bool(self.outputs or self.spikes)

    def add(self, logits, labels, step_counts=None, neuron_counts=None) -> None:
        self.logits.append(logits)
        self.labels.append(labels)
        if self.spikes:
            self.steps.append(list(step_counts))
        if self.per_neuron:
            self.neurons.append([c.astype(self.count_type) for c in neuron_counts])

    def write(self) -> None:
        import numpy as np

        from qcfs2lava.util.outputs import save_outputs, save_spikes
        if not self.logits:
            if self.wanted:
                print("qcfs2lava: note: no sample finished; nothing saved", file=sys.stderr)
            return
        if self.outputs:
            save_outputs(self.outputs, np.concatenate(self.logits, axis=1), np.concatenate(self.labels))
            print(f"per-sample logits and predictions: {self.outputs}")
        if self.spikes:
            steps = [np.concatenate(c, axis=1) for c in zip(*self.steps)]
            neurons = [np.concatenate(c, axis=0) for c in zip(*self.neurons)] if self.per_neuron else None
            save_spikes(self.spikes, steps, neurons, self.names)
            print(f"per-sample spike counts: {self.spikes}")


def cmd_simulate(a: argparse.Namespace) -> int:
    import numpy as np

    from netx_export.netx.validate import load_netx
    from netx_export.netx.inputs import load_test_inputs
    from netx_export.sim.refsim import evaluate
    from qcfs2lava.util.fileio import check_outputs

    check_outputs([("--json", a.json), ("--save-outputs", a.save_outputs), ("--save-spikes", a.save_spikes)],
                  [a.file])
    if a.backend not in ("reference", "lava"):
        raise UserError(f"unknown backend '{a.backend}'; use --backend reference or lava")
    if a.engine == "torch" and a.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UserError("--device cuda: torch sees no CUDA device here; use --device cpu")
    if a.neuron_spikes and not a.save_spikes:
        raise UserError("--neuron-spikes adds per-neuron counts to --save-spikes FILE; give that file too")
    if a.compare and a.backend != "lava":
        raise UserError("--compare checks the Lava backend against the reference; use it with --backend lava")
    net = load_netx(a.file)         # read and validated once; the Lava backend gets this network too
    xs, ys, dataset = load_test_inputs(net, a.file, a.dataset, a.data_dir, a.n)
    n = len(ys)
    if a.backend == "lava":
        return _simulate_lava(a, net, xs, ys, dataset)
    batches = [(xs[i:i + a.batch_size], ys[i:i + a.batch_size]) for i in range(0, n, a.batch_size)]
    t0 = time.perf_counter()

    names = [lay.name for lay in net.synaptic]
    outs = _Outputs(a, names)
    on_batch = (lambda r, y: outs.add(r.logits, y, r.step_counts, r.neuron_counts)) if outs.wanted else None
    bar = Progress(n, "refsim", "img")
    ev = evaluate(net, batches, a.T, timing=a.timing, progress=lambda done: bar.update(done - bar.n),
                  on_batch=on_batch, count_neurons=outs.per_neuron, device=_ref_device(a))
    bar.close()
    dt = time.perf_counter() - t0
    print(f"{a.file}: reference fixed-point simulation ({a.timing} timing, {a.engine}"
          f"{' on ' + a.device if a.engine == 'torch' else ''}) on {dataset}, {ev.n} test images")
    print(accuracy_table(ev.accuracy))
    print("firing rates (spikes/neuron/step): " + ", ".join(f"{nm}={r:.4f}" for nm, r in zip(names, ev.firing_rates)))
    print(f"v saturations: {ev.saturated}; input drive clipped: {ev.drive_clipped}/{ev.drive_total}; "
          f"{dt:.1f} s ({ev.n * a.T / max(dt, 1e-9):.0f} sample-steps/s)")
    outs.write()
    write_json(a.json, dict(file=a.file, backend=a.backend, engine=a.engine, device=a.device if a.engine == "torch"
                            else None, timing=a.timing, dataset=dataset, n=ev.n, T=ev.T,
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
    from netx_export.convert.fixedpoint import input_drive
    from netx_export.lava_runtime.runner import run_lava
    from qcfs2lava.util.outputs import spike_summary

    n = len(ys)
    d = input_drive(net, xs)
    outs = _Outputs(a, [lay.name for lay in net.synaptic])
    bar = Progress(n, "lava", "img")
    res = run_lava(a.file, T=a.T, drive=d.drive, timing=a.timing, tag=a.tag,
                   record_spikes=a.compare or bool(a.save_spikes), budget_s=a.time_budget, qnet=net,
                   progress=lambda done: bar.update(done - bar.n), conv=a.conv)
    bar.close()
    if outs.wanted and res.n:
        outs.add(res.logits, ys[:res.n], *(spike_summary(res.spikes) if a.save_spikes else (None, None)))
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
    outs.write()
    out: dict[str, Any] = dict(file=a.file, dataset=dataset, source_sha256=net.metadata.get("source_sha256"),
                               accuracy=acc.tolist() if res.n else [],
                               final_accuracy=float(acc[-1]) if res.n else None,
                               drive_clipped=d.clipped, drive_total=d.total, conv=a.conv, **res.summary())
    rc = 0
    if a.compare:
        out["compare"] = _compare_with_reference(a, net, d.drive, ys, res)
        out["spike_mismatches"] = out["compare"]["spike_mismatches"]
        rc = 0 if out["compare"]["bit_exact"] else 1
    write_json(a.json, out)
    return rc


def _ref_device(a: argparse.Namespace) -> str | None:
    """The reference simulator's array backend: None (numpy) or the torch device."""
    return None if a.engine == "numpy" else a.device


def _compare_with_reference(a: argparse.Namespace, net, drive, ys, res) -> dict[str, Any]:
    """The reference simulator on the samples Lava finished, ``--batch-size`` at a time, each batch
    compared with :func:`netx_export.comparison.compare`; prints one line, returns the JSON record."""
    import numpy as np

    from netx_export.comparison import compare, merge
    from netx_export.sim.refsim import simulate_drive

    t0 = time.perf_counter()
    parts = []
    ref_correct = np.zeros(a.T)
    step = max(1, int(getattr(a, "batch_size", 250)))
    for i in range(0, res.n, step):
        j = min(res.n, i + step)
        ref = simulate_drive(net, drive[i:j], a.T, a.timing, record_spikes=True, device=_ref_device(a))
        parts.append(compare(res, ref, samples=slice(i, j)))
        ref_correct += (ref.predictions == ys[i:j].reshape(1, -1)).sum(1)
    dt = time.perf_counter() - t0
    c = merge(parts)
    tot = {k: c[k] for k in ("spikes_compared", "spike_mismatches", "logits_compared", "logit_mismatches",
                             "prediction_mismatches")}
    ok = tot["spike_mismatches"] == 0 and tot["logit_mismatches"] == 0
    print(f"compare with the reference ({a.timing} timing): {tot['spikes_compared']} spike entries "
          f"(every layer, step and sample), {tot['spike_mismatches']} mismatches; readout "
          f"{tot['logit_mismatches']} of {tot['logits_compared']} logits differ; "
          f"{'bit-exact' if ok else 'NOT bit-exact'} ({dt:.1f} s)")
    layers = [dict(layer=r["layer"], compared=r["compared"], mismatches=r["mismatches"],
                   first_mismatch=r["first_mismatch"]) for r in c["layers"]]
    return dict(reference="refsim", engine=a.engine, device=a.device, timing=a.timing, layers=layers, seconds_reference=dt,
                reference_accuracy=(ref_correct / max(1, res.n)).tolist(), bit_exact=ok, **tot)


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("simulate", help="accuracy at every t of an exported network",
                              epilog=EPILOG_SIMULATE, formatter_class=RAW)
    s.add_argument("file", help="NetX file written by `qcfs2lava export`")
    s.add_argument("--backend", default="reference", choices=["reference", "lava"],
                   help="reference: integer-exact numpy simulator; lava: Lava's CPU simulator (Loihi2SimCfg)")
    s.add_argument("--dataset", help="data set (default: the one stored in the file)")
    s.add_argument("--data-dir")
    s.add_argument("--n", type=integer(1), help="only the first n test images")
    s.add_argument("--T", type=integer(1, MAX_STEPS), default=32)
    s.add_argument("--timing", default=DEFAULT_TIMING, choices=list(TIMINGS),
                   help="aligned: no synaptic delay (accuracy studies); lava: one step per layer, as on Loihi")
    s.add_argument("--batch-size", type=integer(1), default=250)
    s.add_argument("--engine", default="torch", choices=["torch", "numpy"],
                   help="reference (and --compare's reference): torch (PyTorch convolutions on exact integers, the "
                        "default) or numpy (the slow second implementation); the same integers")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="torch engine: where it computes (default cpu)")
    s.add_argument("--compare", action="store_true",
                   help="lava: also run the reference on the same inputs and count spike mismatches "
                        "(every layer, step, sample); exit 1 if any")
    s.add_argument("--tag", default="fixed_pt", choices=["fixed_pt", "floating_pt"],
                   help="lava: ProcessModel tag (default fixed_pt, bit-accurate)")
    s.add_argument("--conv", default="fast", choices=CONVS, type=_conv_choice,
                   help="lava fixed_pt: conv synapse model, fast (im2col, bit-exact with Lava's) or lava, Lava's own "
                        "(one scipy convolve2d per channel pair; much slower); the old name 'stock' still works")
    s.add_argument("--time-budget", type=number(above=0.0), metavar="S",
                   help="lava: stop cleanly after about S seconds and report the samples finished")
    s.add_argument("--save-outputs", metavar="FILE.npz",
                   help="per-sample results: logits (T, N, K) and predictions (T, N) at every t, labels (N,), "
                        "sample indices (N,)")
    s.add_argument("--save-spikes", metavar="FILE.npz",
                   help="per synaptic layer i: layer{i} (T, N), spikes per sample and step summed over the "
                        "layer's neurons")
    s.add_argument("--neuron-spikes", action="store_true",
                   help="with --save-spikes, also layer{i}_neurons (N, C, H, W): each neuron's spikes over all "
                        "steps per sample (1-4 bytes per neuron and sample: large for a full test set)")
    s.add_argument("--json")
    s.set_defaults(func=cmd_simulate)
