import pickle

import numpy as np
import pytest
import torch

from qcfs2lava import data as D
from qcfs2lava.util.errors import DataError, UserError


def test_digits_are_bundled_with_a_fixed_split():
    tr, te = D.load_split("digits", None, True), D.load_split("digits", None, False)
    assert (len(tr), len(te)) == (1437, 360)
    assert tr.x.shape[1:] == (1, 8, 8) and tr.x.dtype == torch.uint8 and int(tr.x.max()) <= 16
    assert torch.equal(te.y, D.load_split("digits", None, False).y)
    x = tr.x.float() / tr.max_value
    info = D.DATASETS["digits"]
    assert float(x.mean()) == pytest.approx(info.mean[0], abs=1e-3)
    assert float(x.std()) == pytest.approx(info.std[0], abs=1e-3)


def test_missing_cifar_names_the_expected_files(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-batches-py/\{data_batch_1,.*test_batch,batches.meta\}"):
        D.load_split("cifar10", str(tmp_path), True)
    with pytest.raises(DataError, match="needs --data-dir"):
        D.load_split("cifar100", None, True)


def _fake_cifar10(root, n=20):
    d = root / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": list(rng.integers(0, 10, n))}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in D.DATASETS["cifar10"].class_names]}, f)
    return d


def test_cifar10_standard_layout_loads(tmp_path):
    _fake_cifar10(tmp_path)
    tr = D.load_split("cifar10", str(tmp_path), True)
    te = D.load_split("cifar10", str(tmp_path / "cifar-10-batches-py"), False)   # folder itself works too
    assert tr.x.shape == (100, 3, 32, 32) and len(te) == 20 and tr.class_names[0] == "airplane"


def test_corrupt_cifar_file_is_one_line_error(tmp_path):
    d = _fake_cifar10(tmp_path)
    (d / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="malformed CIFAR data in .*test_batch: not a CIFAR pickle"):
        D.load_split("cifar10", str(tmp_path), False)


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset 'mnist'"):
        D.dataset_info("mnist")


def test_augmentation_is_deterministic_given_the_generator_and_keeps_shape():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    aug = D.Augment()
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cutout_zeroes_a_16px_square_inside_the_image():
    x = torch.full((64, 1, 32, 32), 255, dtype=torch.uint8)
    out = D.Augment(crop=0, flip=False, autoaugment=False, cutout=16)(x, torch.Generator().manual_seed(0))
    holes = (out == 0).flatten(1).sum(1)
    assert int(holes.max()) == 256 and int(holes.min()) >= 64    # full square, or clipped at a border


def test_ddp_shards_are_disjoint_and_equal_sized():
    base = D.load_split("digits", None, False)
    split = D.ArraySplit(base.x, torch.arange(len(base)), base.max_value, base.class_names)  # y = index
    info = D.DATASETS["digits"]
    got = []
    for r in range(2):
        g = torch.Generator().manual_seed(5)
        got.append(torch.cat([y for _, y in D.iterate_batches(split, 1000, info, shuffle=True, generator=g,
                                                               rank=r, world=2)]))
    assert len(got[0]) == len(got[1]) == 180
    assert not set(got[0].tolist()) & set(got[1].tolist())


def _fake_imagenet(root):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n01440764", "n01443537"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(d / f"{i}.JPEG")


def test_imagenet_class_folders_train_and_test_transforms(tmp_path):
    _fake_imagenet(tmp_path)
    tr = D.load_split("imagenet", str(tmp_path), True)
    te = D.load_split("imagenet", str(tmp_path), False)
    assert tr.classes == ["n01440764", "n01443537"] and len(te) == 6
    x, y = next(iter(D.batches(te, 4, D.DATASETS["imagenet"], workers=0)))
    assert x.shape == (4, 3, 224, 224) and y.tolist() == [0, 0, 0, 1]
    with pytest.raises(DataError, match="ImageNet not found"):
        D.load_split("imagenet", str(tmp_path / "nothing"), True)
