"""The Python 3.11 shim for lava-nc 0.10.0 (netx_export.lava_compat)."""
import subprocess
import sys
import textwrap

import pytest

from netx_export import lava_compat

SRC = "@dataclass\nclass ByteEncoder:\n    base: int = 0\n"


def test_patch_is_narrow():
    assert lava_compat.patch_source(SRC) == "@dataclass(unsafe_hash=True)\nclass ByteEncoder:\n    base: int = 0\n"
    other = "@dataclass\nclass Other:\n    x: int = 0\n"
    assert lava_compat.patch_source(other) == other


def test_only_needed_from_python_3_11():
    assert not lava_compat.needs_patch((3, 10))
    assert lava_compat.needs_patch((3, 11))


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the break only exists on Python >= 3.11")
def test_lava_fails_to_import_without_the_shim():
    r = _run("import lava.magma.compiler.var_model")
    assert r.returncode != 0 and "mutable default" in r.stderr


@pytest.mark.lava
def test_two_neuron_lif_network_runs_through_the_shim():
    r = _run("""
        from netx_export import lava_compat
        lava_compat.install()
        import numpy as np
        from lava.proc.lif.process import LIF
        from lava.proc.dense.process import Dense
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.compiler.var_model import ByteEncoder
        pre = LIF(shape=(1,), du=4095, dv=0, vth=10, bias_mant=3, bias_exp=6)   # fires every 4th step
        syn = Dense(weights=np.array([[20]]))
        post = LIF(shape=(1,), du=4095, dv=0, vth=30)
        pre.s_out.connect(syn.s_in); syn.a_out.connect(post.a_in)
        pre.run(condition=RunSteps(num_steps=16), run_cfg=Loihi2SimCfg(select_tag='fixed_pt'))
        v = post.v.get(); pre.stop()
        assert ByteEncoder() == ByteEncoder() and hash(ByteEncoder()) == hash(ByteEncoder())
        print('post v', int(v[0]))
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    # By hand: pre integrates 3<<6 per step and fires when v > 10<<6, i.e. at steps 4, 8, 12, 16.
    # Dense delays by one step, so post gets 20<<6 = 1280 at steps 5, 9, 13; it fires at step 9
    # (2560 > 30<<6 = 1920), resets to 0, and holds 1280 after step 13.
    assert "post v 1280" in r.stdout, r.stdout
