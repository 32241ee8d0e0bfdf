"""VGG networks as ReLU/MaxPool ANNs (``prepare_ann`` turns them into QCFS nets).

VGG-16 follows the QCFS paper's code: 13 conv-BN-ReLU layers, five pools, and a
4096-4096 classifier (input 512 for CIFAR, 512·7·7 for ImageNet). ``vgg_small`` is
the same family scaled to train on a 2-core CPU.
"""
from __future__ import annotations

from torch import nn

VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                              512, 512, 512, "M", 512, 512, 512, "M"]
VGG_SMALL_CFG: list[int | str] = [32, 32, "M", 64, 64, "M", 128, 128, "M", 256, "M"]


def make_features(cfg: list[int | str], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
            c = int(v)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, cfg: list[int | str], num_classes: int, in_channels: int, input_size: int,
                 hidden: int = 4096, dropout: float = 0.5):
        super().__init__()
        self.features = make_features(cfg, in_channels)
        pools = sum(1 for v in cfg if v == "M")
        side = input_size // (2 ** pools)
        channels = [v for v in cfg if v != "M"][-1]
        n_in = int(channels) * side * side
        head: list[nn.Module] = [nn.Flatten()]
        if hidden:
            head += [nn.Linear(n_in, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                     nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                     nn.Linear(hidden, num_classes)]
        else:
            head += [nn.Linear(n_in, num_classes)]
        self.classifier = nn.Sequential(*head)

    def forward(self, x):
        return self.classifier(self.features(x))


def vgg16(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> VGG:
    """VGG-16; CIFAR head (512 → 4096 → 4096 → classes) at 32 px, ImageNet head (25088 → …) at 224 px."""
    return VGG(VGG16_CFG, num_classes, in_channels, input_size, hidden=4096, dropout=0.5)


def vgg_small(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> VGG:
    """7 conv layers (32-32-64-64-128-128-256) and one 256-unit hidden layer: CPU-trainable."""
    cfg = VGG_SMALL_CFG
    return _SmallHead(cfg, num_classes, in_channels, input_size)


class _SmallHead(VGG):
    def __init__(self, cfg, num_classes, in_channels, input_size):
        super().__init__(cfg, num_classes, in_channels, input_size, hidden=0)
        n_in = self.classifier[1].in_features
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 256), nn.ReLU(inplace=True),
                                        nn.Dropout(0.2), nn.Linear(256, num_classes))
