"""The float reference SNN against the paper's worked examples and theorems."""
import torch
from torch import nn

from qcfs2lava.qcfs import QCFS, qcfs
from qcfs2lava.snn import IFNeuron, convert, evaluate, if_step, simulate


def run_if(inputs, theta, v0=0.0):
    """Spike train of one IF neuron (reset by subtraction) for a list of per-step inputs."""
    v, spikes = torch.tensor(v0), []
    for x in inputs:
        v, out = if_step(v, torch.tensor(float(x)), theta)
        spikes.append(int(out > 0))
    return spikes, float(v)


def test_if_neuron_hand_computed_train():
    # θ = 1, constant input 0.4, v(0) = 0.5: potentials 0.9, 1.3→0.3, 0.7, 1.1→0.1, 0.5
    spikes, v = run_if([0.4] * 5, theta=1.0, v0=0.5)
    assert spikes == [0, 1, 0, 1, 0]
    assert abs(v - 0.5) < 1e-6


def test_paper_figure1_unevenness_error():
    """Weights [2, -2]; presynaptic neurons fire 3 and 2 spikes in T = 5 (θ = 1), so the ANN
    output is [2, -2]·[0.6, 0.4] = 0.4, but the SNN's rate depends on spike timing."""
    w = torch.tensor([2.0, -2.0])

    def post(times_a, times_b):
        pre = [[1.0 if t in times_a else 0.0, 1.0 if t in times_b else 0.0] for t in range(1, 6)]
        spikes, _ = run_if([float(w @ torch.tensor(s)) for s in pre], theta=1.0)
        return spikes

    assert post({1, 3, 5}, {2, 4}) == [1, 0, 1, 0, 0]        # φ = 0.4 = a   (Figure 1b)
    assert post({1, 2, 3}, {4, 5}) == [1, 1, 1, 1, 0]        # φ = 0.8 > a   (Figure 1c)
    assert post({3, 4, 5}, {1, 2}) == [0, 0, 0, 0, 1]        # φ = 0.2 < a   (Figure 1d)


def test_theorem1_single_layer_T_equals_L_matches_qcf_exactly():
    """T = L, θ = λ, v(0) = 0, the same input every step: SNN output == clip-floor ANN (eq. 14)."""
    L = T = 4
    lam = 2.0
    z = torch.arange(-40, 120, dtype=torch.float64) / 32          # dyadic: arithmetic is exact
    v, total = torch.zeros_like(z), torch.zeros_like(z)
    for _ in range(T):
        v, out = if_step(v, z, lam)
        total += out
    assert torch.equal(total / T, qcfs(z, lam, L, phi=0.0))


def test_theorem2_shifted_potential_matches_qcfs_at_T_equals_L():
    L = T = 8
    lam = 4.0
    z = torch.arange(-64, 300, dtype=torch.float64) / 64
    v, total = torch.full_like(z, lam / 2), torch.zeros_like(z)
    for _ in range(T):
        v, out = if_step(v, z, lam)
        total += out
    assert torch.equal(total / T, qcfs(z, lam, L, phi=0.5))


def test_convert_copies_weights_and_sets_theta_and_v0():
    m = nn.Sequential(nn.Linear(3, 4), QCFS(L=4, lam_init=1.5), nn.Linear(4, 2)).eval()
    snn = convert(m)
    assert isinstance(snn[1], IFNeuron) and float(snn[1].theta) == 1.5 and snn[1].v0_frac == 0.5
    assert torch.equal(snn[0].weight, m[0].weight) and isinstance(m[1], QCFS)   # original untouched
    assert convert(m, v0_frac=0.0)[1].v0_frac == 0.0


def test_one_pass_gives_running_mean_at_every_t():
    m = nn.Sequential(nn.Linear(3, 5), QCFS(L=4, lam_init=1.0), nn.Linear(5, 2)).eval()
    x = torch.randn(7, 3)
    snn = convert(m)
    r = simulate(snn, x, 6)
    for t in (1, 3, 6):
        assert torch.allclose(r.logits[t - 1], simulate(convert(m), x, t).logits[-1], atol=1e-6)
    rates = r.firing_rates()
    assert set(rates) == {"1"} and 0.0 <= rates["1"] <= 1.0


def test_digits_snn_at_T16_within_2_percent_of_ann(digits_model):
    from qcfs2lava.checkpoint import load_checkpoint
    from qcfs2lava.data import test_batches
    path, _ = digits_model
    ck = load_checkpoint(path)
    ev = evaluate(ck.model, test_batches(ck.meta, None, None, 360), T=16)
    assert ev.n == 360
    assert abs(ev.at(16) - ev.ann_accuracy) <= 0.02, (ev.ann_accuracy, ev.snn_accuracy)


def test_layer_errors_vanish_at_T_equals_L_for_a_single_layer_and_grow_otherwise():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 64), QCFS(L=4, lam_init=1.0), nn.Linear(64, 3)).eval()
    x = torch.randn(32, 4)
    from qcfs2lava.snn import layer_errors
    assert layer_errors(m, x, T=4)["1"]["mean_abs_error"] < 1e-6          # Theorem 2 (constant input)
    assert layer_errors(m, x, T=3)["1"]["mean_abs_error"] > 1e-3


def test_in_place_layer_equals_the_pure_if_step():
    torch.manual_seed(1)
    layer, theta = IFNeuron(0.75, v0_frac=0.5), torch.tensor(0.75)
    v, count = torch.full((3, 5), 0.375), torch.zeros(3)
    for _ in range(9):
        x = torch.randn(3, 5)
        v, out = if_step(v, x, theta)
        count += (out > 0).sum(1)
        assert torch.equal(layer(x), out)
    assert torch.equal(layer.v, v) and torch.equal(layer.spikes, count.double())
