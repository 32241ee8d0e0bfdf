"""Test images for an exported network, normalised as its file says (host side, before the drive).

The simulators and the hardware script all start here, so that every backend sees the same pixels.
"""
from __future__ import annotations

import numpy as np

from qcfs2lava.util.errors import UserError

__all__ = ["load_test_inputs"]


def load_test_inputs(net, path: str, dataset: str | None, data_dir: str | None, n: int | None
                     ) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``n`` test images (all if None) of ``dataset`` (default: the one recorded in the
    file), normalised as the file says: (x float (n, C, H, W), y int (n,), data set name)."""
    from qcfs2lava import data as D

    dataset = dataset or net.metadata.get("dataset")
    if not dataset:
        raise UserError(f"{path} does not name its data set; pass --dataset")
    info = D.dataset_info(dataset)
    if (info.in_channels, info.input_size, info.input_size) != tuple(net.input_shape):
        raise UserError(f"{path} expects inputs {tuple(net.input_shape)}, data set '{dataset}' has "
                        f"{(info.in_channels, info.input_size, info.input_size)}")
    split = D.load_split(dataset, data_dir, train=False)
    if not isinstance(split, D.ArraySplit):
        raise UserError(f"the simulators read in-memory data sets (digits, CIFAR), not '{dataset}' folders")
    norm = net.metadata.get("normalization") or {"mean": list(info.mean), "std": list(info.std),
                                                  "max_value": split.max_value}
    n = min(len(split), n) if n else len(split)
    xs = D.normalize(split.x[:n], float(norm.get("max_value", split.max_value)), norm["mean"], norm["std"]).numpy()
    return xs, split.y[:n].numpy(), dataset
