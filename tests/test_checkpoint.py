import os

import pytest
import torch

from qcfs2lava.checkpoint import load_checkpoint, save_checkpoint
from qcfs2lava.util.errors import CheckpointError
from qcfs2lava.models import build_model
from qcfs2lava.qcfs import prepare_ann

META = dict(arch="tiny", arch_kwargs=dict(num_classes=10, in_channels=1, input_size=8), activation="qcfs",
            L=4, phi=0.5, dataset="digits", input_shape=[1, 8, 8],
            normalization=dict(mean=[0.3], std=[0.4], max_value=16.0), class_names=list("0123456789"))


def _model():
    torch.manual_seed(0)
    return prepare_ann(build_model("tiny", 10, 1, 8), L=4)


def test_roundtrip_is_self_describing(tmp_path):
    m = _model()
    m[2].lam.data.fill_(3.25)
    p = str(tmp_path / "m.pt")
    save_checkpoint(p, m, META)
    ck = load_checkpoint(p)
    assert ck.meta["lam"]["2"] == 3.25 and ck.meta["L"] == 4 and ck.meta["class_names"][3] == "3"
    assert len(ck.sha256) == 64
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(ck.model(x), m.eval()(x))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "nope.pt"))


def test_corrupt_file(tmp_path):
    p = tmp_path / "bad.pt"
    p.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        load_checkpoint(str(p))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_with_code_is_refused_not_executed(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"meta": _Evil()}, p)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        load_checkpoint(str(p))


def test_foreign_state_dict_is_refused(tmp_path):
    p = tmp_path / "foreign.pt"
    torch.save(_model().state_dict(), p)
    with pytest.raises(CheckpointError, match="not a qcfs2lava checkpoint"):
        load_checkpoint(str(p))


def test_weights_for_another_architecture(tmp_path):
    p = str(tmp_path / "m.pt")
    save_checkpoint(p, _model(), dict(META, arch="vgg-small", arch_kwargs=dict(num_classes=10, in_channels=3,
                                                                              input_size=32)))
    with pytest.raises(CheckpointError, match="weights do not match architecture 'vgg-small'"):
        load_checkpoint(p)


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    p = tmp_path / "m.pt"

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError):
        save_checkpoint(str(p), _model(), META)
    assert os.listdir(tmp_path) == []


def test_saved_files_get_ordinary_permissions(tmp_path):
    p = tmp_path / "m.pt"
    save_checkpoint(str(p), _model(), META)
    umask = os.umask(0)
    os.umask(umask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~umask)
