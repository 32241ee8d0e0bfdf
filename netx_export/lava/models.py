"""ProcessModels of :class:`IF_SUB` (``fixed_pt`` bit-accurate, ``floating_pt``) and :class:`Recorder`.

Imports are absolute: Lava's model discovery also executes this file as a stand-alone module.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import AbstractPyLifModelFixed, AbstractPyLifModelFloat

from netx_export.lava.process import IF_SUB, Recorder


class _ResetMixin:
    """Per-sample reset and the step shared by both IF_SUB models (see :class:`IF_SUB`)."""

    def _prepare(self) -> None:
        """Hook before each step's dynamics (the fixed-point model scales bias and threshold)."""

    def run_spk(self):
        a = self._sample_start(self.a_in.recv())
        self._prepare()
        self.subthr_dynamics(activation_in=a)
        s = self.spiking_activation()
        self.reset_voltage(spike_vector=s)
        self.s_out.send(s)
        self.v_out.send(self.v)

    def _sample_start(self, a: np.ndarray) -> np.ndarray:
        if self.reset_interval > 0 and self.time_step % self.reset_interval == self.reset_offset:
            self.u[:] = 0
            self.v[:] = self.v_init
            k = self.samples_started
            if self.bias_schedule.shape[0]:
                self.bias_mant[:] = self.bias_schedule[k] if k < self.bias_schedule.shape[0] else 0
            self.samples_started = k + 1
            if self.flush:
                a = np.zeros_like(a)
        return a


@implements(proc=IF_SUB, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyIfSubModelFixed(_ResetMixin, AbstractPyLifModelFixed):
    """Loihi's integer LIF update (``PyLifModelBitAcc``) with ``v >= vth<<6`` and ``v -= vth<<6``."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)
    v_init: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    reset_interval: int = LavaPyType(int, np.int32, precision=24)
    reset_offset: int = LavaPyType(int, np.int32, precision=24)
    flush: int = LavaPyType(int, np.int32, precision=1)
    bias_schedule: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.effective_vth = 0
        self.samples_started = 0

    def scale_threshold(self):
        self.effective_vth = np.left_shift(self.vth, self.vth_shift)
        self.isthrscaled = True

    def subthr_dynamics(self, activation_in: np.ndarray):
        """Lava's bit-accurate update (``AbstractPyLifModelFixed.subthr_dynamics``), with the decays every
        IF_SUB file uses done without their arithmetic: du + 1 = 4096 clears u (u = this step's input),
        dv = 0 keeps v. The same dtypes, the same 24-bit wrap of u and clip of v, so the same integers;
        any other decay runs Lava's own code. (About half the neuron's time per step, benchmarks/lava_floor.py.)"""
        if self.du + self.ds_offset != self.decay_unity or self.dv + self.dm_offset != 0:
            return super().subthr_dynamics(activation_in)
        m = self.max_uv_val
        curr = np.zeros(np.shape(self.u), np.int32)
        curr += np.left_shift(activation_in, self.act_shift)
        wrapped = np.where(curr > m, curr - 2 * m, curr)
        self.u[:] = np.where(wrapped <= -m, curr + 2 * m, wrapped)
        volt = np.int32(self.v) + self.u + self.effective_bias
        self.v[:] = np.clip(volt, -np.int32(m) + 1, np.int32(m) - 1)

    def spiking_activation(self):
        return self.v >= self.effective_vth

    def reset_voltage(self, spike_vector: np.ndarray):
        self.v[spike_vector] -= self.effective_vth

    def _prepare(self) -> None:
        self.scale_bias()
        if not self.isthrscaled:
            self.scale_threshold()


@implements(proc=IF_SUB, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyIfSubModelFloat(_ResetMixin, AbstractPyLifModelFloat):
    """The same neuron in real arithmetic, same parameters and units as ``fixed_pt`` (state units =
    weight units·64, decays in 1/4096): no floor in the decays, no 24-bit wrap or saturation::

        u = u·(1 − (du+1)/4096) + 64·a;   v = v·(1 − dv/4096) + u + bias_mant·2^bias_exp
        s = v >= 64·vth;   v -= 64·vth

    With integer inputs and NetX's IF setting (du = 4095, dv = 0) every value is an integer below
    2^53, so it equals ``fixed_pt`` exactly unless the fixed model saturates or wraps. Given real
    weights and drive, it is the float SNN (scaled by σ)."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    vth: float = LavaPyType(float, float)
    v_init: np.ndarray = LavaPyType(np.ndarray, float)
    reset_interval: int = LavaPyType(int, int)
    reset_offset: int = LavaPyType(int, int)
    flush: int = LavaPyType(int, int)
    bias_schedule: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.samples_started = 0

    def subthr_dynamics(self, activation_in: np.ndarray):
        self.u[:] = self.u * (1.0 - (self.du + 1) / 4096.0) + 64.0 * activation_in
        self.v[:] = self.v * (1.0 - self.dv / 4096.0) + self.u + self.bias_mant * np.exp2(self.bias_exp)

    def spiking_activation(self):
        return self.v >= 64.0 * self.vth

    def reset_voltage(self, spike_vector: np.ndarray):
        self.v[spike_vector] -= 64.0 * self.vth



@implements(proc=Recorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "floating_pt")
class PyRecorderModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    steps_seen: int = LavaPyType(int, np.int32)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._mm = None

    def run_spk(self):
        data = self.a_in.recv()
        if self._mm is None:
            self._mm = np.load(self.proc_params["path"], mmap_mode="r+")
        t = self.time_step - 1
        if t < self._mm.shape[0]:
            self._mm[t] = data
        self.steps_seen = self.time_step
