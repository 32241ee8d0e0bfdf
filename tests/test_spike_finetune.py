"""Spike-aware fine-tuning (issue #8): the IF twin is the reference SNN, gradients reach every weight
and threshold, and a few epochs through the twin at T = 2 lift the digits SNN at T = 2."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from qcfs2lava import data as D
from qcfs2lava.checkpoint import load_checkpoint
from qcfs2lava.qcfs import QCFS, qcfs_layers
from qcfs2lava.snn import convert, evaluate, simulate
from qcfs2lava.surrogate import SpikingTwin, spike
from qcfs2lava.training import TrainConfig, train

from conftest import ROOT, randomize_bn, run_cli
from test_low_latency import _one_line_error


def _net() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), QCFS(4, 1.5), nn.AvgPool2d(2),
                      nn.Flatten(), nn.Linear(4 * 4 * 4, 8), QCFS(4, 2.0), nn.Linear(8, 3))
    randomize_bn(m)
    return m.eval()


def test_spike_fires_at_threshold_and_its_surrogate_is_a_triangle_of_width_theta():
    u = torch.tensor([0.0, 0.5, 0.999, 1.0, 1.5, 2.0, 2.5], requires_grad=True)
    s = spike(u)
    assert s.tolist() == [0, 0, 0, 1, 1, 1, 1]
    s.sum().backward()
    assert torch.allclose(u.grad, torch.tensor([0.0, 0.5, 0.999, 1.0, 0.5, 0.0, 0.0]))


@pytest.mark.parametrize("T", [1, 2, 5])
def test_twin_is_the_reference_snn_and_owns_no_parameters(T):
    m = _net()
    x = torch.randn(6, 1, 8, 8)
    twin = SpikingTwin(m, T)
    ann, snn = twin(x)
    assert torch.equal(ann, m(x))
    assert torch.allclose(snn, simulate(convert(m), x, T).logits[T - 1], atol=1e-6)
    assert {id(p) for p in twin.parameters()} == {id(p) for p in m.parameters()}
    assert all(isinstance(q, QCFS) for _, q in qcfs_layers(m))          # the ANN itself is untouched


def test_snn_loss_reaches_every_weight_and_threshold():
    m = _net()
    _, snn = SpikingTwin(m, 3)(torch.randn(16, 1, 8, 8) * 3)
    snn.square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


@pytest.fixture(scope="module")
def finetuned(digits_model, tmp_path_factory):
    """The digits model fine-tuned 3 epochs through the twin at T = 2, and the same run with the
    SNN loss weighted 0 (the control: same epochs, lr and frozen BatchNorm)."""
    path, _ = digits_model
    d = tmp_path_factory.mktemp("snnft")
    out = {}
    for w in (1.0, 0.0):
        out[w] = str(d / f"ft_w{w:g}.pt")
        train(TrainConfig(arch="tiny", dataset="digits", out=out[w], init=path, epochs=3, lr=0.01, snn_T=2,
                          snn_weight=w, quiet=True))
    return path, out


def _snn_accuracy(path: str, T: int = 8) -> tuple[float, list[float]]:
    ck = load_checkpoint(path)
    test = D.load_split("digits", None, train=False)
    ev = evaluate(ck.model, D.batches(test, 500, D.dataset_info("digits")), T)
    return ev.ann_accuracy, ev.snn_accuracy


def test_spike_aware_finetuning_lifts_the_t2_snn_above_vanilla_and_the_control(finetuned):
    base, out = finetuned
    _, vanilla = _snn_accuracy(base)
    ann, tuned = _snn_accuracy(out[1.0])
    _, control = _snn_accuracy(out[0.0])
    assert tuned[1] > vanilla[1] + 0.05 and tuned[1] > control[1] + 0.05, (vanilla, tuned, control)
    assert ann > 0.95 and tuned[7] > 0.95                       # the ANN loss keeps large T
    ck = load_checkpoint(out[1.0])                              # weights_only load
    assert ck.meta["spike_finetune"] == dict(T=2, weight=1.0, surrogate="triangle",
                                             model="qcfs2lava.surrogate.SpikingTwin")
    assert ck.meta["init"]["sha256"] == load_checkpoint(base).sha256


def test_finetuned_checkpoint_exports_and_runs_bit_exact_in_refsim_and_lava(finetuned, tmp_path):
    _, out = finetuned
    net = tmp_path / "ft.net"
    r = run_cli("export", out[1.0], "-o", net, "--check")
    assert r.returncode == 0, r.stderr
    r = run_cli("simulate", net, "--backend", "reference", "--n", "100", "--T", "4")
    assert r.returncode == 0, r.stderr
    r = run_cli("simulate", net, "--backend", "lava", "--compare", "--n", "3", "--T", "4")
    assert r.returncode == 0, r.stderr
    assert " 0 mismatches" in r.stdout and "bit-exact" in r.stdout, r.stdout


def test_cli_refuses_bad_snn_options(digits_model, tmp_path):
    path, _ = digits_model
    _one_line_error(run_cli("train", "--init", path, "--snn-T", "-1", "--epochs", "1", "--out", tmp_path / "n.pt"),
                    "--snn-T: must be between 0 and")
    _one_line_error(run_cli("train", "--activation", "relu", "--snn-T", "2", "--epochs", "1",
                            "--out", tmp_path / "n.pt"), "needs QCFS activations")
    _one_line_error(run_cli("train", "--init", path, "--snn-T", "2", "--noise-p", "0.1", "--epochs", "1",
                            "--out", tmp_path / "n.pt"), "--noise-p and --snn-T cannot be combined")
    assert not (tmp_path / "n.pt").exists()


def test_ddp_spike_aware_finetuning_keeps_ranks_identical(digits_model, tmp_path):
    dump = tmp_path / "ranks"
    dump.mkdir()
    env = dict(os.environ, QCFS2LAVA_RANK_DUMP=str(dump), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
           "-m", "qcfs2lava", "train", "--arch", "tiny", "--dataset", "digits", "--epochs", "1", "--init",
           digits_model[0], "--snn-T", "2", "--lr", "0.01", "--max-steps", "3", "--out", str(tmp_path / "ddp.pt")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r0 = torch.load(dump / "rank0.pt", weights_only=True)
    r1 = torch.load(dump / "rank1.pt", weights_only=True)
    start = load_checkpoint(digits_model[0]).model.state_dict()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert any(not torch.equal(r0[k], start[k]) for k in r0 if k.endswith("weight"))
