"""The IF_SUB Lava neuron (netx_export.lava) against hand-computed traces, and the NetX hook."""
import numpy as np
import pytest
from conftest import require_lava

pytestmark = pytest.mark.lava

lava_pkg = require_lava()


def _run(build, steps, tag):
    """Build a tiny network with ``build(rec_factory)``, run it, return what the recorders wrote."""
    import os
    import tempfile

    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    from netx_export.lava import Recorder

    with tempfile.TemporaryDirectory() as d:
        files = []

        def recorder(port, dtype):
            f = os.path.join(d, f"r{len(files)}.npy")
            r = Recorder(shape=port.shape, path=f, steps=steps, dtype=dtype)
            port.connect(r.a_in)
            files.append(f)
            return r

        root = build(recorder)
        try:
            root.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag=tag))
            extra = {"vth": root.vth.get()} if hasattr(root, "vth") else {}
        finally:
            root.stop()
        return [np.load(f) for f in files], extra


@pytest.mark.parametrize("tag", ["fixed_pt", "floating_pt"])
def test_bias_only_trace_threshold_subtraction_and_v0(tag):
    from netx_export.lava import IF_SUB
    lif = {}

    def build(recorder):
        n = IF_SUB(shape=(3,), vth=10, bias_mant=np.array([5, 4, 3]), bias_exp=6, du=4095, dv=0,
                   v=np.array([5, 5, 0]) << 6)
        recorder(n.s_out, "int8")
        recorder(n.v_out, "float64")
        lif["n"] = n
        return n

    (s, v), extra = _run(build, 6, tag)
    # By hand, in weight units (v_state = 64·V): V += bias; spike when V >= 10; V -= 10.
    #   n0: bias 5, V(0)=5: 10* 0 | 5 | 10* 0 | 5 | 10* 0 | 5    (fires AT threshold: >=, not >)
    #   n1: bias 4, V(0)=5: 9 | 13* 3 | 7 | 11* 1 | 5 | 9       (subtracts 10, keeps the excess)
    #   n2: bias 3, V(0)=0: 3 | 6 | 9 | 12* 2 | 5 | 8
    assert s.T.tolist() == [[1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 0], [0, 0, 0, 1, 0, 0]]
    assert (v.T / 64).tolist() == [[0, 5, 0, 5, 0, 5], [9, 3, 7, 1, 5, 9], [3, 6, 9, 2, 5, 8]]
    assert extra["vth"] == 10                       # Var.get() returns (Python-int Vars)


@pytest.mark.parametrize("tag", ["fixed_pt", "floating_pt"])
@pytest.mark.parametrize("flush", [1, 0])
def test_per_sample_reset_bias_schedule_and_flush(tag, flush):
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer

    from netx_export.lava import IF_SUB

    def build(recorder):
        src = RingBuffer(data=np.ones((1, 7)))
        syn = Dense(weights=np.array([[3]]))
        n = IF_SUB(shape=(1,), vth=10, v=5 << 6, du=4095, dv=0, bias_exp=6, reset_interval=3, reset_offset=1,
                   flush=flush, bias_schedule=np.array([[4], [6]]))
        src.s_out.connect(syn.s_in)
        syn.a_out.connect(n.a_in)
        recorder(n.s_out, "int8")
        recorder(n.v_out, "float64")
        return src

    (s, v), _ = _run(build, 7, tag)
    # Input a(t) = 3 from t = 2 on (the synapse delays one step). Resets at t = 1, 4, 7 (t % 3 == 1):
    # V = V(0) = 5 and the bias becomes schedule row 0, 1, then 0 (schedule exhausted).
    #   t:      1   2     3     4          5     6   7
    #   flush:  9   16*6  13*3  5+6=11*1   10*0  9   5      (the input arriving at a reset is dropped)
    #   no:     9   16*6  13*3  5+3+6=14*4 13*3  12*2 5+3=8
    if flush:
        assert s[:, 0].tolist() == [0, 1, 1, 1, 1, 0, 0]
        assert (v[:, 0] / 64).tolist() == [9, 6, 3, 1, 0, 9, 5]
    else:
        assert s[:, 0].tolist() == [0, 1, 1, 1, 1, 1, 0]
        assert (v[:, 0] / 64).tolist() == [9, 6, 3, 4, 3, 2, 8]


def test_process_validates_its_parameters():
    from netx_export.lava import IF_SUB
    n = IF_SUB(shape=(2, 1), vth=7, v=3 << 6, reset_interval=4, reset_offset=5)
    assert n.reset_offset.init == 1 and n.v_init.init.tolist() == [[192], [192]]
    with pytest.raises(ValueError, match="shape"):
        n.set_bias_schedule(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="integer"):
        n.set_bias_schedule(np.full((3, 2, 1), 0.5))
    n.set_bias_schedule(np.ones((3, 2, 1)))
    assert n.bias_schedule.shape == (3, 2, 1)
    with pytest.raises(ValueError):
        IF_SUB(shape=(1,), reset_interval=-1)


def test_netx_hook_maps_if_sub_to_python_ints(tmp_path):
    import h5py

    from netx_export.lava_runtime import netx_registration as lava_netx
    lava_netx.register()
    lava_netx.register()                            # idempotent
    from lava.lib.dl.netx import hdf5
    from lava.lib.dl.netx.utils import NetDict
    from lava.proc.lif.process import LIF

    from netx_export.lava import IF_SUB

    assert lava_netx.is_registered()
    p = tmp_path / "n.h5"
    with h5py.File(p, "w") as f:
        g = f.create_group("neuron")
        g.create_dataset("type", data="IF_SUB")
        g["iDecay"], g["vDecay"], g["vThMant"], g["vInit"] = np.int64(4096), np.int64(0), np.int64(2046), np.int64(1023)
        c = f.create_group("cuba")
        c.create_dataset("type", data="CUBA")
        c["iDecay"], c["vDecay"], c["vThMant"] = np.int64(4096), np.int64(0), np.int64(100)
    nd = NetDict(str(p))
    params = hdf5.Network.get_neuron_params(nd["neuron"], reset_interval=8, reset_offset=3)
    assert params["neuron_proc"] is IF_SUB
    assert params["vth"] == 2046 and params["du"] == 4095 and params["dv"] == 0 and params["bias_exp"] == 6
    assert params["v"] == params["v_init"] == 1023 << 6
    assert params["reset_interval"] == 8 and params["reset_offset"] == 3
    for k in ("vth", "du", "dv", "v", "v_init", "reset_interval", "reset_offset"):
        assert type(params[k]) is int, k             # numpy int64 would make Var.get() hang
    other = hdf5.Network.get_neuron_params(nd["cuba"])
    assert other["neuron_proc"] is LIF                # other types: NetX's own mapping
    lava_netx.unregister()
    assert not lava_netx.is_registered()
    lava_netx.register()


def test_netx_import_is_quiet():
    """lava-dl prints a Prophesee toolbox warning on import; the one place that imports it first
    (netx_registration.import_netx) swallows exactly that and nothing else."""
    import os
    import subprocess
    import sys

    from conftest import ROOT
    code = ("import sys; from netx_export.lava_runtime import netx_registration as r; "
            "print('before'); n = r.import_netx(); r.register(); print('after', n.hdf5.__name__, "
            "'lava.lib.dl.slayer' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split("\n")[:2] == ["before", "after lava.lib.dl.netx.hdf5 True"], p.stdout
    assert "Prophesee" not in p.stdout + p.stderr
