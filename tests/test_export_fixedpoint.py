"""netx_export.convert.fixedpoint: each layer in its own integer units, within Loihi's limits."""
import numpy as np
import pytest
import torch
from torch import nn

from netx_export.errors import QuantizationError
from netx_export.convert.fixedpoint import (BIAS_MAX, INPUT_LIMIT, OUTPUT_VTH, VTH_MAX, QuantConfig, drive_bound,
                                    format_report, input_bound, input_drive, quantize, quantize_weights)
from netx_export.convert.trace import trace
from netx_export.netx.validate import validate
from qcfs2lava.models import build_model
from qcfs2lava.qcfs import QCFS, prepare_ann


def _graph(seed=0, lam=(3.0, 2.0)):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), QCFS(lam_init=lam[0]), nn.AvgPool2d(2),
                      nn.Flatten(), nn.Linear(4 * 3 * 3, 5), QCFS(lam_init=lam[1]), nn.Linear(5, 3)).eval()
    return trace(m, (2, 6, 6))


def _check_limits(net):
    assert validate(net) == []
    syn = net.synaptic
    for lay in syn:
        nz = np.abs(lay.weight[lay.weight != 0])
        k = int(np.log2((nz & -nz).min()))             # largest power of two dividing every weight
        m = lay.weight >> k
        assert m.min() >= -128 and m.max() <= 127
        assert 0 < lay.neuron.vth <= VTH_MAX and np.abs(lay.bias).max() <= BIAS_MAX
        assert lay.neuron.i_decay == 4096 and lay.neuron.v_decay == 0
    for lay in syn[1:-1]:
        hi, lo = input_bound(lay.weight, lay.bias)
        assert hi.max() < INPUT_LIMIT and lo.min() > -INPUT_LIMIT
        assert lay.neuron.vth % 2 == 0 and lay.neuron.v_init == lay.neuron.vth // 2     # v(0) = θ/2 exactly
    hi, lo = input_bound(syn[-1].weight, syn[-1].bias)
    assert syn[-1].neuron.vth == OUTPUT_VTH and syn[-1].neuron.v_init == 0 and hi.max() < OUTPUT_VTH


def test_weights_are_8bit_mantissa_times_power_of_two():
    w = np.array([0.5, -1.0, 0.25, 0.999])
    q, clipped = quantize_weights(w, 127 * 4, 2)
    assert clipped == 0 and np.all(q % 4 == 0) and q.min() >= -128 * 4 and q.max() <= 127 * 4
    assert np.abs(q - w * 508).max() <= 2            # half a step of 2^2
    q, clipped = quantize_weights(np.array([2.0, 0.1]), 127, 0)   # 254 does not fit: clipped and counted
    assert q.tolist() == [127, 13] and clipped == 0.5


def test_units_follow_the_paper_weights_times_previous_theta():
    """Layer l's integer weights ≈ σ_l·W_l·θ_{l−1}; θ_l and b_l use the same σ_l."""
    g = _graph()
    net = quantize(g)
    _check_limits(net)
    dense, rep = net.layers[2], net.report[1]
    w_float = g.layers[2].weight * g.layers[0].neuron.theta
    assert np.abs(dense.weight - rep.scale * w_float).max() <= 0.5 * 2 ** rep.exponent + 1e-9
    assert abs(dense.neuron.vth - rep.scale * g.layers[2].neuron.theta) <= 1
    assert np.abs(dense.bias - rep.scale * g.layers[2].bias).max() <= 0.5
    assert rep.mantissa_max == 127 and rep.clipped_fraction == 0
    assert rep.rms_rel_error < 0.02 and rep.max_rel_error <= 0.5 / 127 + 1e-9
    assert "vThMant" in format_report(net.report)


def test_input_drive_is_host_conv_rounded_and_clipped_beyond_limit():
    g = _graph()
    net = quantize(g, input_range=([-1.0, -1.0], [1.0, 1.0]))
    x = np.random.default_rng(0).uniform(-1, 1, (5, 2, 6, 6))
    d = input_drive(net, x)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(g.layers[0].weight),
                                     torch.from_numpy(g.layers[0].bias), padding=1).numpy() * net.report[0].scale
    assert d.clipped == 0 and np.abs(d.drive - ref).max() <= 0.5 + 1e-9
    assert np.abs(d.drive).max() <= BIAS_MAX
    # The bound is tight: the worst corner of the input box reaches it, nothing inside exceeds it.
    assert drive_bound(net.drive.weight, net.drive.bias, [-1, -1], [1, 1]) <= BIAS_MAX + 1e-9
    far = input_drive(net, x * 50)                     # far outside the documented range: clipped, counted
    assert far.clipped > 0 and np.abs(far.drive).max() == BIAS_MAX and 0 < far.clipped_fraction < 1


def test_large_bias_and_threshold_stay_in_range():
    g = _graph(lam=(500.0, 0.01))                      # absurd θ ratios still give a valid network...
    net = quantize(g)
    _check_limits(net)
    assert any("θ rounding error" in w for w in net.report[1].warnings)    # ...and say what it costs


def test_all_zero_layer_is_refused():
    g = _graph()
    g.layers[2].weight[:] = 0
    with pytest.raises(QuantizationError, match="all weights are zero"):
        quantize(g)


def test_untrained_vgg_small_exports_within_limits():
    # (untrained VGG-16 too, in 5 s: `qcfs2lava export` on a 0-epoch vgg16 checkpoint; kept out of the fast suite)
    model = prepare_ann(build_model("vgg-small", 10, 3, 32)).eval()
    g = trace(model, (3, 32, 32), check=False)
    net = quantize(g, config=QuantConfig())
    _check_limits(net)
    assert len(net.synaptic) == 9
