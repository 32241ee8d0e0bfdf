"""Float reference SNN: the QCFS ANN's integrate-and-fire twin (Algorithm 1, lines 22-26).

Every QCFS layer becomes an IF neuron with no leak, threshold θ = λ, firing when v ≥ θ,
reset by subtraction and initial potential v(0) = φ·θ; the input is the same analog image
at every step, and the network output is the running mean of the logits. One pass of T steps
gives the accuracy at every t = 1..T. ReLU layers can be converted too, given a threshold per
layer (the threshold-balancing baselines).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from qcfs2lava.util.errors import ConversionError
from qcfs2lava.qcfs import QCFS

__all__ = ["if_step", "IFNeuron", "convert", "simulate", "SNNResult", "evaluate", "if_layers"]


def if_step(v: torch.Tensor, x: torch.Tensor, theta: torch.Tensor | float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the IF neuron with reset by subtraction (paper eq. 2-4, combined as eq. 6).

    ``m = v + x``; a spike is fired where ``m ≥ θ``; ``v ← m − s·θ``.
    Returns the new potential and the postsynaptic output ``s·θ``.
    """
    m = v + x
    s = (m >= theta).to(m.dtype)
    return m - s * theta, s * theta


class IFNeuron(nn.Module):
    """Stateful IF layer; call :meth:`reset` before each sample batch.

    ``v0_frac`` is v(0)/θ: one float for the layer (the paper's φ = ½), or a tensor with one value
    per channel (dim 1 of the input; per feature for dense layers), as calibrated by
    :mod:`qcfs2lava.low_latency`. ``bias``, if given, is a per-channel constant added to the input at every
    step (a shift of the synaptic layer's bias, in the same float units as the input).
    """

    def __init__(self, theta: float, v0_frac: float | torch.Tensor = 0.5, bias: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("theta", torch.tensor(float(theta)))
        if isinstance(v0_frac, torch.Tensor):
            self.register_buffer("v0_channels", v0_frac.detach().reshape(-1).float().clone())
            self.v0_frac: float | torch.Tensor = self.v0_channels
        else:
            self.v0_channels = None
            self.v0_frac = float(v0_frac)
        if bias is not None:
            self.register_buffer("bias", bias.detach().reshape(-1).float().clone())
        else:
            self.bias = None
        self.v: torch.Tensor | None = None
        self.count: torch.Tensor | None = None    # spikes so far, per neuron
        self.out_sum: torch.Tensor | None = None  # Σ_t s(t)·θ, for the conversion error φ(T) of eq. 9
        self.record = False

    def reset(self) -> None:
        self.v = None
        self.count = None
        self.out_sum = None

    @property
    def spikes(self) -> torch.Tensor | None:
        """Total spikes so far, per sample."""
        return None if self.count is None else self.count.flatten(1).sum(1).double()

    @staticmethod
    def _per_channel(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or x.shape[1] != values.numel():
            raise ValueError(f"per-channel values for {values.numel()} channels, input of shape {tuple(x.shape)}")
        return values.to(x.dtype).reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # if_step, in place: this loop runs T times per sample, and for narrow nets the
        # element-wise work rivals the convolutions.
        if self.v is None:
            if self.v0_channels is None:
                self.v = torch.full_like(x, self.v0_frac * float(self.theta))
            else:
                self.v = (self._per_channel(self.v0_channels, x) * self.theta.to(x.dtype)).expand_as(x).clone()
            self.count = torch.zeros_like(x, dtype=torch.int32)
        v = self.v.add_(x)
        if self.bias is not None:
            v.add_(self._per_channel(self.bias, x))
        s = v >= self.theta
        out = s.to(x.dtype).mul_(self.theta)
        v.sub_(out)
        self.count += s
        if self.record:
            self.out_sum = out.clone() if self.out_sum is None else self.out_sum.add_(out)
        return out

    def extra_repr(self) -> str:
        v0 = f"{self.v0_frac}" if self.v0_channels is None else f"per-channel (mean {float(self.v0_channels.mean()):.3g})"
        extra = "" if self.bias is None else f", bias shift per channel (mean {float(self.bias.mean()):+.3g})"
        return f"theta={float(self.theta):.4g}, v0={v0}·θ{extra}"


def convert(model: nn.Module, v0_frac: float | None = None,
            thresholds: dict[str, float] | None = None,
            calibration: dict[str, dict[str, Sequence[float]]] | None = None) -> nn.Module:
    """Copy ``model`` with every QCFS replaced by an IF neuron (θ = λ, v(0) = φ·θ by default).

    ``v0_frac`` overrides v(0)/θ for every layer; ``thresholds`` maps ReLU module names to θ for
    converting a plain ReLU ANN (threshold balancing). ``calibration`` maps QCFS module names to
    per-channel ``{"v0_frac": [...], "bias": [...]}`` (either key optional; see
    :mod:`qcfs2lava.low_latency`, stored in a checkpoint's ``meta["snn_calibration"]["layers"]``); a
    calibrated v(0) takes precedence over ``v0_frac``. The original model is not modified.
    """
    snn = copy.deepcopy(model).eval()
    names = dict(snn.named_modules())
    cal = dict(calibration or {})
    unknown = sorted(set(cal) - {n for n, m in names.items() if isinstance(m, QCFS)})
    if unknown:
        raise ConversionError(f"calibration names layers that are not QCFS layers of the model: {', '.join(unknown)}")
    for name, mod in list(names.items()):
        if isinstance(mod, QCFS):
            c = cal.get(name, {})
            v0: float | torch.Tensor = mod.phi if v0_frac is None else v0_frac
            if c.get("v0_frac") is not None:
                v0 = torch.as_tensor(c["v0_frac"], dtype=torch.float32)
            bias = torch.as_tensor(c["bias"], dtype=torch.float32) if c.get("bias") is not None else None
            new = IFNeuron(float(mod.lam.detach().clamp(min=1e-3)), v0, bias)
        elif isinstance(mod, nn.ReLU) and thresholds is not None:
            if name not in thresholds:
                raise KeyError(f"no threshold given for ReLU '{name}'")
            new = IFNeuron(thresholds[name], 0.0 if v0_frac is None else v0_frac)
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(names[parent_name] if parent_name else snn, child, new)
    return snn


def if_layers(snn: nn.Module) -> list[tuple[str, IFNeuron]]:
    return [(n, m) for n, m in snn.named_modules() if isinstance(m, IFNeuron)]


@dataclass
class SNNResult:
    """``logits[t-1]`` is the mean output over steps 1..t, shape (T, N, classes)."""
    logits: torch.Tensor
    spikes: dict[str, torch.Tensor]        # per layer: spike count per sample over T steps
    neurons: dict[str, int]                # per layer: neurons per sample
    T: int
    step_spikes: dict[str, torch.Tensor] = field(default_factory=dict)   # per layer: (T, N) spikes in step t

    def firing_rates(self) -> dict[str, float]:
        """Mean spikes per neuron per step, per layer."""
        return {k: float(self.spikes[k].mean()) / (self.neurons[k] * self.T) for k in self.spikes}


@torch.no_grad()
def simulate(snn: nn.Module, x: torch.Tensor, T: int, record_steps: bool = False) -> SNNResult:
    """Run ``T`` steps with the constant analog input ``x``; reset state first. ``record_steps`` also
    keeps every layer's spikes per step and sample (``step_spikes``)."""
    layers = if_layers(snn)
    for _, m in layers:
        m.reset()
    total = None
    outs = []
    cumulative: dict[str, list[torch.Tensor]] = {n: [] for n, _ in layers}
    for t in range(1, T + 1):
        y = snn(x)
        total = y.clone() if total is None else total + y
        outs.append(total / t)
        if record_steps:
            for n, m in layers:
                cumulative[n].append(m.spikes.clone())
    neurons = {n: int(m.v[0].numel()) for n, m in layers}
    steps = {n: torch.diff(torch.stack(c), dim=0, prepend=torch.zeros_like(c[0]).unsqueeze(0))
             for n, c in cumulative.items() if c}
    return SNNResult(torch.stack(outs), {n: m.spikes.clone() for n, m in layers}, neurons, T, steps)


@dataclass
class Evaluation:
    T: int
    n: int
    ann_accuracy: float
    snn_accuracy: list[float]                # index t-1: accuracy at t steps
    firing_rates: dict[str, float] = field(default_factory=dict)
    # with keep_outputs: per sample
    logits: torch.Tensor | None = None                  # (T, N, K) mean output after t steps
    ann_logits: torch.Tensor | None = None              # (N, K)
    labels: torch.Tensor | None = None                  # (N,)
    step_spikes: dict[str, torch.Tensor] | None = None  # per layer (T, N): spikes in step t

    def at(self, t: int) -> float:
        return self.snn_accuracy[t - 1]


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], T: int,
             snn: nn.Module | None = None, progress: Callable[[int, float], None] | None = None,
             keep_outputs: bool = False, device: str = "cpu") -> Evaluation:
    """ANN accuracy and SNN accuracy at every t = 1..T over ``batches``; with ``keep_outputs`` also
    every sample's logits at every t, its ANN logits and per-layer spikes per step.

    ``progress(images in this batch, accuracy at T so far)`` is called after every batch. ``device``:
    where the ANN and the SNN compute (``model`` and ``snn`` are moved there; results come back to
    the CPU)."""
    model.eval().to(device)
    snn = (convert(model) if snn is None else snn).to(device)
    correct_ann = 0
    correct_snn = torch.zeros(T, dtype=torch.float64)
    spikes: dict[str, float] = {}
    neurons: dict[str, int] = {}
    n = 0
    kept: dict[str, list] = {"logits": [], "ann": [], "labels": [], "steps": []}
    for x, y in batches:
        x = x.to(device)
        ann = model(x).cpu()
        correct_ann += int((ann.argmax(1) == y).sum())
        r = simulate(snn, x, T, record_steps=keep_outputs)
        r = dataclasses.replace(r, logits=r.logits.cpu(), spikes={k: v.cpu() for k, v in r.spikes.items()},
                                step_spikes={k: v.cpu() for k, v in r.step_spikes.items()})
        correct_snn += (r.logits.argmax(2) == y.view(1, -1)).sum(1).double()
        for k, v in r.spikes.items():
            spikes[k] = spikes.get(k, 0.0) + float(v.sum())
        neurons = r.neurons
        n += len(y)
        if keep_outputs:
            kept["logits"].append(r.logits)
            kept["ann"].append(ann)
            kept["labels"].append(y)
            kept["steps"].append(r.step_spikes)
        if progress is not None:
            progress(len(y), float(correct_snn[-1]) / n)
    rates = {k: spikes[k] / (n * neurons[k] * T) for k in spikes}
    ev = Evaluation(T, n, correct_ann / n, (correct_snn / n).tolist(), rates)
    if keep_outputs and n:
        ev.logits, ev.ann_logits = torch.cat(kept["logits"], 1), torch.cat(kept["ann"])
        ev.labels = torch.cat(kept["labels"])
        ev.step_spikes = {k: torch.cat([s[k] for s in kept["steps"]], 1) for k in kept["steps"][0]}
    return ev


@torch.no_grad()
def layer_errors(model: nn.Module, x: torch.Tensor, T: int, snn: nn.Module | None = None
                 ) -> dict[str, dict[str, float]]:
    """Per layer, the conversion error φ_l(T) − a_l of eq. 9/12 on the batch ``x``.

    ``a_l`` is the ANN's QCFS output and ``φ_l(T) = Σ_t s_l(t)·θ_l / T`` the SNN layer's mean
    output. The error accumulates through the network, as it does in deployment. Returns mean
    signed error, mean absolute error (both in units of θ_l) and the firing rate per layer.
    """
    model.eval()
    snn = convert(model) if snn is None else snn
    acts: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: acts.__setitem__(n, o.detach()))
             for n, m in model.named_modules() if isinstance(m, QCFS)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    layers = if_layers(snn)
    for _, m in layers:
        m.record = True
    try:
        r = simulate(snn, x, T)
    finally:
        for _, m in layers:
            m.record = False
    rates = r.firing_rates()
    out = {}
    for name, m in layers:
        if name not in acts:
            continue
        theta = float(m.theta)
        err = (m.out_sum / T - acts[name]) / theta
        out[name] = dict(mean_error=float(err.mean()), mean_abs_error=float(err.abs().mean()),
                         firing_rate=rates[name], theta=theta)
    return out
