"""Residual networks end to end: a block's shortcut (identity or 1x1 conv + BN) becomes a second
synapse into the neurons after the add; the SNN sums both currents as the ANN adds before its
activation, with the shortcut delayed so that both paths bring spikes of the same step (docs/residual.md)."""
import dataclasses

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from conftest import require_lava, randomize_bn
from netx_export.sim import refsim
from netx_export.errors import ExportError, NetxFileError
from netx_export.convert.fixedpoint import quantize, skip_delay
from netx_export.convert.graph import check_graph, graph_forward
from netx_export.convert.trace import trace
from netx_export.netx.read import read_netx
from netx_export.netx.validate import validate, validate_file
from netx_export.netx.write import write_netx
from qcfs2lava.models.resnet import BasicBlock
from qcfs2lava.qcfs import QCFS, prepare_ann

NORM = dict(normalization=dict(mean=[0.5], std=[0.25]))


class MiniResNet(nn.Module):
    """Stem, an identity block, a down-sampling block (1x1 conv + BN shortcut), pool, linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.b1 = BasicBlock(4, 4)
        self.b2 = BasicBlock(4, 8, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.b2(self.b1(self.stem(x)))), 1))


def _model(seed=0):
    torch.manual_seed(seed)
    return randomize_bn(prepare_ann(MiniResNet(), L=4, lam_init=1.0), seed)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    model = _model()
    g = trace(model, (1, 8, 8))
    net = quantize(g, metadata=dict(NORM))
    path = str(tmp_path_factory.mktemp("res") / "mini.net")
    write_netx(net, path)
    x = np.random.default_rng(0).uniform(-2, 2, size=(5, 1, 8, 8))
    return model, g, net, path, x


def test_shortcuts_become_skips_of_the_layer_after_the_add(mini):
    model, g, _, _, x = mini
    kinds = [lay.kind for lay in g.layers]
    assert kinds == ["conv", "conv", "conv", "conv", "conv", "flatten", "dense"]
    ident, down = g.layers[2].skips, g.layers[4].skips
    assert len(ident) == 1 and ident[0].source == 0 and ident[0].groups == 4   # identity: depthwise ones
    assert np.array_equal(ident[0].weight, np.ones((4, 1, 1, 1)))
    assert len(down) == 1 and down[0].source == 2 and down[0].stride == (2, 2) and down[0].weight.shape == (8, 4, 1, 1)
    xt = torch.from_numpy(x)
    assert check_graph(model, g, xt) < 1e-9
    assert graph_forward(g, xt).abs().max() > 0.1               # not a vacuous match


def test_shortcut_delay_is_the_skipped_main_path_minus_one(mini):
    _, _, net, _, _ = mini
    assert [(i, s.source, s.delay) for i, lay in enumerate(net.layers) for s in lay.skips] == [(2, 0, 1), (4, 2, 1)]
    assert skip_delay(net.layers, 0, 4) == 3


def test_format_version_2_round_trip_and_lava_dl_reads_the_chain(mini):
    _, _, net, path, x = mini
    assert validate_file(path) == []
    back = read_netx(path)
    assert back.metadata["format_version"] == 2
    for a, b in zip(net.layers, back.layers):
        assert len(a.skips) == len(b.skips)
        for s, t in zip(a.skips, b.skips):
            assert (s.source, s.delay, s.stride, s.groups, s.name) == (t.source, t.delay, t.stride, t.groups, t.name)
            assert np.array_equal(s.weight, t.weight)
    with h5py.File(path) as f:                      # plain NetX keys for everything NetX knows
        assert f["layer/2/skip/0/type"][0] == b"conv" and f["layer/2/weight"].dtype == np.int32
    a = refsim.simulate(net, x, 6)
    b = refsim.simulate(path, x, 6)
    assert np.array_equal(a.logits, b.logits)


def test_sequential_files_stay_version_1(digits_netx):
    assert read_netx(digits_netx[0]).metadata["format_version"] == 1


def test_newer_format_is_refused(mini, tmp_path):
    import shutil
    p = str(tmp_path / "v3.net")
    shutil.copy(mini[3], p)
    with h5py.File(p, "a") as f:
        del f["metadata/format_version"]
        f["metadata/format_version"] = np.int64(3)
    with pytest.raises(NetxFileError, match="format version 3"):
        read_netx(p)


def test_lava_timing_is_aligned_timing_shifted_by_the_depth(mini):
    """With zero biases after layer 0 nothing happens before a layer's input arrives, so in Lava's timing
    (one step per synapse) the readout must be the aligned SNN's, exactly L − 1 steps later — only
    if every shortcut is delayed by its main path's extra length."""
    _, _, net, _, x = mini
    flat = dataclasses.replace(net, layers=tuple(
        dataclasses.replace(lay, bias=np.zeros_like(lay.bias)) if i > 0 and lay.kind != "flatten" else lay
        for i, lay in enumerate(net.layers)))
    T, L = 16, len(net.synaptic)
    aligned = refsim.simulate(flat, x, T, "aligned")
    lava = refsim.simulate(flat, x, T + L - 1, "lava")
    assert np.abs(aligned.logits).max() > 0
    assert np.array_equal(lava.logits[L - 1:], aligned.logits)
    undelayed = dataclasses.replace(flat, layers=tuple(
        dataclasses.replace(lay, skips=tuple(dataclasses.replace(s, delay=0) for s in lay.skips))
        for lay in flat.layers))
    wrong = refsim.simulate(undelayed, x, T + L - 1, "lava")
    assert not np.array_equal(wrong.logits[L - 1:], aligned.logits)


def test_fixed_point_snn_converges_to_the_ann_through_shortcuts(mini):
    """As T grows the SNN's mean readout approaches the ANN with unquantized clip activations (the
    limit of an IF neuron's rate, L → ∞), shortcuts included: far closer at T = 64 than at T = 4.
    (Very negative readouts saturate beyond T ≈ 100, by design: they cannot win the argmax.)"""
    _, g, net, _, x = mini
    ann = graph_forward(dataclasses.replace(g, L=1 << 14), torch.from_numpy(x)).numpy()
    r = refsim.simulate(net, x, 64, "aligned")
    scale = net.report[-1].scale
    err = lambda t: float(np.abs(r.logits[t - 1] / (t * scale) - ann).mean())   # noqa: E731
    assert err(64) < 0.25 * err(4)
    assert err(64) < 0.02 * float(np.abs(ann).mean())
    plain = dataclasses.replace(net, layers=tuple(dataclasses.replace(lay, skips=()) for lay in net.layers))
    p = refsim.simulate(plain, x, 64, "aligned")
    assert float(np.abs(p.logits[-1] / (64 * scale) - ann).mean()) > 5 * err(64)


def test_validation_catches_bad_shortcuts(mini):
    _, _, net, _, _ = mini

    def with_skip(i, **kw):
        lay = net.layers[i]
        return dataclasses.replace(net, layers=net.layers[:i] + (
            dataclasses.replace(lay, skips=(dataclasses.replace(lay.skips[0], **kw),)),) + net.layers[i + 1:])
    assert any("delay 0" in p for p in validate(with_skip(2, delay=0)))
    assert any("not an earlier layer" in p for p in validate(with_skip(2, source=3)))
    assert any("does not map" in p for p in validate(with_skip(4, weight=np.ones((8, 3, 1, 1), np.int64))))
    assert any("produces" in p for p in validate(with_skip(4, stride=(1, 1))))
    assert any("m·2^k" in p for p in validate(with_skip(2, weight=np.full((4, 1, 1, 1), 255, np.int64))))


class _Add(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module, post: nn.Module):
        super().__init__()
        self.a, self.b, self.post = a, b, post

    def forward(self, x):
        return self.post(self.a(x) + self.b(x))


def _wrap(block: nn.Module, before=None):
    layers = [nn.Conv2d(1, 2, 3, padding=1), QCFS()] if before is None else before
    return nn.Sequential(*layers, block, nn.Flatten(), nn.Linear(2 * 8 * 8, 3)).eval()


@pytest.mark.parametrize("model,needle", [
    # the shortcut starts at the image: the input is injected as bias, it has no spikes to route
    (nn.Sequential(_Add(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)), nn.Conv2d(1, 2, 1), QCFS()),
                   nn.Flatten(), nn.Linear(128, 3)), "branch from the network input"),
    # BatchNorm after the add cannot be folded into both synapses
    (_wrap(_Add(nn.Conv2d(2, 2, 3, padding=1), nn.Identity(), nn.Sequential(nn.BatchNorm2d(2), QCFS()))),
     "after a residual add"),
    # an activation inside the shortcut is a second neuron layer on a parallel path
    (_wrap(_Add(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), QCFS(), nn.Conv2d(2, 2, 3, padding=1)),
                nn.Sequential(nn.Conv2d(2, 2, 1), QCFS()), QCFS())), "only identity or conv"),
    # the branches split after a conv, not after a neuron layer
    (_wrap(_Add(nn.Sequential(QCFS(), nn.Conv2d(2, 2, 3, padding=1)), nn.Identity(), QCFS()),
           before=[nn.Conv2d(1, 2, 3, padding=1)]), "not after a QCFS"),
])
def test_bad_residual_graphs_are_refused_with_a_clear_message(model, needle):
    model.eval()
    with pytest.raises(ExportError, match=needle):
        trace(model, (1, 8, 8))


def test_concatenation_is_refused():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 2, 3, padding=1)
            self.q = QCFS()
            self.fc = nn.Linear(4 * 64, 3)

        def forward(self, x):
            h = self.q(self.c(x))
            return self.fc(torch.flatten(torch.cat([h, h], 1), 1))
    with pytest.raises(ExportError, match="operation .cat. .*not a layer module"):
        trace(Cat().eval(), (1, 8, 8))


@pytest.mark.lava
@pytest.mark.parametrize("timing", ["lava", "aligned"])
def test_lava_fan_in_is_bit_exact_against_refsim(mini, timing):
    require_lava()
    from netx_export.comparison import compare
    from netx_export.lava_runtime.runner import run_lava
    _, _, net, path, x = mini
    res = run_lava(path, x[:3], T=5, timing=timing, qnet=net)
    ref = refsim.simulate(net, x[:3], 5, timing, record_spikes=True)
    c = compare(res, ref)
    assert c["spike_mismatches"] == 0 and c["logit_mismatches"] == 0, c["layers"]
    assert all(s.any() for s in res.spikes[:-1])
    # The shortcuts are really wired: without them the reference simulator disagrees with Lava.
    plain = dataclasses.replace(net, layers=tuple(dataclasses.replace(lay, skips=()) for lay in net.layers))
    assert compare(res, refsim.simulate(plain, x[:3], 5, timing, record_spikes=True))["spike_mismatches"] > 0


@pytest.mark.lava
@pytest.mark.parametrize("conv", ["fast", "lava"])
def test_lava_runs_shortcuts_of_128_channels_and_more(tmp_path, conv):
    """Identity shortcuts and their relays are depthwise convs with one group per channel, and Lava's
    Conv keeps ``groups`` in an int8 Var (128 read back as −128, 256 as 0): a ResNet-18 used to fail in
    Lava at its first 128-channel block. Both conv models now run it bit-exact against refsim."""
    require_lava()
    from netx_export.comparison import compare
    from netx_export.lava_runtime.runner import run_lava
    torch.manual_seed(0)
    model = prepare_ann(nn.Sequential(nn.Conv2d(1, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
                                      BasicBlock(128, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 3)),
                        L=4, lam_init=1.0)
    randomize_bn(model)
    net = quantize(trace(model.eval(), (1, 4, 4)), metadata=dict(NORM))
    assert max(sk.groups for lay in net.layers for sk in lay.skips) == 128
    path = str(tmp_path / "wide.net")
    write_netx(net, path)
    x = np.random.default_rng(1).uniform(-2, 2, size=(2, 1, 4, 4))
    ref = refsim.simulate(net, x, 3, "lava", record_spikes=True)
    c = compare(run_lava(path, x, T=3, timing="lava", qnet=net, conv=conv), ref)
    assert c["spike_mismatches"] == 0 and c["logit_mismatches"] == 0 and c["spikes_compared"] > 0, c["layers"]
    assert all(s.any() for s in ref.spikes[:-1])


def test_resnet18_export_keeps_every_loihi_range(tmp_path):
    """ResNet-18 (CIFAR variant, untrained): 8 shortcuts, 3 of them 1x1 stride-2 convs, all delayed by one
    step, and a file that passes every NetX and Loihi check."""
    from qcfs2lava.models import build_model
    model = prepare_ann(build_model("resnet18", 10, 3, 32), L=4, lam_init=2.0).eval()
    net = quantize(trace(model, (3, 32, 32)), metadata=dict(normalization=dict(mean=[0.5] * 3, std=[0.25] * 3)))
    path = str(tmp_path / "r18.net")
    write_netx(net, path)
    assert validate_file(path) == []
    skips = [s for lay in net.layers for s in lay.skips]
    assert len(skips) == 8 and {s.delay for s in skips} == {1}
    assert sorted(s.weight.shape for s in skips if s.groups == 1) == [(128, 64, 1, 1), (256, 128, 1, 1),
                                                                        (512, 256, 1, 1)]
    assert all(r.input_max < (1 << 17) and r.vth <= 131071 for r in net.report)


def test_energy_counts_shortcut_synapses(mini):
    from netx_export.report.energy import energy_table
    _, _, net, _, x = mini
    r = refsim.simulate(net, x, 8, "aligned", record_spikes=True)
    spikes = [s.sum(0).mean(0) for s in r.spikes]
    plain = dataclasses.replace(net, layers=tuple(dataclasses.replace(lay, skips=()) for lay in net.layers))
    with_skips, without = energy_table(net, spikes, 8), energy_table(plain, spikes, 8)
    # identity shortcut from layer 0 into layer 2: one synapse per source spike
    assert with_skips.layers[2].sops - without.layers[2].sops == pytest.approx(float(spikes[0].sum()))
    assert with_skips.layers[4].sops > without.layers[4].sops
    assert with_skips.layers[2].synapses - without.layers[2].synapses == 4 * 8 * 8


def test_cli_export_and_simulate_a_resnet(tmp_path):
    """The user's path for a residual net: train (one step here), export, simulate in refsim and in Lava
    with the spike-for-spike comparison."""
    from conftest import run_cli
    ck, out = tmp_path / "r20.pt", tmp_path / "r20.net"
    r = run_cli("train", "--arch", "resnet20", "--dataset", "digits", "--max-steps", "2", "--epochs", "1",
                "--threads", "1", "--out", ck)
    assert r.returncode == 0, r.stderr
    r = run_cli("export", ck, "-o", out, "--bias-correction", "64")
    assert r.returncode == 0, r.stderr
    assert read_netx(str(out)).metadata["format_version"] == 2
    r = run_cli("simulate", out, "--dataset", "digits", "--n", "4", "--T", "4")
    assert r.returncode == 0, r.stderr
    if _has_lava():
        r = run_cli("simulate", out, "--backend", "lava", "--compare", "--dataset", "digits", "--n", "2", "--T", "3")
        assert r.returncode == 0, r.stderr
        assert " 0 mismatches" in r.stdout and "bit-exact" in r.stdout, r.stdout


def _has_lava() -> bool:
    try:
        import netx_export.lava  # noqa: F401
        return True
    except ImportError:
        return False


def test_hardware_script_runs_resnets_in_microcode_mode_and_refuses_stock(mini, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT
    _, _, _, path, _ = mini
    # The mini net has no data set of its own: give the script an 8x8 one-channel data set (digits).
    script = os.path.join(ROOT, "hardware_runs", "run_on_loihi.py")
    run = lambda *a: subprocess.run([sys.executable, script, path, "--dataset", "digits", "--T", "4", "--n", "2",  # noqa: E731
                                     "--out", tmp_path / "r.json", *a], capture_output=True, text=True, cwd=ROOT,
                                    env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    r = run("--mode", "stock")
    assert r.returncode == 2 and r.stderr.startswith("run_on_loihi: error: stock mode builds sequential"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.json").exists()
    if _has_lava():
        r = run("--mode", "microcode")
        assert r.returncode == 0, r.stderr[-2000:]
        assert json.load(open(tmp_path / "r.json"))["n"] == 2
