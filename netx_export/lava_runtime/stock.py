"""The stock-block mode (:mod:`netx_export.convert.stock_blocks`) built from stock Lava processes only, run on
Lava's CPU simulator (``Loihi2SimCfg(select_tag="fixed_pt")``) and read back in refsim's layout.

Processes of one network (per sample; nothing here is a custom neuron or synapse):

* ``lava.proc.lif.process.LIF`` per synaptic layer with :class:`~netx_export.convert.stock_blocks.StockLayer`'s
  ``lif`` parameters (du = −1, dv = 4095, vth = θ, bias = comparator offset, u(0) = 64·vInit);
* its incoming synapse: ``lava.proc.conv.process.Conv`` (NetX's weight layout, full integer weights
  as NetX passes them) or one ``lava.proc.dense.process.Dense`` per weight term (conv → dense through
  ``s_out.transpose([2, 1, 0]).flatten()``, as NetX flattens in C, H, W order);
* self-inhibition: one diagonal ``lava.proc.sparse.process.Sparse`` per term of −θ;
* bias: one ``Dense`` (N × 1) per bias term, fed by an always-on ``LIF``
  (:data:`~netx_export.convert.stock_blocks.ALWAYS_ON`), or for the aligned timing by the j-th of a
  chain of one-step delay ``LIF`` s (:data:`~netx_export.convert.stock_blocks.RELAY`, each fed by
  the one before through a weight-1 ``Dense``);
* layer 0's drive: a ``lava.proc.io.source.RingBuffer`` sending the host drive as graded spikes every
  step into an identity ``Sparse`` (weight 1, 16 message bits);
* readouts: our :class:`netx_export.lava.Recorder` on every layer's spikes and a stock
  ``lava.proc.monitor.process.Monitor`` on the last layer's u (its logits, unwrapped on the host).

Timings (both spike for spike equal to :func:`netx_export.sim.stock.simulate_drive` with the same timing;
step 1 is the settle step, in which no synapse has delivered anything yet):

``"aligned"`` (default): layer j (0-based synaptic index) starts j steps after layer 0: its bias comes
    from relay j, which first spikes at Lava step 1 + j, so the bias first arrives at step 2 + j —
    the step at which layer j − 1's first spikes (its step 1, Lava step 1 + j) arrive. Layer j's
    step t is Lava step t + 1 + j and sees layer j − 1's spikes of the same t: refsim's aligned
    timing, the float SNN's, with no latency loss in accuracy. Until it starts a layer receives
    nothing and cannot fire (:func:`netx_export.convert.stock_blocks.idle_peak`; :attr:`StockLavaResult.early_spikes`
    counts what Lava actually did). T + L Lava steps per sample for L synaptic layers; the readout's
    logits at t = 1..T are its u at Lava steps L + 1..L + T.
``"lava"``: every layer's bias from the always-on source, Lava step t + 1 is step t of every layer,
    and layer l sees layer l − 1's spikes of t − 1 (the readout sees the input only from t = L).
    T + 1 Lava steps per sample.

One network per sample (≈0.5–1 s of build and compile each) keeps every sample's start exact
without a stock per-sample reset to u(0) ≠ 0.

Shutdown: every network is stopped in a ``finally`` (:func:`netx_export.lava_runtime.session.shutdown`: bounded,
no process, shared memory or folder left, start-up included); Ctrl-C / SIGTERM stop the run after the
current sample (a second one at once; :class:`netx_export.lava_runtime.session.Interrupts`) and surface as
KeyboardInterrupt / ``Terminated``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from netx_export.convert.fixedpoint import STATE_SHIFT, QNetwork, input_drive
from netx_export.convert.stock_blocks import (ALWAYS_ON, RELAY, LifParams, StockLayer, StockNetwork, layer_starts,
                                              steps_per_sample, stock_network)
from netx_export.lava_runtime.layout import lava_conv_weight, to_lava, whc
from netx_export.lava_runtime.session import Interrupts, shutdown, start_runtime
from netx_export.convert.stock_blocks import unwrap_current
from netx_export.results import SimResult
from netx_export.timing import DEFAULT_TIMING

__all__ = ["INPUT_MESSAGE_BITS", "StockLavaResult", "run_stock_lava", "lava_shape", "layer_starts",
           "steps_per_sample"]

INPUT_MESSAGE_BITS = 16         # graded input spikes: |drive| ≤ 4095 fits with room


@dataclass(eq=False)
class StockLavaResult:
    """A Lava stock-mode run: ``sim`` is laid out like refsim's SimResult in the run's timing (T steps
    per layer, each layer from its own start; ``saturated`` is −1: wraps inside Lava's LIF are not
    observable from outside)."""
    sim: SimResult
    n: int                                  # samples completed
    requested: int
    T: int
    seconds_build: float                    # all samples: building the processes
    seconds_run: float                      # all samples: compile + run + read back + stop
    seconds_total: float
    stopped: str | None = None              # why the run ended early, else None
    timing: str = DEFAULT_TIMING
    steps: int = 0                          # Lava steps per sample (steps_per_sample)
    early_spikes: tuple[int, ...] = ()      # per layer, all samples: spikes before the layer's start (must be 0)

    @property
    def seconds_per_sample(self) -> float:
        return (self.seconds_build + self.seconds_run) / max(1, self.n)

    def summary(self) -> dict[str, Any]:
        return dict(backend="lava-stock", timing=self.timing, steps_per_sample=self.steps, n=self.n,
                    requested=self.requested, T=self.T, early_spikes=list(self.early_spikes),
                    seconds_build=self.seconds_build, seconds_run=self.seconds_run, seconds_total=self.seconds_total,
                    seconds_per_sample=self.seconds_per_sample, stopped=self.stopped)


def lava_shape(lay: StockLayer) -> tuple[int, ...]:
    """Lava's neuron shape: conv (W, H, C), dense (N,)."""
    c, h, w = lay.shape
    return (w, h, c) if lay.kind == "conv" else (c * h * w,)


def _lif_kwargs(p: LifParams, lay: StockLayer | None = None) -> dict[str, Any]:
    """Python ints (``Var.get()`` hangs on Vars initialised with numpy int64 scalars, docs/troubleshooting.md); a
    per-neuron u(0) as an int32 array in Lava's layout."""
    u = int(p.u) if np.ndim(p.u) == 0 else to_lava(p.u, lay.shape, lay.kind).astype(np.int32)   # type: ignore[arg-type]
    return dict(vth=int(p.vth), du=int(p.du), dv=int(p.dv), bias_mant=int(p.bias_mant), bias_exp=int(p.bias_exp),
                u=u, v=int(p.v))


@dataclass(eq=False)
class _Sample:
    root: Any                       # any process of the network (run/stop go through it)
    spike_files: list[str]
    monitor: Any
    readout: Any
    starts: list[int]               # per layer: Lava steps after layer 0 it starts (layer_starts)
    steps: int                      # Lava steps to run


def _cross(boundary: Any, direction: str, port: Any, shape: tuple[int, ...], bits: int) -> Any:
    """``port`` itself on the CPU simulator; on Loihi 2 the adapter's output port that carries it
    between a host (Python) process and the chip (``boundary.to_chip`` / ``boundary.from_chip``)."""
    return port if boundary is None else getattr(boundary, direction)(port, shape, bits)


def _bias_sources(snet: StockNetwork, starts: list[int]) -> list[Any]:
    """relays[k] spikes every step from Lava step 1 + k: relays[0] is the always-on LIF, relays[k] a
    RELAY fed by relays[k − 1] through a weight-1 Dense (that synapse is the delay)."""
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIF
    relays = [LIF(shape=(1,), **_lif_kwargs(ALWAYS_ON))]
    for _ in range(max((s for s, lay in zip(starts, snet.layers) if lay.bias), default=0)):
        nxt = LIF(shape=(1,), **_lif_kwargs(RELAY))
        link = Dense(weights=np.ones((1, 1), np.int32), weight_exp=0)
        relays[-1].s_out.connect(link.s_in)
        link.a_out.connect(nxt.a_in)
        relays.append(nxt)
    return relays


def _input(lay: StockLayer, lif: Any, drive: np.ndarray, boundary: Any) -> None:
    """Layer 0's drive: a RingBuffer sending it as graded spikes every step, through an identity Sparse."""
    from scipy.sparse import identity

    from lava.proc.io.source import RingBuffer
    from lava.proc.sparse.process import Sparse
    shp = lava_shape(lay)
    size = int(np.prod(shp))
    d = to_lava(np.asarray(drive, dtype=np.int64), lay.shape, lay.kind).reshape(-1)
    src = RingBuffer(data=d.astype(np.int32)[:, None])
    ident = Sparse(weights=identity(size, dtype=np.int32, format="csr"), num_message_bits=INPUT_MESSAGE_BITS)
    _cross(boundary, "to_chip", src.s_out, (size,), INPUT_MESSAGE_BITS).connect(ident.s_in)
    ident.a_out.reshape(shp).connect(lif.a_in)


def _synapses(snet: StockNetwork, j: int, prev: Any, lif: Any) -> None:
    """Layer j's incoming synapse from layer j − 1's LIF ``prev``: one Conv (NetX's weight layout), or
    one Dense per weight term (conv → dense flattened in C, H, W order, as NetX does)."""
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    lay, prev_lay = snet.layers[j], snet.layers[j - 1]
    shp = lava_shape(lay)
    q = snet.qnet.layers[lay.index]
    assert q.weight is not None
    if lay.kind == "conv":
        conv = Conv(weight=lava_conv_weight(q.weight), input_shape=lava_shape(prev_lay), padding=tuple(q.padding[::-1]),
                    stride=tuple(q.stride[::-1]), dilation=tuple(q.dilation[::-1]), groups=int(q.groups))
        if tuple(conv.a_out.shape) != shp:
            raise ValueError(f"layer {lay.name}: Lava conv gives {conv.a_out.shape}, expected {shp}")
        prev.s_out.connect(conv.s_in)
        conv.a_out.connect(lif.a_in)
        return
    for term in lay.weight:
        dense = Dense(weights=term.weights.astype(np.int32), weight_exp=int(term.weight_exp))
        port = prev.s_out.transpose([2, 1, 0]).flatten() if prev_lay.kind == "conv" else prev.s_out
        port.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)


def _inhibition_and_bias(lay: StockLayer, lif: Any, source: Any) -> None:
    """Self-inhibition (one diagonal Sparse per term of −θ) and the bias (one N × 1 Dense per term, fed
    by the relay ``source``)."""
    from scipy.sparse import csr_matrix, identity

    from lava.proc.dense.process import Dense
    from lava.proc.sparse.process import Sparse
    shp = lava_shape(lay)
    size = int(np.prod(shp))
    for term in lay.inhibition:
        w = int(np.asarray(term.weights).reshape(()))
        inh = Sparse(weights=csr_matrix(identity(size, dtype=np.int32, format="csr") * w),
                     weight_exp=int(term.weight_exp))
        lif.s_out.flatten().connect(inh.s_in)
        inh.a_out.reshape(shp).connect(lif.a_in)
    for term in lay.bias:
        col = np.broadcast_to(np.asarray(term.weights).reshape(-1), shp).reshape(-1, 1)   # channel last
        b = Dense(weights=col.astype(np.int32), weight_exp=int(term.weight_exp))
        source.s_out.connect(b.s_in)
        b.a_out.reshape(shp).connect(lif.a_in)


def _build(snet: StockNetwork, drive: np.ndarray, T: int, wd: str, boundary: Any = None,
           timing: str = DEFAULT_TIMING) -> _Sample:
    """One stock network for one sample's layer-0 ``drive`` (C, H, W). ``boundary``: None on the CPU
    simulator; on hardware an object with ``to_chip(port, shape, bits)`` / ``from_chip(port, shape,
    bits)`` returning the adapted port (see ``hardware_runs/run_on_loihi.py``). ``timing``: which
    source starts each layer's bias (module docstring)."""
    from netx_export.lava import Recorder   # the package import also installs the Python 3.11 shim
    from lava.proc.lif.process import LIF
    from lava.proc.monitor.process import Monitor

    starts = layer_starts(len(snet.layers), timing)
    steps = T + 1 + starts[-1]
    relays = _bias_sources(snet, starts)
    lifs: list[Any] = []
    files: list[str] = []
    for j, lay in enumerate(snet.layers):
        shp = lava_shape(lay)
        lif = LIF(shape=shp, **_lif_kwargs(lay.lif, lay))
        if j == 0:
            _input(lay, lif, drive, boundary)
        else:
            _synapses(snet, j, lifs[-1], lif)
        _inhibition_and_bias(lay, lif, relays[starts[j]])
        f = os.path.join(wd, f"spikes{j}.npy")
        rec = Recorder(shape=shp, path=f, steps=steps, dtype="int8")
        _cross(boundary, "from_chip", lif.s_out, shp, 0).connect(rec.a_in)
        files.append(f)
        lifs.append(lif)
    mon = Monitor()
    mon.probe(lifs[-1].u, steps)
    return _Sample(relays[0], files, mon, lifs[-1], starts, steps)


def _read(snet: StockNetwork, sample: _Sample, T: int) -> tuple[list[np.ndarray], np.ndarray, list[int]]:
    """Spikes per layer (T, C, H, W) and logits (T, K) of one finished sample, each layer's T steps
    from its own start (settle step and waiting steps dropped), and per layer the spikes it fired
    before its start (0 unless the idle argument of :func:`netx_export.convert.stock_blocks.idle_peak` failed)."""
    spikes, early = [], []
    for f, lay, s0 in zip(sample.spike_files, snet.layers, sample.starts):
        full = np.load(f) != 0                                      # (steps, *lava shape)
        early.append(int(full[:1 + s0].sum()))
        rec = full[1 + s0: 1 + s0 + T]                              # (T, *lava shape)
        spikes.append(whc(rec) if lay.kind == "conv" else rec.reshape((T,) + lay.shape))
    data = sample.monitor.get_data()[sample.readout.name]["u"]
    u = np.rint(np.asarray(data, dtype=np.float64)).astype(np.int64).reshape(sample.steps, -1)
    lin = unwrap_current(u)
    u0 = np.broadcast_to(np.asarray(snet.layers[-1].lif.u, dtype=np.int64), snet.layers[-1].shape).reshape(1, -1)
    s0 = sample.starts[-1]
    if not np.array_equal(lin[:1 + s0], np.broadcast_to(u0, (1 + s0, u0.shape[1]))):
        raise AssertionError("the readout's u changed before its input arrived")
    logits = (lin[1 + s0: 1 + s0 + T] - u0) >> STATE_SHIFT
    return spikes, logits, early


@dataclass(eq=False)
class _Collected:
    """What the samples run so far produced, per sample in order."""
    spikes: list[list[np.ndarray]]              # per layer: per sample (T, C, H, W)
    logits: list[np.ndarray] = field(default_factory=list)   # per sample (T, K)
    early: np.ndarray | None = None             # per layer: spikes before the layer's start
    seconds_build: float = 0.0
    seconds_run: float = 0.0
    stopped: str | None = None


def _run_samples(snet: StockNetwork, drive: np.ndarray, T: int, wd: str, timing: str, steps: int, run_cfg: Any,
                 boundary: Any, budget_s: float | None, progress: Callable[[int], None] | None,
                 t_start: float) -> _Collected:
    """One freshly built network per sample, run ``steps`` Lava steps, read back, stopped; between two
    samples Ctrl-C / SIGTERM and the time budget end the run cleanly."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    n = int(drive.shape[0])
    out = _Collected([[] for _ in snet.layers], early=np.zeros(len(snet.layers), np.int64))
    with Interrupts() as intr:           # session.py: one signal and shutdown path, start-up included
        for k in range(n):
            t0 = time.perf_counter()
            sd = os.path.join(wd, f"sample{k}")
            os.makedirs(sd, exist_ok=True)
            with intr.raising():             # nothing forked yet: a signal stops the build at once
                sample = _build(snet, drive[k], T, sd, boundary, timing)
            t1 = time.perf_counter()
            try:
                start_runtime(sample.root, run_cfg if run_cfg is not None else Loihi2SimCfg(select_tag="fixed_pt"),
                              intr)
                with intr.chunk(sample.root):
                    sample.root.run(condition=RunSteps(num_steps=steps))
                    spikes, lg, ea = _read(snet, sample, T)
            finally:
                shutdown(sample.root, intr)
            out.seconds_build += t1 - t0
            out.seconds_run += time.perf_counter() - t1
            for j, sp in enumerate(spikes):
                out.spikes[j].append(sp)
            out.logits.append(lg)
            out.early += ea
            if progress is not None:
                progress(k + 1)
            intr.check()
            if budget_s is not None and k + 1 < n and time.perf_counter() - t_start > budget_s:
                out.stopped = f"time budget of {budget_s:g} s exceeded after {k + 1} of {n} samples; stopped cleanly"
                break
    return out


def _sim_result(snet: StockNetwork, got: _Collected, T: int, clipped: int, timing: str) -> SimResult:
    """The samples' spikes and logits in refsim's layout (T, n, ...)."""
    done = len(got.logits)
    K = int(np.prod(snet.layers[-1].shape))
    lg_all = np.stack(got.logits, axis=1) if done else np.zeros((T, 0, K), np.int64)
    spikes_all = tuple(np.stack(s, axis=1) if done else np.zeros((T, 0) + lay.shape, bool)
                       for s, lay in zip(got.spikes, snet.layers))
    counts = tuple(s.reshape(T, done, -1).sum((0, 2)).astype(np.int64) for s in spikes_all)
    return SimResult(lg_all, counts, tuple(int(np.prod(lay.shape)) for lay in snet.layers), spikes_all, -1,
                     clipped, timing)


def run_stock_lava(net: StockNetwork | QNetwork, x: np.ndarray | None = None, T: int = 8, *,
                   drive: np.ndarray | None = None, timing: str = DEFAULT_TIMING, budget_s: float | None = None,
                   workdir: str | None = None, progress: Callable[[int], None] | None = None, run_cfg: Any = None,
                   boundary: Any = None) -> StockLavaResult:
    """Normalised images ``x`` (n, C, H, W) — or a ready layer-0 ``drive`` — through the stock-block
    construction, one freshly built network per sample, T steps per layer (:func:`steps_per_sample`
    Lava steps: the settle step, and for ``timing="aligned"`` the readout's wait of L − 1 steps).
    ``timing``: ``"aligned"`` (default; each layer starts when its input arrives, the float SNN's and
    refsim's aligned timing) or ``"lava"`` (all layers start together; module docstring).
    ``run_cfg``: default ``Loihi2SimCfg(select_tag="fixed_pt")`` (Lava's CPU simulator).
    ``boundary``: on hardware, the adapters between host processes (input source, spike recorders)
    and the chip (see :func:`_build`); the readout's u is still read by a stock Monitor, which is
    one of the things to verify on Loihi 2 (docs/stock-mode.md). ``budget_s``: stop cleanly after
    the sample that exceeds it. ``progress(done)`` after every sample."""
    t_start = time.perf_counter()
    snet = net if isinstance(net, StockNetwork) else stock_network(net)
    clipped = 0
    if drive is None:
        if x is None:
            raise ValueError("pass images x or a drive")
        dr = input_drive(snet.qnet, x)
        drive, clipped = dr.drive, dr.clipped
    drive = np.asarray(drive)
    n = int(drive.shape[0])
    if n < 1:
        raise ValueError("no samples")
    if T < 1:
        raise ValueError("T must be >= 1")
    steps = steps_per_sample(snet, T, timing)          # also validates timing
    from netx_export import lava as _lava  # noqa: F401  (Python 3.11 shim before Lava)

    own = workdir is None
    wd = tempfile.mkdtemp(prefix="qcfs2lava-stock-") if own else workdir
    os.makedirs(wd, exist_ok=True)
    try:
        got = _run_samples(snet, drive, T, wd, timing, steps, run_cfg, boundary, budget_s, progress, t_start)
    finally:
        if own:
            shutil.rmtree(wd, ignore_errors=True)
    assert got.early is not None
    return StockLavaResult(_sim_result(snet, got, T, clipped, timing), len(got.logits), n, T, got.seconds_build,
                           got.seconds_run, time.perf_counter() - t_start, got.stopped, timing, steps,
                           tuple(int(e) for e in got.early))
