"""The reference simulator's torch backend (issue 17): PyTorch convolutions on exact integers give the
numpy backend's integers exactly — every logit, every spike of every layer and step, the per-step and
per-neuron counts and the saturation count — in both timings, with shortcuts, per-channel v(0),
saturated and wrapped states and leaky CUBA neurons; and Lava agrees with both (three-way)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from conftest import randomize_bn, require_lava
from netx_export.convert.fixedpoint import quantize
from netx_export.convert.trace import trace
from netx_export.netx.write import write_netx
from netx_export.sim.refsim import simulate_drive
from qcfs2lava.models.resnet import BasicBlock
from qcfs2lava.qcfs import prepare_ann

NORM = dict(normalization=dict(mean=[0.0], std=[1.0], max_value=1.0))


def _same(a, b):
    assert np.array_equal(a.logits, b.logits)
    assert a.saturated == b.saturated
    for name in ("spikes", "step_counts", "neuron_counts", "spike_counts"):
        for x, y in zip(getattr(a, name), getattr(b, name)):
            assert x.dtype == y.dtype and np.array_equal(x, y), name


def _both(net, drive, T, timing):
    a = simulate_drive(net, drive, T, timing, record_spikes=True, count_neurons=True)
    b = simulate_drive(net, drive, T, timing, record_spikes=True, count_neurons=True, device="cpu")
    _same(a, b)
    return a


@pytest.fixture(scope="module")
def resnet_net():
    torch.manual_seed(0)
    model = prepare_ann(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), BasicBlock(8, 8),
                                      BasicBlock(8, 16, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(16, 5)), L=4, lam_init=1.0)
    randomize_bn(model)
    net = quantize(trace(model.eval(), (1, 8, 8)), metadata=dict(NORM))
    from netx_export.convert.fixedpoint import input_drive
    x = np.random.default_rng(0).uniform(-2, 2, size=(6, 1, 8, 8))
    return net, input_drive(net, x).drive


@pytest.mark.parametrize("timing", ["aligned", "lava"])
def test_digits_net(digits_netx, timing):
    _, net, drive, _ = digits_netx
    r = _both(net, drive, 12, timing)
    assert all(s.any() for s in r.spikes[:-1])           # (the readout integrates; it never fires)


@pytest.mark.parametrize("timing", ["aligned", "lava"])
def test_shortcuts(resnet_net, timing):
    net, drive = resnet_net
    assert sum(len(lay.skips) for lay in net.layers) == 2
    r = _both(net, drive, 9, timing)
    assert all(s.any() for s in r.spikes[:-1])


def test_per_channel_v0_saturation_wrap_and_leaky_neurons(digits_netx):
    """Per-channel vInit, weights and bias large enough to saturate v and wrap u, and CUBA neurons with
    current and voltage decay (non-subtractive reset): the arithmetic the plain files never reach."""
    _, net, drive, _ = digits_netx
    rng = np.random.default_rng(3)
    layers = []
    for k, lay in enumerate(net.layers):
        if lay.neuron is None:
            layers.append(lay)
            continue
        neu = lay.neuron
        if k == 0:
            neu = dataclasses.replace(neu, v_init=rng.integers(0, neu.vth, lay.shape[0]).astype(np.int64))
        elif k == 1:
            lay = dataclasses.replace(lay, weight=lay.weight * 200, bias=lay.bias * 50)   # saturates and wraps
        elif lay is not net.synaptic[-1]:
            neu = dataclasses.replace(neu, type="CUBA", i_decay=1000, v_decay=300)
        layers.append(dataclasses.replace(lay, neuron=neu))
    hot = dataclasses.replace(net, layers=tuple(layers))
    for timing in ("aligned", "lava"):
        r = _both(hot, drive, 10, timing)
        assert r.saturated > 0


def test_cuda_is_refused_where_there_is_none(digits_netx, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: benchmarks/gpu_check.sh covers it")
    from qcfs2lava.cli import main
    assert main(["simulate", digits_netx[0], "--device", "cuda", "--n", "2", "--T", "2"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err


@pytest.mark.lava
@pytest.mark.parametrize("timing", ["aligned", "lava"])
def test_three_way_with_lava(resnet_net, tmp_path, timing):
    require_lava()
    from netx_export.comparison import compare
    from netx_export.lava_runtime.runner import run_lava
    net, drive = resnet_net
    path = str(tmp_path / "r.net")
    write_netx(net, path)
    ref = _both(net, drive[:3], 6, timing)
    c = compare(run_lava(path, drive=drive[:3], T=6, timing=timing, qnet=net), ref)
    assert c["identical"] and c["spikes_compared"] > 0, c["layers"]


@pytest.mark.lava
def test_three_way_with_lava_where_v_saturates(digits_netx, tmp_path):
    """Lava's IF_SUB model (with its fast path for IF_SUB's decays) on a valid file where v saturates
    (every other channel of layer 1 biased by −4095, the 13-bit limit) and layer 0 has per-channel
    vInit: the same spikes and logits as both refsim backends. (u cannot wrap in a valid file: the
    validator bounds the per-step input below 2^17.)"""
    require_lava()
    from netx_export.comparison import compare
    from netx_export.lava_runtime.runner import run_lava
    from netx_export.netx.validate import validate_file
    _, net, drive, _ = digits_netx
    layers = list(net.layers)
    first, second = [i for i, lay in enumerate(layers) if lay.neuron is not None][:2]
    neu = layers[first].neuron
    v0 = np.random.default_rng(3).integers(0, neu.vth, layers[first].shape[0]).astype(np.int64)
    layers[first] = dataclasses.replace(layers[first], neuron=dataclasses.replace(neu, v_init=v0))
    bias = layers[second].bias.copy()
    bias[::2] = -4095
    layers[second] = dataclasses.replace(layers[second], bias=bias)
    hot = dataclasses.replace(net, layers=tuple(layers))
    path = str(tmp_path / "hot.net")
    write_netx(hot, path)
    assert validate_file(path) == []
    ref = _both(hot, drive[:3], 36, "lava")
    assert ref.saturated > 0
    c = compare(run_lava(path, drive=drive[:3], T=36, timing="lava", qnet=hot), ref)
    assert c["identical"] and c["spikes_compared"] > 0, c["layers"]
