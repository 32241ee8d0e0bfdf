"""Stock-block mode (netx_export.convert.stock_blocks, netx_export.sim.stock,
netx_export.lava_runtime.stock): one neuron traced by hand against the ideal subtractive IF
(agreement, tie, the residual case), exact coarse+fine synapse splits, the comparator window, the
idle neuron that cannot fire before its input arrives, the relay chain that starts each layer late,
stock vs refsim's IF_SUB on the exported digits net, the step-by-step wiring vs the reference in
both timings, and Lava (stock processes only) vs the stock reference spike for spike in both
timings."""
import dataclasses

import numpy as np
import pytest

from netx_export.comparison import compare
from netx_export.convert.fixedpoint import v_init_array
from netx_export.convert.stock_blocks import (ALWAYS_ON, RELAY, WEIGHT_EXP_MAX, WEIGHT_EXP_MIN, LifParams,
                                              comparator_offset, exact_window, idle_peak, split_weights,
                                              steps_per_sample, stock_network, terms_value)
from netx_export.convert.stock_blocks import unwrap_current
from netx_export.sim import refsim
from netx_export.sim.stock import simulate_drive as stock_simulate_drive
from netx_export.sim.stock import simulate_schedule, stock_step
from conftest import require_lava

TH, V0 = 100, 50                        # θ and vInit in weight units; state units are ×64


def _stock_neuron(theta: int = TH, v0: int = V0, offset: int | None = None, vth: int | None = None) -> LifParams:
    o = comparator_offset(theta) if offset is None else offset
    return LifParams(vth=theta if vth is None else vth, du=-1, dv=4095, bias_mant=o, bias_exp=0, u=v0 << 6)


def _run_stock(lif: LifParams, theta: int, a_ext: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Settle step, then one step per external input, self-inhibition −θ·s[t−1]: (spikes, u, v)."""
    u, v, s, _ = stock_step(np.array([lif.u]), np.array([lif.v]), 0, lif)
    assert not s.any()
    spikes, us, vs = [], [], []
    for a in a_ext:
        u, v, s, _ = stock_step(u, v, np.array([a]) - theta * s, lif)
        spikes.append(int(s[0]))
        us.append(int(u[0]))
        vs.append(int(v[0]))
    return spikes, us, vs


def _run_ifsub(theta: int, v0: int, a_ext: list[int]) -> list[int]:
    """refsim's IF_SUB (iDecay 4096, vDecay 0): v += 64a; fire at v ≥ 64θ; v −= 64θ."""
    u, v = np.zeros(1, np.int64), np.array([v0 << 6])
    out = []
    for a in a_ext:
        u, v, s, _ = refsim.lif_step(u, v, np.array([a]), 0, theta, 4095, 0, subtractive=True)
        out.append(int(s[0]))
    return out


# --------------------------------------------------------------------------- one neuron by hand
def test_hand_trace_agrees_then_shows_the_residual_case():
    # θ = 100, vInit = 50, o = 64 − ⌊100/64⌋ = 63. State units (×64): 64θ = 6400, u(0) = 3200.
    # settle: u = 3200, v = 0 + 3200 + 63 = 3263 (no input has arrived yet)
    # t  a_ext   u (=64·V_IF_SUB)   r = trunc(v[t−1]/4096)   v = r + u + 63      stock  IF_SUB (V ≥ 100)
    # 1   30     5120  (V 80)        0                        5183                0      0
    # 2   30     7040  (V 110)       1                        7104 > 6400         1      1
    # 3   30     7040−6400+1920=2560 0 (v was reset)          2623                0      0
    # 4   30     4480  (V 70)        0                        4543                0      0
    # 5   30     6400  (V 100, tie)  1                        6464 > 6400         1      1   ≥ is honoured
    # 6    0     0                   0                        63                  0      0
    # 7 −5000    −320000             0                        −319937             0      0
    # 8  5100    6400  (V 100, tie)  trunc(−319937/4096)=−78  6385 ≤ 6400         0      1   residual −78 ≤ −o
    # 9    0     6400  (no −θ)       1                        6464                1      0   one step late
    # 10   0     0                   0                        63                  0      0   back in step
    a_ext = [30, 30, 30, 30, 30, 0, -5000, 5100, 0, 0]
    spikes, u, v = _run_stock(_stock_neuron(), TH, a_ext)
    assert u == [5120, 7040, 2560, 4480, 6400, 0, -320000, 6400, 6400, 0]
    assert v == [5183, 0, 2623, 4543, 0, 63, -319937, 6385, 0, 63]
    assert spikes == [0, 1, 0, 0, 1, 0, 0, 0, 1, 0]
    ideal = _run_ifsub(TH, V0, a_ext)
    assert ideal == [0, 1, 0, 0, 1, 0, 0, 1, 0, 0]
    assert spikes[:7] == ideal[:7] and spikes[7:] != ideal[7:]
    assert sum(spikes) == sum(ideal)                       # the spike is late, not lost
    lo, hi = exact_window(TH)
    assert (lo, hi) == (-63, 1) and not lo < -78 <= hi      # t = 8's residual lies outside the exact window


def test_offset_is_what_makes_ties_and_positive_residuals_exact():
    # V: 50 → 70 (u 4480, v ≥ 4096 so the next r = 1) → 99: just below θ.
    a_ext = [20, 29, 1]
    assert _run_ifsub(TH, V0, a_ext) == [0, 0, 1]
    assert _run_stock(_stock_neuron(), TH, a_ext)[0] == [0, 0, 1]
    # The usual strict-comparator trick, vth = θ − 1 without offset: r = 1 fires it one unit early.
    assert _run_stock(_stock_neuron(offset=0, vth=TH - 1), TH, a_ext)[0] == [0, 1, 0]
    # vth = θ without offset misses the exact tie when r = 0 (straight after a spike).
    tie = [50, 100]                                        # V: 100 (fire, → 0), 100 (fire)
    assert _run_ifsub(TH, V0, tie) == [1, 1]
    assert _run_stock(_stock_neuron(), TH, tie)[0] == [1, 1]
    assert _run_stock(_stock_neuron(offset=0), TH, tie)[0] == [0, 1]     # r = 0: 6400 > 6400 fails


@pytest.mark.parametrize("theta", [2, 64, 100, 302, 1566, 2047, 2080, 4095])
def test_comparator_window_brute_force(theta):
    lo, hi = exact_window(theta)
    o = comparator_offset(theta)
    assert hi - lo == 64 and 1 <= o <= 64
    assert hi >= theta >> 6                                # every positive residual of a silent neuron
    for r in range(lo - 3, hi + 4):
        for k in range(-3, 4):                             # u = 64·(θ + k): around the threshold
            u = (theta + k) << 6
            stock = r + u + o > theta << 6
            ideal = u >= theta << 6
            if lo < r <= hi:
                assert stock == ideal, (r, k)
    # Just outside the window the test goes wrong: r = lo misses the tie u = 64θ, and r = hi + 1
    # fires at u = 64(θ − 1), one weight unit below threshold.
    assert not lo + (theta << 6) + o > theta << 6
    assert hi + 1 + ((theta - 1) << 6) + o > theta << 6


def test_always_on_source_fires_every_step():
    u, v = np.zeros(1, np.int64), np.zeros(1, np.int64)
    for _ in range(20):
        u, v, s, _ = stock_step(u, v, 0, ALWAYS_ON)
        assert s[0]


def test_relay_chain_starts_one_step_later_each_and_holds_nothing():
    # The always-on source and 4 relays, each fed by the one before through a weight-1 synapse
    # (one step of delay). Relay k must first spike at step 1 + k and then at every step, with u
    # never above one input's worth: nothing accumulates, so no run length can wrap it.
    K, steps = 5, 300
    u, v = np.zeros(K, np.int64), np.zeros(K, np.int64)
    last = np.zeros(K, bool)
    fired = np.zeros((steps, K), bool)
    for t in range(steps):
        cur = np.zeros(K, bool)
        for k in range(K):
            a = 0 if k == 0 else int(last[k - 1])
            uk, vk, sk, over = stock_step(u[k:k + 1], v[k:k + 1], a, ALWAYS_ON if k == 0 else RELAY)
            u[k], v[k], cur[k] = uk[0], vk[0], sk[0]
            assert over == 0 and 0 <= u[k] <= 64
        fired[t], last = cur, cur
    for k in range(K):
        assert not fired[:k, k].any() and fired[k:, k].all()         # step index k is hardware step 1 + k


# --------------------------------------------------------------------------- idle: no spike before the input
def test_idle_neuron_cannot_fire_for_any_threshold_below_4096():
    # A layer that has not started holds u = 64·vInit and nothing arrives; v climbs to
    # idle_peak = least fixed point of v ← trunc(v/4096) + u + o. Exhaustively for every
    # 1 ≤ θ ≤ 4095 and 0 ≤ vInit < θ (8.4 million pairs): the peak stays ≤ 64θ, so the strict
    # comparator v > 64θ never fires. The bound is tight (some pairs reach 64θ exactly).
    th = np.arange(1, 4096)
    theta = np.repeat(th, th)
    v_init = np.arange(theta.size) - np.repeat(np.cumsum(th) - th, th)
    offset = np.array([0] + [comparator_offset(t) for t in th])[theta]
    peak = idle_peak(v_init << 6, offset)
    assert (v_init < theta).all() and v_init.min() == 0
    assert (peak <= theta << 6).all()
    assert (peak == theta << 6).any()
    assert (peak <= (v_init << 6) + 64).all()                      # v ≤ u + 64: one weight unit of slack
    # u = θ/2 (the usual vInit), where the brief for this construction asked for the margin: ≥ 64·θ/2 − 64.
    half = v_init == theta // 2
    assert ((theta[half] << 6) - peak[half] >= ((theta[half] - theta[half] // 2) << 6) - 64).all()


@pytest.mark.parametrize("theta", [1, 63, 64, 100, 1392, 2044, 4095])
def test_idle_peak_is_what_the_neuron_reaches(theta):
    # idle_peak against the neuron itself: 200 idle steps of the stock LIF, vInit = θ − 1 and θ/2.
    lif = _stock_neuron(theta, theta - 1)
    for v0 in (theta - 1, theta // 2):
        lif = dataclasses.replace(lif, u=v0 << 6)
        u, v = np.array([lif.u]), np.array([lif.v])
        top = -1
        for _ in range(200):
            u, v, s, _ = stock_step(u, v, 0, lif)
            assert not s.any() and u[0] == v0 << 6
            top = max(top, int(v[0]))
        assert top == int(idle_peak(v0 << 6, comparator_offset(theta)))


def test_idle_guard_above_4096(digits_net):
    # θ ≥ 4096 gives o = 1 and residuals up to ⌊θ/64⌋ > 63: vInit = θ − 1 then fires while idle,
    # which stock_network must refuse; vInit a little lower is fine.
    theta = 8000
    lif = _stock_neuron(theta, theta - 1)
    assert comparator_offset(theta) == 1 and int(idle_peak(lif.u, 1)) > theta << 6
    u, v = np.array([lif.u]), np.array([lif.v])
    fired = []
    for _ in range(5):
        u, v, s, _ = stock_step(u, v, 0, lif)
        fired.append(bool(s[0]))
    assert any(fired)
    net, _, _ = digits_net
    lay = net.synaptic[1]

    def with_neuron(v_init: int):
        hot = dataclasses.replace(lay, neuron=dataclasses.replace(lay.neuron, vth=theta, v_init=v_init))
        return dataclasses.replace(net, layers=tuple(hot if q is lay else q for q in net.layers))
    with pytest.raises(ValueError, match="waiting for its input"):
        stock_network(with_neuron(theta - 1))
    assert stock_network(with_neuron(theta - 10)).layers[1].theta == theta


# --------------------------------------------------------------------------- exact synapse splits
def _check_lava_format(term) -> None:
    w = np.asarray(term.weights)
    assert WEIGHT_EXP_MIN <= term.weight_exp <= WEIGHT_EXP_MAX
    if (w > 0).any() and (w < 0).any():
        assert w.min() >= -256 and w.max() <= 254 and not (w % 2).any()   # Lava: mixed sign loses the LSB
    elif (w >= 0).all():
        assert w.max() <= 255
    else:
        assert w.min() >= -255
    if term.weight_exp < 0:
        assert not (w % (1 << -term.weight_exp)).any()      # the right shift after accumulation is exact


def test_theta_splits_exactly_into_coarse_and_fine_synapses():
    for th in list(range(1, 32641)) + [65536, 131071]:     # every θ up to 255·2^7, exhaustively
        terms = split_weights(-th)
        assert int(terms_value(terms)) == -th
        for t in terms:
            _check_lava_format(t)
        assert len(terms) <= (2 if th <= 32640 else 6)
    assert [(int(t.weights), t.weight_exp) for t in split_weights(-1566)] == [(-196, 3), (2, 0)]
    assert [(int(t.weights), t.weight_exp) for t in split_weights(-2080)] == [(-130, 4)]
    with pytest.raises(ValueError, match="more than"):
        split_weights(-131071, max_terms=2)


def test_bias_vectors_split_exactly():
    rng = np.random.default_rng(0)
    for _ in range(200):
        b = rng.integers(-4095, 4096, size=int(rng.integers(1, 300)))
        terms = split_weights(b)
        assert np.array_equal(terms_value(terms, b.shape), b)
        assert len(terms) <= 2                              # coarse m·2^k + fine m' for |b| ≤ 4095
        for t in terms:
            _check_lava_format(t)
    for b in range(-4095, 4096):                           # every single value, exhaustively
        terms = split_weights(b)
        assert int(terms_value(terms)) == b and len(terms) <= 2
    assert split_weights(np.zeros(5, np.int64)) == ()
    single = split_weights(np.array([3, 0, 255]))           # one sign: 8 bits, no LSB lost
    assert len(single) == 1 and single[0].weight_exp == 0


def test_unwrap_current_recovers_the_summed_input():
    steps = np.array([0] + [60000] * 300 + [-60000] * 500, np.int64) << 6
    true = np.cumsum(steps)
    wrapped = refsim.wrap_current(true)
    for i in range(1, len(true)):                          # what a 24-bit register holds step by step
        wrapped[i] = refsim.wrap_current(wrapped[i - 1] + steps[i])
    assert not np.array_equal(wrapped, true)
    assert np.array_equal(unwrap_current(wrapped), true)


# --------------------------------------------------------------------------- the exported digits net
@pytest.fixture(scope="module")
def digits_net(digits_model, tmp_path_factory):
    from qcfs2lava import data as D
    from qcfs2lava.checkpoint import load_checkpoint

    from netx_export.convert.pipeline import quantize_checkpoint
    from netx_export.convert.fixedpoint import input_drive
    from netx_export.netx.read import read_netx
    from netx_export.netx.write import write_netx
    path, _ = digits_model
    out = str(tmp_path_factory.mktemp("stock") / "digits.net")
    write_netx(quantize_checkpoint(load_checkpoint(path)).net, out)
    net = read_netx(out)
    split = D.load_split("digits", None, train=False)
    norm = net.metadata["normalization"]
    x = D.normalize(split.x[:96], norm["max_value"], norm["mean"], norm["std"]).numpy()
    return net, input_drive(net, x).drive, split.y[:96].numpy()


def test_stock_network_parameters(digits_net):
    net, _, _ = digits_net
    sn = stock_network(net)
    assert [lay.role for lay in sn.layers][0] == "input" and sn.layers[-1].role == "readout"
    for lay, q in zip(sn.layers, net.synaptic):
        assert lay.lif.du == -1 and lay.lif.dv == 4095
        assert np.array_equal(np.broadcast_to(lay.lif.u, lay.shape), v_init_array(q.neuron, q.shape) << 6)
        assert lay.lif.v == 0
        if lay.role == "readout":
            assert lay.theta == 0 and lay.inhibition == ()
        else:
            assert lay.theta == q.neuron.vth and lay.lif.vth == q.neuron.vth
            assert int(terms_value(lay.inhibition)) == -q.neuron.vth
            assert lay.lif.bias_mant == comparator_offset(q.neuron.vth)
        if lay.role == "input":
            assert lay.bias == ()                           # inside the host drive
        else:
            assert np.array_equal(lay.bias_values, q.bias)
        if lay.kind == "dense" and lay.role != "input":
            assert np.array_equal(terms_value(lay.weight, q.weight.shape), q.weight)


@pytest.mark.parametrize("timing", ["aligned", "lava"])
def test_stock_matches_ifsub_on_the_digits_net(digits_net, timing):
    net, drive, y = digits_net
    T = 16
    ref = refsim.simulate_drive(net, drive, T, timing, record_spikes=True)
    st = stock_simulate_drive(stock_network(net), drive, T, timing, record_spikes=True)
    agree = compare(ref, st)["layers"]
    assert all(a["compared"] == T * len(y) * k for a, k in zip(agree, ref.neurons))
    assert all(s.any() for s in ref.spikes[:-1])           # every hidden layer fires: not a vacuous match
    # Measured on this net: no overflow in either and no residual outside the window at a threshold
    # crossing, so the two agree entry for entry. The CIFAR-10 model does not (docs/stock-mode.md).
    assert ref.saturated == 0 and st.saturated == 0
    for a in agree[:-1]:                                   # the readout's spikes are bookkeeping in both
        assert a["mismatches"] == 0, agree
    assert np.array_equal(ref.logits, st.logits)
    # The residual is real on this net: without the comparator offset (vth = θ − 1) spikes differ.
    sn = stock_network(net)
    naive = dataclasses.replace(sn, layers=tuple(
        lay if lay.role == "readout" else dataclasses.replace(
            lay, lif=dataclasses.replace(lay.lif, bias_mant=0, vth=lay.theta - 1)) for lay in sn.layers))
    bad = compare(ref, stock_simulate_drive(naive, drive, T, timing, record_spikes=True))["layers"]
    assert sum(a["mismatches"] for a in bad[:-1]) > 0


def test_evaluate_is_a_drop_in_for_refsim_evaluate(digits_net, digits_model):
    from qcfs2lava import data as D

    from netx_export.comparison import compare_stock
    from netx_export.sim.stock import evaluate
    net, _, _ = digits_net
    split = D.load_split("digits", None, train=False)
    norm = net.metadata["normalization"]
    x = D.normalize(split.x[:64], norm["max_value"], norm["mean"], norm["std"]).numpy()
    batches = [(x[i:i + 32], split.y[i:i + 32].numpy()) for i in (0, 32)]
    ev = evaluate(net, batches, 6)
    ref = refsim.evaluate(net, batches, 6)
    assert type(ev) is type(ref) and ev.n == 64 and ev.timing == "aligned"
    assert ev.accuracy == ref.accuracy and np.allclose(ev.firing_rates[:-1], ref.firing_rates[:-1])
    assert ev.accuracy[-1] > 0.8
    c = compare_stock(net, batches, 6)
    assert c.accuracy_stock == ev.accuracy and c.accuracy_ifsub == ref.accuracy
    assert c.prediction_agreement == [1.0] * 6 and c.logits_equal == 1.0
    assert c.layer_agreement[:-1] == [1.0] * (len(net.synaptic) - 1)


def _per_channel_v_init(net, seed: int = 0):
    """The net with layer 1's vInit drawn per channel in [0, θ) (as low-T calibrated files have it)."""
    lay = net.synaptic[1]
    v0 = np.random.default_rng(seed).integers(0, lay.neuron.vth, size=lay.shape[0]).astype(np.int64)
    hot = dataclasses.replace(lay, neuron=dataclasses.replace(lay.neuron, v_init=v0))
    return dataclasses.replace(net, layers=tuple(hot if q is lay else q for q in net.layers))


def test_per_channel_v_init(digits_net):
    net, drive, _ = digits_net
    pc = _per_channel_v_init(net)
    sn = stock_network(pc)
    assert np.array_equal(sn.layers[1].lif.u, v_init_array(pc.synaptic[1].neuron, pc.synaptic[1].shape) << 6)
    ref = refsim.simulate_drive(pc, drive, 12, "aligned", record_spikes=True)
    st = stock_simulate_drive(sn, drive, 12, "aligned", record_spikes=True)
    plain = refsim.simulate_drive(net, drive, 12, "aligned", record_spikes=True)
    assert not np.array_equal(ref.spikes[1], plain.spikes[1])        # the per-channel vInit matters
    assert all(a["mismatches"] == 0 for a in compare(ref, st)["layers"][:-1])


@pytest.mark.parametrize("timing", ["aligned", "lava"])
def test_wiring_step_by_step_reproduces_the_reference(digits_net, timing):
    # simulate_schedule steps every block lava_stock builds (settle step, synapse delays, relays, idle
    # layers, wrapped readout u); read back like lava_stock, it must equal simulate_drive exactly.
    net, drive, y = digits_net
    T = 6
    sn = stock_network(net)
    sched, early = simulate_schedule(sn, drive, T, timing)
    ref = stock_simulate_drive(sn, drive, T, timing, record_spikes=True)
    assert early == (0,) * len(sn.layers)
    assert all(a["mismatches"] == 0 for a in compare(sched, ref)["layers"])
    assert np.array_equal(sched.logits, ref.logits)
    assert all(s.any() for s in sched.spikes[:-1])
    if timing == "aligned":
        assert steps_per_sample(sn, T) == T + len(sn.layers) and sn.aligned_relays == len(sn.layers) - 1
        assert np.array_equal(sched.logits, refsim.simulate_drive(net, drive, T, "aligned").logits)
        # What the aligned timing is for: at small T the lava timing's readout has barely seen the input.
        lava = stock_simulate_drive(sn, drive, T, "lava")
        assert sched.accuracy(y)[3] >= 0.9 > lava.accuracy(y)[3] + 0.5
    else:
        assert steps_per_sample(sn, T, "lava") == T + 1


def test_settle_step_guard(digits_net):
    net, _, _ = digits_net
    lay = net.synaptic[1]
    hot = dataclasses.replace(lay, neuron=dataclasses.replace(lay.neuron, v_init=lay.neuron.vth))
    layers = tuple(hot if q is lay else q for q in net.layers)
    with pytest.raises(ValueError, match="settle step"):
        stock_network(dataclasses.replace(net, layers=layers))


# --------------------------------------------------------------------------- Lava, stock processes only
@pytest.mark.lava
def test_lava_stock_aligned_matches_the_stock_reference(digits_net):
    # The default timing: layer j's bias from relay j, so each layer starts when its input arrives.
    require_lava()
    import multiprocessing

    from netx_export.lava_runtime.stock import run_stock_lava
    net, drive, _ = digits_net
    T, L = 6, len(net.synaptic)
    sn = stock_network(net)
    res = run_stock_lava(sn, drive=drive[:3], T=T)
    ref = stock_simulate_drive(sn, drive[:3], T, "aligned", record_spikes=True)
    assert res.n == 3 and res.stopped is None and res.timing == res.sim.timing == "aligned"
    assert res.steps == T + L                                  # settle + T + the readout's L − 1 steps of wait
    assert res.early_spikes == (0,) * L                        # nothing fired before its layer started
    agree = compare(res.sim, ref)["layers"]                      # layer j's spikes read from Lava step 2 + j on
    assert all(a["mismatches"] == 0 for a in agree), agree
    assert all(s.any() for s in res.sim.spikes[:-1])
    assert np.array_equal(res.sim.logits, ref.logits) and res.sim.logits.dtype == np.int64
    ifsub = refsim.simulate_drive(net, drive[:3], T, "aligned", record_spikes=True)
    assert all(a["mismatches"] == 0 for a in compare(res.sim, ifsub)["layers"][:-1])
    assert np.array_equal(res.sim.logits, ifsub.logits)       # IF_SUB aligned, logit for logit
    # Per-channel u(0) goes through Lava's (W, H, C) layout: one sample of a per-channel net.
    pc = stock_network(_per_channel_v_init(net))
    res_pc = run_stock_lava(pc, drive=drive[3:4], T=5)
    ref_pc = stock_simulate_drive(pc, drive[3:4], 5, "aligned", record_spikes=True)
    assert res_pc.early_spikes == (0,) * L
    assert all(a["mismatches"] == 0 for a in compare(res_pc.sim, ref_pc)["layers"])
    assert np.array_equal(res_pc.sim.logits, ref_pc.logits)
    assert multiprocessing.active_children() == []


@pytest.mark.lava
def test_lava_stock_lava_timing_matches_the_stock_reference(digits_net):
    require_lava()
    import multiprocessing

    from netx_export.lava_runtime.stock import run_stock_lava
    net, drive, _ = digits_net
    T = 8
    sn = stock_network(net)
    res = run_stock_lava(sn, drive=drive[:3], T=T, timing="lava")
    ref = stock_simulate_drive(sn, drive[:3], T, "lava", record_spikes=True)
    assert res.n == 3 and res.stopped is None and res.sim.timing == "lava" and res.steps == T + 1
    assert res.early_spikes == (0,) * len(sn.layers)
    agree = compare(res.sim, ref)["layers"]
    assert all(a["mismatches"] == 0 for a in agree), agree
    assert all(s.any() for s in res.sim.spikes[:-1])
    assert np.array_equal(res.sim.logits, ref.logits) and res.sim.logits.dtype == np.int64
    # t = 1: the readout has seen only its bias (one step of delay per synapse)
    assert np.array_equal(res.sim.logits[0], np.broadcast_to(net.synaptic[-1].bias, (3, 10)))
    assert [int(c.sum()) for c in res.sim.spike_counts] == [int(c.sum()) for c in ref.spike_counts]
    with pytest.raises(ValueError, match="timing"):
        run_stock_lava(sn, drive=drive[:1], T=2, timing="pipelined")
    assert multiprocessing.active_children() == []
