"""The Loihi 2 resource plan (netx_export.report.plan, `qcfs2lava plan`): counts against brute force,
the tiling against an exhaustive search, each mode's extra blocks, and the command line."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from netx_export.convert.fixedpoint import QLayer, QNeuron, QSkip
from netx_export.report.limits import LOIHI2, Limits
from netx_export.report.plan import Process, Synapse, _tile_costs, plan_network, processes, tile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PILOTNET = os.path.join(ROOT, "..", "shared", "data", "netx-examples", "lava-dl-pilotnet-lif.net")


def _conv(name, c_in, hw_in, c_out, k, stride=1, pad=0, groups=1, vth=100, bias=3, skips=()):
    ho = (hw_in[0] + 2 * pad - k) // stride + 1
    wo = (hw_in[1] + 2 * pad - k) // stride + 1
    w = np.ones((c_out, c_in // groups, k, k), np.int64)
    return QLayer("conv", name, (c_in, *hw_in), (c_out, ho, wo), w, np.full(c_out, bias, np.int64), (stride, stride),
                  (pad, pad), (1, 1), groups, QNeuron(vth, vth // 2), tuple(skips))


def _dense(name, n_in, n_out, vth=100, bias=0):
    return QLayer("dense", name, (n_in, 1, 1), (n_out, 1, 1), np.ones((n_out, n_in), np.int64),
                  np.full(n_out, bias, np.int64), neuron=QNeuron(vth, vth // 2))


def _brute_synapses(lay: QLayer) -> int:
    """In-bounds (output neuron, input neuron) pairs of a conv, counted one by one."""
    c_in, h, w = lay.in_shape
    c_out, ho, wo = lay.shape
    kh, kw = lay.weight.shape[2:]
    n = 0
    for y, x in itertools.product(range(ho), range(wo)):
        for dy, dx in itertools.product(range(kh), range(kw)):
            iy, ix = y * lay.stride[0] - lay.padding[0] + dy, x * lay.stride[1] - lay.padding[1] + dx
            n += 0 <= iy < h and 0 <= ix < w
    return n * c_out * (c_in // lay.groups)


def test_counts_equal_brute_force():
    layers = [_conv("a", 3, (9, 11), 4, 3, pad=1), _conv("b", 4, (9, 11), 6, 3, stride=2, pad=1),
              _conv("c", 6, (5, 6), 6, 3, groups=3), QLayer("flatten", "f", (6, 3, 4), (72, 1, 1)),
              _dense("d", 72, 5)]
    procs = processes(layers, "microcode")
    assert [p.name for p in procs] == ["a", "b", "c", "d"]
    assert procs[0].synapses == 0                          # layer 0: the host's drive as a bias
    for p, lay in zip(procs[1:3], layers[1:3]):
        assert p.synapses == _brute_synapses(lay) and p.neurons == int(np.prod(lay.shape))
        assert p.fan_in == (lay.in_shape[0] // lay.groups) * 9
    assert procs[3].synapses == 72 * 5 and procs[3].fan_in == 72
    assert procs[0].fan_out == 6 * 2 * 2                    # a 3x3 stride-2 conv: up to 2x2 taps per input
    assert procs[2].fan_out == 5


@pytest.mark.parametrize("seed", range(6))
def test_tiling_is_the_fewest_cores_that_meet_every_limit(seed):
    rng = np.random.default_rng(seed)
    c_in, c_out, k = int(rng.integers(1, 5)), int(rng.integers(1, 7)), int(rng.choice([1, 3]))
    h, w = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    lay = _conv("x", c_in, (h, w), c_out, k, pad=k // 2)
    p = Process("x", "hidden", tuple(lay.shape), (Synapse("x", "conv", _brute_synapses(lay), c_in * k * k,
                                                          geometry=lay),))
    lim = Limits(neurons_per_core=int(rng.integers(4, 40)), synapse_bits_per_core=int(rng.integers(400, 4000)),
                 axons_in_per_core=int(rng.integers(10, 80)))
    C, H, W = p.shape
    best = None
    for tr, tc, tch in itertools.product(range(1, H + 1), range(1, W + 1), range(1, C + 1)):
        r, c, ch = -(-H // tr), -(-W // tc), -(-C // tch)          # the largest tile of this cut
        axons, bits = _tile_costs(p, np.array(r), np.array(c), np.array(ch), "expanded", lim)
        if r * c * ch <= lim.neurons_per_core and bits <= lim.synapse_bits_per_core and \
                axons <= lim.axons_in_per_core:
            cores = (-(-H // r)) * (-(-W // c)) * (-(-C // ch))
            best = cores if best is None else min(best, cores)
    t = tile(p, "expanded", lim)
    assert t.fits == (best is not None)
    if best is not None:
        assert t.cores == best
        assert t.neurons <= lim.neurons_per_core and t.axons_in <= lim.axons_in_per_core
        assert t.synapse_bits <= lim.synapse_bits_per_core
        # the axons of a tile: every input channel over the patch its rows and columns read
        r, c, _ = t.tile
        assert t.axons_in == c_in * min(h, r + k - 1) * min(w, c + k - 1)


def test_shared_kernels_need_no_more_memory_than_expanded():
    lay = _conv("b", 16, (32, 32), 32, 3, pad=1)
    layers = [_conv("a", 3, (32, 32), 16, 3, pad=1), lay, QLayer("flatten", "f", (32, 32, 32), (32768, 1, 1)),
              _dense("d", 32768, 10)]
    exp = plan_network(layers, "microcode", "expanded")
    sh = plan_network(layers, "microcode", "shared")
    assert sh.processes[1].weight_bits < exp.processes[1].weight_bits
    assert exp.processes[1].weight_bits == exp.processes[1].synapses * LOIHI2.weight_bits
    assert sh.cores <= exp.cores
    # a dense fan-in of 32,768 exceeds 4,096 input axons per core: no tiling fits
    d = exp.processes[-1]
    assert not d.tiling.fits and d.tiling.bound == "does not fit" and not exp.fits and not exp.fits_one_chip
    assert plan_network(layers, "microcode", "expanded", Limits(axons_in_per_core=1 << 16)).processes[-1].tiling.fits


def test_stock_mode_counts_its_extra_blocks():
    layers = [_conv("a", 2, (6, 6), 4, 3, pad=1, vth=300), _conv("b", 4, (6, 6), 4, 3, pad=1, vth=100, bias=5),
              QLayer("flatten", "f", (4, 6, 6), (144, 1, 1)), _dense("d", 144, 3, bias=7)]
    micro = processes(layers, "microcode")
    stock = processes(layers, "stock")
    assert [p.name for p in stock] == ["a", "b", "d", "always-on"]
    kinds = lambda p: sorted(s.kind for s in p.inputs)                # noqa: E731
    assert kinds(stock[0]) == ["diagonal", "diagonal"]              # host drive + self-inhibition
    assert kinds(stock[1]) == ["broadcast", "conv", "diagonal"]     # bias, weights, self-inhibition
    assert kinds(stock[2]) == ["broadcast", "dense"]                # the readout has no self-inhibition
    assert all(stock[k].synapses > micro[k].synapses for k in range(3))
    assert stock[0].synapses == 4 * 36 * (1 + stock[0].inputs[1].terms)
    assert stock[0].fan_out == micro[0].fan_out + stock[0].inputs[1].terms      # + its own inhibition
    bias = [next(x for x in p.inputs if x.kind == "broadcast").count for p in stock[1:3]]
    assert stock[-1].fan_out == sum(bias)                          # one source drives every bias synapse
    aligned = processes(layers, "stock", timing="aligned")
    assert aligned[-1].name == "bias relays" and aligned[-1].neurons == 2   # layers 1 and 2 start late
    assert aligned[-2].fan_out == 1 and aligned[-1].fan_out == max(bias[0] + 1, bias[1])


def test_residual_shortcut_counts_its_relays():
    a = _conv("a", 3, (8, 8), 4, 3, pad=1)
    b = _conv("b", 4, (8, 8), 4, 3, pad=1)
    c = _conv("c", 4, (8, 8), 4, 3, pad=1, skips=[QSkip("s", 0, np.ones((4, 4, 1, 1), np.int64), delay=1)])
    procs = processes([a, b, c], "microcode")
    assert [p.role for p in procs] == ["input", "hidden", "relay", "readout"]
    relay = procs[2]
    assert relay.neurons == 4 * 64 and relay.synapses == 4 * 64                # one depthwise link per neuron
    assert procs[3].synapses == _brute_synapses(c) + 4 * 4 * 64               # main conv + 1x1 shortcut
    assert procs[0].fan_out == 4 * 9 + 1 and procs[2].fan_out == 4           # into b and the relay; relay into c


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "qcfs2lava", "plan", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.skipif(not os.path.exists(PILOTNET), reason="needs ../shared/data/netx-examples")
def test_pilotnet_against_its_published_core_count(tmp_path):
    """lava-dl's PilotNet LIF was reported at 74 Loihi 2 cores. The plan brackets it: kernels stored once
    per core need fewer, every synapse stored needs more (docs/stock-mode.md says why)."""
    r = _cli(PILOTNET, "--json", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr
    plans = {p["storage"]: p for p in json.loads((tmp_path / "p.json").read_text())["plans"]}
    assert set(plans) == {"expanded", "shared"} and all(p["mode"] == "netx" for p in plans.values())
    assert plans["shared"]["cores"] < 74 < plans["expanded"]["cores"]
    assert plans["shared"]["processes"][0]["name"] == "input"           # its input layer has neurons
    assert plans["expanded"]["neurons"] == 3 * 66 * 200 + 76032 + 26460 + 8064 + 5632 + 2560 + 161
    assert "fits one Loihi 2 chip" in r.stdout


@pytest.mark.skipif(not os.path.exists(PILOTNET), reason="needs ../shared/data/netx-examples")
@pytest.mark.parametrize("args,needle", [(("--mode", "stock"), "its modes are netx"),
                                         (("--axons-in", "0"), "--axons-in"),
                                         (("--synapse-kib", "x"), "--synapse-kib")])
def test_bad_input_one_line_exit_2(args, needle):
    r = _cli(PILOTNET, *args)
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_missing_file_exit_2(tmp_path):
    r = _cli(str(tmp_path / "none.net"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_export_check_reports_the_plan(tmp_path, digits_model):
    """`export --check` prints each mode's cores and writes the totals to its JSON, equal to `plan`'s."""
    path, _ = digits_model
    out = str(tmp_path / "d.net")
    r = subprocess.run([sys.executable, "-m", "qcfs2lava", "export", path, "-o", out, "--check", "--json",
                        out + ".json", "--bias-correction", "0"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Loihi 2 plan, microcode mode:" in r.stdout and "Loihi 2 plan, stock mode:" in r.stdout
    totals = json.loads(open(out + ".json").read())["loihi2_plan"]
    assert _cli(out, "--json", str(tmp_path / "p.json")).returncode == 0
    plans = json.loads((tmp_path / "p.json").read_text())["plans"]
    assert [(t["mode"], t["storage"], t["cores"]) for t in totals] == [(p["mode"], p["storage"], p["cores"])
                                                                      for p in plans]
