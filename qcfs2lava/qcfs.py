"""The quantization clip-floor-shift activation (Bu et al., ICLR 2022, section 4).

``qcfs`` is eq. 15, with the gradient of eq. 17; ``QCFS`` is the layer holding a trainable
per-layer threshold λ; ``prepare_ann`` is Algorithm 1, lines 1-8. ``spike_noise`` is the optional
training-time perturbation that models the SNN's unevenness error (section 3.2) as ±1 spike.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from qcfs2lava.util.errors import ConversionError

__all__ = ["qcfs", "qcfs_grad", "spike_noise", "QCFS", "prepare_ann", "qcfs_layers"]


def _forward(z: torch.Tensor, lam: torch.Tensor, L: int, phi: float) -> torch.Tensor:
    return lam * torch.clamp(torch.floor(z * L / lam + phi) / L, 0.0, 1.0)


def qcfs_grad(z: torch.Tensor, lam: torch.Tensor, L: int, phi: float = 0.5
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise partial derivatives (∂ĥ/∂z, ∂ĥ/∂λ) of eq. 17.

    With the straight-through floor (d⌊x⌋/dx = 1), on the unclipped range
    ``-λφ/L ≤ z < λ - λφ/L`` (φ = 1/2 gives the paper's ±λ/2L bounds):
    ∂ĥ/∂z = 1 (0 exactly on the lower edge: the paper's inequality is strict there) and
    ∂ĥ/∂λ = (ĥ - z)/λ; below it both are 0; above it ∂ĥ/∂z = 0 and ∂ĥ/∂λ = 1.
    The paper leaves z = λ - λφ/L unassigned; we put it in the saturated branch, where ĥ = λ.
    """
    lo = -lam * phi / L
    hi = lam - lam * phi / L
    h = _forward(z, lam, L, phi)
    inside = (z >= lo) & (z < hi)
    dz = ((z > lo) & (z < hi)).to(z.dtype)
    dlam = torch.where(inside, (h - z) / lam, (z >= hi).to(z.dtype))
    return dz, dlam


class _QCFSFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, lam, L, phi):  # type: ignore[override]
        ctx.save_for_backward(z, lam)
        ctx.L, ctx.phi = L, phi
        return _forward(z, lam, L, phi)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        z, lam = ctx.saved_tensors
        dz, dlam = qcfs_grad(z, lam, ctx.L, ctx.phi)
        g_lam = (grad_out * dlam).sum().reshape(lam.shape) if ctx.needs_input_grad[1] else None
        return grad_out * dz, g_lam, None, None


def qcfs(z: torch.Tensor, lam: torch.Tensor | float, L: int, phi: float = 0.5) -> torch.Tensor:
    """Quantization clip-floor-shift activation, eq. 15:
    ``ĥ(z) = λ · clip(⌊z·L/λ + φ⌋ / L, 0, 1)``, differentiated by eq. 17.

    ``phi=0.5`` is the paper's optimal shift; ``phi=0`` is the clip-floor (QCF) activation of
    eq. 13 used in its ablations. ``lam`` is a scalar (tensor or float) threshold λ > 0.
    """
    if L < 1:
        raise ValueError(f"quantization steps L must be >= 1, got {L}")
    lam_t = torch.as_tensor(lam, dtype=z.dtype, device=z.device)
    return _QCFSFunction.apply(z, lam_t, int(L), float(phi))


def spike_noise(h: torch.Tensor, lam: torch.Tensor, L: int, p: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The noise model of noise-injected QCFS fine-tuning: every output ``h`` (on the grid
    k·λ/L, 0 ≤ k ≤ L) independently moves one quantization step, ``+λ/L`` with probability p/2 and
    ``−λ/L`` with probability p/2, where the move stays inside [0, λ] (else it keeps its value).

    This is the unevenness error of the paper (section 3.2, Figure 1b-d): input spikes arriving
    unevenly make an IF neuron fire one spike more or fewer than the ANN predicts; Hao et al.
    ("Bridging the Gap between ANNs and SNNs by Calibrating Offset Spikes", ICLR 2023) measure
    that the deviation is mostly exactly ±1 spike. At T = L one spike is λ/L, the step used here.
    Training with the perturbation (as noise-injected low-bit ANN training does, e.g. Li &
    Rajendran, "Noise Adaptor", arXiv:2411.17431, 2024; Huang et al., "Converting High-Performance
    and Low-Latency SNNs through Explicit Modelling of Residual Error in ANNs", arXiv:2404.17456,
    2024) teaches the next layers to tolerate it. The noise is additive, so gradients pass
    unchanged (∂/∂h = 1; the step's own ∂/∂λ = ±1/L)."""
    if p <= 0:
        return h
    u = torch.rand(h.shape, generator=generator, dtype=h.dtype, device=h.device)
    step = lam / L
    up = (u < p / 2) & (h < lam - step / 2)
    down = (u >= 1 - p / 2) & (h > step / 2)
    eps = up.to(h.dtype) - down.to(h.dtype)
    return h + eps * step


class QCFS(nn.Module):
    """QCFS activation layer with a trainable threshold λ (one per layer).

    ``noise_p`` > 0 adds :func:`spike_noise` to the output in training mode only (noise-injected
    fine-tuning); it is a plain attribute, not saved in the state dict."""

    def __init__(self, L: int = 4, lam_init: float = 8.0, phi: float = 0.5, trainable: bool = True):
        super().__init__()
        if L < 1:
            raise ValueError(f"quantization steps L must be >= 1, got {L}")
        self.L = int(L)
        self.phi = float(phi)
        self.lam = nn.Parameter(torch.tensor(float(lam_init)), requires_grad=trainable)
        self.noise_p = 0.0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # λ must stay positive; a tiny floor avoids division by zero if SGD drives it down.
        lam = self.lam.clamp(min=1e-3)
        h = qcfs(z, lam, self.L, self.phi)
        if self.training and self.noise_p > 0:
            h = spike_noise(h, lam, self.L, self.noise_p)
        return h

    def extra_repr(self) -> str:
        noise = f", noise_p={self.noise_p:g}" if self.noise_p else ""
        return f"L={self.L}, phi={self.phi}, lam={float(self.lam.detach()):.4g}{noise}"


# Modules that are activations and cannot be converted: we refuse them rather than guess.
_UNSUPPORTED_ACTIVATIONS = (nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.PReLU,
                            nn.SELU, nn.CELU, nn.Hardswish, nn.Hardtanh, nn.Softplus, nn.Mish, nn.GLU)
_FUNCTIONAL_RELU = {F.relu, F.relu_, torch.relu, torch.relu_, F.max_pool2d, torch.max_pool2d}


def _check_no_functional_relu(model: nn.Module) -> None:
    """Refuse ReLU / max-pool called functionally in forward(): no module to replace."""
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - models fx cannot trace are checked module by module only
        return
    for node in traced.graph.nodes:
        if node.op == "call_function" and node.target in _FUNCTIONAL_RELU:
            raise ConversionError(
                f"functional call {getattr(node.target, '__name__', node.target)} in "
                f"{type(model).__name__}.forward cannot be converted; use nn.ReLU / nn.MaxPool2d modules")
        if node.op == "call_method" and node.target in ("relu", "relu_"):
            raise ConversionError(
                f"tensor method .{node.target}() in {type(model).__name__}.forward cannot be "
                "converted; use nn.ReLU modules")


def prepare_ann(model: nn.Module, L: int = 4, lam_init: float = 8.0, phi: float = 0.5,
                keep_relu: bool = False) -> nn.Module:
    """Algorithm 1, lines 1-8: every ReLU becomes QCFS(L, λ), every MaxPool an AvgPool.

    Works in place and returns the model. Raises ``ConversionError`` naming the module for
    anything the conversion cannot represent (other activations, functional ReLU calls).
    ``keep_relu`` only swaps the pools: the plain ReLU network of the threshold-balancing baselines.
    """
    for name, mod in model.named_modules():
        if isinstance(mod, _UNSUPPORTED_ACTIVATIONS):
            raise ConversionError(
                f"module '{name}' is {type(mod).__name__}; only ReLU can be converted to QCFS")
        if isinstance(mod, (nn.MaxPool1d, nn.MaxPool3d, nn.AdaptiveMaxPool2d)):
            raise ConversionError(f"module '{name}' is {type(mod).__name__}; only MaxPool2d is supported")
    _check_no_functional_relu(model)

    def swap(parent: nn.Module) -> None:
        for child_name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                if not keep_relu:
                    setattr(parent, child_name, QCFS(L=L, lam_init=lam_init, phi=phi))
            elif isinstance(child, nn.MaxPool2d):
                if child.dilation not in (1, (1, 1)) or child.ceil_mode:
                    raise ConversionError(
                        f"MaxPool2d '{child_name}' uses dilation or ceil_mode; cannot become AvgPool2d")
                setattr(parent, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
            else:
                swap(child)

    swap(model)
    return model


def qcfs_layers(model: nn.Module) -> list[tuple[str, QCFS]]:
    """The model's QCFS layers in forward (registration) order, with their names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QCFS)]
