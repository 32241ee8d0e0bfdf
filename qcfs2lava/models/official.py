"""The network layouts of the QCFS authors' own code, so that their checkpoints load key for key.

Bu et al. publish two code bases (``putshua/ANN_SNN_QCFS``, the newer, and
``putshua/SNN_conversion_QCFS``). Their VGG-16 and ResNets differ from our zoo's: VGG convs carry a
bias and every conv-BN-activation is followed by a Dropout, the layers sit in five ``layerN``
blocks with average pools, and the ResNets keep the CIFAR 3x3 stem (no 7x7 conv, no pooling) at
every input size. These builders reproduce those layouts (module names and order, hence state-dict
keys) as plain ReLU ANNs with average pools, like every zoo builder; ``prepare_ann`` puts a QCFS
where the authors had their ``IF`` / ``MyFloor`` activation. ``qcfs2lava.official_import`` maps
the authors' parameter names onto these modules. No code of theirs is used.
"""
from __future__ import annotations

from torch import nn

VGG16_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512),
                                             (512, 512, 512))


class OfficialVGG(nn.Module):
    """``layer1`` … ``layer5``: [Conv2d 3x3 pad 1 (bias), BatchNorm2d, ReLU, Dropout] per conv, then
    AvgPool2d(2, 2); ``classifier``: [Flatten, Linear(512·(s/32)², 4096), ReLU, Dropout,
    Linear(4096, 4096), ReLU, Dropout, Linear(4096, classes)] (s = input size: 512 for CIFAR,
    512·7·7 for ImageNet)."""

    def __init__(self, blocks: tuple[tuple[int, ...], ...], num_classes: int, in_channels: int, input_size: int,
                 dropout: float = 0.0, hidden: int = 4096):
        super().__init__()
        c = in_channels
        for i, widths in enumerate(blocks, start=1):
            layers: list[nn.Module] = []
            for w in widths:
                layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.Dropout(dropout)]
                c = w
            layers.append(nn.AvgPool2d(2, 2))
            setattr(self, f"layer{i}", nn.Sequential(*layers))
        self.depth = len(blocks)
        side = input_size // 2 ** len(blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c * side * side, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x):
        for i in range(1, self.depth + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.classifier(x)


class OfficialBasicBlock(nn.Module):
    """``residual_function`` = [Conv 3x3, BN, ReLU, Conv 3x3, BN]; ``shortcut`` empty or [Conv 1x1, BN];
    ``act`` after the add (the old code base names it ``relu``)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.residual_function(x) + self.shortcut(x))


class OfficialResNet(nn.Module):
    """``conv1`` = [Conv 3x3 (no bias), BN, ReLU]; stages ``conv2_x`` … (first block of every stage but
    the first with stride 2); ``avg_pool`` = AdaptiveAvgPool2d(1); ``fc``."""

    def __init__(self, blocks: list[int], widths: list[int], num_classes: int, in_channels: int):
        super().__init__()
        c = widths[0]
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                   nn.ReLU(inplace=True))
        self.stages = [f"conv{i + 2}_x" for i in range(len(blocks))]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            stage = []
            for j in range(n):
                stage.append(OfficialBasicBlock(c, w, stride=2 if (j == 0 and i > 0) else 1))
                c = w
            setattr(self, self.stages[i], nn.Sequential(*stage))
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()            # theirs: output.view(N, -1), the same, with no parameters
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        for name in self.stages:
            x = getattr(self, name)(x)
        return self.fc(self.flatten(self.avg_pool(x)))


def official_vgg16(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                   dropout: float = 0.0) -> OfficialVGG:
    """The authors' VGG-16 (their default dropout is 0)."""
    return OfficialVGG(VGG16_BLOCKS, num_classes, in_channels, input_size, dropout)


def official_resnet18(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> OfficialResNet:
    return OfficialResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels)


def official_resnet34(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> OfficialResNet:
    return OfficialResNet([3, 4, 6, 3], [64, 128, 256, 512], num_classes, in_channels)


def official_resnet20(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> OfficialResNet:
    return OfficialResNet([3, 3, 3], [16, 32, 64], num_classes, in_channels)


OFFICIAL = {"vgg16": official_vgg16, "resnet18": official_resnet18, "resnet20": official_resnet20,
            "resnet34": official_resnet34}
