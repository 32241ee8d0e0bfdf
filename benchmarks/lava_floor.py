#!/usr/bin/env python
"""Where Lava's step time goes (issue 17): the study network's models against the runtime's floor.

    OMP_NUM_THREADS=1 python benchmarks/lava_floor.py --data-dir D --n 16 --T 8     # vgg-small, untrained
    OMP_NUM_THREADS=1 python benchmarks/lava_floor.py --net study.net --data-dir D   # your network

Every configuration is the same Lava build (``run_lava``: the NetX network, its ``IF_SUB`` neurons,
Conv/Dense synapses and one ``Recorder`` per layer and on the readout's v, the same ports, shapes
and messages, the first ``--n`` test images back to back), run with some process models replaced
through ``exception_proc_model_map`` by no-op models that receive their inputs and send zeros of
the same shape (:class:`_NoopNeuron`, :class:`_NoopConv`, :class:`_NoopDense`, :class:`_NoopRecorder`):

* **floor**: every model a no-op: what Lava's runtime costs per step for this graph (process
  scheduling, channels, the Loihi protocol's phases), with nothing computed;
* **floor + recorders**: only the recorders real (writing each step's spikes to the memmaps);
* **+ neurons** / **+ synapses**: recorders and one of the two real;
* **ours**: every model real, as ``simulate --backend lava`` runs it.

* **ours, Lava's LIF arithmetic**: ours with the IF_SUB model's update done by Lava's general LIF
  code (the model before its fast path for IF_SUB's decays, ``netx_export.lava.models``).

Time per step is ``seconds_run / steps`` (build and compile excluded), the best of ``--repeat``
runs taken round robin. Writes ``benchmarks/results/lava_floor.{json,png}`` (``--out``). Goal (issue 17): ours ≤ 1.5x
the floor, or an account of what remains.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results", "lava_floor")

import netx_export.lava  # noqa: E402,F401  (the Python 3.11 shim, before Lava)
from lava.proc.dense.models import PyDenseModelBitAcc  # noqa: E402
from lava.proc.lif.models import AbstractPyLifModelFixed  # noqa: E402

from netx_export.lava.conv_models import PyConvModelFast  # noqa: E402
from netx_export.lava.models import PyIfSubModelFixed, PyRecorderModel  # noqa: E402


class _NoopNeuron(PyIfSubModelFixed):
    """IF_SUB's ports and Vars, no dynamics: receives a_in, sends zero spikes and a zero v."""

    def run_spk(self):
        self.a_in.recv()
        z = np.zeros(self.v.shape, self.v.dtype)
        self.s_out.send(z)
        self.v_out.send(z)


class _LavaArithmeticNeuron(PyIfSubModelFixed):
    """IF_SUB with Lava's own ``subthr_dynamics`` for every decay (the model before its IF_SUB fast path)."""

    def subthr_dynamics(self, activation_in):
        return AbstractPyLifModelFixed.subthr_dynamics(self, activation_in)


class _NoopConv(PyConvModelFast):
    """Conv's ports, no arithmetic: sends a zero current, receives the spikes."""

    def run_spk(self):
        self.a_out.send(np.zeros_like(self.a_buf))
        self.s_in.recv()


class _NoopDense(PyDenseModelBitAcc):
    def run_spk(self):
        self.a_out.send(np.zeros_like(self.a_buff))
        self.s_in.recv()


class _NoopRecorder(PyRecorderModel):
    def run_spk(self):
        self.a_in.recv()


def neuron_update_ms(shapes: list[tuple[int, ...]], repeat: int = 5) -> dict[str, float]:
    """The IF_SUB model's ``subthr_dynamics`` alone (outside Lava), summed over the layers' shapes: its
    fast path against Lava's general LIF code, on the same random input (best of ``repeat``)."""
    import timeit
    rng = np.random.default_rng(0)
    out = {"ours": 0.0, "Lava's LIF arithmetic": 0.0}
    for shape in shapes:
        m = object.__new__(PyIfSubModelFixed)   # the model's state only; no Lava process behind it
        m.ds_offset, m.dm_offset, m.max_uv_val, m.decay_shift, m.decay_unity, m.act_shift = 1, 0, 1 << 23, 12, 4096, 6
        m.du, m.dv = 4095, 0
        m.u, m.v = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
        m.effective_bias = np.full(shape, 64, np.int32)
        a_in = rng.integers(-300, 300, shape).astype(np.int32)
        for name, fn in (("ours", PyIfSubModelFixed.subthr_dynamics),
                         ("Lava's LIF arithmetic", AbstractPyLifModelFixed.subthr_dynamics)):
            fn(m, a_in)
            out[name] += 1000 * min(timeit.repeat(lambda: fn(m, a_in), number=20, repeat=repeat)) / 20
    return out


CONFIGS = {     # name -> which real models are replaced by no-ops
    "floor": ("neurons", "synapses", "recorders"),
    "floor + recorders": ("neurons", "synapses"),
    "+ neurons": ("synapses",),
    "+ synapses": ("neurons",),
    "ours": (),
    "ours, Lava's LIF arithmetic": ("lava-lif",),
}


def _run_cfg(noop: tuple[str, ...]):
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense

    from netx_export.lava import IF_SUB, Recorder
    m = {Conv: PyConvModelFast}
    if "neurons" in noop:
        m[IF_SUB] = _NoopNeuron
    if "lava-lif" in noop:
        m[IF_SUB] = _LavaArithmeticNeuron
    if "synapses" in noop:
        m.update({Conv: _NoopConv, Dense: _NoopDense})
    if "recorders" in noop:
        m[Recorder] = _NoopRecorder
    return Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=m)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", help="a NetX file (default: vgg-small untrained, λ = 1, for CIFAR-10)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=OUT)
    a = p.parse_args()
    from netx_export.convert.fixedpoint import input_drive
    from netx_export.lava_runtime.runner import run_lava
    from netx_export.netx.read import read_netx
    from netx_export.netx.inputs import load_test_inputs
    from qcfs2lava.util.fileio import atomic_write_json, atomic_write_png
    from untrained import export_untrained

    net_path = a.net or os.path.join(tempfile.mkdtemp(prefix="lava-floor-"), "vgg_small.net")
    if not a.net:
        export_untrained("vgg-small", net_path)
    qnet = read_netx(net_path)
    xs, _, dataset = load_test_inputs(qnet, net_path, None, a.data_dir, a.n)
    drive = input_drive(qnet, xs).drive
    rows: dict[str, dict] = {}
    for rep in range(a.repeat):             # round robin, so that a change of machine load hits every config
        for name, noop in CONFIGS.items():
            r = run_lava(net_path, T=a.T, drive=drive, timing="lava", run_cfg=_run_cfg(noop))
            ms = 1000 * r.seconds_per_step
            row = rows.setdefault(name, dict(noop=list(noop), ms_per_step_runs=[]))
            row["ms_per_step_runs"].append(ms)
            if ms <= min(row["ms_per_step_runs"]):
                row.update(ms_per_step=ms, steps=r.steps, seconds_run=r.seconds_run, seconds_build=r.seconds_build,
                           seconds_compile=r.seconds_compile)
            print(f"run {rep + 1}/{a.repeat}  {name:<30} {ms:8.2f} ms/step", flush=True)
    update = neuron_update_ms([tuple(lay.shape) for lay in qnet.synaptic])
    lava_lif = update["Lava's LIF arithmetic"]
    print(f"neuron update alone, all layers: ours {update['ours']:.2f} ms, Lava's LIF code {lava_lif:.2f} ms "
          "per step", flush=True)
    floor = rows["floor"]["ms_per_step"]
    ours = rows["ours"]["ms_per_step"]
    syn = qnet.synaptic
    result = dict(command="python benchmarks/lava_floor.py " + " ".join(sys.argv[1:]),
                  machine=dict(platform=platform.platform(), cpus=os.cpu_count(),
                               omp_num_threads=os.environ.get("OMP_NUM_THREADS"), load_avg=os.getloadavg()),
                  date=time.strftime("%Y-%m-%d %H:%M"), network=a.net or "vgg-small, untrained, λ = 1",
                  images=f"test images 0..{a.n - 1} of {dataset} (JPEG-recompressed CIFAR-10 here)",
                  n=a.n, T=a.T, timing="lava", synaptic_layers=len(syn),
                  neurons=int(sum(np.prod(lay.shape) for lay in syn)), configs=rows,
                  neuron_update_alone_ms_per_step=update,
                  ours_over_floor=ours / floor,
                  share_of_ours=dict(runtime_floor=floor / ours,
                                     recorders=(rows["floor + recorders"]["ms_per_step"] - floor) / ours,
                                     neurons=(rows["+ neurons"]["ms_per_step"] - rows["floor + recorders"]["ms_per_step"])
                                     / ours,
                                     synapses=(rows["+ synapses"]["ms_per_step"] -
                                               rows["floor + recorders"]["ms_per_step"]) / ours))
    atomic_write_json(a.out + ".json", result)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3))
    names = list(rows)
    ax.barh(names, [rows[k]["ms_per_step"] for k in names], color=["#888", "#aaa", "#47c", "#c74", "#4a7", "#9c9"])
    for i, k in enumerate(names):
        ax.text(rows[k]["ms_per_step"], i, f" {rows[k]['ms_per_step']:.1f} ms ({rows[k]['ms_per_step'] / floor:.2f}x)",
                va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.35 * max(r["ms_per_step"] for r in rows.values()))
    ax.set_xlabel("ms per Lava step (lower is better)")
    ax.set_title(f"Lava fixed_pt per-step time, {result['network']}, {len(syn)} layers, {os.cpu_count()} cores",
                 fontsize=9)
    fig.tight_layout()
    atomic_write_png(a.out + ".png", fig)
    print(f"ours / floor = {ours / floor:.2f}; wrote {a.out}.json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
