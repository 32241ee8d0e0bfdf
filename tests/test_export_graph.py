"""netx_export.convert.trace and .folds: every fold equals PyTorch; everything NetX cannot represent is refused by name."""
import pytest
import torch
from torch import nn

from conftest import randomize_bn
from netx_export.errors import ExportError
from netx_export.convert.folds import box_kernel, compose_prefilter_conv, compose_prefilter_dense
from netx_export.convert.graph import check_graph
from netx_export.convert.ir import Conv, Dense, Flatten
from netx_export.convert.trace import trace
from qcfs2lava.folding import fold_batchnorm
from qcfs2lava.models import build_model
from qcfs2lava.qcfs import QCFS, prepare_ann


def _randomize_bn(model, seed=0):
    return randomize_bn(model, seed)


def test_batchnorm_fold_equals_pytorch():
    torch.manual_seed(0)
    seq = _randomize_bn(nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5))).double()
    conv, bn = seq
    w, b = fold_batchnorm(conv.weight.detach().numpy(), conv.bias.detach().numpy(), bn.weight.detach().numpy(),
                          bn.bias.detach().numpy(), bn.running_mean.numpy(), bn.running_var.numpy(), bn.eps)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    got = torch.nn.functional.conv2d(x, torch.from_numpy(w), torch.from_numpy(b), padding=1)
    assert torch.allclose(got, seq(x), atol=1e-12)


@pytest.mark.parametrize("pool,stride,padding,dilation,groups,size", [
    (2, 1, 1, 1, 1, 8),       # tiny's pattern: pool 2 then 3x3 pad 1
    (2, 2, 0, 1, 2, 12),      # strided grouped conv, no padding
    (3, 1, 0, 2, 1, 20),      # pool 3, dilated conv, leftover rows (fine without padding)
])
def test_avgpool_fold_into_conv_equals_pytorch(pool, stride, padding, dilation, groups, size):
    """AvgPool(k) then Conv(K, S, P, D) is one conv: kernel (K−1)·D·k + k, stride S·k, padding P·k."""
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, stride, padding, dilation, groups=groups).double()
    ref = nn.Sequential(nn.AvgPool2d(pool), conv)
    w, s, p = compose_prefilter_conv(box_kernel((pool, pool)), (pool, pool), conv.weight.detach().numpy(),
                                     (stride, stride), (padding, padding), (dilation, dilation))
    assert w.shape[2] == (3 - 1) * dilation * pool + pool and s == (stride * pool,) * 2
    x = torch.randn(2, 4, size, size, dtype=torch.float64)
    got = torch.nn.functional.conv2d(x, torch.from_numpy(w), conv.bias, s, p, 1, groups)
    assert torch.allclose(got, ref(x), atol=1e-12)


def test_avgpool_fold_into_dense_after_flatten_equals_pytorch():
    torch.manual_seed(2)
    lin = nn.Linear(3 * 2 * 2, 5).double()
    ref = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), lin)
    w = compose_prefilter_dense(box_kernel((2, 2)), (2, 2), lin.weight.detach().numpy(), (3, 5, 5), (3, 2, 2))
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)       # odd map: the 5th row/col gets weight 0
    assert torch.allclose(x.flatten(1) @ torch.from_numpy(w).T + lin.bias, ref(x), atol=1e-12)


def _qnet(*mods):
    return nn.Sequential(*mods).eval()


def test_tiny_traces_to_conv_conv_conv_flatten_dense_dense():
    model = _randomize_bn(prepare_ann(build_model("tiny", 10, 1, 8)))
    g = trace(model, (1, 8, 8))
    assert [lay.kind for lay in g.layers] == ["conv", "conv", "conv", "flatten", "dense", "dense"]
    pooled_conv = g.layers[2]
    assert isinstance(pooled_conv, Conv) and pooled_conv.weight.shape == (32, 32, 6, 6)
    assert pooled_conv.stride == (2, 2) and pooled_conv.padding == (2, 2) and pooled_conv.out_shape == (32, 4, 4)
    assert isinstance(g.layers[3], Flatten) and g.layers[3].out_shape == (512, 1, 1)   # un-pooled 32x4x4 map
    assert isinstance(g.layers[4], Dense) and g.layers[4].weight.shape == (64, 512)
    assert g.layers[-1].neuron is None and all(lay.neuron.theta == 8.0 for lay in g.synaptic[:-1])
    assert g.L == 4 and g.phi == 0.5
    assert max(e for _, e in g.fold_errors) < 1e-12
    x = torch.randn(16, 1, 8, 8)
    assert check_graph(model, g, x) < 1e-9


def test_vgg_small_with_dropout_traces():
    model = _randomize_bn(prepare_ann(build_model("vgg-small", 10, 3, 32)))
    g = trace(model, (3, 32, 32))
    assert [lay.kind for lay in g.layers].count("conv") == 7 and g.layers[-1].kind == "dense"
    assert check_graph(model, g, torch.randn(2, 3, 32, 32)) < 1e-9


def test_pool_of_pool_composes():
    model = _qnet(nn.Conv2d(1, 2, 3, padding=1), QCFS(), nn.AvgPool2d(2), nn.AvgPool2d(2), nn.Conv2d(2, 3, 1),
                  QCFS(), nn.Flatten(), nn.Linear(3 * 2 * 2, 4))
    g = trace(model, (1, 8, 8))
    assert g.layers[1].weight.shape == (3, 2, 4, 4) and g.layers[1].stride == (4, 4)
    assert check_graph(model, g, torch.randn(3, 1, 8, 8)) < 1e-9


@pytest.mark.parametrize("bad,needle", [
    (nn.MaxPool2d(2), "'2' (MaxPool2d)"),
    (nn.ReLU(), "'2' (ReLU)"),
    (nn.GELU(), "'2' (GELU)"),
    (nn.Upsample(scale_factor=2), "'2' (Upsample)"),
])
def test_unrepresentable_modules_are_refused_by_name(bad, needle):
    model = _qnet(nn.Conv2d(1, 4, 3, padding=1), QCFS(), bad, nn.Flatten(), nn.LazyLinear(3))
    model(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ExportError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        trace(model, (1, 8, 8))


def test_resnet20_traces_into_a_chain_with_one_shortcut_per_block():
    model = _randomize_bn(prepare_ann(build_model("resnet20", 10, 3, 32), lam_init=1.0))
    g = trace(model, (3, 32, 32))
    assert sum(len(lay.skips) for lay in g.synaptic) == 9 and g.residual
    assert check_graph(model, g, torch.randn(2, 3, 32, 32)) < 1e-9


def test_other_refusals():
    with pytest.raises(ExportError, match=r"'3' \(BatchNorm2d\) does not directly follow"):
        trace(_qnet(nn.Conv2d(1, 2, 3), QCFS(), nn.AvgPool2d(2), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1), QCFS(),
                    nn.Flatten(), nn.Linear(2 * 9, 3)), (1, 8, 8))
    with pytest.raises(ExportError, match="no QCFS activation"):
        trace(_qnet(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), QCFS(), nn.Flatten(), nn.Linear(2 * 16, 3)), (1, 8, 8))
    # a 7x7 map does not tile into 2x2 pools, so the next conv's zero padding cannot move before the pool
    with pytest.raises(ExportError, match="does not tile"):
        trace(_qnet(nn.Conv2d(1, 2, 3, padding=1), QCFS(), nn.AvgPool2d(2), nn.Conv2d(2, 2, 3, padding=1), QCFS(),
                    nn.Flatten(), nn.Linear(2 * 9, 3)), (1, 7, 7))
    with pytest.raises(ExportError, match="not followed by a conv or linear"):
        trace(_qnet(nn.Conv2d(1, 2, 3), QCFS(), nn.Conv2d(2, 2, 3), QCFS(), nn.AvgPool2d(2)), (1, 8, 8))
