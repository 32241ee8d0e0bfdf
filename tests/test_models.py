import pytest
import torch
from torch import nn

from qcfs2lava.util.errors import UserError
from qcfs2lava.models import REGISTRY, build_model
from qcfs2lava.models.resnet import BasicBlock
from qcfs2lava.qcfs import QCFS, prepare_ann


def test_registry_names_are_the_cli_contract():
    assert list(REGISTRY) == ["tiny", "vgg-small", "vgg16", "resnet18", "resnet20", "resnet34", "official-vgg16",
                              "official-resnet18", "official-resnet20", "official-resnet34"]


@pytest.mark.parametrize("arch,shape,classes", [
    ("tiny", (1, 8, 8), 10), ("tiny", (3, 32, 32), 10), ("vgg-small", (3, 32, 32), 10),
    ("vgg16", (3, 32, 32), 100), ("resnet18", (3, 32, 32), 10), ("resnet20", (3, 32, 32), 10),
    ("resnet34", (3, 32, 32), 100), ("official-vgg16", (3, 32, 32), 10), ("official-resnet20", (3, 32, 32), 10),
    ("official-resnet18", (3, 32, 32), 100)])
def test_every_model_converts_and_runs(arch, shape, classes):
    m = prepare_ann(build_model(arch, classes, shape[0], shape[1]), L=4).eval()
    with torch.no_grad():
        assert m(torch.randn(2, *shape)).shape == (2, classes)
    assert not any(isinstance(x, (nn.ReLU, nn.MaxPool2d)) for x in m.modules())
    assert any(isinstance(x, QCFS) for x in m.modules())


def test_vgg16_heads():
    cifar = build_model("vgg16", 10, 3, 32)
    imagenet = build_model("vgg16", 1000, 3, 224)
    assert cifar.classifier[1].in_features == 512
    assert imagenet.classifier[1].in_features == 512 * 7 * 7
    assert sum(isinstance(x, nn.Conv2d) for x in cifar.modules()) == 13


def test_resnet_stems_cifar_without_maxpool_imagenet_with():
    assert not any(isinstance(x, nn.MaxPool2d) for x in build_model("resnet18", 10, 3, 32).modules())
    assert any(isinstance(x, nn.MaxPool2d) for x in build_model("resnet34", 1000, 3, 224).modules())


def test_resnet20_has_19_convs_plus_fc():
    m = build_model("resnet20", 10, 3, 32)
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d) and x.kernel_size == (3, 3)]
    assert len(convs) == 19


def test_resnet_activation_comes_after_the_residual_add():
    blk = prepare_ann(BasicBlock(4, 4), L=4).eval()
    seen = {}
    blk.act2.register_forward_hook(lambda m, i, o: seen.setdefault("in", i[0]))
    x = torch.randn(1, 4, 5, 5)
    blk(x)
    main = blk.bn2(blk.conv2(blk.act1(blk.bn1(blk.conv1(x)))))
    assert torch.allclose(seen["in"], main + x)


def test_unknown_architecture_is_a_user_error():
    with pytest.raises(UserError, match="unknown architecture 'vgg19'"):
        build_model("vgg19", 10, 3, 32)
