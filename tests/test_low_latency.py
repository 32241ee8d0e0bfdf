"""Low-T improvements (issue #8): bias / v(0) calibration (qcfs2lava.low_latency), per-channel v(0) through
checkpoint → export → HDF5 → refsim → Lava, noise-injected fine-tuning, CLI bad input."""
import dataclasses

import h5py
import numpy as np
import pytest
import torch

from qcfs2lava import data as D
from qcfs2lava.checkpoint import load_checkpoint, save_checkpoint
from qcfs2lava.low_latency import calibrate, calibration_of, if_mean_output, solve_bias, search_v0
from qcfs2lava.qcfs import QCFS, qcfs_layers, spike_noise
from qcfs2lava.snn import IFNeuron, convert, layer_errors, simulate

from conftest import require_lava, run_cli


def _images(ck, n, train=True, seed=0):
    split = D.load_split("digits", None, train=train)
    if train:
        return D.sample(split, n, ck.meta["normalization"], seed=seed)
    norm = ck.meta["normalization"]
    return D.normalize(split.x[:n], norm["max_value"], norm["mean"], norm["std"]), split.y[:n]


@pytest.fixture(scope="module")
def calibrated(digits_model, tmp_path_factory):
    """The digits model calibrated with 'both' for T = 2, saved as a checkpoint."""
    path, _ = digits_model
    ck = load_checkpoint(path)
    cal = calibrate(ck.model, _images(ck, 256), 2, "both", v0_grid=16, bias_iterations=12)
    out = str(tmp_path_factory.mktemp("lowt") / "cal.pt")
    save_checkpoint(out, ck.model, dict(ck.meta, snn_calibration=cal.to_meta()))
    return out, cal


# --------------------------------------------------------------------------- the math
def test_if_mean_output_is_the_if_neuron_with_per_channel_v0_and_bias():
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(5, 3, 4, 2, 2, generator=g)                      # (T, N, C, H, W)
    v0 = torch.tensor([0.0, 0.25, 0.5, 0.9])
    bias = torch.tensor([0.1, -0.2, 0.0, 0.3])
    neuron = IFNeuron(0.7, v0, bias)
    total = sum(neuron(xs[t]) for t in range(5))
    assert torch.allclose(if_mean_output(xs, 0.7, v0, bias), total / 5)
    # scalar v(0) = θ/2 without bias: the plain IF neuron of the float SNN
    plain = IFNeuron(0.7)
    assert torch.allclose(if_mean_output(xs, 0.7), sum(plain(xs[t]) for t in range(5)) / 5)


def test_solve_bias_zeroes_each_channels_mean_error_and_search_v0_minimises_mse():
    g = torch.Generator().manual_seed(1)
    u = torch.rand(400, 3, generator=g)
    z = torch.stack([u[:, 0] ** 2, 1.2 * u[:, 1] ** 3, 0.3 + 0.2 * u[:, 2]], 1)   # skewed per channel
    xs = z.expand(2, 400, 3).clone()                                            # constant input, T = 2
    a = torch.floor(xs[0] * 4 + 0.5).clamp(0, 4) / 4                            # QCFS, L = 4, λ = 1
    e = lambda out: (a - out).mean(0)                                             # noqa: E731
    before = e(if_mean_output(xs, 1.0))
    delta = solve_bias(xs, a, 1.0, 0.5, iterations=20)
    after = e(if_mean_output(xs, 1.0, 0.5, delta.float()))
    assert before.abs().min() > 0.01                                            # T = 2 < L: biased
    assert after.abs().max() < 0.002 and (after.abs() < before.abs()).all()
    v0 = search_v0(xs, a, 1.0, 0.0, grid=8, z=0)
    mse = lambda f: ((a - if_mean_output(xs, 1.0, f)) ** 2).mean(0)              # noqa: E731
    best = mse(v0.float())
    for k in range(8):
        assert (best <= mse(k / 8) + 1e-7).all()


def test_search_v0_keeps_half_where_the_gain_is_not_significant():
    g = torch.Generator().manual_seed(2)
    # channel 0: a real, systematic gain from a lower v(0) on every image; channel 1: the ANN target
    # is noise, so any "gain" on 30 images is chance
    z0 = torch.full((30, 1), 0.4)                       # QCFS(0.4) = 0.5, T = 2 with v0 = ½ gives 0.5
    a0 = torch.zeros(30, 1)                             # target the SNN reaches only with v(0) < 0.2
    z1 = torch.rand(30, 1, generator=g)
    a1 = (torch.rand(30, 1, generator=g) * 4).floor() / 4
    xs = torch.cat([z0, z1], 1).expand(2, 30, 2).clone()
    a = torch.cat([a0, a1], 1)
    plain = search_v0(xs, a, 1.0, 0.0, grid=16, z=0)
    strict = search_v0(xs, a, 1.0, 0.0, grid=16, z=2)
    assert plain[0] < 0.5 and strict[0] == plain[0]     # significant: taken
    assert strict[1] == 0.5


def test_bias_calibration_moves_the_mean_snn_output_toward_the_ann(digits_model):
    """Measured with the float SNN's own error probe (snn.layer_errors), not the calibration code."""
    path, _ = digits_model
    ck = load_checkpoint(path)
    x = _images(ck, 256)
    before = layer_errors(ck.model, x, 2)
    cal = calibrate(ck.model, x, 2, "bias", bias_iterations=14)
    after = layer_errors(ck.model, x, 2, snn=convert(ck.model, calibration=cal.layer_params()))
    for name in before:
        assert abs(after[name]["mean_error"]) < abs(before[name]["mean_error"]), name
        assert abs(after[name]["mean_error"]) < 2e-3, (name, after[name])
    assert max(abs(b["mean_error"]) for b in before.values()) > 5e-3          # there was something to fix
    for lay in cal.layers:
        assert lay.bias is not None and lay.v0_frac is None
        assert abs(lay.mean_error_after) < abs(lay.mean_error_before)


def test_calibrated_checkpoint_loads_weights_only_and_improves_t2(digits_model, calibrated):
    path, _ = digits_model
    out, _ = calibrated
    obj = torch.load(out, weights_only=True)                                   # plain data only
    assert obj["meta"]["snn_calibration"]["T"] == 2
    ck = load_checkpoint(out)
    layers = calibration_of(ck)
    assert set(layers) == {n for n, _ in qcfs_layers(ck.model)}
    assert all(len(d["v0_frac"]) == len(d["bias"]) for d in layers.values())
    a, b = ck.model.state_dict(), load_checkpoint(path).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)                            # the ANN is unchanged
    x, y = _images(ck, 360, train=False)
    vanilla = simulate(convert(ck.model), x, 2).logits.argmax(2).eq(y).float().mean(1)
    tuned = simulate(convert(ck.model, calibration=layers), x, 2).logits.argmax(2).eq(y).float().mean(1)
    assert tuned[1] > vanilla[1] + 0.02, (vanilla, tuned)                       # T = 2 (measured 89 → 97 %)


def test_corrupt_calibration_is_refused(digits_model, tmp_path):
    from qcfs2lava.util.errors import CheckpointError
    path, _ = digits_model
    ck = load_checkpoint(path)
    bad = str(tmp_path / "bad.pt")
    save_checkpoint(bad, ck.model, dict(ck.meta, snn_calibration=dict(method="v0", T=2, n=1, layers={
        "2": {"v0_frac": [0.5] * 3}})))
    with pytest.raises(CheckpointError, match="3 values for 16 channels"):
        calibration_of(load_checkpoint(bad))


# --------------------------------------------------------------------------- export path
@pytest.fixture(scope="module")
def exported(calibrated, tmp_path_factory):
    from netx_export.convert.pipeline import quantize_checkpoint
    from netx_export.netx.write import write_netx
    out, cal = calibrated
    ck = load_checkpoint(out)
    ex = quantize_checkpoint(ck)
    path = str(tmp_path_factory.mktemp("lowt_net") / "cal.net")
    write_netx(ex.net, path)
    return path, ex, ck, cal


def test_per_channel_v0_round_trips_checkpoint_export_hdf5(exported):
    from netx_export.netx.read import read_netx
    from netx_export.netx.validate import validate_file
    path, ex, ck, cal = exported
    back = read_netx(path)
    assert validate_file(path) == []
    syn = [lay for lay in back.layers if lay.kind != "flatten"]
    for lay_cal, gl, ql in zip(cal.layers, ex.graph.synaptic, syn):
        assert lay_cal.name in gl.name.split("+")
        expect = np.clip(np.rint(np.asarray(lay_cal.v0_frac) * ql.neuron.vth), 0, ql.neuron.vth - 1)
        assert ql.neuron.per_channel and np.array_equal(ql.neuron.v_init, expect.astype(np.int64))
        assert ql.neuron.v_init.shape == (ql.shape[0],)
    assert not syn[-1].neuron.per_channel and syn[-1].neuron.v_init == 0      # the readout stays scalar
    with h5py.File(path) as f:
        assert f["layer/0/neuron/vInit"].shape == (syn[0].shape[0],)
        assert f["metadata/snn_calibration/T"][()] == 2
    # the calibrated biases differ from an uncalibrated export by the shift, in integer units
    from netx_export.convert.pipeline import quantize_checkpoint
    plain = quantize_checkpoint(dataclasses.replace(ck, meta={k: v for k, v in ck.meta.items()
                                                              if k != "snn_calibration"}))
    hidden = [lay for lay in plain.net.layers if lay.kind != "flatten"]
    assert not hidden[1].neuron.per_channel and hidden[1].neuron.v_init == hidden[1].neuron.vth // 2
    assert not np.array_equal(hidden[1].bias, syn[1].bias)


def test_uncalibrated_export_keeps_the_scalar_vinit_dataset(digits_model, tmp_path):
    from netx_export.convert.pipeline import quantize_checkpoint
    from netx_export.netx.write import write_netx
    path, _ = digits_model
    net = quantize_checkpoint(load_checkpoint(path)).net
    write_netx(net, str(tmp_path / "plain.net"))
    with h5py.File(tmp_path / "plain.net") as f:
        for k in ("0", "1", "2", "4", "5"):
            d = f[f"layer/{k}/neuron/vInit"]
            assert d.shape == () and d.dtype == np.int64
        assert "snn_calibration" not in f["metadata"]


def test_refsim_uses_per_channel_v0_and_matches_the_float_snn(exported):
    from netx_export.convert.fixedpoint import input_drive
    from netx_export.netx.read import read_netx
    from netx_export.sim.refsim import simulate as refsim
    from netx_export.sim.refsim import simulate_drive
    path, _, ck, _ = exported
    net = read_netx(path)
    x, y = _images(ck, 120, train=False)
    r = refsim(net, x.numpy(), 4, record_spikes=True)
    # the same file with each layer's vInit collapsed to its mean gives different spikes
    flat = dataclasses.replace(net, layers=tuple(
        lay if lay.neuron is None or not lay.neuron.per_channel else
        dataclasses.replace(lay, neuron=dataclasses.replace(lay.neuron, v_init=int(np.mean(lay.neuron.v_init))))
        for lay in net.layers))
    d = input_drive(net, x.numpy()).drive
    r_flat = simulate_drive(flat, d, 4, record_spikes=True)
    assert not np.array_equal(r.spikes[0], r_flat.spikes[0])
    # fixed point ≈ float SNN with the same calibration (8-bit weights: a few predictions differ)
    fl = simulate(convert(ck.model, calibration=calibration_of(ck)), x, 4).logits.argmax(2).numpy()
    agree = (r.predictions[1] == fl[1]).mean()
    assert agree > 0.9, agree
    assert r.accuracy(y.numpy())[1] > 0.9


@pytest.mark.lava
def test_lava_per_channel_v0_matches_refsim_spike_for_spike(exported):
    require_lava()
    from netx_export.convert.fixedpoint import input_drive, v_init_array
    from netx_export.netx.read import read_netx
    from netx_export.comparison import compare
    from netx_export.lava_runtime.runner import build_network, run_lava
    from netx_export.sim.refsim import simulate_drive
    path, _, ck, _ = exported
    net = read_netx(path)
    x, _ = _images(ck, 2, train=False)
    d = input_drive(net, x.numpy()).drive
    # the IF_SUB processes NetX builds hold the per-channel vInit in Lava's (x, y, channel) layout
    ln = build_network(path, d, 4, timing="lava", qnet=net, record_spikes=False)
    try:
        for blk, lay in zip(ln.net.layers, [lay for lay in net.layers if lay.kind != "flatten"]):
            full = v_init_array(lay.neuron, lay.shape) << 6
            want = full.transpose(2, 1, 0) if lay.kind == "conv" else full.reshape(-1)
            for var in (blk.neuron.v_init, blk.neuron.v):       # (the readout's v stays a scalar 0)
                got = np.asarray(var.init)
                assert np.array_equal(np.broadcast_to(got, want.shape) if got.size == 1 else got.reshape(want.shape),
                                      want)
    finally:
        import shutil
        shutil.rmtree(ln.workdir, ignore_errors=True)
    for timing in ("lava", "aligned"):
        res = run_lava(path, T=4, drive=d, timing=timing, qnet=net)
        c = compare(res, simulate_drive(net, d, 4, timing, record_spikes=True))
        assert c["spikes_compared"] > 0 and c["spike_mismatches"] == 0, (timing, c)
        assert c["logit_mismatches"] == 0


# --------------------------------------------------------------------------- noise fine-tuning
def test_spike_noise_moves_outputs_one_grid_step_inside_the_range():
    lam, L = torch.tensor(2.0), 4
    h = (torch.arange(5).repeat(4000) * lam / L).reshape(-1)
    g = torch.Generator().manual_seed(0)
    out = spike_noise(h, lam, L, 0.3, generator=g)
    step = (out - h) / (lam / L)
    assert torch.allclose(step, step.round()) and step.abs().max() == 1
    assert out.min() >= 0 and out.max() <= lam
    assert abs(float((step != 0).float().mean()) - 0.3 * 0.8) < 0.02         # the edges move one way only
    q = QCFS(L=4, lam_init=2.0)
    q.noise_p = 0.5
    z = torch.linspace(-1, 3, 1000)
    assert torch.equal(q.eval()(z), QCFS(L=4, lam_init=2.0)(z))                 # inference: no noise
    assert not torch.equal(q.train()(z), QCFS(L=4, lam_init=2.0)(z))


def test_noise_finetuning_runs_two_steps_and_changes_the_weights(digits_model, tmp_path):
    from qcfs2lava.training import TrainConfig, train
    path, _ = digits_model
    out = str(tmp_path / "noise.pt")
    train(TrainConfig(arch="tiny", dataset="digits", out=out, epochs=1, max_steps=2, init=path, noise_p=0.2,
                      lr=0.01, quiet=True))
    a, b = load_checkpoint(path), load_checkpoint(out)
    assert b.meta["init"]["sha256"] == a.sha256 and b.meta["spike_noise"]["p"] == 0.2
    sa, sb = a.model.state_dict(), b.model.state_dict()
    changed = [k for k in sa if sa[k].is_floating_point() and not torch.equal(sa[k], sb[k])]
    assert any(k.endswith("weight") for k in changed), changed
    # tiny lr, two steps: still the trained network, not a fresh one
    assert max(float((sa[k] - sb[k]).abs().max()) for k in changed if k.endswith("weight")) < 0.1


def test_cli_calibrate_writes_a_checkpoint_that_exports(digits_model, tmp_path):
    path, _ = digits_model
    out = tmp_path / "c.pt"
    r = run_cli("calibrate", path, "--method", "v0", "--T", "2", "--n", "64", "-o", out, "--json", tmp_path / "c.json")
    assert r.returncode == 0, r.stderr
    assert "MSE before" in r.stdout and out.exists()
    r = run_cli("evaluate", out, "--T", "4")
    assert r.returncode == 0 and "calibrated SNN: method v0, target T=2" in r.stdout, r.stderr
    r = run_cli("export", out, "-o", tmp_path / "c.net", "--bias-correction", "0", "--check")
    assert r.returncode == 0, r.stderr


def _one_line_error(r, pattern):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert pattern in lines[0], lines[0]


def test_cli_bad_input(digits_model, tmp_path):
    path, _ = digits_model
    _one_line_error(run_cli("calibrate", tmp_path / "none.pt", "-o", tmp_path / "o.pt"), "checkpoint not found")
    _one_line_error(run_cli("calibrate", path, "--T", "0", "-o", tmp_path / "o.pt"), "--T: must be between 1 and")
    _one_line_error(run_cli("calibrate", path, "--n", "0", "-o", tmp_path / "o.pt"), "--n: must be >= 1")
    _one_line_error(run_cli("calibrate", path, "-o", path), "would overwrite the input")
    r = run_cli("calibrate", path, "--method", "magic", "-o", tmp_path / "o.pt")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    _one_line_error(run_cli("train", "--init", path, "--noise-p", "1.5", "--epochs", "1", "--out", tmp_path / "n.pt"),
                    "--noise-p: must be >= 0 and <= 1")
    _one_line_error(run_cli("train", "--L", "2", "--init", path, "--epochs", "1", "--out", tmp_path / "n.pt"),
                    "is a different network: L 4 (not 2)")
    assert not (tmp_path / "o.pt").exists() and not (tmp_path / "n.pt").exists()
