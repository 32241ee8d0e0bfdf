"""netx_export.sim.refsim: Loihi's integer arithmetic by hand, then the digits model against the float SNN."""
import json
import os

import numpy as np
import pytest

from netx_export.sim import refsim
from netx_export.convert.fixedpoint import InputDrive, QLayer, QNetwork, QNeuron
from netx_export.netx.read import read_netx
from netx_export.sim.refsim import UV_MAX, decay, lif_step, simulate_drive, wrap_current


def run_neuron(inputs, vth, v_init, bias=0, subtractive=True):
    """Spike train and final v (weight units) of one IF neuron (iDecay 4096, vDecay 0)."""
    u = np.zeros(1, np.int64)
    v = np.full(1, v_init << 6, np.int64)
    spikes = []
    for a in inputs:
        u, v, s, _ = lif_step(u, v, np.array([a]), bias, vth, 4095, 0, subtractive)
        spikes.append(int(s[0]))
    return spikes, int(v[0]) >> 6


def test_if_sub_hand_computed_train():
    # θ = 10, v(0) = θ/2 = 5, input 4 per step: v = 9, 13→3, 7, 11→1, 5
    assert run_neuron([4] * 5, vth=10, v_init=5) == ([0, 1, 0, 1, 0], 5)


def test_threshold_is_inclusive_and_reset_subtracts():
    # v reaches exactly θ: IF_SUB (≥, QCFS's floor(x + ½)) fires; stock LIF (>) does not, and resets to 0.
    assert run_neuron([5], vth=10, v_init=5) == ([1], 0)
    assert run_neuron([5], vth=10, v_init=5, subtractive=False) == ([0], 10)
    # A big input fires once per step and keeps the remainder: 5 + 27 = 32 → 22 → 13 + ... (no multi-spike)
    assert run_neuron([27, 0, 0], vth=10, v_init=5) == ([1, 1, 1], 2)
    assert run_neuron([27], vth=10, v_init=5, subtractive=False) == ([1], 0)


def test_bias_is_per_step_input():
    assert run_neuron([0] * 4, vth=10, v_init=5, bias=3) == ([0, 1, 0, 0], 7)


def test_24_bit_current_wraps_and_voltage_saturates():
    # u = a << 6 must stay in (−2^23, 2^23]: a = 2^17 is the edge, one more wraps to −2^23 + 64.
    assert wrap_current(np.array([UV_MAX]))[0] == UV_MAX
    assert wrap_current(np.array([UV_MAX + 64]))[0] == -UV_MAX + 64
    assert wrap_current(np.array([-UV_MAX]))[0] == UV_MAX
    u, v, s, sat = lif_step(np.zeros(1, np.int64), np.zeros(1, np.int64), np.array([(1 << 17) + 1]), 0, 131071,
                            4095, 0)
    assert u[0] == -UV_MAX + 64 and v[0] == -UV_MAX + 64 and s[0] == 0        # wrapped: a big drive looks negative
    u, v, s, sat = lif_step(np.zeros(1, np.int64), np.full(1, -UV_MAX + 100, np.int64), np.array([-1000]), 0, 10,
                            4095, 0)
    assert v[0] == -(UV_MAX - 1) and sat == 1                                   # v saturates instead
    assert decay(np.array([-5, 5]), 2048).tolist() == [-2, 2]                   # decays round toward zero


def _two_layer(bias1=0):
    """Hand-worked 2 → 2 → 2 network: layer 0 driven by its bias, layer 1 dense, layer 2 the readout."""
    l0 = QLayer("dense", "in", (2, 1, 1), (2, 1, 1), np.array([[1, 0], [0, 1]]), np.zeros(2, np.int64),
                neuron=QNeuron(10, 5))
    l1 = QLayer("dense", "hid", (2, 1, 1), (2, 1, 1), np.array([[6, 0], [-4, 8]]), np.array([bias1, 0]),
                neuron=QNeuron(10, 5))
    l2 = QLayer("dense", "out", (2, 1, 1), (2, 1, 1), np.array([[3, 0], [0, 3]]), np.zeros(2, np.int64),
                neuron=QNeuron(1 << 16, 0))
    return QNetwork((2, 1, 1), (l0, l1, l2), InputDrive(np.eye(2), np.zeros(2)))


def test_hand_worked_two_layer_network_aligned():
    net = _two_layer()
    r = simulate_drive(net, np.array([[4, 10]]), T=4, record_spikes=True)
    # layer 0, v(0)=5, drive [4, 10]: n0 = 9, 13→3, 7, 11→1 → [0,1,0,1]; n1 = 15→5 every step → [1,1,1,1]
    assert r.spikes[0][:, 0].reshape(4, 2).tolist() == [[0, 1], [1, 1], [0, 1], [1, 1]]
    # layer 1 input: a0 = 6·s0, a1 = −4·s0 + 8·s1 → a0 = [0,6,0,6], a1 = [8,4,8,4]
    # n0: 5, 11→1, 1, 7 → [0,1,0,0];  n1: 13→3, 7, 15→5, 9 → [1,0,1,0]
    assert r.spikes[1][:, 0].reshape(4, 2).tolist() == [[0, 1], [1, 0], [0, 1], [0, 0]]
    # readout: summed input 3·(spikes of layer 1 so far)
    assert r.logits[:, 0].tolist() == [[0, 3], [3, 3], [3, 6], [3, 6]]
    assert r.predictions[:, 0].tolist() == [1, 0, 1, 1]                          # ties → first class


def test_lava_timing_delays_each_synaptic_layer_by_one_step():
    net = _two_layer()
    drive = np.array([[4, 10], [7, 2]])
    al = simulate_drive(net, drive, T=12, record_spikes=True)
    lv = simulate_drive(net, drive, T=12, timing="lava", record_spikes=True)
    assert np.array_equal(al.spikes[0], lv.spikes[0])                           # bias-driven: no synapse
    assert np.array_equal(al.spikes[1][:-1], lv.spikes[1][1:]) and not lv.spikes[1][0].any()
    assert np.array_equal(al.logits[:-2], lv.logits[2:]) and not lv.logits[:2].any()   # output lags by depth


@pytest.fixture(scope="module")
def exported(digits_model, tmp_path_factory):
    from qcfs2lava.cli import build_parser
    path, _ = digits_model
    out = str(tmp_path_factory.mktemp("netx") / "digits.net")
    p = build_parser()
    a = p.parse_args(["export", path, "-o", out, "--check", "--json", out + ".json"])
    assert a.func(a) == 0
    return path, out, p


def test_digits_refsim_matches_float_snn(exported):
    """Measured on the digits test set (360 images): fixed point vs float SNN, aligned timing."""
    import torch

    from qcfs2lava import data as D
    from qcfs2lava.checkpoint import load_checkpoint
    from qcfs2lava.snn import evaluate as float_evaluate
    path, out, _ = exported
    ck = load_checkpoint(path)
    split = D.load_split("digits", None, train=False)
    norm = ck.meta["normalization"]
    x = D.normalize(split.x, norm["max_value"], norm["mean"], norm["std"])
    torch.set_num_threads(1)
    fl = float_evaluate(ck.model, [(x, split.y)], 32)
    ref = refsim.evaluate(read_netx(out), [(x.numpy(), split.y.numpy())], 32)
    diffs = {t: ref.at(t) - fl.at(t) for t in (4, 8, 16, 32)}
    print("float", [round(fl.at(t), 4) for t in (1, 2, 4, 8, 16, 32)],
          "ref", [round(ref.at(t), 4) for t in (1, 2, 4, 8, 16, 32)])
    assert ref.saturated == 0 and ref.drive_clipped == 0
    assert abs(diffs[16]) <= 0.01 and max(abs(d) for d in diffs.values()) <= 0.015, diffs   # ≤ 5 of 360 images
    assert ref.at(16) > 0.95
    # firing rates agree closely layer by layer
    assert np.allclose(ref.firing_rates[:-1], list(fl.firing_rates.values()), rtol=0.03)


def test_cli_simulate_and_inspect(exported, tmp_path, capsys):
    path, out, p = exported
    js = str(tmp_path / "sim.json")
    a = p.parse_args(["simulate", out, "--backend", "reference", "--n", "60", "--T", "8", "--json", js])
    assert a.func(a) == 0
    res = json.load(open(js))
    assert res["n"] == 60 and len(res["accuracy"]) == 8 and res["accuracy"][-1] > 0.8
    a = p.parse_args(["inspect", out, "--validate"])
    assert a.func(a) == 0
    text = capsys.readouterr().out
    assert "T=8" in text and "IF_SUB" in text and "validation: OK" in text
    report = json.load(open(out + ".json"))
    assert report["check"] is True and len(report["layers"]) == 5


def test_cli_simulate_saves_per_sample_outputs_and_spikes(exported, tmp_path):
    """``--save-outputs`` / ``--save-spikes`` (reference backend, batches of 7): the files hold, sample by
    sample, what refsim computes on the same images in one batch."""
    from netx_export.netx.inputs import load_test_inputs
    path, out, p = exported
    o, s = tmp_path / "out.npz", tmp_path / "sub" / "spikes.npz"
    a = p.parse_args(["simulate", out, "--n", "20", "--T", "5", "--batch-size", "7", "--save-outputs", str(o),
                      "--save-spikes", str(s), "--neuron-spikes"])
    assert a.func(a) == 0
    net = read_netx(out)
    xs, ys, _ = load_test_inputs(net, out, None, None, 20)
    ref = refsim.simulate(net, xs, 5, record_spikes=True)
    got = np.load(o)
    assert np.array_equal(got["logits"], ref.logits) and np.array_equal(got["predictions"], ref.predictions)
    assert np.array_equal(got["labels"], ys) and np.array_equal(got["indices"], np.arange(20))
    spk = np.load(s)
    names = [lay.name for lay in net.synaptic]
    assert list(spk["layer_names"]) == names
    for i, sp in enumerate(ref.spikes):
        assert np.array_equal(spk[f"layer{i}"], sp.reshape(5, 20, -1).sum(2)), i
        assert spk[f"layer{i}_neurons"].dtype == np.uint8
        assert np.array_equal(spk[f"layer{i}_neurons"], sp.sum(0)), i
    assert [k for k in os.listdir(tmp_path / "sub")] == ["spikes.npz"]           # written atomically, nothing left
    # per-neuron counts are opt-in: without --neuron-spikes only the per-step sums are written
    a = p.parse_args(["simulate", out, "--n", "20", "--T", "5", "--save-spikes", str(s)])
    assert a.func(a) == 0
    lean = np.load(s)
    assert sorted(lean) == sorted(k for k in spk if not k.endswith("_neurons"))
    assert all(np.array_equal(lean[k], spk[k]) for k in lean)


def test_cli_bad_input_is_a_user_error(exported, tmp_path):
    from qcfs2lava.util.errors import UserError
    path, out, p = exported
    for argv in (["export", str(tmp_path / "nope.pt")], ["simulate", str(tmp_path / "nope.net")],
                 ["inspect", str(tmp_path / "nope.net")], ["simulate", out, "--dataset", "cifar10"]):
        a = p.parse_args(argv)
        with pytest.raises(UserError):
            a.func(a)
    with pytest.raises(SystemExit) as e:            # out-of-range options stop at parsing (one line, exit 2)
        p.parse_args(["simulate", out, "--T", "0"])
    assert e.value.code == 2


def test_export_calibrates_biases_by_default_and_records_it(exported, tmp_path):
    import h5py
    path, out, p = exported
    report = json.load(open(out + ".json"))
    assert report["bias_correction_images"] == 256 and len(report["bias_corrections"]) == len(report["layers"]) - 1
    with h5py.File(out, "r") as f:
        assert int(f["metadata/calibration/images"][()]) == 256
    plain = str(tmp_path / "plain.net")
    a = p.parse_args(["export", path, "-o", plain, "--bias-correction", "0", "--json", plain + ".json"])
    assert a.func(a) == 0
    assert json.load(open(plain + ".json"))["bias_corrections"] == []
    a_net, b_net = read_netx(out), read_netx(plain)
    assert all(np.array_equal(x.weight, y.weight) for x, y in zip(a_net.synaptic, b_net.synaptic))
    assert any(not np.array_equal(x.bias, y.bias) for x, y in zip(a_net.synaptic[1:], b_net.synaptic[1:]))


def test_calibration_without_its_data_names_the_way_out(digits_model, tmp_path):
    from qcfs2lava.checkpoint import load_checkpoint, save_checkpoint
    from qcfs2lava.util.errors import UserError
    from qcfs2lava.cli import build_parser
    ck = load_checkpoint(digits_model[0])
    foreign = str(tmp_path / "cifar.pt")
    save_checkpoint(foreign, ck.model, dict(ck.meta, dataset="cifar10"))
    p = build_parser()
    a = p.parse_args(["export", foreign, "-o", str(tmp_path / "c.net"), "--data-dir", str(tmp_path)])
    with pytest.raises(UserError, match="--bias-correction 0"):
        a.func(a)
    assert not (tmp_path / "c.net").exists()
