"""Ctrl-C / SIGTERM while a Lava run starts (issue 19, cause 1): ``qcfs2lava simulate --backend lava``
exits promptly with 130 / 143 and leaves no process, no /dev/shm/psm_* segment and no temporary
folder behind. A short version of ``benchmarks/lava_interrupt.py`` (whose helpers it uses): the
signal arrives at the worst moment, once the runtime has forked every model process and before it
ran a step, when ``net.stop()`` used to wait for them forever."""
import importlib.util
import os
import signal
import sys
import textwrap

import pytest

from conftest import ROOT, require_lava

pytestmark = [pytest.mark.lava, pytest.mark.slow]
require_lava()

LIMIT_S = 15.0

# The command signals itself right after Lava's Runtime has forked its processes and started its
# ports (the end of Runtime.initialize), before any step: deterministic, unlike a timed kill.
WRAPPER = textwrap.dedent("""
    import os, sys
    sig = int(sys.argv[1])
    import netx_export.lava                                  # the Python 3.11 shim, before Lava
    from lava.magma.runtime import runtime as R
    started = R.Runtime._start_ports
    def start_ports(self):
        started(self)
        os.kill(os.getpid(), sig)
    R.Runtime._start_ports = start_ports
    from qcfs2lava.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def _bench():
    spec = importlib.util.spec_from_file_location("lava_interrupt_bench",
                                                  os.path.join(ROOT, "benchmarks", "lava_interrupt.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_start_up_exits_clean(digits_netx, sig):
    bench = _bench()
    path = digits_netx[0]
    cmd = [sys.executable, "-c", WRAPPER, str(int(sig)), "simulate", path, "--backend", "lava",
           "--dataset", "digits", "--n", "50", "--T", "16"]
    r = bench.one_run(cmd, sig, None, kill_after=3 * LIMIT_S, settle=10.0)
    assert not r["hung"], r
    assert r["exit_code"] == bench.EXPECTED[sig], r
    assert ("interrupted" if sig == signal.SIGINT else "terminated") in " ".join(r["output_tail"]), r
    assert r["seconds_to_exit"] is not None and r["seconds_to_exit"] < LIMIT_S, r
    assert r["processes_seen"] >= 3, r                        # the signal did come after the fork
    assert r["leftover_processes"] == [], r
    assert r["leftover_shm"] == [], r
    assert r["leftover_temp"] == [], r
    assert bench.ok(r, LIMIT_S)
