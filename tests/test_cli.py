"""Bad input: one line on stderr, exit code 2, no traceback, no file written."""

from conftest import run_cli


def _one_line_error(r, pattern):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert pattern in lines[0], lines[0]


def test_train_missing_data_dir(tmp_path):
    r = run_cli("train", "--arch", "tiny", "--dataset", "cifar10", "--data-dir", tmp_path, "--out",
                tmp_path / "m.pt")
    _one_line_error(r, "CIFAR-10 not found: expected")
    assert not (tmp_path / "m.pt").exists()


def test_train_unknown_architecture(tmp_path):
    _one_line_error(run_cli("train", "--arch", "alexnet", "--out", tmp_path / "m.pt"), "unknown architecture")


def test_train_unknown_dataset(tmp_path):
    _one_line_error(run_cli("train", "--dataset", "mnist", "--out", tmp_path / "m.pt"), "unknown dataset 'mnist'")


def test_evaluate_corrupt_checkpoint(tmp_path):
    p = tmp_path / "bad.pt"
    p.write_bytes(b"PK\x03\x04 definitely not torch")
    _one_line_error(run_cli("evaluate", p, "--T", "4"), "is not a readable checkpoint")


def test_evaluate_missing_checkpoint(tmp_path):
    _one_line_error(run_cli("evaluate", tmp_path / "none.pt"), "checkpoint not found")


def test_evaluate_prints_table_json_and_plot(digits_model, tmp_path):
    path, _ = digits_model
    r = run_cli("evaluate", path, "--T", "8", "--json", tmp_path / "e.json", "--plot", tmp_path / "e.png")
    assert r.returncode == 0, r.stderr
    assert "T=8" in r.stdout and (tmp_path / "e.json").exists()
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_help_lists_examples():
    r = run_cli("train", "--help")
    assert r.returncode == 0 and "examples:" in r.stdout


def test_evaluate_relu_checkpoint_with_threshold_balancing(tmp_path):
    p = tmp_path / "relu.pt"
    assert run_cli("train", "--activation", "relu", "--epochs", "3", "--out", p).returncode == 0
    r = run_cli("evaluate", p, "--T", "32", "--balance", "max", "--json", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr
    assert "thresholds from the max activation of 1000 training images" in r.stdout
    import json
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["activation"] == "relu" and len(res["snn_accuracy"]) == 32
