"""SIGTERM outside a Lava run (issue 19, cause 11): every command unwinds like Ctrl-C and exits with
code 143 and one line, writing nothing half-done; ``train`` keeps the checkpoint of its last finished
epoch. The signal is sent by the process to itself at a fixed point of the work (deterministic, unlike
a timed kill)."""
import os
import subprocess
import sys
import textwrap

import torch


# argv[1]: module, argv[2]: function to wrap, argv[3]: the call after which SIGTERM comes; then the CLI.
WRAPPER = textwrap.dedent("""
    import importlib, os, signal, sys
    mod, name, after = importlib.import_module(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    inner, calls = getattr(mod, name), []
    def wrapped(*args, **kw):
        calls.append(1)
        if len(calls) > after:
            os.kill(os.getpid(), signal.SIGTERM)
        return inner(*args, **kw)
    setattr(mod, name, wrapped)
    from qcfs2lava.cli import main
    sys.exit(main(sys.argv[4:]))
""")


def _run(module, function, after, argv, tmp_path):
    r = subprocess.run([sys.executable, "-c", WRAPPER, module, function, str(after), *map(str, argv)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 143 and "Traceback" not in r.stderr, r.stderr
    assert lines[-1] == "qcfs2lava: terminated", r.stderr
    return r


def test_sigterm_during_refsim_writes_nothing(digits_netx, tmp_path):
    out = tmp_path / "sim.json"
    _run("netx_export.sim.refsim", "simulate_drive", 0,
         ["simulate", digits_netx[0], "--backend", "reference", "--T", 4, "--json", out], tmp_path)
    assert sorted(os.listdir(tmp_path)) == []


def test_sigterm_during_training_keeps_the_last_epoch(tmp_path):
    out = tmp_path / "m.pt"
    _run("qcfs2lava.training", "_train_epoch", 1,
         ["train", "--arch", "tiny", "--dataset", "digits", "--epochs", 5, "--out", out], tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]                 # no temporary file left beside it
    ck = torch.load(out, weights_only=True, map_location="cpu")
    assert ck["training_state"]["epoch"] == 1 and len(ck["meta"]["history"]) == 1, ck["meta"]["history"]
