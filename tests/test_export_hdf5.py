"""netx_export.netx.write / hdf5_read: NetX layout, round trip, atomic writes, inspect, NetX itself."""
import glob
import os

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from netx_export.netx import write as hdf5_write
from netx_export.errors import NetxFileError
from netx_export.convert.fixedpoint import quantize
from netx_export.convert.trace import trace
from netx_export.netx.describe import describe
from netx_export.netx.read import read_layers, read_netx
from netx_export.netx.validate import check_file, validate_file
from netx_export.netx.write import write_netx
from qcfs2lava.qcfs import QCFS
from conftest import require_lava

EXAMPLES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "netx-examples",
                                         "*.net")))


@pytest.fixture(scope="module")
def qnet():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), QCFS(lam_init=2.0), nn.AvgPool2d(2),
                      nn.Conv2d(4, 6, 3, padding=1), QCFS(lam_init=3.0), nn.Flatten(),
                      nn.Linear(6 * 4 * 4, 8), QCFS(lam_init=1.5), nn.Linear(8, 3)).eval()
    return quantize(trace(m, (1, 8, 8)), metadata=dict(source_sha256="ab" * 32, class_names=["a", "b", "c"],
                                                      dataset="digits", arch="test",
                                                      normalization=dict(mean=[0.3], std=[0.4], max_value=16.0)))


def test_layout_is_what_netx_reads(qnet, tmp_path):
    path = str(tmp_path / "m.net")
    write_netx(qnet, path)
    with h5py.File(path, "r") as f:
        assert sorted(f["layer"].keys()) == [str(i) for i in range(len(qnet.layers))]
        g = f["layer/0"]
        assert g["type"].shape == (1,) and g["type"][0] == b"conv"            # slayer's S10 form
        assert g["shape"][()].tolist() == [4, 8, 8]                            # C, H, W
        assert g["weight"].dtype.kind == "i" and g["weight"].shape == (4, 1, 3, 3)
        assert g["stride"][()].tolist() == [1, 1] and int(g["groups"][()]) == 1
        n = g["neuron"]
        assert n["type"][()] == b"IF_SUB" and int(n["iDecay"][()]) == 4096 and int(n["vDecay"][()]) == 0
        assert int(n["vInit"][()]) * 2 == int(n["vThMant"][()]) and "messageBits" not in n
        assert f["layer/2/type"][0] == b"flatten" and f["layer/2/shape"][()].tolist() == [96, 1, 1]
        assert f["layer/3/weight"].shape == (8, 96)
        assert f["metadata/source_sha256"][()].decode() == "ab" * 32
        assert not any(len(obj.attrs) for obj in [f, f["layer"], g])            # NetX reads datasets only
    assert validate_file(path) == []


def test_round_trip_gives_the_same_ir(qnet, tmp_path):
    path = str(tmp_path / "m.net")
    write_netx(qnet, path)
    back = read_netx(path)
    assert back.input_shape == qnet.input_shape and len(back.layers) == len(qnet.layers)
    for a, b in zip(qnet.layers, back.layers):
        assert (a.kind, a.name, tuple(a.shape), tuple(a.in_shape)) == (b.kind, b.name, tuple(b.shape), tuple(b.in_shape))
        if a.kind != "flatten":
            assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
            assert a.neuron == b.neuron and (a.stride, a.padding, a.groups) == (b.stride, b.padding, b.groups)
    assert np.array_equal(back.drive.weight, qnet.drive.weight) and back.drive.limit == qnet.drive.limit
    assert back.metadata["class_names"] == ["a", "b", "c"] and back.metadata["L"] == 4
    assert back.metadata["normalization"]["std"] == pytest.approx([0.4])
    assert [r.vth for r in back.report] == [r.vth for r in qnet.report]


def test_failed_export_leaves_nothing_behind(qnet, tmp_path, monkeypatch):
    path = tmp_path / "m.net"

    def boom(f, net):
        raise RuntimeError("disk full")
    monkeypatch.setattr(hdf5_write, "_write_metadata", boom)
    with pytest.raises(RuntimeError):
        write_netx(qnet, str(path))
    assert os.listdir(tmp_path) == []
    path.write_bytes(b"old")                               # an existing file survives a failed overwrite
    with pytest.raises(RuntimeError):
        write_netx(qnet, str(path))
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.net"]


def test_validator_names_what_breaks_netx(qnet, tmp_path):
    path = str(tmp_path / "bad.net")
    write_netx(qnet, path)
    with h5py.File(path, "a") as f:
        w = f["layer/0/weight"][()]
        del f["layer/0/weight"]
        f["layer/0/weight"] = w.astype(np.float32) + 0.5          # NetX would truncate these
        f["layer/1/neuron/messageBits"] = 0
        f["layer/3/bias"][0] = 5000
    problems = " | ".join(validate_file(path))
    assert "NetX truncates floats" in problems and "messageBits" in problems and "|bias| 5000" in problems
    with pytest.raises(NetxFileError, match="not a valid"):
        check_file(path)
    with pytest.raises(NetxFileError, match="not found"):
        read_netx(str(tmp_path / "missing.net"))


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_inspect_and_read_lava_dl_examples(path):
    text = describe(path)
    assert "layer:" in text and "conv" in text and "neuron" in text and "LOIHI" in text
    shape, layers = read_layers(path)
    assert shape is not None and layers[0].kind == "conv" and layers[0].weight.ndim == 4
    with pytest.raises(NetxFileError, match="no qcfs2lava metadata"):
        read_netx(path)


def test_examples_exist():
    assert len(EXAMPLES) == 2


def test_stock_netx_builds_our_file(qnet, tmp_path):
    """lava-dl's own reader builds the network once IF_SUB is mapped to a neuron process (here the stock
    LIF, only to check the structure); its conv weights equal ours after NetX's flip, its dense weights
    survive NetX's weight-bit optimisation and Lava's clip/truncate unchanged."""
    require_lava()
    from lava.lib.dl.netx import hdf5
    from lava.proc.lif.process import LIF
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights
    path = str(tmp_path / "m.net")
    write_netx(qnet, path)
    orig = hdf5.Network.get_neuron_params

    def hook(neuron_config, input=False, reset_interval=None, reset_offset=0, spike_exp=6):
        if neuron_config["type"] == "IF_SUB":
            return {"neuron_proc": LIF, "bias_key": "bias_mant", "vth": int(neuron_config["vThMant"]),
                    "du": int(neuron_config["iDecay"]) - 1, "dv": int(neuron_config["vDecay"]), "bias_exp": 6,
                    "num_message_bits": 0}
        return orig(neuron_config, input=input, reset_interval=reset_interval, reset_offset=reset_offset,
                    spike_exp=spike_exp)
    hdf5.Network.get_neuron_params = staticmethod(hook)
    try:
        net = hdf5.Network(net_config=path, input_shape=(8, 8, 1))
    finally:
        hdf5.Network.get_neuron_params = staticmethod(orig)
    ours = qnet.synaptic
    assert len(net.layers) == len(ours)
    for blk, lay in zip(net.layers, ours):
        assert int(np.prod(blk.neuron.v.shape)) == int(np.prod(lay.shape))
        if lay.kind == "conv":
            assert tuple(blk.neuron.v.shape) == tuple(lay.shape[::-1])           # Lava's (W, H, C)
        if lay.kind == "conv":
            assert np.array_equal(blk.synapse.weight.init, lay.weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))
        else:
            p = blk.synapse.proc_params
            w = blk.synapse.weights.init
            mode = p._parameters.get("sign_mode") if hasattr(p, "_parameters") else None
            mode = mode or determine_sign_mode(w)
            w = truncate_weights(clip_weights(w, mode, num_bits=8), mode, p["num_weight_bits"])
            exp = p["weight_exp"]
            eff = (w << exp) if exp >= 0 else (w >> -exp)
            assert np.array_equal(eff, lay.weight), lay.name
        assert np.array_equal(np.asarray(blk.neuron.bias_mant.init).reshape(-1)[:1],
                              np.asarray(lay.bias[:1]))
