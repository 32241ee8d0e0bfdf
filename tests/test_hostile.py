"""Hostile input (issue 19): crafted CIFAR folders, output paths and numeric options across the
subcommands. Each case must end with exit code 2 and one line naming the file and the problem, no
traceback, and no file written or changed. The commands run in-process through
``qcfs2lava.cli.main`` (a traceback would surface as an exception and fail the test)."""
from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest

from qcfs2lava.cli import main


def _fails(capsys, argv, pattern):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "deprecated" not in line]
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]
    return lines[0]


def _tree(path):
    out = {}
    for folder, _, files in os.walk(path):
        for f in files:
            p = os.path.join(folder, f)
            out[os.path.relpath(p, path)] = open(p, "rb").read() if os.path.isfile(p) else None
    return out


# --------------------------------------------------------------------------- CIFAR data never runs code
class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.fixture()
def fake_cifar(tmp_path):
    """A tiny CIFAR-10 folder in the standard layout (10 images per batch)."""
    root = tmp_path / "cifar" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (10, 3072), dtype=np.uint8), b"labels": list(range(10)),
                 b"batch_label": name.encode(), b"filenames": [b"x.png"] * 10}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return root


def test_real_layout_loads(fake_cifar):
    from qcfs2lava import data as D
    s = D.load_split("cifar10", str(fake_cifar.parent), train=True)
    assert s.x.shape == (50, 3, 32, 32) and s.class_names[0] == "c0"


@pytest.mark.parametrize("content, pattern", [
    (pickle.dumps({b"data": _Payload()}), "names posix.system"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}), "no 'data' entry"),
    (pickle.dumps([1, 2, 3]), "holds a list, not a dict"),
    (bytes(range(256)) * 20, "not a CIFAR pickle"),
    (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "'data' must be uint8 (N, 3072)"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 99]}), "labels outside 0..9"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "2 images but 1 labels"),
    (pickle.dumps({b"data": pickle.loads}), "names _pickle.loads"),
])
def test_malformed_cifar_is_one_line_and_runs_nothing(capsys, fake_cifar, tmp_path, monkeypatch, content, pattern):
    monkeypatch.chdir(tmp_path)
    (fake_cifar / "data_batch_3").write_bytes(content)
    line = _fails(capsys, ["train", "--arch", "tiny", "--dataset", "cifar10", "--data-dir", fake_cifar.parent,
                           "--max-steps", "1", "--out", tmp_path / "m.pt"], pattern)
    assert "data_batch_3" in line and "malformed CIFAR data" in line
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "m.pt").exists()


# --------------------------------------------------------------------------- output paths
def test_outputs_never_overwrite_inputs(capsys, digits_model, tmp_path):
    ck = tmp_path / "c.pt"
    shutil.copy(digits_model[0], ck)
    before = ck.read_bytes()
    for argv in (["evaluate", ck, "--json", ck], ["evaluate", ck, "--plot", ck], ["evaluate", ck, "--save-outputs", ck],
                 ["export", ck, "-o", tmp_path / "y.net", "--json", ck], ["export", ck, "-o", ck],
                 ["calibrate", ck, "-o", tmp_path / "z.pt", "--json", ck], ["report", ck, ck, "-o", ck]):
        _fails(capsys, argv, str(ck))
    assert ck.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]


def test_outputs_that_cannot_be_written_fail_before_any_work(capsys, digits_model, tmp_path):
    ck = digits_model[0]
    (tmp_path / "d").mkdir()
    (tmp_path / "afile").write_text("x")
    _fails(capsys, ["export", ck, "-o", tmp_path / "d"], "is a directory")
    _fails(capsys, ["evaluate", ck, "--json", tmp_path / "d"], "is a directory")
    _fails(capsys, ["train", "--epochs", "1", "--out", tmp_path / "d"], "is a directory")
    _fails(capsys, ["train", "--epochs", "1", "--out", tmp_path / "afile" / "m.pt"], "is not a directory")
    _fails(capsys, ["demo", "--out", tmp_path / "afile"], "is a file")
    _fails(capsys, ["export", ck, "-o", tmp_path / "x.net", "--json", tmp_path / "x.net"], "both name")
    assert sorted(os.listdir(tmp_path)) == ["afile", "d"] and not os.listdir(tmp_path / "d")


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/full"), reason="needs /dev/full and root")
def test_a_full_device_is_one_line_and_stays_a_device(capsys, digits_model, tmp_path):
    full = tmp_path / "full"
    os.mknod(full, 0o666 | 0o020000, os.makedev(1, 7))       # a character device like /dev/full
    _fails(capsys, ["export", digits_model[0], "-o", full, "--bias-correction", "0"], "no space left on device")
    assert not full.is_file() and full.is_char_device()


def test_links_and_devices_are_written_through(digits_model, tmp_path):
    from qcfs2lava.util.fileio import atomic_write_text
    target = tmp_path / "real.json"
    link = tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    atomic_write_text(str(link), "new")
    assert link.is_symlink() and target.read_text() == "new"
    atomic_write_text("/dev/null", "discarded")              # not replaced by a regular file
    assert not os.path.isfile("/dev/null")


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    from qcfs2lava.util.fileio import atomic_write_text
    dead = tmp_path / "tmp-999999999-abcd-out.json"           # no such pid
    old_style = tmp_path / "tmp-abcd-out.json"                 # the naming before pids
    live = tmp_path / f"tmp-{os.getppid()}-abcd-out.json"      # a running process's write
    other = tmp_path / "tmp-999999999-abcd-other.json"         # another target
    for p in (dead, old_style, live, other):
        p.write_text("partial")
    os.utime(old_style, (0, 0))
    atomic_write_text(str(tmp_path / "out.json"), "{}")
    assert not dead.exists() and not old_style.exists()
    assert live.exists() and other.exists()


# --------------------------------------------------------------------------- numeric options
@pytest.mark.parametrize("argv, pattern", [
    (["evaluate", "m.pt", "--n", "0"], "--n: must be >= 1"),
    (["evaluate", "m.pt", "--n", "-5"], "--n: must be >= 1"),
    (["evaluate", "m.pt", "--batch-size", "0"], "--batch-size: must be >= 1"),
    (["export", "m.pt", "--T", "100000000000000000000"], "--T: must be between 1 and"),
    (["export", "m.pt", "--v-headroom", "nan"], "--v-headroom: must be a finite number"),
    (["export", "m.pt", "--v-headroom", "inf"], "--v-headroom: must be a finite number"),
    (["export", "m.pt", "--bias-correction", "-1"], "--bias-correction: must be >= 0"),
    (["train", "--lr", "0"], "--lr: must be > 0"),
    (["train", "--epochs", "0"], "--epochs: must be >= 1"),
    (["calibrate", "m.pt", "-o", "x.pt", "--v0-z", "-1"], "--v0-z: must be >= 0"),
    (["demo", "--L", "0"], "--L: must be between 1 and"),
    (["report", "m.pt", "m.net", "--T", "0"], "--T: must be between 1 and"),
])
def test_numeric_options_are_validated(capsys, tmp_path, monkeypatch, argv, pattern):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert pattern in err
    assert not os.listdir(tmp_path)


def test_neuron_spikes_need_a_spike_file(capsys, digits_netx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fails(capsys, ["simulate", digits_netx[0], "--neuron-spikes"], "--neuron-spikes adds per-neuron counts")
    assert not os.listdir(tmp_path)


# --------------------------------------------------------------------------- resume
def test_resume_refuses_changed_settings(capsys, tmp_path):
    out = tmp_path / "r.pt"
    assert main(["train", "--epochs", "3", "--stop-after", "1", "--threads", "1", "--out", str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    line = _fails(capsys, ["train", "--epochs", "3", "--L", "8", "--lr", "0.5", "--resume", "--threads", "1",
                           "--out", out], "other settings than the one it continues")
    assert "L 4 → 8" in line and "lr 0.05 → 0.5" in line
    assert out.read_bytes() == before
    assert main(["train", "--epochs", "3", "--resume", "--threads", "1", "--out", str(out)]) == 0
