"""netx_export.lava.conv_models: the fast fixed-point Conv model against Lava's stock one.

Three levels: (1) both models' own ``run_spk`` step by step on fake ports (many geometries, cheap);
(2) both inside Lava's runtime on a hand-built source → Conv → recorder net, including a ``Var.set``
of the weights mid-run; (3) the exported digits network end to end through ``run_lava``, and the CLI.
"""
import json
import zlib

import numpy as np
import pytest
from conftest import require_lava

pytestmark = pytest.mark.lava
require_lava()


class _Ports:
    """Stand-ins for a model's ``s_in`` / ``a_out``: a queue of inputs and a list of what was sent."""

    def __init__(self, inputs):
        self.inputs = list(inputs)
        self.sent = []

    def recv(self):
        return self.inputs.pop(0)

    def send(self, data):
        self.sent.append(np.array(data, copy=True))


def _model(cls, weight, stride, padding, dilation, groups, message_bits, weight_exp, in_shape):
    """A ProcessModel with its Vars as Lava's builder sets them (dtypes from the LavaPyTypes)."""
    from lava.proc.conv import utils
    m = cls({})
    m.weight = np.asarray(weight).astype(np.int32)
    m.weight_exp = np.array([weight_exp], np.int32)
    m.num_weight_bits = np.array([8], np.int8)
    m.kernel_size = np.array(weight.shape[1:3], np.int8)
    m.stride = np.array(stride, np.int8)
    m.padding = np.array(padding, np.int8)
    m.dilation = np.array(dilation, np.int8)
    m.groups = np.array([groups], np.int8)
    m.num_message_bits = np.array([message_bits], np.int8)
    out = utils.output_shape(in_shape, weight.shape[0], weight.shape[1:3], stride, padding, dilation)
    m.a_buf = np.zeros(out, np.int32)
    return m


def _run_both(weight, in_shape, steps, rng, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
              message_bits=0, weight_exp=0, high=None):
    """Step the stock and the fast model on the same inputs; returns (stock sends, fast sends, inputs)."""
    from lava.proc.conv.models import PyConvModelFixed

    from netx_export.lava.conv_models import PyConvModelFast
    if message_bits == 0:      # spikes, plus a few values a binary port should never see: both must cast to bool
        xs = [(rng.random(in_shape) < 0.3).astype(np.int32) * rng.choice([1, 1, 1, 2, -1], in_shape)
              for _ in range(steps)]
    else:
        lim = high or (1 << (message_bits - 1))
        xs = [rng.integers(-lim, lim, in_shape).astype(np.int32) for _ in range(steps)]
    xs[1] = np.zeros(in_shape, np.int32)                                   # an empty step
    sent = []
    for cls in (PyConvModelFixed, PyConvModelFast):
        m = _model(cls, weight, stride, padding, dilation, groups, message_bits, weight_exp, in_shape)
        ports = _Ports([x.copy() for x in xs] + [np.zeros(in_shape, np.int32)])
        m.s_in = m.a_out = ports
        for _ in range(steps + 1):           # the extra step sends the output of the last input
            m.run_spk()
        sent.append(ports.sent)
    return sent[0], sent[1], xs


GEOMETRIES = {
    # name: (C_out, kW, kH, C_in, groups, stride, padding, dilation, (W, H))
    "3x3 pad1": (6, 3, 3, 4, 1, (1, 1), (1, 1), (1, 1), (9, 7)),
    "stride2 pad2 6x6 (folded pool)": (8, 6, 6, 5, 1, (2, 2), (2, 2), (1, 1), (12, 10)),
    "non-square stride (2,1) pad (1,2)": (4, 3, 2, 3, 1, (2, 1), (1, 2), (1, 1), (11, 8)),
    "dilation 2": (4, 3, 3, 3, 1, (1, 1), (2, 1), (2, 2), (10, 9)),
    "groups 2": (6, 3, 3, 4, 2, (1, 1), (1, 1), (1, 1), (8, 8)),
    "depthwise stride 2": (5, 2, 2, 5, 5, (2, 2), (0, 0), (1, 1), (9, 9)),
    "1x1": (7, 1, 1, 3, 1, (1, 1), (0, 0), (1, 1), (5, 6)),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
@pytest.mark.parametrize("message_bits", [0, 8])
def test_fast_equals_stock_step_by_step(name, message_bits):
    c_out, kx, ky, c_in, groups, stride, padding, dilation, (w, h) = GEOMETRIES[name]
    rng = np.random.default_rng(zlib.crc32(f"{name}/{message_bits}".encode()))
    weight = rng.integers(-128, 128, (c_out, kx, ky, c_in // groups))
    assert (weight < 0).any() and (weight > 0).any()
    stock, fast, _ = _run_both(weight, (w, h, c_in), 6, rng, stride, padding, dilation, groups, message_bits)
    assert len(stock) == len(fast) == 7
    for t, (a, b) in enumerate(zip(stock, fast)):
        assert a.dtype == b.dtype and a.shape == b.shape, (t, a.dtype, b.dtype, a.shape, b.shape)
        assert np.array_equal(a, b), f"step {t}: {np.count_nonzero(a != b)} of {a.size} differ"
    # One step of delay: the first message is the initial a_buf (0); the step after the empty input is 0.
    assert not stock[0].any() and not stock[2].any()
    assert all(s.any() for i, s in enumerate(stock) if i not in (0, 2))   # not a vacuous match


def test_a_out_wraps_at_24_bits_like_stock():
    """Graded messages with 8-bit weights overflow 24 bits: both models wrap identically. (Full 24-bit
    messages even overflow int32 before the wrap, where the stock cast is platform-defined; the fast
    model does the very same cast, so they still agree.)"""
    rng = np.random.default_rng(1)
    weight = rng.integers(-128, 128, (4, 3, 3, 6))
    with np.errstate(invalid="ignore"):
        stock, fast, _ = _run_both(weight, (7, 7, 6), 3, rng, padding=(1, 1), message_bits=24)
    assert all(np.array_equal(a, b) for a, b in zip(stock, fast))
    stock, fast, xs = _run_both(weight, (7, 7, 6), 4, rng, padding=(1, 1), message_bits=24, high=1 << 16)
    assert all(np.array_equal(a, b) for a, b in zip(stock, fast))
    from netx_export.convert.conv import conv2d
    from netx_export.lava_runtime.layout import torch_conv_weight, whc
    # The unwrapped sums (PyTorch layout: weight flipped back, (W, H, C) → (C, H, W)).
    exact = whc(conv2d(whc(xs[0])[None].astype(np.float64), torch_conv_weight(weight), padding=(1, 1))[0])
    assert np.abs(exact).max() >= 1 << 23                         # the wrap really happens
    inside = np.abs(exact) < 1 << 23
    assert inside.any() and np.array_equal(stock[1][inside], exact[inside])
    assert np.abs(stock[1]).max() <= 1 << 23
    assert np.all((stock[1] - exact.astype(np.int64)) % (1 << 24) == 0)    # wrapped, i.e. equal mod 2^24


def test_weight_exp_is_ignored_by_both():
    """The stock fixed-point Conv never applies ``weight_exp``; the fast one matches that (bit-exactness
    wins). If a Lava release starts applying it, the first assertion fails and this model must follow."""
    rng = np.random.default_rng(2)
    weight = rng.integers(-128, 128, (4, 3, 3, 3))
    s0, _, _ = _run_both(weight, (6, 6, 3), 3, np.random.default_rng(3))
    s3, f3, _ = _run_both(weight, (6, 6, 3), 3, np.random.default_rng(3), weight_exp=3)
    assert all(np.array_equal(a, b) for a, b in zip(s0, s3))
    assert all(np.array_equal(a, b) for a, b in zip(s3, f3))


def _lava_conv_run(conv: str, weight, weight2, xs, steps_before: int, **kw) -> np.ndarray:
    """source → Conv → Recorder in Lava's runtime; ``weight2`` is set through ``Var.set`` after
    ``steps_before`` steps. Returns the recorded a_out per step (steps, W', H', C_out)."""
    import tempfile

    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.process import Conv
    from lava.proc.io.source import RingBuffer

    from netx_export.lava import Recorder
    from netx_export.lava.conv_models import PyConvModelFast
    steps = xs.shape[-1]
    with tempfile.TemporaryDirectory() as wd:
        src = RingBuffer(data=xs)
        syn = Conv(weight=weight, input_shape=xs.shape[:3], **kw)
        rec = Recorder(shape=syn.a_out.shape, path=f"{wd}/a.npy", steps=steps, dtype="int64")
        src.s_out.connect(syn.s_in)
        syn.a_out.connect(rec.a_in)
        cfg = Loihi2SimCfg(select_tag="fixed_pt",
                           exception_proc_model_map={Conv: PyConvModelFast} if conv == "fast" else None)
        try:
            syn.run(condition=RunSteps(num_steps=steps_before), run_cfg=cfg)
            syn.weight.set(weight2)
            syn.run(condition=RunSteps(num_steps=steps - steps_before), run_cfg=cfg)
        finally:
            syn.stop()
        return np.load(f"{wd}/a.npy").copy()


def test_fast_equals_stock_in_lava_runtime_with_weight_set():
    rng = np.random.default_rng(4)
    w1 = rng.integers(-128, 128, (4, 3, 3, 2))
    w2 = rng.integers(-128, 128, (4, 3, 3, 2))
    xs = rng.integers(-200, 200, (9, 8, 4, 7)).astype(np.int32)            # (W, H, C_in, T), graded
    kw = dict(stride=2, padding=1, groups=2, num_message_bits=16)
    stock = _lava_conv_run("stock", w1, w2, xs, 3, **kw)
    fast = _lava_conv_run("fast", w1, w2, xs, 3, **kw)
    assert stock.shape == (7, 5, 4, 4)
    assert np.array_equal(stock, fast)
    assert not stock[0].any() and all(stock[t].any() for t in range(1, 7))
    # The weights set after step 3 are in effect from the 4th computed output (sent at step 5) on:
    # recomputing step 4 (input index 3) with w1 gives a different output than what was recorded.
    with_w1 = _lava_conv_run("fast", w1, w1, xs, 3, **kw)
    assert np.array_equal(with_w1[:4], stock[:4]) and not np.array_equal(with_w1[4:], stock[4:])


# --------------------------------------------------------------------------- exported network, CLI
@pytest.fixture(scope="module")
def digits_file(digits_netx):
    """The conftest digits model exported to NetX, with the layer-0 drive of 3 test images."""
    return digits_netx[:3]


def test_run_config_selects_the_model():
    from lava.proc.conv.models import PyConvModelFixed, PyConvModelFloat
    from lava.proc.conv.process import Conv

    from netx_export.lava.conv_models import PyConvModelFast
    from netx_export.lava_runtime.runner import LavaNetwork
    proc = Conv(weight=np.ones((2, 3, 3, 1), np.int32), input_shape=(5, 5, 1))
    found = [PyConvModelFloat, PyConvModelFixed]
    for conv, want in (("fast", PyConvModelFast), ("lava", PyConvModelFixed), ("stock", PyConvModelFixed)):
        ln = LavaNetwork(net=None, qnet=None, T=1, n=1, timing="lava", tag="fixed_pt", total_steps=1, workdir="",
                         spike_files=[], v_file="", offsets=[], recorders=[], conv=conv)
        assert ln.run_config().select(proc, found) is want


def test_digits_network_fast_equals_stock(digits_file):
    from netx_export.lava_runtime.runner import run_lava
    path, net, drive = digits_file
    assert sum(lay.kind == "conv" for lay in net.synaptic[1:]) >= 2       # Lava Conv synapses in play
    runs = {c: run_lava(path, T=5, drive=drive, timing="lava", qnet=net, conv=c) for c in ("lava", "fast")}
    a, b = runs["lava"], runs["fast"]
    assert a.n == b.n == 3 and a.stopped is None and b.stopped is None
    for i, (sa, sb) in enumerate(zip(a.spikes, b.spikes)):
        assert sa.shape == sb.shape and np.array_equal(sa, sb), f"layer {i}"
    assert np.array_equal(a.logits, b.logits)
    assert all(s.any() for s in a.spikes[:-1])
    from netx_export.comparison import compare
    from netx_export.sim.refsim import simulate_drive
    c = compare(b, simulate_drive(net, drive, 5, "lava", record_spikes=True))    # and both equal refsim
    assert c["spike_mismatches"] == 0 and c["logit_mismatches"] == 0, c["layers"]


def test_cli_simulate_conv_option(digits_file, tmp_path, capsys):
    from qcfs2lava.cli import build_parser, main
    path, _, _ = digits_file
    js = tmp_path / "sim.json"
    rc = main(["simulate", path, "--backend", "lava", "--dataset", "digits", "--n", "2", "--T", "3",
               "--conv", "lava", "--compare", "--json", str(js)])
    d = json.loads(js.read_text())
    assert rc == 0 and d["conv"] == "lava" and d["n"] == 2 and d["spike_mismatches"] == 0
    assert "deprecated" not in capsys.readouterr().err
    assert build_parser().parse_args(["simulate", path]).conv == "fast"
    # The old name of Lava's own model ("stock", easily taken for stock mode) still works, with one note.
    assert build_parser().parse_args(["simulate", path, "--conv", "stock"]).conv == "lava"
    err = capsys.readouterr().err
    assert err.count("qcfs2lava: note: --conv stock is deprecated; use --conv lava") == 1, err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", path, "--conv", "scipy"])
