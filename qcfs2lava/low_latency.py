"""Low-latency calibration of a converted QCFS network for one target T (issue #8).

At T ≤ L the converted SNN loses accuracy to the quantization and unevenness errors of the QCFS
paper (Bu et al., ICLR 2022, section 3.2 and eq. 9-12): a layer's mean output over T steps
φ_l(T) = Σ_t s_l(t)·θ_l / T differs from the ANN's QCFS output a_l, systematically per channel.
Two post-training calibrations remove the systematic part, each measured on a few hundred
*training* images and chosen for one target T; both deploy as a plain NetX file (a per-step bias
and a per-neuron initial potential), with no extra pre-simulation at inference:

``bias`` — layer-wise bias calibration (Li et al., "A Free Lunch From ANN: Towards Efficient,
    Accurate Spiking Neural Networks Calibration", ICML 2021, bias correction): layer by layer,
    with the earlier layers already calibrated, each channel c's bias is shifted by δ_c so that the
    mean error over images and positions vanishes,

        e_c(δ) = E[a_l − φ_l(T; δ)]_c = 0.

    Li et al. apply δ ← δ + e_c(δ) (a per-step shift δ moves the mean output by ≈ δ); here the same
    fixed point is found by per-channel bisection (``bias_iterations`` steps), which stays exact where
    the slope is far from 1 (a channel that rarely fires at low T). e_c(δ) is non-increasing in δ
    (an IF neuron with reset by subtraction fires at least as often when every input grows), so
    the root closest to 0 is searched in [−θ, θ].

``v0`` — calibrated initial potentials: per channel, v(0)/θ from the grid {0, 1/G, …, (G−1)/G}
    minimising the mean squared error E[(a_l − φ_l(T; v0))²]_c, again layer by layer; a channel
    keeps the paper's v(0) = θ/2 (φ = ½) unless the gain is significant on the calibration images
    (``v0_z`` standard errors over images, :func:`search_v0`), so no layer gets worse at T there and
    few-sample layers do not overfit. Its effect on the mean output fades as 1/T: large T keep
    their accuracy.

``both`` — v(0) first (MSE, δ = 0), then δ with that v(0).

The ANN is not changed: the result is a per-layer ``{"bias": [...], "v0_frac": [...]}`` that
:func:`qcfs2lava.snn.convert` and the NetX exporter apply, stored in a checkpoint's
``meta["snn_calibration"]`` (plain lists: the checkpoint still loads with ``weights_only=True``).

Cost: per QCFS layer, one T-step SNN pass up to that layer over the calibration images, whose
inputs to the layer, (T, n, C, H, W) floats, are held in memory; the candidate biases and
potentials are then simulated on those stored inputs (that layer only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from qcfs2lava.util.errors import CheckpointError, UserError
from qcfs2lava.models import output_shapes
from qcfs2lava.qcfs import QCFS, qcfs_layers
from qcfs2lava.snn import IFNeuron, convert

__all__ = ["METHODS", "LayerCalibration", "Calibration", "if_mean_output", "channel_error", "solve_bias",
           "search_v0", "calibrate", "calibration_of", "check_calibration"]

METHODS = ("bias", "v0", "both")
META_KEY = "snn_calibration"


@dataclass(frozen=True)
class LayerCalibration:
    """One QCFS layer's calibration; errors are per element, in units of θ (squared for MSE),
    on the calibration images at the target T with the earlier layers already calibrated."""
    name: str
    theta: float
    bias: tuple[float, ...] | None           # per channel δ (float units of the layer's input)
    v0_frac: tuple[float, ...] | None        # per channel v(0)/θ
    mean_error_before: float                 # E[a − φ(T)] / θ with v(0) = φθ, no shift
    mean_error_after: float
    mse_before: float                        # E[(a − φ(T))²] / θ²
    mse_after: float
    channel_mean_abs_before: float           # mean over channels of |E_c[a − φ(T)]| / θ
    channel_mean_abs_after: float


@dataclass(frozen=True)
class Calibration:
    method: str
    T: int
    n: int
    layers: tuple[LayerCalibration, ...]
    v0_grid: int = 32
    bias_iterations: int = 16
    extra: dict[str, Any] = field(default_factory=dict)

    def layer_params(self) -> dict[str, dict[str, list[float]]]:
        """The ``calibration`` argument of :func:`qcfs2lava.snn.convert`."""
        out: dict[str, dict[str, list[float]]] = {}
        for lay in self.layers:
            d = {}
            if lay.bias is not None:
                d["bias"] = list(lay.bias)
            if lay.v0_frac is not None:
                d["v0_frac"] = list(lay.v0_frac)
            out[lay.name] = d
        return out

    def to_meta(self) -> dict[str, Any]:
        """JSON-like, for ``meta["snn_calibration"]`` (plain floats and lists only)."""
        return dict(method=self.method, T=self.T, n=self.n, v0_grid=self.v0_grid,
                    bias_iterations=self.bias_iterations, layers=self.layer_params(),
                    stats=[{k: v for k, v in lay.__dict__.items() if k not in ("bias", "v0_frac")}
                           for lay in self.layers], **self.extra)


# --------------------------------------------------------------------------- pure math
def _channel_view(values: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    """(C,) → broadcastable against (N, C, ...); scalars pass through."""
    if not isinstance(values, torch.Tensor) or values.ndim == 0:
        return values
    return values.to(like.dtype).reshape((1, -1) + (1,) * (like.ndim - 2))


def if_mean_output(xs: torch.Tensor, theta: float, v0_frac: torch.Tensor | float = 0.5,
                   bias: torch.Tensor | float = 0.0) -> torch.Tensor:
    """φ(T) = Σ_t s(t)·θ / T of IF neurons with reset by subtraction (paper eq. 2-6) driven by
    ``xs[t] + bias`` for t = 1..T, starting from v(0) = v0_frac·θ. ``xs`` is (T, N, C, ...);
    ``v0_frac`` and ``bias`` are scalars or per-channel (C,) tensors. Returns (N, C, ...)."""
    T = xs.shape[0]
    x0 = xs[0]
    v = (torch.zeros_like(x0) + _channel_view(v0_frac, x0) * theta)
    count = torch.zeros_like(x0)
    b = _channel_view(bias, x0)
    for t in range(T):
        v.add_(xs[t])
        if not isinstance(b, float) or b != 0.0:
            v.add_(b)
        s = (v >= theta).to(v.dtype)
        v.sub_(s * theta)
        count.add_(s)
    return count.mul_(theta / T)


def channel_error(a: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel (dim 1): mean of ``a − out`` and mean of its square, over all other dims."""
    d = (a - out).transpose(0, 1).reshape(a.shape[1], -1).double()
    return d.mean(1), (d * d).mean(1)


def solve_bias(xs: torch.Tensor, a: torch.Tensor, theta: float, v0_frac: torch.Tensor | float = 0.5,
               iterations: int = 16, limit: float = 1.0) -> torch.Tensor:
    """Per-channel shift δ with E_c[a − φ(T; δ)] = 0 (Li et al. 2021's bias correction at its fixed
    point), the root closest to 0 within [−limit·θ, limit·θ], by bisection (``iterations`` halvings,
    resolution limit·θ/2^iterations). Where the error jumps across 0 between two candidates, the
    one with the smaller |mean error| is kept. Returns (C,) float64."""
    def err(delta: torch.Tensor) -> torch.Tensor:
        return channel_error(a, if_mean_output(xs, theta, v0_frac, delta.float()))[0]

    C = a.shape[1]
    zero = torch.zeros(C, dtype=torch.float64)
    e0 = err(zero)
    up = e0 > 0                                    # SNN too low: search δ in (0, +limit·θ]
    lo, hi = zero.clone(), zero.clone()            # invariant: sign at lo as e0, at hi "crossed or edge"
    edge = torch.where(up, torch.full_like(zero, limit * theta), torch.full_like(zero, -limit * theta))
    e_edge = err(edge)
    crossed = torch.where(up, e_edge <= 0, e_edge >= 0)
    hi = edge.clone()
    e_lo, e_hi = e0.clone(), e_edge.clone()
    for _ in range(max(0, iterations)):
        mid = (lo + hi) / 2
        e_mid = err(mid)
        same = torch.where(up, e_mid > 0, e_mid < 0)       # not yet crossed: move lo
        lo = torch.where(same, mid, lo)
        e_lo = torch.where(same, e_mid, e_lo)
        hi = torch.where(same, hi, mid)
        e_hi = torch.where(same, e_hi, e_mid)
    best = torch.where(e_hi.abs() <= e_lo.abs(), hi, lo)
    best = torch.where(crossed, best, edge)                # no root within the limit: the edge
    return torch.where(e0 == 0, zero, best)


def search_v0(xs: torch.Tensor, a: torch.Tensor, theta: float, bias: torch.Tensor | float = 0.0,
              grid: int = 32, z: float = 2.0, default: float = 0.5) -> torch.Tensor:
    """Per channel, v(0)/θ ∈ {0, 1/grid, …, (grid−1)/grid} minimising E_c[(a − φ(T; v0))²].

    A channel keeps ``default`` (the paper's φ = ½) unless the best candidate's gain is significant
    on the calibration images: the per-image mean squared-error difference to ``default`` must be
    below zero by more than ``z`` standard errors (images are the independent samples; positions
    within an image are not). Without this rule, a dense layer with one sample per image and
    neuron overfits a few hundred images. ``z = 0`` takes the plain argmin. Returns (C,) float64."""
    if grid < 1:
        raise ValueError("grid must be >= 1")
    n, C = a.shape[0], a.shape[1]

    def per_image_se(f: float) -> torch.Tensor:
        d = (a - if_mean_output(xs, theta, f, bias)).double()
        return (d * d).reshape(n, C, -1).mean(2)                       # (n, C)

    ref = per_image_se(default)
    best_mse = ref.mean(0)
    best = torch.full((C,), float(default), dtype=torch.float64)
    best_diff = torch.zeros(n, C, dtype=torch.float64)
    cands = sorted((k / grid for k in range(grid)), key=lambda f: (abs(f - default), f))
    for f in cands:
        if f == default:
            continue
        se = per_image_se(f)
        mse = se.mean(0)
        better = mse < best_mse - 1e-12
        best_mse = torch.where(better, mse, best_mse)
        best = torch.where(better, torch.full_like(best, f), best)
        best_diff = torch.where(better[None], se - ref, best_diff)
    if z > 0 and n > 1:
        gain = -best_diff.mean(0)
        stderr = best_diff.std(0) / math.sqrt(n)
        best = torch.where(gain > z * stderr, best, torch.full_like(best, float(default)))
    return best


# --------------------------------------------------------------------------- recording
class _Stop(Exception):
    """Raised by a hook to skip the rest of a forward pass."""


@torch.no_grad()
def _record(model: nn.Module, snn: nn.Module, qname: str, x: torch.Tensor, T: int, batch: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(SNN inputs to layer ``qname`` at t = 1..T, shape (T, n, ...); ANN QCFS output there, (n, ...))."""
    qmod = dict(model.named_modules())[qname]
    smod = dict(snn.named_modules())[qname]
    ins: list[torch.Tensor] = []
    acts: list[torch.Tensor] = []

    def grab_ann(mod, inp, out):
        acts.append(out.detach().clone())
        raise _Stop

    def grab_snn(mod, inp):
        ins.append(inp[0].detach().clone())
        raise _Stop

    h1 = qmod.register_forward_hook(grab_ann)
    h2 = smod.register_forward_pre_hook(grab_snn)
    chunks = []
    try:
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            try:
                model(xb)
            except _Stop:
                pass
            for m in snn.modules():
                if isinstance(m, IFNeuron):
                    m.reset()
            ins.clear()
            for _ in range(T):
                try:
                    snn(xb)
                except _Stop:
                    pass
            chunks.append(torch.stack(ins))
            ins.clear()
    finally:
        h1.remove()
        h2.remove()
    return torch.cat(chunks, dim=1), torch.cat(acts)


def _stats(xs: torch.Tensor, a: torch.Tensor, theta: float, v0, bias) -> tuple[float, float, float]:
    out = if_mean_output(xs, theta, v0, bias)
    d = (a - out).double() / theta
    per_channel = d.transpose(0, 1).reshape(a.shape[1], -1).mean(1)
    return float(d.mean()), float((d * d).mean()), float(per_channel.abs().mean())


@torch.no_grad()
def calibrate(model: nn.Module, x: torch.Tensor, T: int, method: str = "both", *, batch_size: int = 128,
              v0_grid: int = 32, bias_iterations: int = 16, v0_z: float = 2.0,
              progress: Callable[[str, LayerCalibration], None] | None = None) -> Calibration:
    """Calibrate every QCFS layer of ``model`` (in forward order) for ``T`` steps on the normalised
    images ``x`` (training images); see the module docstring for ``method``. ``progress(name, result)``
    is called after each layer. The model is not modified."""
    if method not in METHODS:
        raise UserError(f"calibration method must be one of {', '.join(METHODS)}, not '{method}'")
    if T < 1:
        raise UserError("the calibration target T must be >= 1")
    if len(x) < 1:
        raise UserError("calibration needs at least one image")
    model = model.eval()
    layers = qcfs_layers(model)
    if not layers:
        raise UserError("the model has no QCFS layer to calibrate")
    params: dict[str, dict[str, list[float]]] = {}
    done: list[LayerCalibration] = []
    for name, q in layers:
        snn = convert(model, calibration=params)
        xs, a = _record(model, snn, name, x, T, batch_size)
        theta = float(dict(snn.named_modules())[name].theta)
        phi = float(q.phi)
        before = _stats(xs, a, theta, phi, 0.0)
        v0: torch.Tensor | float = phi
        bias: torch.Tensor | float = 0.0
        if method in ("v0", "both"):
            v0 = search_v0(xs, a, theta, 0.0, v0_grid, v0_z, phi)
        if method in ("bias", "both"):
            bias = solve_bias(xs, a, theta, v0, bias_iterations)
        after = _stats(xs, a, theta, v0, bias)
        res = LayerCalibration(
            name, theta,
            tuple(float(v) for v in bias) if isinstance(bias, torch.Tensor) else None,
            tuple(float(v) for v in v0) if isinstance(v0, torch.Tensor) else None,
            before[0], after[0], before[1], after[1], before[2], after[2])
        done.append(res)
        params[name] = Calibration(method, T, len(x), (res,)).layer_params()[name]
        del xs, a
        if progress is not None:
            progress(name, res)
    return Calibration(method, int(T), int(len(x)), tuple(done), v0_grid, bias_iterations,
                       dict(v0_z=v0_z) if method != "bias" else {})


# --------------------------------------------------------------------------- checkpoints
def _channels(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Channels (dim 1) of every QCFS layer's output, from one forward pass on zeros."""
    return {n: shape[1] for n, (_, shape) in output_shapes(model, input_shape, (QCFS,)).items()}


def check_calibration(model: nn.Module, input_shape: Sequence[int], layers: dict[str, dict[str, Any]]) -> None:
    """Raise CheckpointError unless every calibrated layer is a QCFS layer of ``model`` and every
    per-channel list has one finite value per channel (v(0)/θ in [0, 1))."""
    ch = _channels(model, input_shape)
    for name, d in layers.items():
        if name not in ch:
            raise CheckpointError(f"calibration names '{name}', which is not a QCFS layer of the model")
        for key in ("bias", "v0_frac"):
            v = d.get(key)
            if v is None:
                continue
            if len(v) != ch[name] or not all(math.isfinite(float(e)) for e in v):
                raise CheckpointError(f"calibration of '{name}': {key} has {len(v)} values for {ch[name]} channels "
                                      "(or non-finite values)")
            if key == "v0_frac" and not all(0.0 <= float(e) < 1.0 for e in v):
                raise CheckpointError(f"calibration of '{name}': v0_frac outside [0, 1)")


def calibration_of(ck) -> dict[str, dict[str, list[float]]] | None:
    """The per-layer calibration stored in a loaded checkpoint (checked against its model), or None."""
    cal = ck.meta.get(META_KEY)
    if not cal:
        return None
    if not isinstance(cal, dict) or not isinstance(cal.get("layers"), dict):
        raise CheckpointError(f"{ck.path or 'checkpoint'}: malformed '{META_KEY}' metadata")
    check_calibration(ck.model, ck.meta["input_shape"], cal["layers"])
    return cal["layers"]
