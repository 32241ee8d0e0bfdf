"""netx_export.lava_runtime.runner: the digits model on Lava's CPU simulator, bit-exact against refsim,
samples independent of each other, clean shutdown (normal end, time budget, Ctrl-C), CLI."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import require_lava, ROOT, run_cli

pytestmark = pytest.mark.lava
require_lava()


@pytest.fixture(scope="module")
def digits_net(digits_netx):
    out, net, drive, y = digits_netx
    # A 4th sample that drives every first-layer neuron hard: any state leaking into the next
    # sample would show up in every layer.
    big = np.full_like(drive[:1], int(net.drive.limit))
    return out, net, np.concatenate([drive, big]), y


def _children():
    import multiprocessing
    return [p for p in multiprocessing.active_children()]


@pytest.fixture(scope="module")
def lava_run_lava_timing(digits_net):
    from netx_export.lava_runtime.runner import run_lava
    path, net, drive, _ = digits_net
    return run_lava(path, T=6, drive=drive, timing="lava", qnet=net)


def test_fixed_pt_bit_exact_lava_timing(digits_net, lava_run_lava_timing):
    from netx_export.comparison import compare
    from netx_export.sim.refsim import simulate_drive
    path, net, drive, _ = digits_net
    res = lava_run_lava_timing
    ref = simulate_drive(net, drive, 6, "lava", record_spikes=True)
    c = compare(res, ref)
    neurons = sum(int(np.prod(lay.shape)) for lay in net.synaptic)
    assert res.n == 4 and res.steps == 4 * 6 and res.stopped is None
    assert c["spikes_compared"] == 4 * 6 * neurons
    assert c["spike_mismatches"] == 0, c["layers"]
    assert c["logit_mismatches"] == 0 and c["prediction_mismatches"] == 0
    assert all(s.any() for s in res.spikes[:-1])          # not a vacuous match: every hidden layer fires
    # At t = 1 the readout has seen no spikes yet (one step of delay per synapse): logits = its bias.
    assert res.logits.dtype == np.int64
    assert np.array_equal(res.logits[0], np.broadcast_to(net.synaptic[-1].bias, (4, 10)))
    assert _children() == []                               # every model process ended


def test_fixed_pt_bit_exact_pipelined_aligned_timing(digits_net):
    from netx_export.comparison import compare
    from netx_export.lava_runtime.runner import run_lava
    from netx_export.sim.refsim import simulate_drive
    path, net, drive, y = digits_net
    res = run_lava(path, T=5, drive=drive, timing="aligned", qnet=net)
    ref = simulate_drive(net, drive, 5, "aligned", record_spikes=True)
    c = compare(res, ref)
    L = len(net.synaptic)
    assert res.steps == 4 * 5 + L - 1                     # pipelined: one sample per T steps
    assert c["spike_mismatches"] == 0 and c["logit_mismatches"] == 0, c["layers"]
    assert res.accuracy(np.r_[y, 0])[-1] == ref.accuracy(np.r_[y, 0])[-1]


def test_samples_are_independent_of_their_neighbours(digits_net, lava_run_lava_timing):
    """The same samples in another order and another company give identical spikes in every layer."""
    from netx_export.lava_runtime.runner import run_lava
    path, net, drive, _ = digits_net
    first = lava_run_lava_timing                           # order 0, 1, 2, big
    order = [3, 2, 0]                                      # big first, then 2, then 0
    res = run_lava(path, T=6, drive=drive[order], timing="lava", qnet=net)
    for j, i in enumerate(order):
        for a, b in zip(res.spikes, first.spikes):
            assert np.array_equal(a[:, j], b[:, i])
        assert np.array_equal(res.logits[:, j], first.logits[:, i])


def test_floating_pt_equals_fixed_pt_on_integer_files(digits_net, lava_run_lava_timing):
    from netx_export.lava_runtime.runner import run_lava
    path, net, drive, _ = digits_net
    res = run_lava(path, T=6, drive=drive[:2], timing="lava", tag="floating_pt", qnet=net)
    for a, b in zip(res.spikes, lava_run_lava_timing.spikes):
        assert np.array_equal(a, b[:, :2])
    assert np.array_equal(res.logits, lava_run_lava_timing.logits[:, :2].astype(float))


def test_time_budget_stops_cleanly(digits_net, tmp_path):
    from netx_export.lava_runtime.runner import run_lava
    path, net, drive, _ = digits_net
    wd = tmp_path / "wd"
    res = run_lava(path, T=4, drive=np.repeat(drive, 50, axis=0), timing="lava", qnet=net, budget_s=0.0,
                   record_spikes=False, workdir=str(wd))
    assert res.stopped and "time budget" in res.stopped and "stopped cleanly" in res.stopped
    assert 1 <= res.n < 200 and res.logits.shape == (4, res.n, 10)
    assert _children() == []


def test_ctrl_c_shuts_lava_down(digits_net, tmp_path):
    """SIGINT to the whole process group (a terminal's Ctrl-C) ends the run cleanly: no process of
    the group survives, the temporary records are gone."""
    path, _, _, _ = digits_net
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from netx_export.lava_runtime.runner import run_lava
        x = np.random.default_rng(0).normal(size=(500, 1, 8, 8))
        try:
            run_lava({path!r}, x, 16, timing='lava', progress=lambda d: print('progress', d, flush=True))
        except KeyboardInterrupt:
            print('interrupted', flush=True)
            sys.exit(130)
        print('finished', flush=True)
    """)
    env = dict(os.environ, TMPDIR=str(tmp), OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, cwd=ROOT, env=env, start_new_session=True)
    try:
        out = []
        for line in p.stdout:
            out.append(line)
            if line.startswith("progress"):
                break
        os.killpg(p.pid, signal.SIGINT)
        rest, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    text = "".join(out) + rest
    assert p.returncode == 130 and "interrupted" in text, text[-2000:]
    assert "leaked" not in text, text[-2000:]             # no shared memory left for the tracker to clean
    for _ in range(60):                                    # multiprocessing's resource tracker exits last
        left = subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True, text=True).stdout.split()
        if not left:
            break
        time.sleep(0.5)
    assert left == [], f"processes left in the group: {left}"
    assert not [f for f in os.listdir(tmp) if f.startswith("qcfs2lava-lava-")]


def test_cli_simulate_backend_lava_compare(digits_net, tmp_path):
    path, _, _, _ = digits_net
    js = tmp_path / "out.json"
    r = run_cli("simulate", path, "--backend", "lava", "--dataset", "digits", "--n", "6", "--T", "4",
                "--json", js, "--compare", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 mismatches" in r.stdout and "bit-exact" in r.stdout
    d = json.loads(js.read_text())
    assert d["backend"] == "lava" and d["n"] == 6 and d["T"] == 4 and len(d["accuracy"]) == 4
    assert d["spike_mismatches"] == 0 and d["compare"]["spikes_compared"] > 0
    assert d["seconds_per_sample"] > 0 and d["seconds_per_step"] > 0
    r = run_cli("simulate", path, "--compare", "--n", "2", "--T", "2")
    assert r.returncode == 2 and "--backend lava" in r.stderr


def test_cli_saved_outputs_and_spikes_equal_the_reference_sample_by_sample(digits_net, tmp_path):
    """``simulate --save-outputs / --save-spikes``: the Lava backend's files equal the reference
    backend's, array for array (same images, aligned timing), and the Lava logits are refsim's."""
    from qcfs2lava.cli import main
    from netx_export.sim.refsim import simulate_drive
    path, net, drive, y = digits_net
    files = {}
    for backend in ("reference", "lava"):
        out, spk = tmp_path / f"{backend}_out.npz", tmp_path / f"{backend}_spikes.npz"
        rc = main(["simulate", path, "--backend", backend, "--dataset", "digits", "--n", "3", "--T", "4",
                   "--save-outputs", str(out), "--save-spikes", str(spk), "--neuron-spikes"])
        assert rc == 0
        files[backend] = (dict(np.load(out)), dict(np.load(spk)))
    (ro, rs), (lo, ls) = files["reference"], files["lava"]
    assert sorted(ro) == sorted(lo) == ["indices", "labels", "logits", "predictions"]
    assert ro["logits"].shape == (4, 3, 10) and ro["predictions"].shape == (4, 3)
    for k in ro:
        assert np.array_equal(ro[k], lo[k]), k
    assert np.array_equal(lo["labels"], y) and np.array_equal(lo["indices"], np.arange(3))
    assert np.array_equal(lo["logits"], simulate_drive(net, drive[:3], 4, "aligned").logits)
    L = len(net.synaptic)
    assert sorted(rs) == sorted(ls) and len([k for k in rs if k.endswith("_neurons")]) == L
    for k in rs:
        assert np.array_equal(rs[k], ls[k]), k
    assert rs["layer0"].shape == (4, 3) and rs["layer1"].sum() > 0
    assert rs["layer1_neurons"].shape == (3,) + tuple(net.synaptic[1].shape)
    assert np.array_equal(rs["layer1_neurons"].reshape(3, -1).sum(1), rs["layer1"].sum(0))


def test_floating_pt_runs_the_float_snn(digits_model, digits_net):
    """Lava floating_pt with the unquantized weights/thresholds (same per-layer scale) reproduces the
    float reference SNN (qcfs2lava.snn, float64): mean logits within 1e-9 relative, same spike counts."""

    from qcfs2lava.checkpoint import load_checkpoint
    from qcfs2lava.snn import convert, simulate

    from netx_export.convert.pipeline import quantize_checkpoint
    from netx_export.lava_runtime.runner import float_drive, float_snn_params, run_lava
    path, net, _, _ = digits_net
    ck = load_checkpoint(digits_model[0])
    ex = quantize_checkpoint(ck)
    from qcfs2lava import data as D
    split = D.load_split("digits", None, train=False)
    norm = net.metadata["normalization"]
    x = D.normalize(split.x[:3], norm["max_value"], norm["mean"], norm["std"]).double()
    T = 6
    fp = float_snn_params(ex.graph, ex.net)
    res = run_lava(path, T=T, drive=float_drive(ex.net, x.numpy()), timing="aligned", tag="floating_pt",
                   qnet=net, float_params=fp)
    sr = simulate(convert(ck.model).double(), x, T)
    ref = sr.logits.numpy()
    got = res.logits / (fp["scale"][-1] * np.arange(1, T + 1).reshape(-1, 1, 1))
    assert np.abs(got - ref).max() <= 1e-9 * np.abs(ref).max()
    assert [int(c.sum()) for c in res.spike_counts[:-1]] == [int(v.sum()) for v in sr.spikes.values()]
