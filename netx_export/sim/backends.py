"""The reference simulator's two array backends: numpy (the default, no torch) and PyTorch (CPU or CUDA).

:func:`netx_export.sim.refsim.simulate_drive` runs one loop of integer neuron updates
(:func:`~netx_export.sim.refsim.lif_step`, operators only) over either backend; a backend supplies
array creation, the synapses and the way back to numpy. Both compute the same integers:

* numpy: :func:`netx_export.convert.conv.int_conv2d` / ``int_dense`` (float64 sliding windows,
  checked exact, rounded to int64);
* torch: ``F.conv2d`` / ``F.linear`` on the 0/1 spikes and the integer weights in a float type that
  holds every partial sum exactly — float32 on the CPU where the layer's bound ``max_o Σ|w[o]|`` is
  below 2^24 (a sum of 0/1 times integers never exceeds it, in any order of summation), float64
  otherwise and always on CUDA (whose float32 convolutions may use TF32 or Winograd/FFT algorithms,
  which round) — then rounded; neuron state in int32 where every value provably fits (plain IF_SUB
  layers, whose update the backend fuses into a few in-place passes), else int64. NNPACK (Winograd)
  is switched off around the CPU convolutions for the same reason. The first result of every synapse
  and shape is checked to be integers (|y − round(y)| < 1/4), so a library that rounded would be
  caught rather than trusted.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from netx_export.convert.conv import FLOAT32_EXACT, FLOAT64_EXACT, int_conv2d, int_dense, max_abs_fan_in
from netx_export.convert.fixedpoint import QLayer, QSkip
from netx_export.loihi import UV_MAX

__all__ = ["backend", "NumpyBackend", "TorchBackend", "DEVICES"]

DEVICES = ("cpu", "cuda")


class NumpyBackend:
    """numpy arrays, int64 state; synapses by :mod:`netx_export.convert.conv`."""
    name = "numpy"

    @staticmethod
    def zeros(shape: tuple[int, ...], kind: str) -> np.ndarray:
        return np.zeros(shape, bool if kind == "bool" else np.int64)

    @staticmethod
    def asarray(x: np.ndarray, kind: str = "int") -> np.ndarray:
        return np.array(x, dtype=np.int64)

    @staticmethod
    def synapse(i: int, lay: QLayer, spikes: np.ndarray) -> np.ndarray:
        assert lay.weight is not None
        n = spikes.shape[0]
        if lay.kind == "conv":
            return int_conv2d(spikes, lay.weight, lay.stride, lay.padding, lay.dilation, lay.groups)
        return int_dense(spikes.reshape(n, -1), lay.weight).reshape((n,) + tuple(lay.shape))

    @staticmethod
    def skip(i: int, k: int, sk: QSkip, spikes: np.ndarray) -> np.ndarray:
        return int_conv2d(spikes, sk.weight, sk.stride, sk.padding, sk.dilation, sk.groups)

    @staticmethod
    def stack(xs: list) -> np.ndarray:
        return np.stack(xs)

    @staticmethod
    def count(s: np.ndarray) -> np.ndarray:
        """Spikes per sample: (N, ...) bool → (N,) int64."""
        return s.reshape(s.shape[0], -1).sum(1)

    @staticmethod
    def numpy(x: Any) -> np.ndarray:
        return np.asarray(x)


class TorchBackend:
    """torch tensors on ``device``, int64 state; synapses by PyTorch convolutions on exact integers."""
    name = "torch"

    def __init__(self, device: str):
        import torch
        from torch.nn import functional as F
        if device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' asked for, but torch sees no CUDA device here")
        self.torch, self.F, self.device = torch, F, torch.device(device)
        self._weights: dict[tuple[int, int], Any] = {}     # (layer, skip or −1) → float weight tensor
        self._checked: set[tuple[str, tuple[int, ...]]] = set()

    # ------------------------------------------------------------------ arrays
    def _dtype(self, kind: str) -> Any:
        return {"bool": self.torch.bool, "int": self.torch.int64, "state": self.torch.int32}[kind]

    def zeros(self, shape: tuple[int, ...], kind: str) -> Any:
        return self.torch.zeros(shape, dtype=self._dtype(kind), device=self.device)

    def asarray(self, x: np.ndarray, kind: str = "int") -> Any:
        """``kind`` "int": int64; "state": int32, for the layers whose every value the simulator has
        proved to fit (``refsim._narrow``): half the memory traffic of the neuron update."""
        return self.torch.as_tensor(np.ascontiguousarray(x, dtype=np.int64), device=self.device).to(
            self._dtype(kind)).clone()

    def stack(self, xs: list) -> Any:
        return self.torch.stack(xs)

    def count(self, s: Any) -> Any:
        return s.reshape(s.shape[0], -1).sum(1, dtype=self.torch.int32).to(self.torch.int64)

    def if_sub_step(self, v: Any, a: Any, bias64: Any, th: int) -> tuple[Any, Any, int]:
        """:func:`~netx_export.sim.refsim.lif_step` of an IF_SUB neuron without decay arithmetic
        (iDecay 4096: u = a·64; vDecay 0), in place on ``v`` and fused into few passes: v += 64·a +
        bias·64, clip to ±(2^23 − 1) (counted), s = v ≥ θ·64, v −= s·θ·64. Integer additions in another
        order: the same integers. Returns (v, s, saturations)."""
        if not isinstance(a, int):
            v.add_(a, alpha=1 << 6)
        v.add_(bias64)
        lo, hi = self.torch.aminmax(v)
        sat = 0
        if int(hi) > UV_MAX - 1 or int(lo) < -(UV_MAX - 1):
            raw = v.clone()
            v.clamp_(-(UV_MAX - 1), UV_MAX - 1)
            sat = int((v != raw).sum())
        s = v >= th
        v.sub_(s.to(v.dtype).mul_(th))
        return v, s, sat

    @staticmethod
    def numpy(x: Any) -> np.ndarray:
        return x.cpu().numpy()

    # ------------------------------------------------------------------ synapses
    def _weight(self, key: tuple[int, int], w: np.ndarray) -> Any:
        t = self._weights.get(key)
        if t is None:
            bound = max_abs_fan_in(w)
            if bound >= FLOAT64_EXACT:
                raise ValueError(f"layer {key[0]}: weights too large for an exact float64 convolution")
            dtype = self.torch.float32 if (self.device.type == "cpu" and bound < FLOAT32_EXACT) else self.torch.float64
            t = self.torch.as_tensor(np.asarray(w, dtype=np.float64), device=self.device).to(dtype)
            self._weights[key] = t
        return t

    def _exact(self, y: Any, where: str) -> Any:
        """Rounded to integers: int32 from float32 (|y| < 2^24 by the layer's bound), else int64. The
        first result of each synapse and shape is checked to be integers (a library algorithm that
        rounds, Winograd or FFT, would show on every call, so once per geometry catches it)."""
        r = self.torch.round(y)
        key = (where, tuple(y.shape))
        if key not in self._checked:
            if y.numel() and float((y - r).abs().max()) >= 0.25:
                raise ArithmeticError(f"{where}: the convolution did not return integers; refusing an inexact result")
            self._checked.add(key)
        return r.to(self.torch.int32 if y.dtype == self.torch.float32 else self.torch.int64)

    def _conv(self, x: Any, w: Any, stride, padding, dilation, groups: int, where: str) -> Any:
        with self.torch.backends.nnpack.flags(enabled=False):
            y = self.F.conv2d(x.to(w.dtype), w, None, tuple(stride), tuple(padding), tuple(dilation), int(groups))
        return self._exact(y, where)

    def synapse(self, i: int, lay: QLayer, spikes: Any) -> Any:
        assert lay.weight is not None
        n = spikes.shape[0]
        if lay.kind == "conv":
            w = self._weight((i, -1), lay.weight)
            return self._conv(spikes, w, lay.stride, lay.padding, lay.dilation, lay.groups, f"layer {i}")
        w = self._weight((i, -1), lay.weight)
        y = self.F.linear(spikes.reshape(n, -1).to(w.dtype), w)
        return self._exact(y, f"layer {i}").reshape((n,) + tuple(lay.shape))

    def skip(self, i: int, k: int, sk: QSkip, spikes: Any) -> Any:
        w = self._weight((i, k), sk.weight)
        return self._conv(spikes, w, sk.stride, sk.padding, sk.dilation, sk.groups, f"layer {i} shortcut {k}")


def backend(device: str | None) -> Any:
    """numpy for ``device`` None, else PyTorch on ``device`` ("cpu" or "cuda")."""
    return NumpyBackend if device is None else TorchBackend(device)
