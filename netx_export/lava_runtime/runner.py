"""Run qcfs2lava NetX files on Lava's CPU simulator, many samples in one Lava run, and cross-check
them spike for spike against the integer reference simulator (:mod:`netx_export.sim.refsim`, with
:func:`netx_export.comparison.compare`, which this module does not import).

How a run is built (:func:`build_network`):

* The file is loaded by lava-dl's own ``lava.lib.dl.netx.hdf5.Network`` with ``IF_SUB`` registered
  (:mod:`netx_export.lava_runtime.netx_registration`) and ``reset_interval = T``: every neuron resets (u = 0, v = v(0))
  once per sample.
* Residual shortcuts (format version 2), which NetX ignores, are added beside its chain by
  :mod:`netx_export.lava_runtime.shortcuts` (fan-in into the layer's neurons, relay neurons for their delay).
* Input: each sample's host-computed drive (:func:`netx_export.convert.fixedpoint.input_drive`, the same
  integers refsim uses) is layer 0's ``bias_mant`` (Lava order W, H, C). All drives are handed to
  layer 0's neuron as a bias schedule; the neuron loads row k at its k-th reset, so all samples
  run back to back in one compiled network and one ``run`` (split in chunks only to check the time
  budget), with no ``Var.set`` round trips.
* Output: a :class:`netx_export.lava.Recorder` sink on every layer's spikes and on the readout's
  ``v_out``; each writes straight into an ``.npy`` memmap (Lava's ``Var.get`` streams one element
  per message, far too slow for n·T·neurons values).

Two schedules (:mod:`netx_export.timing`), each bit-comparable to one refsim timing:

``timing="aligned"`` (default; pipelined): NetX's staggered resets, layer l resets at t ≡ l + 1
    (mod T), so layer l processes sample k exactly one step after layer l − 1 does: every layer sees
    the previous layer's spikes of the same sample step, which is refsim's ``timing="aligned"`` (the
    float SNN's timing, no latency loss). n·T + L − 1 steps.
``timing="lava"``: all layers reset together at t ≡ 1 (mod T) and discard the synaptic
    input that arrives in the reset step (it is the previous sample's last spikes). Each sample then
    sees exactly what a freshly built Lava network sees — layer l's input lags one step per synapse
    — which is refsim's ``timing="lava"``. n·T steps.

Logits per sample and step: ``vThMant·(readout spikes so far) + (v >> 6) − vInit`` (refsim's
readout), so predictions at every t = 1..T come out for both backends alike.

Shutdown (:mod:`netx_export.lava_runtime.session`): always (``finally``), including after Ctrl-C, SIGTERM or
an error, and at any moment, start-up included; bounded in time, it leaves no model process, shared
memory or temporary folder. Ctrl-C / SIGTERM while a chunk runs stop the run after that chunk (a
second one at once) and surface as KeyboardInterrupt / ``Terminated``. A run that exceeds its time
budget stops after the current chunk, reports what it finished, and says so.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from netx_export.convert.fixedpoint import STATE_SHIFT, QNetwork, input_drive
from netx_export.lava_runtime.layout import lava_conv_weight, whc
from netx_export.lava_runtime.session import Interrupts, shutdown, start_runtime
from netx_export.timing import DEFAULT_TIMING, TIMINGS, check_timing

__all__ = ["TAGS", "TIMINGS", "CONVS", "conv_model", "LavaResult", "LavaNetwork", "build_network", "run_lava",
           "float_model_map", "float_snn_params", "float_drive"]

TAGS = ("fixed_pt", "floating_pt")
CONVS = ("fast", "lava")      # fixed_pt Conv model: netx_export.lava.conv_models (bit-exact, im2col) or Lava's own
_CONV_ALIASES = {"stock": "lava"}    # the old name of "lava" (Lava's own scipy model), still accepted


def conv_model(conv: str) -> str:
    """``conv`` as one of :data:`CONVS` (``"stock"`` is the old spelling of ``"lava"``), else ValueError."""
    conv = _CONV_ALIASES.get(conv, conv)
    if conv not in CONVS:
        raise ValueError(f"conv must be one of {CONVS}, got {conv!r}")
    return conv


@dataclass(eq=False)
class LavaResult:
    """What a Lava run produced, laid out like :class:`netx_export.sim.refsim.SimResult`."""
    logits: np.ndarray                      # (T, n, K): int64 (fixed_pt) / float64 (floating_pt)
    spikes: tuple[np.ndarray, ...] | None   # per synaptic layer: bool (T, n, C, H, W)
    spike_counts: tuple[np.ndarray | None, ...]   # per synaptic layer: (n,) spikes over T steps (None: not recorded)
    n: int                                  # samples completed (< requested if the budget ran out)
    requested: int
    T: int
    timing: str
    tag: str
    steps: int                              # Lava time steps executed
    seconds_build: float                    # NetX Network + recorders (host)
    seconds_compile: float                  # Lava compile + runtime start
    seconds_run: float                      # all run chunks (the simulation itself)
    seconds_total: float
    stopped: str | None = None              # why the run ended early (time budget), else None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=2)

    def accuracy(self, labels: np.ndarray) -> np.ndarray:
        """(T,) fraction correct at every t over the completed samples."""
        y = np.asarray(labels).reshape(-1)[: self.n]
        return (self.predictions == y.reshape(1, -1)).mean(axis=1) if self.n else np.full(self.T, np.nan)

    @property
    def seconds_per_sample(self) -> float:
        return self.seconds_run / max(1, self.n)

    @property
    def seconds_per_step(self) -> float:
        return self.seconds_run / max(1, self.steps)

    def summary(self) -> dict[str, Any]:
        return dict(backend="lava", tag=self.tag, timing=self.timing, n=self.n, requested=self.requested, T=self.T,
                    steps=self.steps, seconds_build=self.seconds_build, seconds_compile=self.seconds_compile,
                    seconds_run=self.seconds_run,
                    seconds_total=self.seconds_total, seconds_per_sample=self.seconds_per_sample,
                    seconds_per_step=self.seconds_per_step, steps_per_second=self.steps / max(self.seconds_run, 1e-9),
                    stopped=self.stopped)


# --------------------------------------------------------------------------- building
def float_model_map() -> dict:
    """``exception_proc_model_map`` for ``floating_pt``: NetX's block SubProcessModels carry only the
    ``fixed_pt`` tag (lava-dl's netx/blocks/models.py); mapping them lets the float leaf models be selected."""
    from netx_export.lava_runtime.netx_registration import import_netx
    netx = import_netx()
    bm, bp = netx.blocks.models, netx.blocks.process
    Network, PyNetworkModel = netx.hdf5.Network, netx.hdf5.PyNetworkModel
    return {Network: PyNetworkModel, bp.Conv: bm.PyConvModel, bp.Dense: bm.PyDenseModel,
            bp.Input: bm.PyInputModel}


@dataclass(eq=False)
class LavaNetwork:
    """A built (not yet compiled) NetX network with its recorders."""
    net: Any                                # lava.lib.dl.netx.hdf5.Network
    qnet: QNetwork
    T: int
    n: int
    timing: str
    tag: str
    total_steps: int
    workdir: str
    spike_files: list[str | None]           # per synaptic layer (None: not recorded)
    v_file: str
    offsets: list[int]                      # per synaptic layer: its sample k starts at global step k·T + offset + 1
    recorders: list[Any]
    conv: str = "fast"                      # fixed_pt conv synapses: "fast" (PyConvModelFast) or "lava" (Lava's)

    def run_config(self):
        from lava.magma.core.run_configs import Loihi2SimCfg
        if self.tag == "fixed_pt":
            if conv_model(self.conv) == "lava":
                return Loihi2SimCfg(select_tag="fixed_pt")
            from lava.proc.conv.process import Conv

            from netx_export.lava.conv_models import PyConvModelFast
            return Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map={Conv: PyConvModelFast})
        return Loihi2SimCfg(select_tag="floating_pt", exception_proc_model_map=float_model_map())


def _cross(boundary: Any, port: Any, bits: int) -> Any:
    """``port`` itself on the CPU simulator; on Loihi 2, the output of the adapter that carries it from
    the chip to a host process (``boundary.from_chip(port, shape, bits)``, hardware_runs/run_on_loihi.py)."""
    return port if boundary is None else boundary.from_chip(port, tuple(port.shape), bits)


def _check(timing: str, tag: str, T: int, conv: str, float_params: dict | None) -> str:
    """Validate the run's options; returns ``conv`` normalised (:func:`conv_model`)."""
    conv = conv_model(conv)
    check_timing(timing)
    if tag not in TAGS:
        raise ValueError(f"tag must be one of {TAGS}, got {tag!r}")
    if T < 1:
        raise ValueError("T must be >= 1")
    if float_params and tag != "floating_pt":
        raise ValueError("float_params need tag='floating_pt'")
    return conv


def _load(path: str, qnet: QNetwork, T: int, timing: str, tag: str) -> tuple[Any, list[int]]:
    """The file through NetX (``IF_SUB`` registered), every neuron's per-sample reset scheduled for
    ``timing``, shortcuts wired. Returns the network and per layer its reset offset."""
    from netx_export.lava import IF_SUB
    from netx_export.lava_runtime import netx_registration as lava_netx
    lava_netx.register()
    hdf5 = lava_netx.import_netx().hdf5
    syn = qnet.synaptic
    c, h, w = qnet.input_shape
    net = hdf5.Network(net_config=path, input_shape=(w, h, c), reset_interval=T)
    if len(net.layers) != len(syn):
        raise ValueError(f"NetX built {len(net.layers)} blocks, the file has {len(syn)} synaptic layers")
    L = len(syn)
    offsets = [0] * L if timing == "lava" else list(range(L))
    for i, blk in enumerate(net.layers):
        neu = blk.neuron
        if not isinstance(neu, IF_SUB):
            raise ValueError(f"layer {i}: neuron {type(neu).__name__} is not IF_SUB (file not written by qcfs2lava?)")
        neu.reset_offset.init = (offsets[i] + 1) % T
        neu.flush.init = int(timing == "lava")
    if any(lay.skips for lay in qnet.layers):
        if tag != "fixed_pt":
            raise ValueError("residual networks (shortcuts) run in Lava with tag='fixed_pt' only")
        from netx_export.lava_runtime.shortcuts import wire_shortcuts
        wire_shortcuts(list(net.layers), qnet, T, offsets, flush=timing == "lava")
    return net, offsets


def _set_drive(first: Any, drive: np.ndarray, lay, tag: str) -> None:
    """Every sample's layer-0 ``drive`` as the first neuron's bias schedule (row k at its k-th reset)."""
    n = int(drive.shape[0])
    sched = whc(drive.reshape((n,) + tuple(lay.shape))) if lay.kind == "conv" else drive.reshape(n, -1)
    if tag == "fixed_pt":
        if np.any(sched != np.rint(sched)):
            raise ValueError("fixed_pt needs an integer drive")
        first.set_bias_schedule(sched.astype(np.int64))
    else:
        first.bias_schedule.shape = tuple(sched.shape)
        first.bias_schedule.init = sched.astype(np.float64)


def _set_float(net: Any, syn: list, float_params: dict | None) -> None:
    """floating_pt: the float Dense ignores weight_exp, which NetX's optimize_weight_bits sets, so the
    file's weights are restored; ``float_params`` optionally swap in real-valued weights,
    biases, thresholds and v(0) (:func:`float_snn_params`)."""
    from netx_export.lava_runtime import netx_registration as lava_netx
    bp = lava_netx.import_netx().blocks.process
    fp = float_params or {}
    fw, fb = fp.get("weights"), fp.get("bias")
    for i, (blk, lay) in enumerate(zip(net.layers, syn)):
        wgt = np.asarray(fw[i], dtype=np.float64) if fw is not None else lay.weight.astype(np.float64)
        if isinstance(blk, bp.Dense):
            blk.synapse.weights.init = wgt.reshape(wgt.shape[0], -1)
        elif fw is not None:
            blk.synapse.weight.init = lava_conv_weight(wgt, dtype=None)
        if "vth" in fp:
            th = float(fp["vth"][i])
            v0 = np.full(blk.neuron.shape, float(1 << STATE_SHIFT) * float(fp["v_init"][i]))
            blk.neuron.vth.init = th
            blk.neuron.v_init.init = v0
            blk.neuron.v.init = v0.copy()
        if fb is not None and i > 0:
            b = np.asarray(fb[i], dtype=np.float64)
            full = np.broadcast_to(b.reshape((-1,) + (1,) * (len(lay.shape) - 1)), lay.shape)
            blk.neuron.bias_mant.init = whc(full).reshape(blk.neuron.shape).copy() \
                if lay.kind == "conv" else full.reshape(-1).copy()


def _add_recorders(net: Any, wd: str, total: int, record_spikes: bool, tag: str, boundary: Any
                   ) -> tuple[list[str | None], str, list[Any]]:
    """Recorders on every layer's spikes (only the readout's unless ``record_spikes``) and on the
    readout's ``v_out``, each writing an ``.npy`` in ``wd``: (spike files, v file, recorders)."""
    from netx_export.lava import Recorder
    L = len(net.layers)
    recorders: list[Any] = []
    files: list[str | None] = []
    for i, blk in enumerate(net.layers):
        if record_spikes or i == L - 1:
            f = os.path.join(wd, f"spikes{i}.npy")
            r = Recorder(shape=blk.neuron.s_out.shape, path=f, steps=total, dtype="int8")
            _cross(boundary, blk.neuron.s_out, 0).connect(r.a_in)
            recorders.append(r)
            files.append(f)
        else:
            files.append(None)
    v_file = os.path.join(wd, "v_readout.npy")
    r = Recorder(shape=net.layers[-1].neuron.v_out.shape, path=v_file, steps=total,
                 dtype="int32" if tag == "fixed_pt" else "float64")
    _cross(boundary, net.layers[-1].neuron.v_out, 24).connect(r.a_in)
    recorders.append(r)
    return files, v_file, recorders


def build_network(path: str, drive: np.ndarray, T: int, timing: str = DEFAULT_TIMING, tag: str = "fixed_pt",
                  record_spikes: bool = True, workdir: str | None = None, qnet: QNetwork | None = None,
                  float_params: dict | None = None, conv: str = "fast", boundary: Any = None) -> LavaNetwork:
    """Load ``path`` through NetX and wire the per-sample input schedule and the recorders.

    ``drive``: (n, C0, H0, W0) layer-0 per-step bias per sample (integers for ``fixed_pt``; real values
    are allowed for ``floating_pt``). ``float_params`` (floating_pt only): real-valued replacements
    per synaptic layer, ``{'weights', 'bias', 'vth', 'v_init'}`` in weight units and refsim layouts
    (see :func:`float_snn_params`), to run the float SNN itself in Lava. ``workdir`` receives the
    recorder files (a new temporary folder if None; the caller removes it). ``conv``: the fixed_pt Conv
    ProcessModel, ``"fast"`` (:mod:`netx_export.lava.conv_models`, bit-exact) or ``"lava"``, Lava's own
    (``"stock"``, its old name, is accepted too)."""
    conv = _check(timing, tag, T, conv, float_params)
    if qnet is None:
        from netx_export.netx.validate import load_netx
        qnet = load_netx(path)
    syn = qnet.synaptic
    drive = np.asarray(drive)
    n = int(drive.shape[0])
    if n < 1:
        raise ValueError("no samples")
    if tuple(drive.shape[1:]) != tuple(syn[0].shape):
        raise ValueError(f"drive shape {drive.shape[1:]} != layer 0 shape {syn[0].shape}")
    net, offsets = _load(path, qnet, T, timing, tag)
    L = len(syn)
    total = n * T + (L - 1 if timing == "aligned" else 0)
    _set_drive(net.layers[0].neuron, drive, syn[0], tag)
    if tag == "floating_pt":
        _set_float(net, syn, float_params)
    own = workdir is None
    wd = tempfile.mkdtemp(prefix="qcfs2lava-lava-") if own else workdir
    os.makedirs(wd, exist_ok=True)
    files, v_file, recorders = _add_recorders(net, wd, total, record_spikes, tag, boundary)
    return LavaNetwork(net, qnet, T, n, timing, tag, total, wd, files, v_file, offsets, recorders, conv)


# --------------------------------------------------------------------------- running
def _extract(ln: LavaNetwork, steps_done: int, record_spikes: bool) -> tuple:
    L, T = len(ln.qnet.synaptic), ln.T
    syn = ln.qnet.synaptic
    done = 0 if steps_done < T + ln.offsets[-1] else min(ln.n, (steps_done - ln.offsets[-1]) // T)
    spikes, counts = [], []
    readout = None
    for i, (f, lay) in enumerate(zip(ln.spike_files, syn)):
        if f is None:
            spikes.append(None)
            counts.append(None)
            continue
        rec = np.load(f, mmap_mode="r")
        o = ln.offsets[i]
        blk = np.asarray(rec[o: o + done * T])                                  # (done·T, *lava shape)
        blk = blk.reshape((done, T) + blk.shape[1:])
        if lay.kind == "conv":
            blk = whc(blk.swapaxes(0, 1))                                        # (T, n, C, H, W)
        else:
            blk = blk.transpose(1, 0, 2).reshape((T, done) + tuple(lay.shape))
        blk = blk != 0
        counts.append(blk.reshape(T, done, -1).sum((0, 2)).astype(np.int64))
        spikes.append(blk)
        if i == L - 1:
            readout = blk
    assert readout is not None
    vrec = np.load(ln.v_file, mmap_mode="r")
    o = ln.offsets[-1]
    v = np.asarray(vrec[o: o + done * T]).reshape(done, T, -1).transpose(1, 0, 2)   # (T, n, K)
    out = syn[-1]
    assert out.neuron is not None
    fired = np.cumsum(readout.reshape(T, done, -1), axis=0)
    if ln.tag == "fixed_pt":
        logits = int(out.neuron.vth) * fired.astype(np.int64) + (v.astype(np.int64) >> STATE_SHIFT) \
            - int(out.neuron.v_init)
    else:
        logits = float(out.neuron.vth) * fired + v / float(1 << STATE_SHIFT) - float(out.neuron.v_init)
    return done, logits, (tuple(spikes) if record_spikes else None), tuple(counts)


def run_lava(path: str, x: np.ndarray | None = None, T: int = 8, *, drive: np.ndarray | None = None,
             timing: str = DEFAULT_TIMING, tag: str = "fixed_pt", record_spikes: bool = True,
             budget_s: float | None = None, chunk_samples: int | None = None, chunk_seconds: float = 2.0,
             workdir: str | None = None,
             qnet: QNetwork | None = None, float_params: dict | None = None, progress=None,
             conv: str = "fast", run_cfg: Any = None, boundary: Any = None) -> LavaResult:
    """Run normalised images ``x`` (n, C, H, W) — or a ready layer-0 ``drive`` — through the NetX file
    ``path`` on Lava's CPU simulator (``Loihi2SimCfg(select_tag=tag)``), all samples in one network.

    ``budget_s``: wall-clock budget for build + run; when exceeded the run stops after the current
    chunk and the result holds the completed samples (``stopped`` says why). ``progress(done)`` is
    called after every chunk with the number of samples finished. ``conv``: see :func:`build_network`.
    ``run_cfg`` replaces the CPU simulator's run configuration and ``boundary`` adds the chip-to-host
    adapters in front of the recorders (both for Loihi 2: hardware_runs/run_on_loihi.py)."""
    t_start = time.perf_counter()
    if qnet is None:
        from netx_export.netx.validate import load_netx
        qnet = load_netx(path)
    if drive is None:
        if x is None:
            raise ValueError("pass images x or a drive")
        drive = input_drive(qnet, x).drive
    n = int(np.asarray(drive).shape[0])
    from netx_export import lava as _lava  # noqa: F401  (shim before Lava)
    from lava.magma.core.run_conditions import RunSteps

    own_wd = workdir is None
    wd = tempfile.mkdtemp(prefix="qcfs2lava-lava-") if own_wd else workdir
    ln = None
    steps = 0
    stopped = None
    try:
        with Interrupts() as intr:           # session.py: one signal and shutdown path, start-up included
            try:
                with intr.raising():         # nothing forked yet: a signal stops the build at once
                    ln = build_network(path, drive, T, timing, tag, record_spikes, wd, qnet, float_params, conv,
                                       boundary)
                t_built = time.perf_counter()
                start_runtime(ln.net, run_cfg or ln.run_config(), intr)   # compile, fork the model processes
                t_compiled = time.perf_counter()
                L = len(qnet.synaptic)
                lead = L - 1 if timing == "aligned" else 0           # pipeline fill (aligned schedule)
                samples = chunk_samples or 1                         # first chunk small, then ~chunk_seconds each
                while steps < ln.total_steps:
                    k = min(samples * T + (lead if steps == 0 else 0), ln.total_steps - steps)
                    t0 = time.perf_counter()
                    with intr.chunk(ln.net):
                        ln.net.run(condition=RunSteps(num_steps=k))
                    steps += k
                    if progress is not None:
                        progress(min(n, max(0, (steps - lead) // T)))
                    intr.check()
                    elapsed = time.perf_counter() - t_start
                    if budget_s is not None and steps < ln.total_steps and elapsed > budget_s:
                        stopped = (f"time budget of {budget_s:g} s exceeded after {steps} of {ln.total_steps} "
                                   f"steps ({min(n, max(0, (steps - lead) // T))} of {n} samples); stopped cleanly")
                        break
                    if chunk_samples is None:
                        per_step = (time.perf_counter() - t0) / k
                        target = chunk_seconds
                        if budget_s is not None:
                            target = max(per_step * T, min(target, budget_s - elapsed))
                        samples = max(1, int(target / max(per_step, 1e-6)) // T)
                t_run = time.perf_counter() - t_compiled
                with intr.raising():
                    done, logits, spikes, counts = _extract(ln, steps, record_spikes)
            finally:
                if ln is not None:
                    shutdown(ln.net, intr)   # bounded; a signal during it is raised when the block ends
        return LavaResult(logits, spikes, counts, done, n, T, timing, tag, steps, t_built - t_start,
                          t_compiled - t_built, t_run, time.perf_counter() - t_start, stopped)
    finally:
        if own_wd:
            shutil.rmtree(wd, ignore_errors=True)


# --------------------------------------------------------------------------- the float SNN in Lava
def float_snn_params(graph, net: QNetwork) -> dict[str, list]:
    """The float SNN of ``graph`` (:func:`netx_export.convert.trace.trace`) in the file's units: per synaptic
    layer l the same scale σ_l as the quantized file (``net.report``), but unrounded:
    weights σ_l·W_l·θ_{l−1}, bias σ_l·b_l, threshold σ_l·θ_l, v(0) = v0_frac·σ_l·θ_l; the readout keeps
    vThMant 2^16 and v(0) = 0. IF dynamics are invariant under this per-layer scaling, so Lava's
    ``floating_pt`` run with these values is the float SNN, its logits σ_out·t times the SNN's mean
    output up to step t."""
    from netx_export.convert.fixedpoint import OUTPUT_VTH
    syn = graph.synaptic
    if len(syn) != len(net.report):
        raise ValueError("graph and network do not match")
    out: dict[str, list] = {"weights": [], "bias": [], "vth": [], "v_init": [], "scale": []}
    theta_prev = None
    for lay, rep in zip(syn, net.report):
        sc = float(rep.scale)
        out["weights"].append(lay.weight * sc * (1.0 if theta_prev is None else theta_prev))
        out["bias"].append(lay.bias * sc)
        out["scale"].append(sc)
        if lay.neuron is None:
            out["vth"].append(float(OUTPUT_VTH))
            out["v_init"].append(0.0)
        else:
            out["vth"].append(sc * lay.neuron.theta)
            out["v_init"].append(lay.neuron.v0_frac * sc * lay.neuron.theta)
            theta_prev = lay.neuron.theta
    return out


def float_drive(net: QNetwork, x: np.ndarray) -> np.ndarray:
    """Layer 0's real-valued drive ``conv(x, σ_0·W_0) + σ_0·b_0`` (no rounding, no clipping)."""
    from netx_export.convert.conv import conv2d, dense
    first = net.synaptic[0]
    x = np.asarray(x, dtype=np.float64)
    if first.kind == "conv":
        d = conv2d(x, net.drive.weight, first.stride, first.padding, first.dilation, first.groups)
        return d + net.drive.bias.reshape(1, -1, 1, 1)
    return (dense(x, net.drive.weight) + net.drive.bias).reshape(x.shape[0], *first.shape)
