"""A Loihi 2 resource plan for a NetX file: per neuron process, its neurons, synapses, weight memory,
fan-in and fan-out, and the cores it needs under each per-core limit; in total cores and chips, and
whether the network fits one Loihi 2 chip (Oheo Gulch) or an 8-chip Kapoho Point.

What is counted, per deployment mode:

* ``microcode`` (our ``IF_SUB`` neuron): one process per synaptic layer; its synapses are the layer's
  conv or dense weights and its shortcuts' convs. Layer 0 is driven by the host-computed drive as a
  per-neuron bias (no synapses). A shortcut with ``delay`` d adds d relay processes of the source's
  shape, each behind a depthwise 1x1 synapse (:mod:`netx_export.lava_runtime.shortcuts`).
* ``stock`` (stock LIF blocks, :mod:`netx_export.convert.stock_blocks`): the same layers, plus per
  layer its self-inhibition (one diagonal synapse per term of −θ), its bias (one N x 1 synapse per
  term, from an always-on neuron), dense layers as one synapse per weight term; layer 0 receives the
  drive from the host through an identity synapse; the always-on neuron and, in the aligned timing,
  the chain of bias relays are processes of their own. Residual files are counted with the microcode
  path's relay construction (stock mode does not build them yet).
* ``netx`` (any other NetX file, e.g. lava-dl's): what lava-dl's NetX loader builds: an ``input``
  layer with a neuron is a process of its own, every layer one process, no extra blocks.

Synapse storage (which one the Loihi 2 compiler uses for a conv is not public, so both are planned):
``expanded`` stores every synapse (its ``weight_bits`` + ``synapse_overhead_bits``; padding taps
counted, the tile taken in the interior: an upper bound); ``shared`` stores a conv's kernel once per
core (the kernels of the tile's output channels); dense synapses are always expanded.

Cores per process: the output (C, H, W) is cut into tiles of rows x columns x channels; the plan
takes the fewest tiles for which every tile meets every per-core limit (neurons, synaptic memory,
input axons: the input patch the tile's receptive field reads, every input channel it needs), one
core per tile. Processes do not share cores (Lava's compiler maps each neuron process onto cores of
its own: our reading of the published runs, not documented). A process
that no tiling fits (a dense fan-in above the axon limit, a kernel above the memory) is marked and
counted at its neuron and memory bound. The Lava compiler's own partition is not public; this plan
is an estimate of the same kind, with every assumption named here and every limit in
:mod:`netx_export.report.limits`.

Pure numpy on the IR (:class:`netx_export.convert.fixedpoint.QLayer`), no Lava.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from netx_export.convert.fixedpoint import QLayer
from netx_export.convert.stock_blocks import split_weights
from netx_export.report.energy import fan_out, shortcut_layer
from netx_export.report.limits import KAPOHO_POINT_CHIPS, LOIHI2, ONE_CHIP, Limits

__all__ = ["MODES", "STORAGES", "Synapse", "Process", "Tiling", "ProcessPlan", "Plan", "processes",
           "tile", "plan_network", "plan_file", "plan_json", "format_plan", "verdict", "plan_summary"]

MODES = ("microcode", "stock", "netx")
STORAGES = ("expanded", "shared")


# --------------------------------------------------------------------------- what the chip holds
@dataclass(frozen=True)
class Synapse:
    """One synapse process into a neuron process. ``kind``: "conv" (``geometry`` = the QLayer whose
    weights and strides it has), "dense" (``n_in`` inputs to every neuron), "diagonal" (one synapse
    per neuron from a neuron of the same position: self-inhibition, relay links, the host's identity
    input) or "broadcast" (one source neuron to every neuron: a bias term). ``terms``: how many such
    processes (weight terms) there are."""
    name: str
    kind: str
    count: int                          # synapses of all terms
    fan_in: int                         # synapses per neuron (max), all terms
    terms: int = 1
    n_in: int = 0                       # dense: inputs per neuron
    geometry: QLayer | None = None      # conv


@dataclass(frozen=True)
class Process:
    """One neuron process (a population Lava places on cores of its own)."""
    name: str
    role: str                           # input | hidden | readout | relay | always-on | bias relays
    shape: tuple[int, int, int]         # C, H, W
    inputs: tuple[Synapse, ...] = ()
    fan_out: int = 0                    # synapses one spike of one of its neurons drives (max)

    @property
    def neurons(self) -> int:
        return int(np.prod(self.shape))

    @property
    def synapses(self) -> int:
        return sum(s.count for s in self.inputs)

    @property
    def fan_in(self) -> int:
        return sum(s.fan_in for s in self.inputs)


def _conv_synapse(name: str, geo: QLayer) -> Synapse:
    return Synapse(name, "conv", int(fan_out(geo).sum()), int(np.prod(geo.weight.shape[1:])), geometry=geo)


def _dense_synapse(name: str, lay: QLayer, terms: int = 1) -> Synapse:
    n_in, n = int(np.prod(lay.in_shape)), int(np.prod(lay.shape))
    return Synapse(name, "dense", terms * n * n_in, terms * n_in, terms, n_in=n_in)


def _max_fan_out(lay: QLayer) -> int:
    """Synapses of ``lay`` one presynaptic spike drives, at most."""
    return int(fan_out(lay).max())


def _main_synapse(lay: QLayer, terms: int) -> Synapse:
    return _conv_synapse(lay.name, lay) if lay.kind == "conv" else _dense_synapse(lay.name, lay, terms)


def processes(layers: Sequence[QLayer], mode: str, input_shape: tuple[int, int, int] | None = None,
              input_neurons: bool = False, timing: str = "lava", max_terms: int = 6) -> list[Process]:
    """The neuron processes a deployment of ``layers`` builds (see the module docstring).
    ``input_neurons``: a NetX ``input`` layer with a neuron of its own (mode "netx")."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    syn = [i for i, lay in enumerate(layers) if lay.kind != "flatten"]
    if not syn:
        raise ValueError("the network has no synaptic layer")
    procs: list[Process] = []
    by_layer: dict[int, int] = {}           # index into layers -> index into procs
    input_proc = mode == "netx" and input_neurons and input_shape is not None
    if input_proc:
        procs.append(Process("input", "input", tuple(int(s) for s in input_shape)))  # type: ignore[arg-type]
    stock = mode == "stock"
    bias_fan: dict[int, int] = {}           # stock: per layer with a bias, the synapses its source drives
    for j, i in enumerate(syn):
        lay = layers[i]
        role = "input" if j == 0 and not input_proc else "readout" if j == len(syn) - 1 else "hidden"
        ins: list[Synapse] = []
        n = int(np.prod(lay.shape))
        if j == 0 and mode != "netx":
            if stock:       # the host's drive as graded spikes through an identity synapse
                ins.append(Synapse("host drive", "diagonal", n, 1))
        else:
            terms = len(split_weights(lay.weight, max_terms)) if stock and lay.kind == "dense" else 1
            ins.append(_main_synapse(lay, terms))
        for sk in lay.skips:
            src = layers[sk.source]
            for k in range(1, sk.delay + 1):
                name = f"{sk.name} relay {k}"
                procs.append(Process(name, "relay", tuple(int(s) for s in src.shape),  # type: ignore[arg-type]
                                     (Synapse(name + " link", "diagonal", int(np.prod(src.shape)), 1),),
                                     fan_out=1 if k < sk.delay else _max_fan_out(shortcut_layer(sk, src, lay))))
            ins.append(_conv_synapse(sk.name, shortcut_layer(sk, src, lay)))
        own_fan_out = 0                     # stock: a spike also drives the neuron's own inhibition terms
        if stock:
            if role != "readout" and lay.neuron is not None:
                t = len(split_weights(-int(lay.neuron.vth), max_terms))
                ins.append(Synapse("self-inhibition", "diagonal", t * n, t, t))
                own_fan_out = t
            t = len(split_weights(lay.bias, max_terms)) if j > 0 and lay.bias is not None else 0
            if t:
                ins.append(Synapse("bias", "broadcast", t * n, t, t))
                bias_fan[j] = t * n
        by_layer[i] = len(procs)
        procs.append(Process(lay.name, role, tuple(int(s) for s in lay.shape), tuple(ins),  # type: ignore[arg-type]
                             fan_out=own_fan_out))
    if stock:   # the bias sources: the always-on neuron, and in the aligned timing relay j for layer j
        relays = max(bias_fan, default=0) if timing == "aligned" else 0
        if relays:
            procs.append(Process("always-on", "always-on", (1, 1, 1), fan_out=1))
            procs.append(Process("bias relays", "bias relays", (relays, 1, 1),   # relay k fed by relay k − 1
                                 (Synapse("relay links", "diagonal", relays, 1),),
                                 fan_out=max(bias_fan.get(k, 0) + (k < relays) for k in range(1, relays + 1))))
        else:
            procs.append(Process("always-on", "always-on", (1, 1, 1), fan_out=sum(bias_fan.values())))
    return _with_fan_out(procs, layers, by_layer, syn, input_proc)


def _with_fan_out(procs: list[Process], layers: Sequence[QLayer], by_layer: dict[int, int],
                  syn: list[int], input_proc: bool) -> list[Process]:
    """Each process's fan-out: the synapses of every consumer one spike of one of its neurons drives."""
    out = [0] * len(procs)
    for j, i in enumerate(syn):
        lay = layers[i]
        if j > 0:
            prev = by_layer[syn[j - 1]]
            out[prev] += _max_fan_out(lay)
        for sk in lay.skips:     # into the first relay, or straight into the shortcut's conv
            out[by_layer[sk.source]] += 1 if sk.delay else _max_fan_out(shortcut_layer(sk, layers[sk.source], lay))
    if input_proc:
        out[0] = _max_fan_out(layers[syn[0]])
    return [Process(p.name, p.role, p.shape, p.inputs, p.fan_out + out[k]) for k, p in enumerate(procs)]


# --------------------------------------------------------------------------- cores per process
@dataclass(frozen=True)
class Tiling:
    """How a process is cut onto cores: tiles of ``rows x cols x channels`` neurons, one core each."""
    tiles: tuple[int, int, int]         # tiles along H, W, C
    tile: tuple[int, int, int]          # the largest tile: rows, cols, channels
    cores: int
    neurons: int                        # of the largest tile
    axons_in: int
    synapse_bits: int
    bound: str                          # what sets the count: neurons | memory | axons | none | does not fit
    fits: bool                          # every tile meets every limit


def _splits(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ways to cut n into pieces: (number of pieces, largest piece), fewest pieces first."""
    size = -(-n // np.arange(1, n + 1))
    size = np.unique(size)[::-1]
    return -(-n // size), size


def _patch(out: np.ndarray, size_in: int, kernel: int, stride: int, dilation: int) -> np.ndarray:
    return np.minimum(size_in, (out - 1) * stride + dilation * (kernel - 1) + 1)


def _tile_costs(p: Process, r: np.ndarray, c: np.ndarray, ch: np.ndarray, storage: str, lim: Limits
                ) -> tuple[np.ndarray, np.ndarray]:
    """Input axons and synaptic bits of tiles of r rows x c cols x ch channels (broadcast arrays)."""
    neurons = r * c * ch
    axons = np.zeros(np.broadcast(r, c, ch).shape, np.int64)
    bits = np.zeros_like(axons)
    per_syn = lim.weight_bits + lim.synapse_overhead_bits
    for s in p.inputs:
        if s.kind == "conv":
            g = s.geometry
            c_in = g.in_shape[0]
            kh, kw = g.weight.shape[2:]
            per_group = max(1, g.shape[0] // g.groups)
            chans_in = np.minimum(c_in, -(-ch // per_group) * (c_in // g.groups)) if g.groups > 1 else c_in
            axons = axons + chans_in * _patch(r, g.in_shape[1], kh, g.stride[0], g.dilation[0]) * \
                _patch(c, g.in_shape[2], kw, g.stride[1], g.dilation[1])
            if storage == "shared":
                bits = bits + ch * s.fan_in * lim.weight_bits
            else:
                bits = bits + neurons * s.fan_in * per_syn
        elif s.kind == "dense":
            axons = axons + s.terms * s.n_in
            bits = bits + neurons * s.fan_in * per_syn
        elif s.kind == "diagonal":
            axons = axons + neurons * s.terms
            bits = bits + neurons * s.terms * per_syn
        else:                                   # broadcast: one source neuron per term
            axons = axons + s.terms
            bits = bits + neurons * s.terms * per_syn
    return axons, bits


def _search(p: Process, storage: str, lim: Limits) -> tuple[tuple[int, ...], tuple[int, ...], int, int, int, int,
                                                             bool]:
    """The best tiling: (tiles, tile, cores, neurons, axons, bits, fits)."""
    C, H, W = p.shape
    (nr, r), (nc, c), (nch, ch) = _splits(H), _splits(W), _splits(C)
    R, Cc, Ch = np.meshgrid(r, c, ch, indexing="ij")
    NR, NC, NCH = np.meshgrid(nr, nc, nch, indexing="ij")
    neurons = R * Cc * Ch
    axons, bits = _tile_costs(p, R, Cc, Ch, storage, lim)
    cores = NR * NC * NCH
    big = np.iinfo(np.int64).max
    ok = (neurons <= lim.neurons_per_core) & (bits <= lim.synapse_bits_per_core) & (axons <= lim.axons_in_per_core)
    fits = bool(ok.any())
    if not fits:    # no tiling fits: the fewest cores under the neuron and memory limits
        ok = (neurons <= lim.neurons_per_core) & (bits <= lim.synapse_bits_per_core)
        if not ok.any():
            ok = np.ones_like(ok)
    key = np.where(ok, cores, big)
    b = np.unravel_index(np.lexsort((axons.ravel(), key.ravel()))[0], key.shape)
    return ((int(NR[b]), int(NC[b]), int(NCH[b])), (int(R[b]), int(Cc[b]), int(Ch[b])), int(cores[b]),
            int(neurons[b]), int(axons[b]), int(bits[b]), fits)


def tile(p: Process, storage: str = "expanded", limits: Limits = LOIHI2) -> Tiling:
    """The fewest cores for process ``p`` under ``limits`` (see the module docstring)."""
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, not {storage!r}")
    tiles, size, cores, n, a, b, fits = _search(p, storage, limits)
    return Tiling(tiles, size, cores, n, a, b, _bound(p, storage, limits, cores, fits), fits)  # type: ignore[arg-type]


def _bound(p: Process, storage: str, lim: Limits, cores: int, fits: bool) -> str:
    """Which limit sets the core count: the first that alone would already need that many cores."""
    if not fits:
        return "does not fit"
    if cores == 1:
        return "none"
    if math.ceil(p.neurons / lim.neurons_per_core) >= cores:
        return "neurons"
    free = 1 << 40
    memory_only = Limits(**{**asdict(lim), "neurons_per_core": free, "axons_in_per_core": free})
    return "memory" if _search(p, storage, memory_only)[2] >= cores else "axons"


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class ProcessPlan:
    name: str
    role: str
    shape: tuple[int, int, int]
    neurons: int
    synapses: int
    fan_in: int
    fan_out: int
    weight_bits: int                    # synaptic memory of the whole process in this storage
    tiling: Tiling


@dataclass(frozen=True)
class Plan:
    mode: str
    storage: str
    limits: Limits
    processes: tuple[ProcessPlan, ...]

    @property
    def cores(self) -> int:
        return sum(p.tiling.cores for p in self.processes)

    @property
    def neurons(self) -> int:
        return sum(p.neurons for p in self.processes)

    @property
    def synapses(self) -> int:
        return sum(p.synapses for p in self.processes)

    @property
    def chips(self) -> int:
        return max(1, math.ceil(self.cores / self.limits.cores_per_chip))

    @property
    def fits(self) -> bool:
        """Every process has a tiling that meets every per-core limit."""
        return all(p.tiling.fits for p in self.processes)

    @property
    def fits_one_chip(self) -> bool:
        return self.fits and self.chips <= ONE_CHIP

    @property
    def fits_kapoho_point(self) -> bool:
        return self.fits and self.chips <= KAPOHO_POINT_CHIPS


def _process_bits(p: Process, storage: str, lim: Limits, t: Tiling) -> int:
    """Synaptic memory of the whole process: shared kernels are stored once per core that holds them."""
    total = 0
    per_syn = lim.weight_bits + lim.synapse_overhead_bits
    for s in p.inputs:
        if s.kind == "conv" and storage == "shared":
            total += t.tiles[0] * t.tiles[1] * p.shape[0] * s.fan_in * lim.weight_bits
        else:
            total += s.count * per_syn
    return total


def plan_network(layers: Sequence[QLayer], mode: str, storage: str = "expanded", limits: Limits = LOIHI2,
                 input_shape: tuple[int, int, int] | None = None, input_neurons: bool = False,
                 timing: str = "lava") -> Plan:
    """The resource plan of ``layers`` deployed in ``mode`` with ``storage`` (module docstring)."""
    rows = []
    for p in processes(layers, mode, input_shape, input_neurons, timing):
        t = tile(p, storage, limits)
        rows.append(ProcessPlan(p.name, p.role, p.shape, p.neurons, p.synapses, p.fan_in, p.fan_out,
                                _process_bits(p, storage, limits, t), t))
    return Plan(mode, storage, limits, tuple(rows))


def plan_file(path: str, modes: Sequence[str] | None = None, storages: Sequence[str] | None = None,
              limits: Limits = LOIHI2, timing: str = "lava") -> list[Plan]:
    """The plans of a NetX file: for ours (every neuron IF_SUB, no input layer) microcode and stock
    mode, for any other file (lava-dl's) the ``netx`` mode; each in both synapse storages unless
    ``storages`` says otherwise. A mode the file does not have raises ValueError."""
    from netx_export.netx.read import has_input_neurons, read_layers

    input_shape, layers = read_layers(path)
    input_neurons = has_input_neurons(path)
    ours = not input_neurons and all(lay.neuron is None or lay.neuron.type == "IF_SUB"
                                     for lay in layers if lay.kind != "flatten")
    possible = ["microcode", "stock"] if ours else ["netx"]
    for m in modes or ():
        if m not in possible:
            raise ValueError(f"{path} is {'a qcfs2lava' if ours else 'not a qcfs2lava (IF_SUB)'} file; "
                             f"its modes are {', '.join(possible)}, not {m}")
    return [plan_network(layers, m, st, limits, input_shape, input_neurons, timing)
            for m in (modes or possible) for st in (storages or STORAGES)]


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-able data (what ``qcfs2lava plan --json`` writes)."""
    return dict(mode=plan.mode, storage=plan.storage, limits=asdict(plan.limits), cores=plan.cores,
                chips=plan.chips, neurons=plan.neurons, synapses=plan.synapses, fits=plan.fits,
                fits_one_chip=plan.fits_one_chip, fits_kapoho_point=plan.fits_kapoho_point,
                processes=[dict(name=p.name, role=p.role, shape=list(p.shape), neurons=p.neurons,
                                synapses=p.synapses, fan_in=p.fan_in, fan_out=p.fan_out,
                                weight_kib=p.weight_bits / 8192, cores=p.tiling.cores, tiles=list(p.tiling.tiles),
                                tile=list(p.tiling.tile), tile_neurons=p.tiling.neurons,
                                tile_axons_in=p.tiling.axons_in, tile_kib=p.tiling.synapse_bits / 8192,
                                bound=p.tiling.bound, fits=p.tiling.fits)
                           for p in plan.processes])


def format_plan(plan: Plan) -> str:
    """A per-process table and the totals."""
    lim = plan.limits
    head = (f"Loihi 2 resource plan, {plan.mode} mode, {plan.storage} synapses (limits per core: "
            f"{lim.neurons_per_core} neurons, {lim.synapse_bits_per_core // 8192} KiB synapses, "
            f"{lim.axons_in_per_core} input axons)")
    lines = [head, f"{'process':<22} {'role':<10} {'neurons':>9} {'synapses':>11} {'fan-in':>7} {'fan-out':>7} "
             f"{'KiB':>9} {'cores':>6}  tiles HxWxC  bound"]
    for p in plan.processes:
        t = p.tiling
        lines.append(f"{p.name[:22]:<22} {p.role:<10} {p.neurons:>9,} {p.synapses:>11,} {p.fan_in:>7,} "
                     f"{p.fan_out:>7,} {p.weight_bits / 8192:>9.1f} {t.cores:>6}  "
                     f"{'x'.join(map(str, t.tiles)):<11}  {t.bound}{'' if t.fits else ' (DOES NOT FIT)'}")
    lines.append(f"total: {plan.neurons:,} neurons, {plan.synapses:,} synapses, {plan.cores} cores, "
                 f"{plan.chips} chip(s) of {lim.cores_per_chip} cores: {verdict(plan)}")
    return "\n".join(lines)


def verdict(plan: Plan) -> str:
    """Where the plan fits: one chip, a Kapoho Point, neither, or not at all (a process fits no core)."""
    return ("fits one Loihi 2 chip" if plan.fits_one_chip else "fits a Kapoho Point (8 chips)"
            if plan.fits_kapoho_point else "does not fit a Kapoho Point" if plan.fits
            else "a process fits no core (" + ", ".join(p.name for p in plan.processes if not p.tiling.fits) + ")")


def plan_summary(plans: Sequence[Plan]) -> str:
    """One line per mode: its cores in each storage and where the larger fits (``export --check``)."""
    out = []
    for mode in dict.fromkeys(p.mode for p in plans):
        ps = [p for p in plans if p.mode == mode]
        cores = ", ".join(f"{p.cores} cores ({p.storage})" for p in ps)
        worst = max(ps, key=lambda p: (not p.fits, p.cores))
        out.append(f"Loihi 2 plan, {mode} mode: {cores}; {verdict(worst)} in the worst case")
    return "\n".join(out)
