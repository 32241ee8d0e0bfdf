import torch
from torch import nn

from qcfs2lava.balance import activation_thresholds, max_input_thresholds
from qcfs2lava.qcfs import QCFS


def test_max_and_percentile_thresholds_of_relu_layers():
    m = nn.Sequential(nn.Identity(), nn.ReLU())
    x = torch.arange(1000, dtype=torch.float32).view(10, 100) - 500       # activations 0..499
    batches = [(x[:5], None), (x[5:], None)]
    assert activation_thresholds(m, batches)["1"] == 499.0
    assert activation_thresholds(m, batches, percentile=99.9)["1"] == 498.0  # 999th of 1000 sorted values


def test_max_input_threshold_is_theta_prev_times_positive_weights_plus_bias():
    lin1, lin2 = nn.Linear(2, 2), nn.Linear(2, 1)
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]])); lin1.bias.zero_()
        lin2.weight.copy_(torch.tensor([[2.0, -3.0]])); lin2.bias.fill_(0.5)
    m = nn.Sequential(lin1, QCFS(4, 1.0), lin2, QCFS(4, 1.0))
    x = torch.tensor([[3.0, 1.0], [0.5, 2.0]])
    th = max_input_thresholds(m, [(x, None)])
    assert th["1"] == 3.0                        # first layer: largest analog pre-activation
    assert th["3"] == 3.0 * 2.0 + 0.5           # θ_1·Σ max(W, 0) + b
