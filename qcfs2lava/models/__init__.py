"""Model zoo: a registry by name. Names are part of the CLI contract.

Every builder returns a plain ReLU/MaxPool ANN; ``qcfs2lava.qcfs.prepare_ann`` converts it.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import UserError
from .resnet import resnet18, resnet20, resnet34
from .small import tiny
from .vgg import vgg16, vgg_small

Builder = Callable[..., nn.Module]

REGISTRY: dict[str, Builder] = {
    "tiny": tiny,
    "vgg-small": vgg_small,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "resnet20": resnet20,
    "resnet34": resnet34,
}


def build_model(arch: str, num_classes: int, in_channels: int, input_size: int) -> nn.Module:
    """Build the ReLU ANN ``arch`` for inputs of shape (in_channels, input_size, input_size)."""
    if arch not in REGISTRY:
        raise UserError(f"unknown architecture '{arch}'; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[arch](num_classes=num_classes, in_channels=in_channels, input_size=input_size)


__all__ = ["REGISTRY", "build_model"]
