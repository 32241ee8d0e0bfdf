"""Hostile NetX files (issue 19, causes 5 and 6): a valid digits export with one key deleted or altered,
cut short or empty, through every command that reads a file. Each must end with exit code 2 and one
stderr line naming the file and the problem (``inspect --validate`` of a file it can still describe:
exit code 1 and the problems listed), no traceback, nothing written. Before issue 19 the missing keys
were tracebacks and the out-of-range thresholds ran with exit code 0 (Lava's ``--compare`` even said
"bit-exact"). The commands run in-process through ``qcfs2lava.cli.main`` (a traceback would surface
as an exception and fail the test); ``hardware_runs/run_on_loihi.py`` runs as a script."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import ROOT, SHARED
from qcfs2lava.cli import main


def _delete(key):
    def craft(f):
        del f[key]
    return craft


def _set(key, value):
    def craft(f):
        del f[key]
        f[key] = value
    return craft


def _narrow_weight(f):                      # layer 1's weight loses an input channel
    w = f["layer/1/weight"][()]
    del f["layer/1/weight"]
    f["layer/1/weight"] = w[:, :-1]


def _cut(n):
    def craft(path):
        data = open(path, "rb").read()[:n]
        open(path, "wb").write(data)
    return craft


# name: (how to craft it, what the one line says, readable: inspect can still describe it)
CASES = {
    "no-weight": (_delete("layer/1/weight"), "layer 1 lacks 'weight'", True),
    "no-vthmant": (_delete("layer/0/neuron/vThMant"), "layer 0 lacks 'neuron/vThMant'", True),
    "no-type": (_delete("layer/1/type"), "layer 1 lacks 'type'", True),
    "no-shape": (_delete("layer/1/shape"), "layer 1 lacks 'shape'", True),
    "no-drive": (_delete("metadata/drive"), "metadata lacks 'drive'", True),
    "weight-shape": (_narrow_weight, "does not fit input", True),
    "vthmant-0": (_set("layer/0/neuron/vThMant", np.int64(0)), "vThMant 0 outside 1..131071", True),
    "vthmant-neg": (_set("layer/0/neuron/vThMant", np.int64(-5)), "vThMant -5 outside 1..131071", True),
    "vthmant-2^20": (_set("layer/1/neuron/vThMant", np.int64(1 << 20)), "vThMant 1048576 outside", True),
    "string": (_set("layer/1/neuron/vThMant", b"ten"), "neuron/vThMant is b'ten', not a number", True),
    "truncated": (_cut(100), "is not an HDF5 file", False),
    "empty": (_cut(0), "is not an HDF5 file", False),
}
LAVA = ("no-weight", "weight-shape", "vthmant-0")           # Lava is slow to import: a few cases
SCRIPT = ("no-drive", "vthmant-2^20", "truncated")


@pytest.fixture(scope="module")
def hostile(digits_netx, tmp_path_factory):
    """Every crafted variant of the digits export (its source_sha256 is the digits checkpoint's)."""
    folder = tmp_path_factory.mktemp("hostile")
    out = {}
    for name, (craft, _, _) in CASES.items():
        path = str(folder / f"{name}.net")
        shutil.copyfile(digits_netx[0], path)
        if name in ("truncated", "empty"):
            craft(path)
        else:
            with h5py.File(path, "a") as f:
                craft(f)
        out[name] = path
    return out


def _one_line(capsys, argv, rc_expected=2):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    lines = [line for line in cap.err.splitlines() if line.strip()]
    assert rc == rc_expected, (rc, cap.err, cap.out[-2000:])
    assert "Traceback" not in cap.err + cap.out
    return lines, cap.out


def _refused(capsys, argv, path, pattern):
    lines, _ = _one_line(capsys, argv)
    assert len(lines) == 1, lines
    assert lines[0].startswith("qcfs2lava: error: ") and path in lines[0] and pattern in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_simulate_refuses(capsys, hostile, tmp_path, name):
    path, pattern = hostile[name], CASES[name][1]
    out = tmp_path / "sim.json"
    _refused(capsys, ["simulate", path, "--n", 2, "--T", 2, "--json", out], path, pattern)
    assert not out.exists()


@pytest.mark.parametrize("name", LAVA)
def test_simulate_lava_refuses(capsys, hostile, tmp_path, name):
    path, pattern = hostile[name], CASES[name][1]
    out = tmp_path / "lava.json"
    _refused(capsys, ["simulate", path, "--backend", "lava", "--n", 1, "--T", 2, "--compare", "--json", out],
             path, pattern)
    assert not out.exists()


@pytest.mark.parametrize("name", list(CASES))
def test_inspect_validate(capsys, hostile, name):
    path, pattern, readable = hostile[name], CASES[name][1], CASES[name][2]
    if not readable:
        _refused(capsys, ["inspect", path, "--validate"], path, pattern)
        return
    lines, out = _one_line(capsys, ["inspect", path, "--validate"], rc_expected=1)
    assert lines == [] and out.startswith(path) and "layer:" in out     # still described
    listed = out[out.index("validation: "):]
    assert "problem(s)" in listed and pattern in listed, listed


@pytest.mark.parametrize("name", list(CASES))
def test_report_refuses(capsys, hostile, digits_model, tmp_path, name):
    path, pattern = hostile[name], CASES[name][1]
    out = tmp_path / "report"
    _refused(capsys, ["report", digits_model[0], path, "--n", 2, "--T", 2, "-o", out], path, pattern)
    assert not out.exists()


@pytest.mark.parametrize("name", SCRIPT)
def test_run_on_loihi_refuses(hostile, tmp_path, name):
    path, pattern = hostile[name], CASES[name][1]
    out = tmp_path / "hw.json"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "hardware_runs", "run_on_loihi.py"), path, "--n", "1",
                        "--T", "2", "--cpu", "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("run_on_loihi: error: ") and path in lines[0] \
        and pattern in lines[0], r.stderr
    assert not out.exists()


@pytest.mark.parametrize("argv,pattern", [
    (["--T", "0"], "argument --T: must be between 1 and"), (["--T", "1e20"], "argument --T: expected an integer"),
    (["--n", "-5"], "argument --n: must be >= 1"), (["--n", "0"], "argument --n: must be >= 1"),
    (["--time-budget", "-1"], "argument --time-budget: must be > 0"),
    (["--time-budget", "nan"], "argument --time-budget: must be a finite number"),
    (["--mode", "fast"], "argument --mode: invalid choice")])
def test_run_on_loihi_checks_its_options(digits_netx, tmp_path, argv, pattern):
    """Numeric options and the mode are refused by the parser, before any file is read or written."""
    out = tmp_path / "hw.json"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "hardware_runs", "run_on_loihi.py"), digits_netx[0],
                        "--cpu", "--out", str(out), *argv], capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("run_on_loihi: error: ") and pattern in lines[0], r.stderr
    assert not out.exists()


def test_the_untouched_export_runs_and_validates(capsys, digits_netx, tmp_path):
    """The crafted files differ from a file every command accepts by one key only."""
    from netx_export.netx.read import read_netx
    from netx_export.netx.validate import load_netx
    path = digits_netx[0]
    a, b = load_netx(path), read_netx(path)
    assert len(a.layers) == len(b.layers) and all(
        np.array_equal(x.weight, y.weight) for x, y in zip(a.layers, b.layers) if x.weight is not None)
    lines, out = _one_line(capsys, ["inspect", path, "--validate"], rc_expected=0)
    assert "validation: OK" in out
    lines, out = _one_line(capsys, ["simulate", path, "--n", 2, "--T", 2, "--json", tmp_path / "s.json"],
                           rc_expected=0)
    assert (tmp_path / "s.json").exists()


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(SHARED, "data", "netx-examples", "*.net"))),
                         ids=os.path.basename)
def test_lava_dl_files_are_described_and_refused_to_run(capsys, path, tmp_path):
    """lava-dl's own files: `inspect` describes them; the validator lists why they are not ours."""
    lines, out = _one_line(capsys, ["inspect", path], rc_expected=0)
    assert "LOIHI" in out
    lines, out = _one_line(capsys, ["inspect", path, "--validate"], rc_expected=1)
    assert "no qcfs2lava metadata" in out
    _refused(capsys, ["simulate", path, "--n", 1, "--T", 2], path, "no qcfs2lava metadata")
