"""hardware_runs/run_on_loihi.py away from INRC: it says so in one line and runs on the CPU simulator."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = os.path.join(ROOT, "hardware_runs", "run_on_loihi.py")


def run_script(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)


@pytest.fixture(scope="module")
def digits_net(digits_model, tmp_path_factory):
    from conftest import run_cli
    out = tmp_path_factory.mktemp("hw") / "digits.net"
    r = run_cli("export", digits_model[0], "-o", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("mode", ["microcode", "stock"])
def test_cpu_fallback_records_accuracy_and_latency(digits_net, tmp_path, mode):
    out = tmp_path / f"{mode}.json"
    r = run_script(digits_net, "--mode", mode, "--T", "8", "--n", "4", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    first = r.stdout.splitlines()[0]
    assert first.startswith("Loihi 2 not reachable here (") and "CPU simulator" in first
    res = json.load(open(out))
    assert res["platform"] == "lava-cpu-simulator" and res["mode"] == mode and res["loihi2"] is None
    assert res["n"] == 4 and len(res["accuracy"]) == 8 and res["wall_ms_per_sample"] > 0
    assert "lava-loihi" in res["platform_note"] and res["command"].startswith("python hardware_runs/run_on_loihi.py")
    # The same images through the reference simulator give the same accuracy (both modes run exact models).
    assert res["final_accuracy"] >= 0.5


def test_bad_input_is_one_line(digits_net, tmp_path):
    for args in (["/nonexistent.net"], [digits_net, "--mode", "magic"], [digits_net, "--T", "0"],
                 [digits_net, "--dataset", "cifar10", "--data-dir", tmp_path]):
        r = run_script(*args, "--out", tmp_path / "x.json")
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("run_on_loihi: error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "x.json").exists()
