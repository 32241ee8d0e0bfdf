"""Thresholds for the baselines the paper compares against.

* Data-based threshold balancing of a ReLU ANN: θ_l = the maximum ReLU activation on training
  data (Diehl et al. 2015) or its 99.9th percentile (Rueckauer et al. 2016). With IF neurons that
  reset by subtraction and emit s·θ, this is the same as their weight normalisation.
* The paper's Table S1 ablation without dynamic threshold: θ_l = max_{s∈{0,1}^n} max(θ_{l-1} W_l s),
  the largest input a neuron can receive in one step (appendix A.4, Theorem 3).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from qcfs2lava.folding import fold_batchnorm
from qcfs2lava.qcfs import QCFS

__all__ = ["activation_thresholds", "max_input_thresholds"]


@torch.no_grad()
def activation_thresholds(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                          percentile: float = 100.0, max_samples: int = 2_000_000) -> dict[str, float]:
    """Per ReLU layer: the ``percentile`` of its activations over ``batches`` (100 = max).

    Percentiles are taken over all activations (zeros included, as Rueckauer et al.); beyond
    ``max_samples`` values per layer a fixed-stride subsample keeps memory bounded.
    """
    model.eval()
    store: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ReLU):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, name=name: store.setdefault(name, []).append(o.detach().flatten())))
    try:
        for x, _ in batches:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, parts in store.items():
        v = torch.cat(parts)
        if percentile >= 100.0:
            out[name] = float(v.max())
            continue
        if v.numel() > max_samples:
            v = v[:: v.numel() // max_samples + 1]
        k = max(1, min(v.numel(), int(round(percentile / 100.0 * v.numel()))))
        out[name] = float(v.kthvalue(k).values)
    return {k: max(v, 1e-6) for k, v in out.items()}


def _affine(mod: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight, bias) of a Conv2d/Linear module as matrices over output units."""
    if isinstance(mod, (nn.Conv2d, nn.Linear)):
        w = mod.weight.detach()
        b = mod.bias.detach() if mod.bias is not None else torch.zeros(w.shape[0])
        return w.flatten(1), b
    return None


@torch.no_grad()
def max_input_thresholds(model: nn.Module, first_layer_batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
                         ) -> dict[str, float]:
    """θ_l = max_i max_{s∈{0,1}^n} (θ_{l-1} W_l s + b_l)_i for each QCFS layer of a sequential net.

    BatchNorm after a conv/linear is folded in; average pooling and flatten keep the bound (a mean
    of binary inputs lies in [0, 1]). The first layer sees the analog image, not spikes, so its
    bound is its largest pre-activation over ``first_layer_batches``. Residual nets are refused.
    """
    leaves = [m for m in model.modules() if len(list(m.children())) == 0]
    if any(type(m).__name__ == "BasicBlock" for m in model.modules()):
        raise ValueError("max-input thresholds are defined here for sequential networks only")
    names = {id(m): n for n, m in model.named_modules()}
    out: dict[str, float] = {}
    theta_prev: float | None = None
    w = b = None
    for i, m in enumerate(leaves):
        aff = _affine(m)
        if aff is not None:
            w, b = aff
            continue
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) and w is not None:
            w, b = fold_batchnorm(w, b, m.weight.detach(), m.bias.detach(), m.running_mean, m.running_var, m.eps)
            continue
        if isinstance(m, QCFS):
            if theta_prev is None:
                z = []
                hook = m.register_forward_hook(lambda mod, inp, o: z.append(float(inp[0].max())))
                try:
                    for x, _ in first_layer_batches:
                        model.eval()(x)
                finally:
                    hook.remove()
                bound = max(z)
            else:
                bound = float((theta_prev * w.clamp(min=0).sum(1) + b).max())
            out[names[id(m)]] = max(bound, 1e-6)
            theta_prev = out[names[id(m)]]
    return out
