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

__all__ = ["register", "cmd_simulate", "print_record"]

EPILOG_SIMULATE = """examples:
  qcfs2lava simulate model.net --backend reference --T 32
  qcfs2lava simulate vgg.net --backend reference --data-dir D --n 1000 --T 32 --json sim.json
  qcfs2lava simulate model.net --timing lava --T 40     # Lava's one-step delay per layer
  qcfs2lava simulate model.net --backend lava --n 100 --T 8 --json out.json --compare
  qcfs2lava simulate model.net --n 500 --T 16 --save-outputs out.npz --save-spikes spikes.npz
  qcfs2lava simulate model.net --backend lava --n 200 --T 8 --workers 2 --compare --json out.json
  qcfs2lava simulate model.net --n 1000 --shard 0/3 --json s0.json    # ... 1/3, 2/3; then qcfs2lava merge
"""

CONVS = ("fast", "lava")


def _conv_choice(value: str) -> str:
    """``--conv``'s value; the old ``stock`` (Lava's own model, not stock mode) means ``lava``."""
    if value == "stock":
        print("qcfs2lava: note: --conv stock is deprecated; use --conv lava", file=sys.stderr)
        return "lava"
    return value


class _Outputs:
    """Per-sample results for ``--save-outputs`` / ``--save-spikes``, gathered batch by batch as the
    arrays of :mod:`qcfs2lava.util.outputs` (the same files from both backends; sample indices count
    from ``offset``, a shard's first sample)."""

    def __init__(self, a: argparse.Namespace, names: list[str], offset: int = 0) -> None:
        import numpy as np
        self.outputs, self.spikes, self.names, self.offset = a.save_outputs, a.save_spikes, names, offset
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

    def arrays(self) -> tuple[dict | None, dict | None]:
        """(outputs, spikes) as arrays, each None if not asked for or if no sample finished."""
        import numpy as np

        from qcfs2lava.util.outputs import output_arrays, spike_arrays
        if not self.logits:
            return None, None
        out = spk = None
        if self.outputs:
            logits = np.concatenate(self.logits, axis=1)
            out = output_arrays(logits, np.concatenate(self.labels),
                                self.offset + np.arange(logits.shape[1], dtype=np.int64))
        if self.spikes:
            steps = [np.concatenate(c, axis=1) for c in zip(*self.steps)]
            neurons = [np.concatenate(c, axis=0) for c in zip(*self.neurons)] if self.per_neuron else None
            spk = spike_arrays(steps, neurons, self.names)
        return out, spk


def _write_outputs(a: argparse.Namespace, out: dict | None, spk: dict | None) -> None:
    from qcfs2lava.util.outputs import write_npz
    if (a.save_outputs or a.save_spikes) and out is None and spk is None:
        print("qcfs2lava: note: no sample finished; nothing saved", file=sys.stderr)
    if a.save_outputs and out is not None:
        write_npz(a.save_outputs, out)
        print(f"per-sample logits and predictions: {a.save_outputs}")
    if a.save_spikes and spk is not None:
        write_npz(a.save_spikes, spk)
        print(f"per-sample spike counts: {a.save_spikes}")


def cmd_simulate(a: argparse.Namespace) -> int:
    from netx_export.netx.inputs import load_test_inputs
    from netx_export.netx.validate import load_netx
    from qcfs2lava import distributed
    from qcfs2lava.cli import scale_out
    from qcfs2lava.util.fileio import check_outputs
    from qcfs2lava.util.shards import Shard

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
    ranks = distributed.world_size()
    if ranks > 1 and (a.shard or a.workers > 1):
        raise UserError("under torchrun every rank runs one shard already; drop --shard and --workers")
    if a.shard and a.workers > 1:
        raise UserError("--shard runs one shard in this process; drop --workers (or --shard)")
    net = load_netx(a.file)         # read and validated once; the Lava backend gets this network too
    xs, ys, dataset = load_test_inputs(net, a.file, a.dataset, a.data_dir, a.n)
    n_total = len(ys)
    if a.workers > 1:
        if a.workers > n_total:
            raise UserError(f"--workers {a.workers} for {n_total} samples: at most one worker per sample")
        rec, arrays, rc = scale_out.run_workers(a, _PARSER, n_total)
        return rc if rec is None else _finish(a, rec, *arrays, rc)
    shard = a.shard or (Shard(*distributed.init("gloo")) if ranks > 1 else None)
    start, stop = shard.span(n_total) if shard else (0, n_total)
    if stop == start:
        raise UserError(f"shard {shard} of {n_total} samples holds none; use fewer shards")
    run = _simulate_lava if a.backend == "lava" else _simulate_reference
    rec, out, spk, rc = run(a, net, xs[start:stop], ys[start:stop], dataset, start)
    rec["n_total"] = n_total
    if shard is not None:
        rec["shard"] = dict(index=shard.index, count=shard.count, start=start, stop=stop)
    if ranks > 1:
        parts = scale_out.gather(rec, out, spk)
        if parts is None:
            return rc                  # not rank 0: rank 0 reports for all
        rec, out, spk, rc = parts
    return _finish(a, rec, out, spk, rc)


def _finish(a: argparse.Namespace, rec: dict, out: dict | None, spk: dict | None, rc: int) -> int:
    print_record(rec)
    _write_outputs(a, out, spk)
    write_json(a.json, rec)
    return rc


def _simulate_reference(a: argparse.Namespace, net, xs, ys, dataset: str, offset: int):
    """The reference simulator on (xs, ys): (record, outputs, spikes, exit code)."""
    import numpy as np

    from netx_export.sim.refsim import evaluate
    n = len(ys)
    batches = [(xs[i:i + a.batch_size], ys[i:i + a.batch_size]) for i in range(0, n, a.batch_size)]
    t0 = time.perf_counter()
    names = [lay.name for lay in net.synaptic]
    outs = _Outputs(a, names, offset)
    on_batch = (lambda r, y: outs.add(r.logits, y, r.step_counts, r.neuron_counts)) if outs.wanted else None
    bar = Progress(n, "refsim", "img")
    ev = evaluate(net, batches, a.T, timing=a.timing, progress=bar.to,
                  on_batch=on_batch, count_neurons=outs.per_neuron, device=_ref_device(a))
    bar.close()
    dt = time.perf_counter() - t0
    rec = dict(file=a.file, backend=a.backend, engine=a.engine, device=a.device if a.engine == "torch" else None,
               timing=a.timing, dataset=dataset, n=ev.n, T=ev.T, accuracy=ev.accuracy, correct=ev.correct,
               final_accuracy=float(np.asarray(ev.accuracy)[-1]), firing_rates=dict(zip(names, ev.firing_rates)),
               spike_totals=ev.spike_totals, neurons=ev.neurons, saturated=ev.saturated,
               drive_clipped=ev.drive_clipped, drive_total=ev.drive_total,
               source_sha256=net.metadata.get("source_sha256"), seconds=dt)
    return (rec, *outs.arrays(), 0)


def _simulate_lava(a: argparse.Namespace, net, xs, ys, dataset: str, offset: int):
    """``qcfs2lava simulate FILE --backend lava [--compare]`` on (xs, ys): accuracy at every t, wall time
    per sample and per step; with ``--compare`` the reference simulator runs on the same inputs and
    every layer's spikes are compared (exit code 1 on any mismatch). Returns (record, outputs, spikes,
    exit code)."""
    import numpy as np

    from netx_export.convert.fixedpoint import input_drive
    from netx_export.lava_runtime.runner import run_lava
    from qcfs2lava.util.outputs import spike_summary

    n = len(ys)
    d = input_drive(net, xs)
    outs = _Outputs(a, [lay.name for lay in net.synaptic], offset)
    bar = Progress(n, "lava", "img")
    res = run_lava(a.file, T=a.T, drive=d.drive, timing=a.timing, tag=a.tag,
                   record_spikes=a.compare or bool(a.save_spikes), budget_s=a.time_budget, qnet=net,
                   progress=bar.to, conv=a.conv)
    bar.close()
    if outs.wanted and res.n:
        outs.add(res.logits, ys[:res.n], *(spike_summary(res.spikes) if a.save_spikes else (None, None)))
    correct = (res.predictions == ys[:res.n].reshape(1, -1)).sum(axis=1) if res.n else np.zeros(0, dtype=np.int64)
    acc = (correct / res.n).tolist() if res.n else []
    rec: dict[str, Any] = dict(file=a.file, dataset=dataset, source_sha256=net.metadata.get("source_sha256"),
                               accuracy=acc, correct=[int(c) for c in correct],
                               final_accuracy=acc[-1] if res.n else None,
                               drive_clipped=d.clipped, drive_total=d.total, conv=a.conv, **res.summary())
    rc = 0
    if a.compare:
        rec["compare"] = _compare_with_reference(a, net, d.drive, ys, res, offset)
        rec["spike_mismatches"] = rec["compare"]["spike_mismatches"]
        rc = 0 if rec["compare"]["bit_exact"] else 1
    return (rec, *outs.arrays(), rc)


def _ref_device(a: argparse.Namespace) -> str | None:
    """The reference simulator's array backend: None (numpy) or the torch device."""
    return None if a.engine == "numpy" else a.device


def _compare_with_reference(a: argparse.Namespace, net, drive, ys, res, offset: int) -> dict[str, Any]:
    """The reference simulator on the samples Lava finished, ``--batch-size`` at a time, each batch
    compared with :func:`netx_export.comparison.compare`; the JSON record (first mismatches in sample
    numbers from ``offset``)."""
    import numpy as np

    from netx_export.comparison import compare, merge
    from qcfs2lava.cli.scale_out import compare_record
    from netx_export.sim.refsim import simulate_drive

    t0 = time.perf_counter()
    parts = []
    ref_correct = np.zeros(a.T, dtype=np.int64)
    step = max(1, int(getattr(a, "batch_size", 250)))
    for i in range(0, res.n, step):
        j = min(res.n, i + step)
        ref = simulate_drive(net, drive[i:j], a.T, a.timing, record_spikes=True, device=_ref_device(a))
        parts.append(compare(res, ref, samples=slice(i, j)))
        ref_correct += (ref.predictions == ys[i:j].reshape(1, -1)).sum(1)
    for p in parts:
        for r in p["layers"]:
            if r["first_mismatch"] is not None:
                r["first_mismatch"][1] += offset
    return compare_record(merge(parts), [int(c) for c in ref_correct], res.n,
                          dict(reference="refsim", engine=a.engine, device=a.device, timing=a.timing,
                               seconds_reference=time.perf_counter() - t0))


def print_record(r: dict[str, Any]) -> None:
    """What ``simulate`` prints, from its JSON record (one run, one shard, or shards joined)."""
    sh = r.get("shard")
    part = f" (shard {sh['index']}/{sh['count']}: samples {sh['start']}..{sh['stop'] - 1})" if sh else ""
    if len(r.get("shards", ())) > 1:
        part = f" ({len(r['shards'])} shards joined)"
    if r["backend"] == "lava":
        print(f"{r['file']}: Lava CPU simulator (Loihi2SimCfg, {r['tag']}, {r['timing']} timing) on {r['dataset']}, "
              f"{r['n']} of {r['requested']} test images{part}")
        if r["n"]:
            print(accuracy_table(r["accuracy"]))
        print(f"build {r['seconds_build']:.2f} s, compile {r['seconds_compile']:.2f} s, run {r['seconds_run']:.2f} s: "
              f"{1000 * r['seconds_per_sample']:.1f} ms/sample, {1000 * r['seconds_per_step']:.2f} ms/step "
              f"({r['steps_per_second']:.1f} steps/s, {r['steps']} steps)")
        if r.get("stopped"):
            print(f"stopped: {r['stopped']}")
        c = r.get("compare")
        if c:
            print(f"compare with the reference ({c['timing']} timing): {c['spikes_compared']} spike entries "
                  f"(every layer, step and sample), {c['spike_mismatches']} mismatches; readout "
                  f"{c['logit_mismatches']} of {c['logits_compared']} logits differ; "
                  f"{'bit-exact' if c['bit_exact'] else 'NOT bit-exact'} ({c['seconds_reference']:.1f} s)")
        return
    dev = f" on {r['device']}" if r["engine"] == "torch" else ""
    print(f"{r['file']}: reference fixed-point simulation ({r['timing']} timing, {r['engine']}{dev}) on "
          f"{r['dataset']}, {r['n']} test images{part}")
    print(accuracy_table(r["accuracy"]))
    print("firing rates (spikes/neuron/step): " + ", ".join(f"{nm}={v:.4f}" for nm, v in r["firing_rates"].items()))
    print(f"v saturations: {r['saturated']}; input drive clipped: {r['drive_clipped']}/{r['drive_total']}; "
          f"{r['seconds']:.1f} s ({r['n'] * r['T'] / max(r['seconds'], 1e-9):.0f} sample-steps/s)")


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("simulate", help="accuracy at every t of an exported network",
                              epilog=EPILOG_SIMULATE, formatter_class=RAW)
    s.add_argument("file", help="NetX file written by `qcfs2lava export`")
    s.add_argument("--backend", default="reference", choices=["reference", "lava"],
                   help="reference: integer-exact numpy simulator; lava: Lava's CPU simulator (Loihi2SimCfg)")
    s.add_argument("--dataset", help="data set (default: the one stored in the file)")
    s.add_argument("--data-dir")
    s.add_argument("--n", "--samples", dest="n", type=integer(1),
                   help="only the first n test images (under torchrun write --samples: torchrun takes --n for its own)")
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
    s.add_argument("--shard", type=shard_arg, metavar="K/N",
                   help="only shard K of N (0 <= K < N): the samples [K*n//N, (K+1)*n//N); `qcfs2lava merge` joins "
                        "the shards' JSON and .npz files into what one run writes")
    s.add_argument("--workers", type=integer(1, 256), default=1, metavar="N",
                   help="run N shards in N processes on this machine and join them (one JSON, the same results as "
                        "one process); under torchrun each rank runs one shard and rank 0 writes")
    s.add_argument("--json")
    s.set_defaults(func=cmd_simulate)
    global _PARSER
    _PARSER = s


_PARSER: argparse.ArgumentParser | None = None      # the subcommand's parser (workers rebuild their command line)


def shard_arg(text: str):
    """``--shard``'s value K/N."""
    from qcfs2lava.util.shards import parse_shard
    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
