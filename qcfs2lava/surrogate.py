"""Spike-aware fine-tuning: a differentiable integrate-and-fire twin of a QCFS network.

At T ≤ L the converted SNN's error is not only a per-channel offset (which :mod:`qcfs2lava.low_latency`
calibrates away) but also the coarse time resolution itself: after t steps a neuron's mean output
takes only t + 1 values, and spikes from the layer below arrive unevenly (the unevenness error,
paper section 3.2). Training the weights through the SNN at the target T lets the next layers adapt
to exactly that, as in hybrid conversion-then-spike-training (Rathi et al., "Enabling Deep Spiking
Neural Networks with Hybrid Conversion and Spike Timing Dependent Backpropagation", ICLR 2020),
here kept short and joined with the QCFS loss so that large T keeps the ANN's accuracy:

    loss = CE(ANN(x), y) + w · CE((1/T) Σ_{t=1..T} SNN_t(x), y).

The twin shares every parameter with the ANN (one set of weights and thresholds λ = θ), so the
result is still an ordinary QCFS checkpoint that exports to the same NetX file. Its neurons are the
reference SNN's (:mod:`qcfs2lava.snn`: IF, no leak, reset by subtraction, v(0) = φ·θ, aligned
steps), with the spike's derivative replaced by a triangular surrogate of width θ:

    s = H(m/θ − 1),   ∂s/∂(m/θ) := max(0, 1 − |m/θ − 1|),

so one spike's worth of potential maps to one spike, the SNN counterpart of eq. 17's
straight-through floor.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from qcfs2lava.qcfs import QCFS

__all__ = ["spike", "SurrogateIF", "SpikingTwin"]


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u):  # type: ignore[override]
        ctx.save_for_backward(u)
        return (u >= 1.0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        return grad * (1.0 - (u - 1.0).abs()).clamp(min=0.0)


def spike(u: torch.Tensor) -> torch.Tensor:
    """Heaviside H(u − 1) of the normalised potential u = m/θ (the IF firing rule, eq. 3), with
    the triangular surrogate derivative max(0, 1 − |u − 1|)."""
    return _Spike.apply(u)


class SurrogateIF(nn.Module):
    """The IF neuron of one QCFS layer, differentiable in its input and in the layer's λ (= θ).

    Holds the QCFS module itself, so gradients reach the shared λ; call :meth:`reset` per batch."""

    def __init__(self, qcfs: QCFS):
        super().__init__()
        self.qcfs = qcfs
        self.v: torch.Tensor | None = None

    def reset(self) -> None:
        self.v = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.qcfs.lam.clamp(min=1e-3)            # as QCFS.forward
        if self.v is None:
            self.v = torch.zeros_like(x) + self.qcfs.phi * theta
        m = self.v + x
        out = spike(m / theta) * theta
        self.v = m - out                                 # reset by subtraction (eq. 4)
        return out


def _twin(mod: nn.Module) -> nn.Module:
    """Shallow copy of the module tree with QCFS → SurrogateIF; parameters and buffers are shared."""
    if isinstance(mod, QCFS):
        return SurrogateIF(mod)
    new = copy.copy(mod)
    new._modules = {k: (None if c is None else _twin(c)) for k, c in mod._modules.items()}
    return new


class SpikingTwin(nn.Module):
    """``forward(x)`` → (ANN logits, SNN logits averaged over ``T`` aligned steps), one graph for
    the joint loss. The SNN half is a view of ``model`` (same parameters), so this module can be
    wrapped in DDP like the model itself. Fine-tune in eval mode: BatchNorm uses its running
    statistics, as the exported network does, and dropout is off (one mask would have to hold
    for all T steps)."""

    def __init__(self, model: nn.Module, T: int):
        super().__init__()
        if T < 1:
            raise ValueError(f"the spiking twin needs T >= 1, got {T}")
        self.model = model
        self.snn = _twin(model)
        self.T = int(T)

    def neurons(self) -> list[SurrogateIF]:
        return [m for m in self.snn.modules() if isinstance(m, SurrogateIF)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ann = self.model(x)
        for n in self.neurons():
            n.reset()
        total = self.snn(x)
        for _ in range(self.T - 1):
            total = total + self.snn(x)
        for n in self.neurons():
            n.reset()                                    # drop the graph's state
        return ann, total / self.T
