"""benchmarks/gpu_check.sh (issue 17) at smoke size on the CPU: the script CI cannot run on a GPU still
runs end to end, and its device-vs-CPU comparison of the reference simulator holds."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_gpu_check_script_runs_on_the_cpu(digits_model, tmp_path):
    env = dict(os.environ, DEVICE="cpu", N="24", T="4", CPU_N="10", OUT=str(tmp_path / "out"), PYTHON=sys.executable)
    r = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), digits_model[0], ""], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert res["refsim_device_equals_cpu"] and res["compared_samples"] == 10 and res["n"] == 24
    assert len(res["refsim_accuracy"]) == 4 and res["refsim_accuracy"][-1] > 0.5
