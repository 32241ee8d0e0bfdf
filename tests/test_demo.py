"""The README's main command: train → export → Lava cross-check → report, on the bundled digits."""
import json
import os

from conftest import run_cli


def test_demo_runs_the_whole_path_and_reports(tmp_path):
    out = tmp_path / "demo"
    r = run_cli("demo", "--out", out, "--epochs", "5", "--T", "4", "--lava-n", "6",
                env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    for f in ("model.pt", "model.net", "lava.json", "report/report.html"):
        assert (out / f).is_file(), f
    lava = json.load(open(out / "lava.json"))
    assert lava["n"] == 6 and lava["compare"]["spikes_compared"] > 0 and lava["compare"]["spike_mismatches"] == 0
    summary = r.stdout[r.stdout.index("summary"):]
    for row in ("ANN", "float SNN", "fixed point", "Lava", "0 mismatches (bit-exact)", "energy estimate",
                "report.html"):
        assert row in summary, row
    html = open(out / "report/report.html").read()
    assert html.count("data:image/png;base64,") >= 4
    # Every stage announced itself, in order.
    stages = [r.stdout.index(f"[{k}/4]") for k in (1, 2, 3, 4)]
    assert stages == sorted(stages)


def test_demo_refuses_bad_arguments(tmp_path):
    r = run_cli("demo", "--out", tmp_path / "d", "--T", "0")
    assert r.returncode == 2 and r.stderr.strip().startswith("qcfs2lava: error:") and len(r.stderr.splitlines()) == 1
    assert not os.path.exists(tmp_path / "d" / "model.pt")
