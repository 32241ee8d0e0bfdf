"""Processes: ``IF_SUB`` (integrate-and-fire, reset by subtraction, per-sample reset to v(0)) and
``Recorder`` (a sink that writes what it receives every step into a numpy memmap file).

Their ProcessModels are in :mod:`netx_export.lava.models`. Imports are absolute on purpose: Lava's
model discovery also executes these files as stand-alone modules.
"""
from __future__ import annotations

import typing as ty

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.proc.lif.process import LIF


def _int(x, name: str) -> int:
    """Python int (``Var.get()`` never returns for Vars initialised with numpy int64 scalars)."""
    a = np.asarray(x)
    if a.size != 1 or a.reshape(-1)[0] != int(a.reshape(-1)[0]):
        raise ValueError(f"{name} must be one integer, got {x!r}")
    return int(a.reshape(-1)[0])


class IF_SUB(LIF):  # noqa: N801 (the NetX neuron type's name)
    """Integrate-and-fire neuron with reset by subtraction and per-sample reset to v(0).

    Same Vars, ports and keyword arguments as Lava's ``LIF`` (so NetX blocks can build it), in the
    same units: ``u``, ``v``, ``v_init`` in state units (weight units << 6), ``vth`` and
    ``bias_mant`` in weight units (``bias_exp`` = 6 for NetX files), ``du``/``dv`` in 1/4096.
    Per step (fixed_pt, bit-exact Loihi integer arithmetic; see ``models.py``)::

        u = decay(u, du + 1) + (a_in << 6)            (wraps at 24 bits)
        v = decay(v, dv) + u + (bias_mant << bias_exp) (saturates at ±(2^23 − 1))
        s = v >= vth << 6;   v -= s * (vth << 6)

    Extra parameters:

    v_init : the value v is reset to at every sample start (default: ``v``). ``v`` and ``v_init`` may be
        scalars, full per-neuron arrays, or one value per channel (a (C,) array, the last axis of
        Lava's (x, y, channel) layout; NetX's per-channel vInit), broadcast to ``shape``.
    reset_interval, reset_offset : with ``reset_interval`` = P > 0, at every step t with
        ``t % P == reset_offset % P`` (t counts from 1, as Lava's ``time_step``), *before* the update:
        u = 0, v = v_init, and the next row of ``bias_schedule`` (if any) becomes ``bias_mant``.
        0 (default) never resets. NetX staggers offsets by one step per layer (``Network(reset_interval=P)``).
    flush : if true, the synaptic input that arrives in a reset step is discarded. It was sent in
        the previous sample's last step; discarding it is what a fresh network would see (Lava's
        synapses deliver one step late), so all layers can reset together.
    bias_schedule : optional (n, *shape) integer array: per-sample ``bias_mant`` (host input drive
        injected as bias), loaded at the n first resets; zero afterwards. Also settable before
        compilation with :meth:`set_bias_schedule`.

    Outputs: ``s_out`` (spikes) and ``v_out`` (v after the reset, every step; leave unconnected if
    not needed).
    """

    def __init__(self, *, shape: ty.Tuple[int, ...], u=0, v=0, du=4095, dv=0, bias_mant=0, bias_exp=6,
                 vth=10, v_init=None, reset_interval: int = 0, reset_offset: int = 0, flush: bool = False,
                 bias_schedule: np.ndarray | None = None, name: str | None = None, log_config=None,
                 **kwargs) -> None:
        if np.ndim(v) > 0:
            v = np.broadcast_to(np.asarray(v), shape).astype(np.int64).copy()
        super().__init__(shape=shape, u=u, v=v, du=du, dv=dv, bias_mant=bias_mant, bias_exp=bias_exp,
                         vth=vth, name=name, log_config=log_config, **kwargs)
        interval = _int(reset_interval, "reset_interval")
        if interval < 0:
            raise ValueError("reset_interval must be >= 0")
        self.v_init = Var(shape=shape, init=np.broadcast_to(np.asarray(v if v_init is None else v_init),
                                                            shape).astype(np.int64).copy())
        self.reset_interval = Var(shape=(1,), init=interval)
        self.reset_offset = Var(shape=(1,), init=_int(reset_offset, "reset_offset") % interval if interval else 0)
        self.flush = Var(shape=(1,), init=int(bool(flush)))
        self.bias_schedule = Var(shape=(0,) + tuple(shape), init=0)
        self.v_out = OutPort(shape=shape)
        self.shape = tuple(shape)
        if bias_schedule is not None:
            self.set_bias_schedule(bias_schedule)

    def set_bias_schedule(self, schedule: np.ndarray) -> None:
        """Per-sample ``bias_mant`` rows (n, *shape), Lava order (W, H, C); call before compiling."""
        sched = np.asarray(schedule)
        if tuple(sched.shape[1:]) != tuple(self.shape) or sched.ndim != len(self.shape) + 1:
            raise ValueError(f"bias schedule must have shape (n, {', '.join(map(str, self.shape))}), "
                             f"got {sched.shape}")
        if np.any(sched != np.rint(sched)):
            raise ValueError("bias schedule must be integer-valued")
        self.bias_schedule.shape = tuple(sched.shape)      # plain attribute; read by the compiler
        self.bias_schedule.init = sched.astype(np.int32)


class Recorder(AbstractProcess):
    """Sink: every step t (from 1) writes what ``a_in`` received to row t − 1 of an ``.npy`` file
    (created here, shape (steps, *shape), dtype ``dtype``); steps beyond ``steps`` are dropped.

    The file is opened as a memmap inside the model's process, so the host reads the whole record
    with ``np.load(path, mmap_mode='r')`` instead of Lava's element-by-element ``Var.get()``.
    """

    def __init__(self, *, shape: ty.Tuple[int, ...], path: str, steps: int, dtype: str = "int8",
                 name: str | None = None, log_config=None) -> None:
        steps = _int(steps, "steps")
        super().__init__(shape=shape, path=str(path), steps=steps, dtype=str(np.dtype(dtype)), name=name,
                         log_config=log_config)
        np.lib.format.open_memmap(str(path), mode="w+", dtype=np.dtype(dtype), shape=(steps,) + tuple(shape)).flush()
        self.a_in = InPort(shape=shape)
        self.steps_seen = Var(shape=(1,), init=0)
