import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    """A tiny QCFS net (L=4) trained on the bundled digits; a few seconds on 2 cores."""
    from qcfs2lava.train import TrainConfig, train
    path = str(tmp_path_factory.mktemp("digits") / "model.pt")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    metrics = train(TrainConfig(arch="tiny", dataset="digits", out=path, L=4, epochs=30, seed=0, quiet=True))
    return path, metrics


def run_cli(*args, cwd=None, env=None):
    """Run ``python -m qcfs2lava`` in a subprocess, as a user would."""
    import subprocess
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "qcfs2lava", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=e, timeout=600)
