"""netx_export.convert.bias_correction: the bias correction removes the mean 8-bit weight-rounding shift."""
import numpy as np
import pytest
import torch
from torch import nn

from netx_export.convert.bias_correction import bias_correction, input_rates
from netx_export.convert.conv import conv2d, dense
from netx_export.errors import QuantizationError
from netx_export.convert.fixedpoint import quantize
from netx_export.convert.graph import graph_forward
from netx_export.convert.trace import trace
from qcfs2lava.qcfs import QCFS


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), QCFS(lam_init=2.0), nn.Conv2d(6, 8, 3, padding=1),
                         QCFS(lam_init=1.5), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 3 * 3, 12),
                         QCFS(lam_init=1.0), nn.Linear(12, 4)).eval()


def _x(n=64, seed=1):
    return torch.randn((n, 2, 6, 6), generator=torch.Generator().manual_seed(seed))


def test_input_rates_are_mean_ann_activation_over_theta():
    g = trace(_model(), (2, 6, 6))
    x = _x()
    rates = input_rates(g, x, batch=10)           # batching must not change the mean
    syn = g.synaptic
    assert len(rates) == len(syn) - 1 and [r.shape for r in rates] == [lay.in_shape for lay in syn[1:]]
    # By hand: the first layer's QCFS output over its θ, averaged over the images.
    z = torch.nn.functional.conv2d(x.double(), torch.from_numpy(syn[0].weight), torch.from_numpy(syn[0].bias),
                                   padding=1)
    lam = syn[0].neuron.theta
    a = lam * torch.clamp(torch.floor(z * g.L / lam + g.phi) / g.L, 0, 1)
    np.testing.assert_allclose(rates[0], (a / lam).mean(0).numpy(), atol=1e-12)
    assert all(r.min() >= 0 and r.max() <= 1 for r in rates)   # rates of QCFS neurons lie in [0, 1]
    out = graph_forward(g, x)
    assert out.shape == (64, 4)


def _mean_input_error(g, net, rates):
    """Per layer after the first: mean over channels of |E[quantized input] − E[exact input]| per step,
    in units of that layer's vThMant (the exact input is σ·W·θ·E[s] + σ·b)."""
    errs = []
    theta_prev = g.synaptic[0].neuron.theta
    for lay, q, rep, r in zip(g.synaptic[1:], net.synaptic[1:], net.report[1:], rates):
        w_ref, b_ref = lay.weight * rep.scale * theta_prev, lay.bias * rep.scale
        if q.kind == "conv":
            f = lambda w, b: (conv2d(r[None], w, q.stride, q.padding)[0] + b[:, None, None]).mean((1, 2))  # noqa: E731
        else:
            f = lambda w, b: dense(r.reshape(1, -1), w)[0] + b  # noqa: E731
        errs.append(np.abs(f(q.weight.astype(float), q.bias.astype(float)) - f(w_ref, b_ref)).mean() / q.neuron.vth)
        theta_prev = lay.neuron.theta if lay.neuron else None
    return np.array(errs)


def test_bias_correction_removes_the_mean_rounding_shift():
    g = trace(_model(), (2, 6, 6))
    net = quantize(g)
    rates = input_rates(g, _x(256))
    fixed, corr = bias_correction(g, net, rates)
    before, after = _mean_input_error(g, net, rates), _mean_input_error(g, fixed, rates)
    # After the correction only the bias's own rounding (≤ ½ unit) is left of the mean shift.
    vth = np.array([q.neuron.vth for q in net.synaptic[1:]])
    assert np.all(after <= 0.5 / vth + 1e-12)
    assert before.sum() > after.sum()
    assert [c.name for c in corr] == [q.name for q in net.synaptic[1:]]
    # Only biases change: weights, thresholds and v(0) are untouched.
    for a, b in zip(net.synaptic, fixed.synaptic):
        assert np.array_equal(a.weight, b.weight) and a.neuron == b.neuron
    assert np.array_equal(net.synaptic[0].bias, fixed.synaptic[0].bias)   # the host-side drive needs none


def test_correction_beyond_loihi_limits_is_refused():
    g = trace(_model(), (2, 6, 6))
    net = quantize(g)
    rates = input_rates(g, _x(16))
    absurd = [r * 1e6 for r in rates]            # no real spike rate exceeds 1: the bias would overflow
    with pytest.raises(QuantizationError, match="bias correction"):
        bias_correction(g, net, absurd)
    with pytest.raises(ValueError, match="do not match"):
        bias_correction(g, net, rates[:-1])
