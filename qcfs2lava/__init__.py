"""qcfs2lava: train QCFS ANNs in PyTorch and convert them to integrate-and-fire SNNs
(Bu et al., ICLR 2022), for Lava and Loihi 2 through :mod:`netx_export`.

The Python API (``docs/api.md``); names are imported on first use, so ``import qcfs2lava`` is cheap:

* models: :func:`build_model` (zoo by name), :func:`model_factory` (marks a factory of your own
  network that checkpoints may name, ``docs/your-network.md``), :class:`QCFS` (eq. 15/17),
  :func:`prepare_ann` (Algorithm 1: ReLU → QCFS, MaxPool → AvgPool), :func:`qcfs_layers`;
* checkpoints: :func:`load_checkpoint` (``weights_only=True``), :func:`save_checkpoint`,
  :func:`import_official` (a checkpoint of the QCFS authors' code);
* training: :class:`TrainConfig`, :func:`train`;
* data: :func:`load_split`, :func:`test_batches`;
* the float SNN: :func:`convert` (IF neurons, reset by subtraction, v(0) = θ/2), :func:`simulate`,
  :func:`evaluate` (accuracy at every t);
* low-latency calibration: :func:`calibrate`.
"""
from __future__ import annotations

import importlib
from typing import Any

from qcfs2lava.version import __version__

_API = {
    "build_model": "qcfs2lava.models",
    "model_factory": "qcfs2lava.models.factory",
    "QCFS": "qcfs2lava.qcfs",
    "prepare_ann": "qcfs2lava.qcfs",
    "qcfs_layers": "qcfs2lava.qcfs",
    "load_checkpoint": "qcfs2lava.checkpoint",
    "save_checkpoint": "qcfs2lava.checkpoint",
    "Checkpoint": "qcfs2lava.checkpoint",
    "import_official": "qcfs2lava.official_import",
    "TrainConfig": "qcfs2lava.training",
    "train": "qcfs2lava.training",
    "load_split": "qcfs2lava.data",
    "test_batches": "qcfs2lava.data",
    "convert": "qcfs2lava.snn",
    "simulate": "qcfs2lava.snn",
    "evaluate": "qcfs2lava.snn",
    "calibrate": "qcfs2lava.low_latency",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'qcfs2lava' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
