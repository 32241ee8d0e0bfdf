"""A fast, bit-exact ``fixed_pt`` ProcessModel for Lava's ``Conv`` (``lava.proc.conv.process.Conv``).

Why: Lava's stock ``PyConvModelFixed`` computes every step with C_in·C_out/groups separate
``scipy.signal.convolve2d`` calls (``lava/proc/conv/utils.py``, ``conv_scipy``), each at full
resolution even for stride 2. For the CIFAR-10 study net that is ~64k calls per step. This model
does the same arithmetic as one im2col copy and one BLAS matrix product per step.

Same Process, ports, Vars (it subclasses the stock model, so every ``LavaPyType`` is inherited) and
semantics as the stock fixed-point model, step by step:

1. send ``a_buf`` (what was computed last step: the synapse delays by one step; ``a_buf`` starts at 0);
2. receive ``s_in`` (W, H, C_in); with ``num_message_bits == 0`` it is cast to bool (any non-zero → 1);
3. ``a_buf = signed_clamp(int32(conv), 24)``: a true convolution (Lava's weight (C_out, kW, kH, C_in/groups)
   is flipped relative to PyTorch), with stride, padding, dilation and groups in (x, y) order, wrapped
   into 24-bit two's complement exactly as the stock model wraps.

``weight_exp`` is **not** applied, because the stock fixed-point Conv model does not apply it either
(its Var exists but ``run_spk`` never reads it; NetX never sets it for conv layers).

Exactness: the product runs in float32 when every partial sum is bounded by
``max|s_in| · max_k Σ|w_k|`` < 2^24 (always, for binary spikes and 8-bit weights), else in float64;
both represent every partial sum exactly, so the result is the exact integer sum that the stock
model's float64 ``convolve2d`` also produces, followed by the identical cast and wrap. Only beyond
2^53 (unreachable with Loihi's 8-bit weights and 24-bit messages) would either model round.

Use it through ``Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map={Conv: PyConvModelFast})``
(:meth:`netx_export.lava_runtime.runner.LavaNetwork.run_config` does so with ``conv="fast"``).

Imports are absolute and there is no ``@dataclass`` here: Lava's model discovery also executes this
file as a stand-alone module (not in ``sys.modules``), where ``dataclass`` fails under postponed annotations.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from lava.magma.core.decorator import tag
from lava.proc.conv.models import PyConvModelFixed

_FLOAT32_EXACT = 1 << 24        # integers of magnitude below this are exact in float32 (2^53: float64)


class _Plan(NamedTuple):
    """Buffers of one geometry and dtype, built once and reused every step."""
    padded: np.ndarray          # (W + 2px, H + 2py, C_in), zero border, interior rewritten each step
    interior: np.ndarray        # view of padded's interior (W, H, C_in)
    windows: np.ndarray         # read-only strided view of padded: (G, Wo, Ho, kW, kH, C_in/G)
    cols: np.ndarray            # contiguous im2col buffer of windows' shape
    kernel: np.ndarray          # (G, kW·kH·C_in/G, C_out/G): flipped weights, im2col column order
    out_shape: tuple[int, int, int]


def _groups(weight: np.ndarray, in_shape: tuple[int, ...]) -> int:
    """The conv's groups from its shapes, C_in / (C_in per group): Lava's Conv keeps ``groups`` in an
    int8 Var (``PyConvModelFixed``: ``LavaPyType(np.ndarray, np.int8, precision=8)``), so 128 groups
    read back as −128 and 256 as 0; the shapes cannot wrap."""
    cg, c_in = int(np.shape(weight)[3]), int(in_shape[2])
    if cg < 1 or c_in % cg:
        raise ValueError(f"conv: {c_in} input channels do not fit weight {np.shape(weight)}")
    return c_in // cg


def _build_plan(weight: np.ndarray, in_shape: tuple[int, ...], stride: tuple[int, int],
                padding: tuple[int, int], dilation: tuple[int, int], groups: int, dtype: type) -> _Plan:
    """im2col buffers and kernel matrix for ``weight`` (C_out, kW, kH, C_in/groups), Lava's layout."""
    c_out, kx, ky, cg = weight.shape
    w_in, h_in, c_in = in_shape
    if c_in != cg * groups or c_out % groups:
        raise ValueError(f"conv: {c_in} input / {c_out} output channels do not fit weight {weight.shape} "
                         f"with {groups} groups")
    (sx, sy), (px, py), (dx, dy) = stride, padding, dilation
    wo = (w_in + 2 * px - dx * (kx - 1) - 1) // sx + 1
    ho = (h_in + 2 * py - dy * (ky - 1) - 1) // sy + 1
    padded = np.zeros((w_in + 2 * px, h_in + 2 * py, c_in), dtype)
    s_w, s_h, s_c = padded.strides
    shape = (groups, wo, ho, kx, ky, cg)
    windows = np.lib.stride_tricks.as_strided(
        padded, shape=shape, strides=(cg * s_c, sx * s_w, sy * s_h, dx * s_w, dy * s_h, s_c), writeable=False)
    # Lava convolves (scipy.signal.convolve2d): flipping the kernel turns it into the correlation
    # that im2col computes: out[i, j, k] = Σ padded[sx·i + dx·a, sy·j + dy·b, c] · w[k, kW−1−a, kH−1−b, c].
    flipped = weight[:, ::-1, ::-1, :].astype(dtype)
    kernel = np.ascontiguousarray(flipped.reshape(groups, c_out // groups, kx * ky * cg).transpose(0, 2, 1))
    return _Plan(padded, padded[px:px + w_in, py:py + h_in], windows, np.empty(shape, dtype), kernel,
                 (wo, ho, c_out))


@tag("fast")
class PyConvModelFast(PyConvModelFixed):
    """Bit-exact drop-in for ``PyConvModelFixed``: one im2col + BLAS product per step instead of
    C_in·C_out/groups ``convolve2d`` calls (see the module docstring for the exactness argument)."""

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._plans: dict[type, _Plan] = {}
        self._max_abs_fan_in: int | None = None     # max over output channels of Σ|w| (the fan-in bound)

    def _set_var(self) -> None:
        """A ``Var.set`` may change the weights or the geometry: rebuild the cached plans."""
        super()._set_var()
        self._plans.clear()
        self._max_abs_fan_in = None

    def _plan(self, dtype: type, in_shape: tuple[int, ...]) -> _Plan:
        plan = self._plans.get(dtype)
        if plan is None or plan.interior.shape != tuple(in_shape):
            plan = _build_plan(np.asarray(self.weight), tuple(in_shape),
                               tuple(int(v) for v in self.stride), tuple(int(v) for v in self.padding),
                               tuple(int(v) for v in self.dilation), _groups(self.weight, in_shape), dtype)
            self._plans[dtype] = plan
        return plan

    def run_spk(self) -> None:
        self.a_out.send(self.a_buf)
        if self.num_message_bits.item() > 0:
            s_in = self.s_in.recv()
        else:
            s_in = self.s_in.recv().astype(bool)
        self.a_buf = self.clamp_precision(self._conv(s_in))

    def _conv(self, s_in: np.ndarray) -> np.ndarray:
        """The stock model's ``utils.conv(...)`` result (int32, before the 24-bit wrap), exactly."""
        if self._max_abs_fan_in is None:
            w = np.abs(np.asarray(self.weight, dtype=np.int64))
            self._max_abs_fan_in = int(w.reshape(w.shape[0], -1).sum(axis=1).max(initial=0))
        peak = int(s_in.any()) if s_in.dtype == bool else int(np.abs(s_in.astype(np.int64)).max(initial=0))
        bound = peak * self._max_abs_fan_in
        if bound == 0:                                   # no input or all-zero weights: output is 0
            wo, ho, c_out = self._plan(np.float32, s_in.shape).out_shape
            return np.zeros((wo, ho, c_out), self.weight.dtype)
        dtype = np.float32 if bound < _FLOAT32_EXACT else np.float64
        plan = self._plan(dtype, s_in.shape)
        plan.interior[...] = s_in
        np.copyto(plan.cols, plan.windows)
        g, wo, ho = plan.cols.shape[:3]
        out = np.matmul(plan.cols.reshape(g, wo * ho, -1), plan.kernel)     # (G, P, C_out/G)
        if g > 1:
            out = out.transpose(1, 0, 2)
        # Same cast as the stock model (float64 → weight dtype int32); both hold the exact integer sum.
        return out.reshape(plan.out_shape).astype(self.weight.dtype)
