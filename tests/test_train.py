import json
import os
import subprocess
import sys

import torch

from qcfs2lava.checkpoint import load_checkpoint
from qcfs2lava.training import TrainConfig, train

from conftest import ROOT, run_cli


def test_digits_demo_model_beats_95_percent(digits_model):
    path, metrics = digits_model
    assert metrics["test_accuracy"] > 0.95
    ck = load_checkpoint(path)
    assert ck.training_state is None and ck.meta["metrics"]["epoch"] == 30
    assert set(ck.meta["lam"]) == {"2", "5", "9", "13"}      # every QCFS layer's λ, by module name
    assert ck.meta["normalization"]["max_value"] == 16.0


def test_cli_train_one_epoch(tmp_path):
    out = tmp_path / "m.pt"
    r = run_cli("train", "--arch", "tiny", "--dataset", "digits", "--epochs", "1", "--out", out,
                "--log", tmp_path / "log.jsonl")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and out.exists()
    assert json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])["epoch"] == 1


def test_training_is_deterministic_and_resume_reproduces_an_uninterrupted_run(tmp_path):
    base = dict(arch="tiny", dataset="digits", epochs=3, seed=3, quiet=True)
    full, part = str(tmp_path / "full.pt"), str(tmp_path / "part.pt")
    train(TrainConfig(out=full, **base))
    train(TrainConfig(out=part, stop_after=1, **base))
    assert load_checkpoint(part).training_state["epoch"] == 1
    train(TrainConfig(out=part, resume=True, **base))
    a, b = load_checkpoint(full).model.state_dict(), load_checkpoint(part).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_relu_baseline_network_trains_without_qcfs(tmp_path):
    p = str(tmp_path / "relu.pt")
    train(TrainConfig(arch="tiny", dataset="digits", out=p, epochs=1, activation="relu", quiet=True))
    ck = load_checkpoint(p)
    assert ck.meta["activation"] == "relu" and ck.meta["lam"] == {}


def test_ddp_two_cpu_processes_hold_identical_weights(tmp_path):
    dump = tmp_path / "ranks"
    dump.mkdir()
    env = dict(os.environ, QCFS2LAVA_RANK_DUMP=str(dump), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "qcfs2lava", "train", "--arch", "tiny", "--dataset", "digits", "--epochs", "1",
           "--max-steps", "4", "--out", str(tmp_path / "ddp.pt")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r0 = torch.load(dump / "rank0.pt", weights_only=True)
    r1 = torch.load(dump / "rank1.pt", weights_only=True)
    init = load_checkpoint(str(tmp_path / "ddp.pt")).model.state_dict()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert all(torch.equal(r0[k], init[k]) for k in r0)   # rank 0 wrote the checkpoint


def test_imagenet_folders_train_through_the_cli(tmp_path):
    from test_data import _fake_imagenet
    _fake_imagenet(tmp_path)
    r = run_cli("train", "--arch", "tiny", "--dataset", "imagenet", "--data-dir", tmp_path, "--epochs", "1",
                "--batch-size", "2", "--workers", "0", "--out", tmp_path / "in.pt", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    ck = load_checkpoint(str(tmp_path / "in.pt"))
    assert ck.meta["input_shape"] == [3, 224, 224] and ck.meta["class_names"] == ["n01440764", "n01443537"]
