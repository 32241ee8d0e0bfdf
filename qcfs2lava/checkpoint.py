"""Self-describing checkpoints (``model.pt``), written atomically, read with ``weights_only=True``.

A checkpoint holds only tensors and plain Python values, so loading never runs code from the
file. Its ``meta`` says everything needed to rebuild the model and to convert it: architecture
and builder arguments, activation (QCFS or ReLU), L, φ, every layer's λ, input shape,
normalisation, class names, the training configuration and final metrics.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qcfs2lava.version import __version__
from qcfs2lava.util.errors import CheckpointError, UserError
from qcfs2lava.util.fileio import atomic_write, file_sha256
from qcfs2lava.models import build_network
from qcfs2lava.qcfs import prepare_ann, qcfs_layers

FORMAT = "qcfs2lava-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    model: nn.Module
    meta: dict[str, Any]
    path: str = ""
    sha256: str = ""
    training_state: dict[str, Any] | None = None   # optimizer/scheduler/epoch while training is unfinished


def build_from_meta(meta: dict[str, Any]) -> nn.Module:
    """Rebuild the (untrained) network described by ``meta``."""
    model = build_network(meta["arch"], meta["arch_kwargs"], meta.get("model_kwargs"))
    prepare_ann(model, L=int(meta["L"]), phi=float(meta["phi"]), keep_relu=meta["activation"] == "relu")
    return model


def describe(model: nn.Module) -> dict[str, float]:
    """Every QCFS layer's threshold λ, by module name."""
    return {name: float(m.lam.detach()) for name, m in qcfs_layers(model)}


def atomic_save(obj: Any, path: str) -> None:
    """torch.save, atomically."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(path: str, model: nn.Module, meta: dict[str, Any],
                    training_state: dict[str, Any] | None = None) -> None:
    meta = dict(meta, format=FORMAT, format_version=FORMAT_VERSION, tool_version=__version__,
                lam=describe(model))
    obj: dict[str, Any] = {"meta": meta, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if training_state is not None:
        obj["training_state"] = training_state
    atomic_save(obj, path)


def load_checkpoint(path: str, map_location: str = "cpu") -> Checkpoint:
    """Load a checkpoint safely (``weights_only=True``); one-line ``CheckpointError`` otherwise."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a usable checkpoint"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({first[:160]})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("meta"), dict) or obj["meta"].get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a qcfs2lava checkpoint (no '{FORMAT}' metadata)")
    meta = obj["meta"]
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {meta['format_version']}; "
                              f"this qcfs2lava reads up to {FORMAT_VERSION}")
    try:
        model = build_from_meta(meta)
        model.load_state_dict(obj["state_dict"], strict=True)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: weights do not match architecture "
                              f"'{meta.get('arch')}' ({str(e).splitlines()[0][:160]})") from None
    model.eval()
    return Checkpoint(model, meta, path, file_sha256(path), obj.get("training_state"))
