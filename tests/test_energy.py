"""netx_export.report.energy: fan-out, MACs, SOPs and energies against hand counts, the paper's constants
and Table S5, and the latency against the reference simulator's Lava timing."""
import math

import numpy as np
import pytest

from netx_export.report.energy import (LOIHI_NEURON_ACTIVE_J, LOIHI_NEURON_INACTIVE_J, LOIHI_SOP_J, LOIHI_SPIKE_J,
                                PAPER_FLOP_J, PAPER_SOP_J, EnergyTable, LayerCost, algorithmic_latency,
                                energy_table, fan_out, format_energy, format_joules, layer_macs, taps_per_position)
from netx_export.convert.fixedpoint import InputDrive, QLayer, QNetwork, QNeuron
from netx_export.sim.refsim import simulate_drive


def _conv(name, c_in, c_out, hw_in, hw_out, k, stride=1, pad=0, vth=4, weight=1, bias=0):
    w = np.full((c_out, c_in, k, k), weight, dtype=np.int64)
    return QLayer("conv", name, (c_in, hw_in, hw_in), (c_out, hw_out, hw_out), w, np.full(c_out, bias, np.int64),
                  (stride, stride), (pad, pad), neuron=QNeuron(vth, vth // 2))


def _dense(name, n_in, n_out, vth=4, weight=1):
    return QLayer("dense", name, (n_in, 1, 1), (n_out, 1, 1), np.full((n_out, n_in), weight, np.int64),
                  np.zeros(n_out, np.int64), neuron=QNeuron(vth, vth // 2))


def _toy() -> QNetwork:
    """conv 1→2 ch, 3×3, pad 1 on 3×3 (18 neurons) → flatten → dense 18 → 4 (readout)."""
    c0 = _conv("c0", 1, 2, 3, 3, 3, pad=1)
    flat = QLayer("flatten", "f", (2, 3, 3), (18, 1, 1))
    d1 = _dense("d1", 18, 4)
    drive = InputDrive(np.ones((2, 1, 3, 3)), np.zeros(2))
    return QNetwork((1, 3, 3), (c0, flat, d1), drive)


# --------------------------------------------------------------------------- geometry
def test_taps_per_position_by_hand():
    # size 4, kernel 3, pad 1, stride 1: the edges are read by 2 taps, the inside by 3.
    assert taps_per_position(4, 4, 3, 1, 1, 1).tolist() == [2, 3, 3, 2]
    # 2×2 stride 2 (a folded pool): every pixel read exactly once.
    assert taps_per_position(4, 2, 2, 2, 0, 1).tolist() == [1, 1, 1, 1]
    # kernel 3, stride 2, pad 1 on 5 → 3 outputs; output o reads 2o−1, 2o, 2o+1: odd pixels are shared.
    assert taps_per_position(5, 3, 3, 2, 1, 1).tolist() == [1, 2, 1, 2, 1]
    # dilation 2, kernel 2, no pad, size 4 → outputs 2: taps at (o, o+2).
    assert taps_per_position(4, 2, 2, 1, 0, 2).tolist() == [1, 1, 1, 1]


def test_fan_out_conv_and_dense_by_hand():
    c = _conv("c", 2, 3, 3, 3, 3, pad=1)
    fo = fan_out(c)
    assert fo.shape == (2, 3, 3)
    # each presynaptic pixel drives 3 output channels × (rows covering it) × (columns covering it)
    np.testing.assert_array_equal(fo[0], 3 * np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]]))
    assert fo.sum() == 2 * 3 * 49
    # away from the edges it is C_out·k² / stride²
    big = _conv("b", 1, 8, 16, 8, 4, stride=2, pad=1)
    assert fan_out(big)[0, 4:12, 4:12].tolist() == [[8 * 4] * 8] * 8
    d = _dense("d", 18, 4)
    assert fan_out(d).shape == (18, 1, 1) and set(fan_out(d).ravel()) == {4}
    with pytest.raises(ValueError):
        fan_out(QLayer("flatten", "f", (2, 3, 3), (18, 1, 1)))


@pytest.mark.parametrize("k,stride,pad,dil", [(6, 2, 2, 1), (3, 1, 1, 1), (3, 2, 0, 2), (4, 3, 1, 1)])
def test_fan_out_equals_brute_force_convolution(k, stride, pad, dil):
    """fan_out(p) = number of outputs a one-hot input at p reaches through an all-ones kernel."""
    from netx_export.convert.conv import conv2d, conv_output_shape
    c_in, c_out, hw = 2, 3, 8
    shape = conv_output_shape((c_in, hw, hw), c_out, (k, k), (stride, stride), (pad, pad), (dil, dil))
    lay = QLayer("conv", "c", (c_in, hw, hw), shape, np.ones((c_out, c_in, k, k), np.int64), np.zeros(c_out, np.int64),
                 (stride, stride), (pad, pad), (dil, dil), neuron=QNeuron(4, 2))
    eye = np.eye(c_in * hw * hw).reshape(-1, c_in, hw, hw)
    brute = conv2d(eye, np.ones((c_out, c_in, k, k)), (stride, stride), (pad, pad), (dil, dil)).sum((1, 2, 3))
    np.testing.assert_array_equal(fan_out(lay).reshape(-1), brute)


def test_fan_out_groups():
    # 2 groups: each input channel feeds the 2 output channels of its group
    lay = QLayer("conv", "g", (2, 5, 5), (4, 5, 5), np.ones((4, 1, 3, 3), np.int64), np.zeros(4, np.int64),
                 padding=(1, 1), groups=2, neuron=QNeuron(4, 2))
    assert fan_out(lay)[0, 2, 2] == 2 * 9
    assert layer_macs(lay) == 4 * 25 * 1 * 9


def test_layer_macs_by_hand():
    net = _toy()
    assert layer_macs(net.layers[0]) == 18 * 9          # 2·3·3 outputs × 1·3·3 taps (padding counted)
    assert layer_macs(net.layers[1]) == 0               # flatten
    assert layer_macs(net.layers[2]) == 4 * 18


# --------------------------------------------------------------------------- SOPs and energy
def test_two_layer_toy_counts_by_hand():
    net = _toy()
    spikes0 = np.zeros((2, 3, 3))
    spikes0[0, 0, 0], spikes0[1, 1, 1] = 3.0, 2.0       # 5 spikes per sample in layer 0
    t = energy_table(net, [spikes0, 1.5], T=8)
    c0, c1 = t.layers
    assert (c0.neurons, c0.synapses, c0.macs, c0.sops) == (18, 2 * 49, 162, 0.0)
    assert math.isnan(c0.spikes_in) and c0.spikes_out == 5.0
    assert (c1.neurons, c1.synapses, c1.macs, c1.fan_out) == (4, 72, 72, 4.0)
    assert c1.spikes_in == 5.0 and c1.sops == 5 * 4 and c1.exact
    assert t.ann_macs == 234 and t.ann_flops == 468 and t.host_flops == 324
    assert t.sops == 20.0 and t.spikes == 6.5 and t.neuron_updates == 8 * 22
    assert t.ann_energy_j == pytest.approx(468 * 12.5e-12)
    assert t.sop_energy_j == pytest.approx(20 * 77e-15)
    assert t.host_energy_j == pytest.approx(324 * 12.5e-12)
    assert t.snn_energy_j == pytest.approx(20 * 77e-15 + 324 * 12.5e-12)
    loihi = 20 * 23.6e-12 + 6.5 * (81e-12 + 1.7e-12) + (176 - 6.5) * 52e-12
    assert t.loihi_estimate_j == pytest.approx(loihi)
    assert t.macs_source.startswith("exported")
    assert [c.index for c in t.layers] == [0, 2]        # positions in net.layers, as LayerReport.index


def test_per_neuron_counts_are_exact_and_totals_use_mean_fan_out():
    c0 = _conv("c0", 1, 2, 3, 3, 3, pad=1)
    c1 = _conv("c1", 2, 3, 3, 3, 3, pad=1)
    net = QNetwork((1, 3, 3), (c0, c1), InputDrive(np.ones((2, 1, 3, 3)), np.zeros(2)))
    corner = np.zeros((2, 3, 3))
    corner[0, 0, 0] = 5.0                                 # a corner pixel drives 3·2·2 = 12 synapses
    exact = energy_table(net, [corner, 0.0], T=4)
    assert exact.layers[1].sops == 5 * 12 and exact.layers[1].exact
    mean = energy_table(net, [5.0, 0.0], T=4)
    assert mean.layers[1].sops == pytest.approx(5 * 3 * 49 / 9) and not mean.layers[1].exact
    assert "(mean fan-out)" in format_energy(mean)


def test_ann_macs_override_and_errors():
    net = _toy()
    t = energy_table(net, [1.0, 0.0], T=2, ann_macs=[100, 10])
    assert t.ann_macs == 110 and t.host_flops == 200 and t.macs_source == "PyTorch model"
    with pytest.raises(ValueError, match="synaptic layers"):
        energy_table(net, [1.0], T=2)
    with pytest.raises(ValueError, match="ANN MAC"):
        energy_table(net, [1.0, 0.0], T=2, ann_macs=[1])
    with pytest.raises(ValueError, match="spike counts"):
        energy_table(net, [np.zeros(5), 0.0], T=2)
    with pytest.raises(ValueError, match="T must"):
        energy_table(net, [1.0, 0.0], T=0)


# --------------------------------------------------------------------------- the paper
def test_paper_constants():
    assert PAPER_SOP_J == 77e-15 and PAPER_FLOP_J == 12.5e-12
    assert (LOIHI_SOP_J, LOIHI_NEURON_ACTIVE_J, LOIHI_NEURON_INACTIVE_J, LOIHI_SPIKE_J) == \
        (23.6e-12, 81e-12, 52e-12, 1.7e-12)


def test_table_s5_energies_from_its_operation_counts():
    # Table S5, VGG-16 on CIFAR-100: ANN 0.628 GFLOP → 7.85 mJ; ours T=2 0.094 GSOP → 0.007 mJ,
    # T=64 2.884 GSOP → 0.222 mJ.
    ann = LayerCost(0, "x", "conv", 1, 1, 0.0, 314_000_000, math.nan, 0.0, 0.0, True)
    snn = LayerCost(1, "y", "conv", 1, 1, 1.0, 0, 1.0, 0.0, 0.094e9, True)
    t = EnergyTable((ann, snn), T=2, macs_source="test")
    assert t.ann_energy_j * 1e3 == pytest.approx(7.85, abs=0.005)
    assert t.sop_energy_j * 1e3 == pytest.approx(0.007, abs=0.0005)
    assert 2.884e9 * PAPER_SOP_J * 1e3 == pytest.approx(0.222, abs=0.0005)


def test_vgg16_flops_reproduce_table_s5_method():
    """FLOPs = 2·MACs over VGG-16's 13 conv layers at 32×32 gives Table S5's 0.628 GFLOP (within 0.5%)."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    c, s, macs = 3, 32, 0
    for v in cfg:
        if v == "M":
            s //= 2
            continue
        w = np.broadcast_to(np.int64(0), (v, c, 3, 3))    # only the shape matters
        macs += layer_macs(QLayer("conv", "v", (c, s, s), (v, s, s), w, None, padding=(1, 1)))
        c = v
    assert macs == 313_196_544
    assert 2 * macs / 1e9 == pytest.approx(0.628, rel=0.005)


# --------------------------------------------------------------------------- latency
def test_algorithmic_latency():
    assert algorithmic_latency(16, 5) == 20
    assert algorithmic_latency(4, 1) == 4
    t = energy_table(_toy(), [1.0, 0.0], T=16)
    assert t.latency_steps == 16 + 1
    assert "17 steps" in format_energy(t)


def test_latency_matches_refsim_lava_timing():
    """With zero biases, Lava timing is aligned timing delayed by (synaptic layers − 1) steps at the readout."""
    c0 = _conv("c0", 1, 2, 3, 3, 3, pad=1, vth=8)
    c1 = _conv("c1", 2, 2, 3, 3, 3, pad=1, vth=10)
    flat = QLayer("flatten", "f", (2, 3, 3), (18, 1, 1))
    d2 = QLayer("dense", "d2", (18, 1, 1), (3, 1, 1), np.arange(54, dtype=np.int64).reshape(3, 18) % 5 - 1,
                np.zeros(3, np.int64), neuron=QNeuron(1 << 16, 0))
    net = QNetwork((1, 3, 3), (c0, c1, flat, d2), InputDrive(np.ones((2, 1, 3, 3)), np.zeros(2)))
    rng = np.random.default_rng(0)
    drive = rng.integers(0, 7, size=(4, 2, 3, 3))
    T = 10
    delay = algorithmic_latency(T, len(net.synaptic)) - T
    aligned = simulate_drive(net, drive, T, "aligned")
    lava = simulate_drive(net, drive, T + delay, "lava")
    assert np.abs(aligned.logits).max() > 0
    np.testing.assert_array_equal(lava.logits[delay:], aligned.logits)
    assert not lava.logits[:delay].any()


def test_format_joules():
    assert format_joules(7.85e-3) == "7.85 mJ"
    assert format_joules(7.2e-6) == "7.2 µJ"
    assert format_joules(5e-14) == "50 fJ"
    assert format_joules(float("nan")) == "-"
