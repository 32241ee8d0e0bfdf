"""Data sets: scikit-learn's bundled 8x8 digits (no files), CIFAR-10/100 from their standard
python-pickle layout, ImageNet from train/val class folders.

Small sets are held in memory as uint8 tensors (N, C, H, W); augmentation runs on batches,
driven by an explicit ``torch.Generator`` so training is reproducible and resumable.
Normalisation constants are part of :class:`DatasetInfo` and travel with the checkpoint.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from qcfs2lava.util.errors import DataError, UserError

__all__ = ["DatasetInfo", "ArraySplit", "DATASETS", "dataset_info", "load_split", "sample", "Augment",
           "iterate_batches", "loader_batches", "batches", "normalize", "info_for", "test_batches"]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = field(default=())
    needs_files: bool = True


DATASETS: dict[str, DatasetInfo] = {
    # digits statistics are those of our fixed training split (pixels scaled to [0, 1]).
    "digits": DatasetInfo("digits", 10, 1, 8, (0.3054,), (0.3761,), tuple(str(i) for i in range(10)), False),
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           ("airplane", "automobile", "bird", "cat", "deer",
                            "dog", "frog", "horse", "ship", "truck")),
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": DatasetInfo("imagenet", 1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


@dataclass
class ArraySplit:
    """An in-memory split: ``x`` uint8 (N, C, H, W) scaled so that ``x / max_value`` is in [0, 1]."""
    x: torch.Tensor
    y: torch.Tensor
    max_value: float
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.y.numel())


def _digits(train: bool) -> ArraySplit:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = d.images.astype(np.uint8)[:, None]          # values 0..16
    idx_tr, idx_te = train_test_split(np.arange(len(x)), test_size=0.2, random_state=0, stratify=d.target)
    idx = idx_tr if train else idx_te
    return ArraySplit(torch.from_numpy(x[idx]), torch.from_numpy(d.target[idx].astype(np.int64)), 16.0,
                      DATASETS["digits"].class_names)


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR's files are pickles by design; this reads them without running code from them: only the
    builtin containers, bytes, str and ints that pickle builds itself, and numpy arrays (the globals
    numpy's pickles name, plus latin-1 bytes as protocol-2 pickles write them) may appear."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR file never holds")
        return super().find_class(module, name)


def _unpickle(path: str) -> dict:
    """One CIFAR batch file, read with :class:`_CifarUnpickler`: a dict with bytes keys, or DataError."""
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001  (any decoding failure of foreign bytes is bad data, not a bug)
        raise DataError(f"malformed CIFAR data in {path}: not a CIFAR pickle ({type(e).__name__}: {e})"[:300]) from None
    if not isinstance(d, dict):
        raise DataError(f"malformed CIFAR data in {path}: holds a {type(d).__name__}, not a dict")
    return d


def _field(d: dict, key: bytes, path: str):
    if key not in d:
        raise DataError(f"malformed CIFAR data in {path}: no {key.decode()!r} entry "
                        f"(keys: {', '.join(repr(k) for k in list(d)[:6])})")
    return d[key]


def _labels(d: dict, key: bytes, path: str, n_classes: int) -> list[int]:
    v = _field(d, key, path)
    if not isinstance(v, (list, tuple, np.ndarray)) or not all(isinstance(i, (int, np.integer)) for i in v):
        raise DataError(f"malformed CIFAR data in {path}: {key.decode()!r} is not a list of integers")
    if len(v) and not all(0 <= int(i) < n_classes for i in v):
        raise DataError(f"malformed CIFAR data in {path}: labels outside 0..{n_classes - 1}")
    return [int(i) for i in v]


def _pixels(d: dict, path: str) -> np.ndarray:
    v = _field(d, b"data", path)
    if not isinstance(v, np.ndarray) or v.dtype != np.uint8 or v.ndim != 2 or v.shape[1] != 3072:
        shape = getattr(v, "shape", None)
        raise DataError(f"malformed CIFAR data in {path}: 'data' must be uint8 (N, 3072), got "
                        f"{type(v).__name__} {getattr(v, 'dtype', '')} {shape}")
    return v


def _names(d: dict, key: bytes, path: str) -> tuple[str, ...]:
    v = _field(d, key, path)
    if not isinstance(v, (list, tuple)) or not all(isinstance(n, (bytes, str)) for n in v):
        raise DataError(f"malformed CIFAR data in {path}: {key.decode()!r} is not a list of names")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in v)


def _find_dir(data_dir: str | None, sub: str, files: list[str], name: str, hint: str) -> str:
    if not data_dir:
        raise DataError(f"{name} needs --data-dir D holding {sub}/{{{','.join(files)}}}{hint}")
    for cand in (os.path.join(data_dir, sub), data_dir):
        if all(os.path.isfile(os.path.join(cand, f)) for f in files):
            return cand
    raise DataError(f"{name} not found: expected {os.path.join(data_dir, sub)}/{{{','.join(files)}}}{hint}")


def _cifar(data_dir: str | None, train: bool, hundred: bool) -> ArraySplit:
    if hundred:
        files = ["train", "test", "meta"]
        root = _find_dir(data_dir, "cifar-100-python", files, "CIFAR-100", "")
        batch_files, meta_file, label_key, names_key = ["train" if train else "test"], "meta", b"fine_labels", \
            b"fine_label_names"
    else:
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
        hint = " (make it with: python ../shared/data/make_cifar10.py D)"
        root = _find_dir(data_dir, "cifar-10-batches-py", files, "CIFAR-10", hint)
        batch_files, meta_file, label_key, names_key = (files[:5] if train else ["test_batch"]), "batches.meta", \
            b"labels", b"label_names"
    n_classes = 100 if hundred else 10
    data_parts, labels = [], []
    for name in batch_files:
        path = os.path.join(root, name)
        d = _unpickle(path)
        pixels, lab = _pixels(d, path), _labels(d, label_key, path, n_classes)
        if len(lab) != len(pixels):
            raise DataError(f"malformed CIFAR data in {path}: {len(pixels)} images but {len(lab)} labels")
        data_parts.append(pixels)
        labels += lab
    meta_path = os.path.join(root, meta_file)
    names = _names(_unpickle(meta_path), names_key, meta_path)
    data = np.concatenate(data_parts)
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return ArraySplit(x, torch.tensor(labels, dtype=torch.int64), 255.0, names)


def _imagenet(data_dir: str | None, train: bool):
    from torchvision import datasets, transforms
    sub = "train" if train else "val"
    root = os.path.join(data_dir or "", sub)
    if not data_dir or not os.path.isdir(root):
        raise DataError(f"ImageNet not found: expected class folders under {root or '<data-dir>/' + sub}")
    info = DATASETS["imagenet"]
    norm = transforms.Normalize(info.mean, info.std)
    if train:
        tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                 transforms.AutoAugment(transforms.AutoAugmentPolicy.IMAGENET),
                                 transforms.ToTensor(), norm, transforms.RandomErasing(value=0)])
    else:
        tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm])
    return datasets.ImageFolder(root, tf)


def load_split(name: str, data_dir: str | None, train: bool):
    """Load a split: an :class:`ArraySplit` for digits/CIFAR, a torchvision ``ImageFolder`` for ImageNet."""
    dataset_info(name)
    if name == "digits":
        return _digits(train)
    if name in ("cifar10", "cifar100"):
        return _cifar(data_dir, train, hundred=name == "cifar100")
    return _imagenet(data_dir, train)


def normalize(x_uint8: torch.Tensor, max_value: float, mean, std) -> torch.Tensor:
    """uint8 pixels → float, scaled to [0, 1], then standardised per channel."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x_uint8.float() / max_value - m) / s


def sample(split: ArraySplit, n: int, normalization: dict, seed: int = 0) -> torch.Tensor:
    """``n`` normalised images of ``split``, a fixed random subset (calibration data)."""
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return normalize(split.x[idx], normalization["max_value"], normalization["mean"], normalization["std"])


@dataclass
class Augment:
    """The paper's CIFAR augmentation, each part switchable: random crop (pad 4), horizontal flip,
    AutoAugment (CIFAR-10 policy) and Cutout (16 px). Works on uint8 batches (N, C, H, W)."""
    crop: int = 4
    flip: bool = True
    autoaugment: bool = True
    cutout: int = 16

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.autoaugment:
            from torchvision.transforms import AutoAugment, AutoAugmentPolicy
            aa = AutoAugment(AutoAugmentPolicy.CIFAR10)
            # torchvision draws from the global RNG: seed it from our generator for reproducibility.
            state = torch.get_rng_state()
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
            x = torch.stack([aa(img) for img in x])
            torch.set_rng_state(state)
        if self.crop:
            p = self.crop
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (n,), generator=g)
            ox = torch.randint(0, 2 * p + 1, (n,), generator=g)
            x = torch.stack([padded[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(n)])
        if self.flip:
            m = torch.rand(n, generator=g) < 0.5
            x = torch.where(m.view(-1, 1, 1, 1), x.flip(3), x)
        if self.cutout:
            # A size x size hole centred anywhere in the image (clipped at the border), as DeVries & Taylor.
            lo = self.cutout // 2
            cy = torch.randint(0, h, (n,), generator=g).view(-1, 1, 1) - lo
            cx = torch.randint(0, w, (n,), generator=g).view(-1, 1, 1) - lo
            ys = torch.arange(h).view(1, -1, 1)
            xs = torch.arange(w).view(1, 1, -1)
            hole = (ys >= cy) & (ys < cy + self.cutout) & (xs >= cx) & (xs < cx + self.cutout)
            x = x * (~hole).unsqueeze(1).to(x.dtype)
        return x


def loader_batches(folder, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                   rank: int = 0, world: int = 1, drop_last: bool = False, workers: int = 4
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches from an on-disk folder data set (ImageNet): a DataLoader with worker processes; the
    folder's own transforms already augment and normalise. rank/world shard the order for DDP."""
    n = len(folder)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if world > 1:
        per = n // world
        order = order[rank * per:(rank + 1) * per]
    dl = torch.utils.data.DataLoader(folder, batch_size=batch_size, sampler=order.tolist(), num_workers=workers,
                                     drop_last=drop_last, pin_memory=torch.cuda.is_available(),
                                     persistent_workers=False)
    yield from dl


def batches(split, batch_size: int, info: DatasetInfo, **kw) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised (x, y) batches from any split :func:`load_split` returns."""
    if isinstance(split, ArraySplit):
        kw.pop("workers", None)
        return iterate_batches(split, batch_size, info, **kw)
    kw.pop("augment", None)
    return loader_batches(split, batch_size, **kw)


def iterate_batches(split: ArraySplit, batch_size: int, info: DatasetInfo, *, shuffle: bool = False,
                    generator: torch.Generator | None = None, augment: Augment | None = None,
                    rank: int = 0, world: int = 1, drop_last: bool = False
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised float batches from an in-memory split; rank/world shard the order for DDP."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if world > 1:
        per = n // world            # equal shards keep DDP ranks in lock-step
        order = order[rank * per:(rank + 1) * per]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if drop_last and len(idx) < batch_size:
            break
        x = split.x[idx]
        if augment is not None:
            x = augment(x, generator if generator is not None else torch.Generator().manual_seed(0))
        yield normalize(x, split.max_value, info.mean, info.std), split.y[idx]


def info_for(meta: dict) -> DatasetInfo:
    """The data set of a checkpoint's ``meta``, with the normalisation the checkpoint recorded."""
    info = dataset_info(meta["dataset"])
    norm = meta["normalization"]
    return DatasetInfo(info.name, info.num_classes, info.in_channels, info.input_size,
                       tuple(norm["mean"]), tuple(norm["std"]))


def test_batches(meta: dict, data_dir: str | None, n: int | None, batch_size: int
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` (all if None) test images of a checkpoint's data set as normalised batches."""
    split = load_split(meta["dataset"], data_dir, train=False)
    if n and isinstance(split, ArraySplit):
        split = ArraySplit(split.x[:n], split.y[:n], split.max_value, split.class_names)
    elif n:
        split = torch.utils.data.Subset(split, range(min(n, len(split))))
    return list(batches(split, batch_size, info_for(meta)))
