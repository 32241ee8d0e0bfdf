"""QCFS activation against the paper's eq. 13, 15 and 17, written out independently."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from qcfs2lava.util.errors import ConversionError
from qcfs2lava.qcfs import QCFS, prepare_ann, qcfs, qcfs_grad


def eq15(z: float, lam: float, L: int, phi: float = 0.5) -> float:
    """ĥ(z) = λ·clip(⌊zL/λ + φ⌋/L, 0, 1), element by element in plain Python."""
    return lam * min(max(math.floor(z * L / lam + phi) / L, 0.0), 1.0)


def eq17(z: float, lam: float, L: int) -> tuple[float, float]:
    """(∂ĥ/∂z, ∂ĥ/∂λ) exactly as printed in eq. 17 (φ = 1/2)."""
    lo, hi = -lam / (2 * L), lam - lam / (2 * L)
    dz = 1.0 if lo < z < hi else 0.0
    if z < lo:
        dlam = 0.0
    elif z < hi:
        dlam = (eq15(z, lam, L) - z) / lam
    else:
        dlam = 1.0
    return dz, dlam


LAM, L = 2.0, 4
# Dyadic points (exact in float) including every edge of eq. 17 and the quantisation steps.
EDGES = [-LAM / (2 * L), LAM - LAM / (2 * L), 0.0, LAM, LAM / L * 0.5, LAM / L * 1.5, 3 * LAM]
POINTS = sorted(set(EDGES + [k / 16 for k in range(-24, 56)]))


def test_forward_is_eq15_on_grid_and_edges():
    z = torch.tensor(POINTS, dtype=torch.float64)
    out = qcfs(z, LAM, L)
    assert out.tolist() == [eq15(v, LAM, L) for v in POINTS]


def test_forward_values_are_quantised_to_L_levels_between_0_and_lambda():
    z = torch.linspace(-5, 10, 2001, dtype=torch.float64)
    levels = set(qcfs(z, LAM, L).tolist())
    assert levels == {LAM * k / L for k in range(L + 1)}


def test_phi_zero_is_clip_floor_eq13():
    z = torch.tensor(POINTS, dtype=torch.float64)
    expect = [LAM * min(max(math.floor(v * L / LAM) / L, 0.0), 1.0) for v in POINTS]
    assert qcfs(z, LAM, L, phi=0.0).tolist() == expect


@pytest.mark.parametrize("z", POINTS)
def test_gradients_follow_eq17(z):
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(LAM, dtype=torch.float64, requires_grad=True)
    qcfs(zt, lam, L).backward()
    dz, dlam = eq17(z, LAM, L)
    assert zt.grad.item() == pytest.approx(dz, abs=1e-12)
    assert lam.grad.item() == pytest.approx(dlam, abs=1e-12)


def test_lambda_gradient_matches_autograd_through_straight_through_floor():
    """Inside the unclipped range eq. 17 is what autograd gives with d⌊x⌋/dx = 1."""
    z = torch.tensor([k / 16 for k in range(0, 28)], dtype=torch.float64)   # 0 ≤ z < λ - λ/2L
    lam = torch.tensor(LAM, dtype=torch.float64, requires_grad=True)
    zz = z.clone().requires_grad_(True)
    x = zz * L / lam + 0.5
    ste = x + (torch.floor(x) - x).detach()
    (lam * ste / L).sum().backward()
    lam2 = torch.tensor(LAM, dtype=torch.float64, requires_grad=True)
    z2 = z.clone().requires_grad_(True)
    qcfs(z2, lam2, L).sum().backward()
    assert torch.allclose(lam2.grad, lam.grad) and torch.allclose(z2.grad[1:], zz.grad[1:])


def test_qcfs_grad_vectorised_equals_scalar_rule():
    z = torch.tensor(POINTS, dtype=torch.float64)
    dz, dlam = qcfs_grad(z, torch.tensor(LAM, dtype=torch.float64), L)
    assert dz.tolist() == [eq17(v, LAM, L)[0] for v in POINTS]
    assert dlam.tolist() == pytest.approx([eq17(v, LAM, L)[1] for v in POINTS], abs=1e-12)


def test_module_trains_lambda():
    act = QCFS(L=4, lam_init=8.0)
    y = act(torch.tensor([1.0, 20.0]))
    y.sum().backward()
    assert act.lam.grad is not None and act.lam.grad.item() != 0
    assert y.tolist() == [eq15(1.0, 8.0, 4), 8.0]


def test_prepare_ann_replaces_relu_and_maxpool():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Sequential(nn.Flatten(), nn.ReLU()))
    prepare_ann(m, L=8)
    kinds = [type(x).__name__ for x in m.modules()]
    assert "ReLU" not in kinds and "MaxPool2d" not in kinds
    assert kinds.count("QCFS") == 2 and kinds.count("AvgPool2d") == 1
    assert m[1].L == 8 and float(m[1].lam.detach()) == 8.0


def test_prepare_ann_refuses_other_activations_naming_the_module():
    m = nn.Sequential(nn.Linear(2, 2), nn.GELU())
    with pytest.raises(ConversionError, match="module '1' is GELU"):
        prepare_ann(m)


class _FunctionalRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return F.relu(self.fc(x))


def test_prepare_ann_refuses_functional_relu():
    with pytest.raises(ConversionError, match="functional call relu"):
        prepare_ann(_FunctionalRelu())


def test_prepare_ann_keep_relu_swaps_only_the_pools():
    m = prepare_ann(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)), keep_relu=True)
    assert [type(x).__name__ for x in m] == ["Conv2d", "ReLU", "AvgPool2d"]
