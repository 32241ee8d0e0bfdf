"""Checkpoints of the QCFS authors' own code, read into our self-describing checkpoints.

Both of Bu et al.'s code bases save ``torch.save(model.state_dict(), …)``:

* **new** (``putshua/ANN_SNN_QCFS``): the activation is a module ``IF`` whose threshold is the
  parameter ``thresh`` (shape (1,)); ANN mode ``floor(clamp(x/θ, 0, 1)·L + 0.5)/L·θ`` — eq. 15 with
  λ = θ and φ = 1/2 —, SNN mode integrate-and-fire with v(0) = θ/2 and reset by subtraction;
* **old** (``putshua/SNN_conversion_QCFS``): the same networks with ``MyFloor`` activations whose
  threshold is ``up`` (the activation after a ResNet block's add is named ``relu``); its ImageNet
  script trains under DistributedDataParallel, so keys may start with ``module.``.

:func:`import_official` recognises the layout by itself, maps ``thresh`` / ``up`` onto our QCFS λ
and ``relu`` onto ``act``, and loads the weights into the matching architecture of
:mod:`qcfs2lava.models.official` (``official-<arch>``): the file is read with ``weights_only=True``
and no code of the authors is needed. Anything else is refused with one line naming the first
unexpected or missing key and its shape.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qcfs2lava import data as D
from qcfs2lava.checkpoint import FORMAT, save_checkpoint
from qcfs2lava.models import build_model
from qcfs2lava.qcfs import prepare_ann
from qcfs2lava.util.errors import CheckpointError
from qcfs2lava.util.fileio import file_sha256

__all__ = ["ARCHS", "DATASETS", "LAYOUTS", "NORMALIZATION", "Imported", "import_official", "read_state_dict",
           "save_imported"]

ARCHS = ("vgg16", "resnet18", "resnet20", "resnet34")
DATASETS = ("cifar10", "cifar100", "imagenet")
# layout → (code base, name of the threshold parameter, name of a ResNet block's post-add activation)
LAYOUTS = {"new": ("putshua/ANN_SNN_QCFS", "thresh", "act"),
           "old": ("putshua/SNN_conversion_QCFS", "up", "relu")}
# The authors' test-time normalisation (Preprocess/getdataloader.py), per data set: (mean, std).
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": (tuple(v / 255 for v in (129.3, 124.1, 112.4)), tuple(v / 255 for v in (68.2, 65.4, 70.4))),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass
class Imported:
    model: nn.Module                 # official-<arch> with QCFS activations, eval mode
    meta: dict[str, Any]             # our checkpoint metadata, with meta["imported_from"]
    layout: str                      # "new" or "old"


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def read_state_dict(path: str) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict in ``path`` (``weights_only=True``) and whether a ``module.`` prefix (from
    DistributedDataParallel) was removed from every key."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, not a torch file, or a forbidden pickle
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable PyTorch file ({first[:160]})") from None
    if isinstance(obj, dict) and isinstance(obj.get("meta"), dict) and obj["meta"].get("format") == FORMAT:
        raise CheckpointError(f"{path} is already a qcfs2lava checkpoint; use it directly")
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict (torch.save(model.state_dict()))")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor: not a state dict")
    prefixed = [k.startswith("module.") for k in obj]
    if all(prefixed):
        return {k[len("module."):]: v for k, v in obj.items()}, True
    if any(prefixed):
        k = next(k for k in obj if k.startswith("module."))
        raise CheckpointError(f"{path}: key '{k}' has a 'module.' prefix but others do not")
    return dict(obj), False


def _detect_layout(path: str, keys: list[str]) -> str:
    found = {name for name, (_, thr, _) in LAYOUTS.items() if any(k.endswith("." + thr) for k in keys)}
    if len(found) == 1:
        return found.pop()
    if found:
        raise CheckpointError(f"{path} has both 'thresh' and 'up' parameters: neither layout of the QCFS code")
    raise CheckpointError(f"{path}: no activation threshold ('….thresh' of the new code, '….up' of the old): "
                          f"not a QCFS network of the authors' code (first key '{keys[0]}')")


def _our_name(key: str, layout: str) -> str:
    _, thr, post_add = LAYOUTS[layout]
    if key.endswith("." + thr):
        key = key[: -len(thr)] + "lam"
    if post_add != "act":
        key = re.sub(rf"^(conv\d+_x\.\d+)\.{post_add}\.", r"\1.act.", key)
    return key


def _their_name(key: str, layout: str) -> str:
    _, thr, post_add = LAYOUTS[layout]
    if key.endswith(".lam"):
        key = key[: -len("lam")] + thr
    return re.sub(r"^(conv\d+_x\.\d+)\.act\.", rf"\1.{post_add}.", key)


def _match(path: str, sd: dict[str, torch.Tensor], layout: str, model: nn.Module, what: str
           ) -> dict[str, torch.Tensor]:
    """``sd`` renamed to ``model``'s keys, every key and shape checked; one line for the first problem."""
    expected = model.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        ours = _our_name(key, layout)
        if ours not in expected:
            raise CheckpointError(f"{path}: unexpected key '{key}' {_shape(value)} for {what}")
        if ours.endswith(".lam"):
            if value.numel() != 1:
                raise CheckpointError(f"{path}: '{key}' has shape {_shape(value)}; a threshold is one number")
            lam = float(value.reshape(()))
            if not (lam > 0 and lam < float("inf")):
                raise CheckpointError(f"{path}: '{key}' = {lam:g}; a threshold must be positive and finite")
            value = value.reshape(())
        elif value.shape != expected[ours].shape:
            raise CheckpointError(f"{path}: '{key}' has shape {_shape(value)}; {what} expects "
                                  f"{_shape(expected[ours])}")
        renamed[ours] = value.to(expected[ours].dtype)
    for ours, value in expected.items():
        if ours not in renamed:
            if ours.endswith("num_batches_tracked"):      # not used at inference; older PyTorch omits it
                renamed[ours] = value
                continue
            raise CheckpointError(f"{path}: missing key '{_their_name(ours, layout)}' {_shape(value)} for {what}")
    return renamed


def import_official(path: str, arch: str, dataset: str, L: int) -> Imported:
    """The authors' checkpoint ``path`` of ``arch`` (vgg16, resnet18, resnet20, resnet34) trained on
    ``dataset`` (cifar10, cifar100, imagenet) with quantization steps ``L``, as our QCFS model of
    architecture ``official-<arch>`` and its checkpoint metadata."""
    if arch not in ARCHS:
        raise CheckpointError(f"unknown architecture '{arch}' of the QCFS code; choose one of: {', '.join(ARCHS)}")
    if dataset not in DATASETS:
        raise CheckpointError(f"unknown data set '{dataset}'; choose one of: {', '.join(DATASETS)}")
    if L < 1:
        raise CheckpointError(f"L must be >= 1, got {L}")
    info = D.dataset_info(dataset)
    sd, stripped = read_state_dict(path)
    layout = _detect_layout(path, list(sd))
    model = prepare_ann(build_model(f"official-{arch}", info.num_classes, info.in_channels, info.input_size), L=L)
    what = f"--arch {arch} --dataset {dataset} ({layout} layout, {LAYOUTS[layout][0]})"
    model.load_state_dict(_match(path, sd, layout, model, what), strict=True)
    model.eval()
    mean, std = NORMALIZATION[dataset]
    meta = dict(arch=f"official-{arch}",
                arch_kwargs=dict(num_classes=info.num_classes, in_channels=info.in_channels,
                                 input_size=info.input_size),
                activation="qcfs", L=int(L), phi=0.5, dataset=dataset,
                input_shape=[info.in_channels, info.input_size, info.input_size],
                normalization=dict(mean=list(mean), std=list(std), max_value=255.0),
                class_names=list(info.class_names) or [str(i) for i in range(info.num_classes)],
                imported_from=dict(file=os.path.basename(path), sha256=file_sha256(path), code=LAYOUTS[layout][0],
                                   layout=layout, module_prefix_removed=stripped, arch=arch))
    return Imported(model, meta, layout)


def save_imported(imp: Imported, out: str) -> None:
    """Our checkpoint of an imported network (atomically)."""
    save_checkpoint(out, imp.model, imp.meta)
