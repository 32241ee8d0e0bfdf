"""Model zoo: a registry by name. Names are part of the CLI contract.

Every builder returns a plain ReLU/MaxPool ANN; ``qcfs2lava.qcfs.prepare_ann`` converts it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from qcfs2lava.util.errors import UserError
from qcfs2lava.models.resnet import resnet18, resnet20, resnet34
from qcfs2lava.models.small import tiny
from qcfs2lava.models.factory import build_from_factory, is_factory_spec
from qcfs2lava.models.official import OFFICIAL
from qcfs2lava.models.vgg import vgg16, vgg_small

Builder = Callable[..., nn.Module]

REGISTRY: dict[str, Builder] = {
    "tiny": tiny,
    "vgg-small": vgg_small,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "resnet20": resnet20,
    "resnet34": resnet34,
    # the layouts of the QCFS authors' code (qcfs2lava import --from qcfs-official)
    **{f"official-{name}": builder for name, builder in OFFICIAL.items()},
}


def build_model(arch: str, num_classes: int, in_channels: int, input_size: int) -> nn.Module:
    """Build the ReLU ANN ``arch`` for inputs of shape (in_channels, input_size, input_size)."""
    if arch not in REGISTRY:
        raise UserError(f"unknown architecture '{arch}'; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[arch](num_classes=num_classes, in_channels=in_channels, input_size=input_size)


def build_network(arch: str, arch_kwargs: dict, model_kwargs: dict | None = None) -> nn.Module:
    """The ReLU (or QCFS) network ``arch``: a zoo name, built for ``arch_kwargs`` (num_classes,
    in_channels, input_size), or a marked factory ``package.module:function`` of your own code,
    called with ``model_kwargs`` (:mod:`qcfs2lava.models.factory`) and checked against the data set's
    input shape and class count."""
    if not is_factory_spec(arch):
        return build_model(arch, **arch_kwargs)
    model = build_from_factory(arch, model_kwargs)
    shape = (1, int(arch_kwargs["in_channels"]), int(arch_kwargs["input_size"]), int(arch_kwargs["input_size"]))
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(shape))
    except Exception as e:  # noqa: BLE001 - the user's network does not take this input
        raise UserError(f"model factory {arch}: its network fails on an input of shape {shape[1:]} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    if tuple(getattr(out, "shape", ())) != (1, int(arch_kwargs["num_classes"])):
        raise UserError(f"model factory {arch}: its network maps an input of shape {shape[1:]} to "
                        f"{tuple(getattr(out, 'shape', ()))}; the data set needs (1, {arch_kwargs['num_classes']})")
    return model


def output_shapes(model: nn.Module, input_shape: Sequence[int], kinds: tuple[type, ...]
                  ) -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """Every submodule of one of ``kinds``, by name, with its output shape (batch of 1 included),
    from one forward pass of ``model`` (eval mode) on a zero image of ``input_shape``."""
    found: dict[str, tuple[nn.Module, tuple[int, ...]]] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: found.__setitem__(n, (mod, tuple(o.shape))))
             for n, m in model.named_modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros((1,) + tuple(int(s) for s in input_shape)))
    finally:
        for h in hooks:
            h.remove()
    return found


__all__ = ["REGISTRY", "build_model", "build_network", "output_shapes"]
