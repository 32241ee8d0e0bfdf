"""``tiny``: a three-conv net that trains on 2 CPU cores in seconds (digits) to minutes (CIFAR)."""
from __future__ import annotations

from torch import nn


def tiny(num_classes: int = 10, in_channels: int = 1, input_size: int = 8) -> nn.Sequential:
    side = input_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * side * side, 64), nn.ReLU(inplace=True),
        nn.Linear(64, num_classes),
    )
