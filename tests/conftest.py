import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    """A tiny QCFS net (L=4) trained on the bundled digits; a few seconds on 2 cores."""
    from qcfs2lava.training import TrainConfig, train
    path = str(tmp_path_factory.mktemp("digits") / "model.pt")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    metrics = train(TrainConfig(arch="tiny", dataset="digits", out=path, L=4, epochs=30, seed=0, quiet=True))
    return path, metrics


@pytest.fixture(scope="session")
def digits_netx(digits_model, tmp_path_factory):
    """The digits model exported to NetX (no calibration), with the first 3 test images' layer-0 drive
    and labels: (path, QNetwork, drive, labels)."""
    from netx_export.convert.pipeline import quantize_checkpoint
    from netx_export.convert.fixedpoint import input_drive
    from netx_export.netx.write import write_netx
    from qcfs2lava import data as D
    from qcfs2lava.checkpoint import load_checkpoint
    out = str(tmp_path_factory.mktemp("netx") / "digits.net")
    net = quantize_checkpoint(load_checkpoint(digits_model[0])).net
    write_netx(net, out)
    split = D.load_split("digits", None, train=False)
    norm = net.metadata["normalization"]
    x = D.normalize(split.x[:3], norm["max_value"], norm["mean"], norm["std"]).numpy()
    return out, net, input_drive(net, x).drive, split.y[:3].numpy()


def randomize_bn(model, seed=0):
    """Give every BatchNorm2d non-trivial running statistics and affine parameters (so folds are
    tested on something other than the identity)."""
    from torch import nn
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def run_cli(*args, cwd=None, env=None):
    """``python -m qcfs2lava ARGS`` in a process of its own, as a user would run it (forked from a process
    that has already imported the stack: tests/forkserver.py)."""
    from forkserver import run_qcfs2lava
    e = dict(os.environ, **(env or {}))
    return run_qcfs2lava([str(a) for a in args], cwd or ROOT, e, 600)[0]


def require_lava():
    """``netx_export.lava`` (the IF_SUB process; importing it installs the Python 3.11 shim).

    Skips only where lava-nc is not installed at all, and never under ``CI=true``: an installed but
    broken Lava pin or shim fails the test instead of hiding as a skip."""
    import importlib.util
    if importlib.util.find_spec("lava") is None or importlib.util.find_spec("lava.lib.dl") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("lava-nc / lava-dl are not installed, and CI must run the Lava tests", pytrace=False)
        pytest.skip("lava-nc / lava-dl are not installed", allow_module_level=True)
    import netx_export.lava
    return netx_export.lava
