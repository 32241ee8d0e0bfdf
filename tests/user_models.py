"""Networks of "a user's own code" for tests/test_your_network.py and docs/your-network.md: shapes
the zoo does not have, built by factories marked with ``@qcfs2lava.model_factory``."""
from torch import nn

import qcfs2lava


@qcfs2lava.model_factory
def five_layer_cnn(width: int = 8, hidden: int = 32, classes: int = 10, in_channels: int = 1) -> nn.Module:
    """3x3 conv, a 1x1 conv, a stride-2 conv instead of pooling, two hidden dense layers, a readout
    (for 8x8 inputs, e.g. the bundled digits)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * width * 4 * 4, hidden), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(hidden, hidden // 2), nn.ReLU(),
        nn.Linear(hidden // 2, classes))


def unmarked(classes: int = 10) -> nn.Module:
    """A factory without the mark: checkpoints may not name it."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, classes))


@qcfs2lava.model_factory
def with_gelu(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.GELU(), nn.Linear(32, classes))


@qcfs2lava.model_factory
def not_a_module() -> str:
    return "a network"
