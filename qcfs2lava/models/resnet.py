"""ResNets as ReLU ANNs, with the activation after the residual add (as the QCFS paper).

CIFAR variants use a 3x3 stem without max-pool; ImageNet variants the 7x7/2 stem with a
3x3/2 max-pool (which ``prepare_ann`` turns into an average pool). Down-sampling shortcuts
are 1x1 conv + BN.
"""
from __future__ import annotations

from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.act2 = nn.ReLU(inplace=True)   # after the add: the SNN neuron sums both paths

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks: list[int], widths: list[int], num_classes: int, in_channels: int,
                 imagenet_stem: bool):
        super().__init__()
        w0 = widths[0]
        if imagenet_stem:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 7, 2, 3, bias=False), nn.BatchNorm2d(w0),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0),
                                      nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        c = w0
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                stages.append(BasicBlock(c, w, stride=2 if (j == 0 and i > 0) else 1))
                c = w
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


def resnet18(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> ResNet:
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, in_channels, imagenet_stem=input_size > 64)


def resnet34(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> ResNet:
    return ResNet([3, 4, 6, 3], [64, 128, 256, 512], num_classes, in_channels, imagenet_stem=input_size > 64)


def resnet20(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> ResNet:
    """He et al.'s CIFAR ResNet-20: 3 stages of 3 blocks, widths 16-32-64."""
    return ResNet([3, 3, 3], [16, 32, 64], num_classes, in_channels, imagenet_stem=input_size > 64)
