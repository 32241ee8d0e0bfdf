"""From a converted QCFS model to a flat, typed layer list (the first stage of the exporter).

The model's leaf-module chain (:func:`netx_export.convert.chain.leaf_chain`) is read module by module;
one handler per module type updates the tracer state (:class:`_TraceState`):

* Conv2d / Linear open a synaptic layer (:class:`_Pending`), folding in the pool(s) and flatten
  seen since the last neuron (:mod:`netx_export.convert.folds`);
* BatchNorm is folded into the conv/linear before it (eval-mode running statistics);
* Dropout and Identity are dropped (they are identities at inference);
* AvgPool / AdaptiveAvgPool become a pending box filter (:class:`_PendingPool`), folded into the
  *following* conv or, after a flatten, into the following dense layer;
* each QCFS becomes the neuron of the synaptic layer before it: θ = λ, v(0) = φ·θ (Theorem 2);
* a residual add before a QCFS becomes a :class:`~netx_export.convert.ir.Skip` of that layer: the
  shorter branch — identity, or 1x1 conv + BN — is a second synapse from the neuron layer at the fork
  into the same neurons (format extension, docs/residual.md);
* the last synaptic layer has no neuron: it produces the logits.

Everything else (MaxPool, ReLU or other activations, concatenations, unknown modules) is refused
with a :class:`~netx_export.errors.ExportError` naming the first such module. Each fold is checked
numerically against the PyTorch modules it replaces (:func:`~netx_export.convert.folds.fold_error`),
and :func:`~netx_export.convert.graph.check_graph` compares the whole graph's ANN forward with the
model's.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from torch import nn

from qcfs2lava.qcfs import QCFS

from netx_export.convert.chain import Shortcut, leaf_chain
from netx_export.convert.conv import conv_output_shape
from netx_export.convert.folds import (INFERENCE_IDENTITIES, as_float64, box_kernel, compose_prefilter_conv,
                                       compose_prefilter_dense, fold_batchnorm_module, fold_error)
from netx_export.convert.ir import Conv, Dense, Flatten, Graph, Layer, Neuron, Pair, Shape, Skip, shape_in
from netx_export.errors import ExportError

__all__ = ["trace"]


# --------------------------------------------------------------------------- tracer state
@dataclass
class _Pending:
    """A synaptic layer being assembled: the torch modules it replaces and its folded parameters."""
    kind: str
    names: list[str]
    modules: list[nn.Module | str]
    weight: np.ndarray
    bias: np.ndarray
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    in_shape: Shape = (0, 0, 0)
    out_shape: Shape = (0, 0, 0)
    bn_done: bool = False
    skips: list[Skip] = field(default_factory=list)
    skip_bias: np.ndarray | float = 0.0


@dataclass
class _PendingPool:
    """AvgPool(s) not yet folded into the next conv/dense: one composed box filter."""
    kernel: np.ndarray              # (kH, kW)
    stride: Pair
    in_shape: Shape                 # the un-pooled map
    names: list[str]
    modules: list[nn.Module]


@dataclass
class _PendingFlatten:
    """A flatten whose dense layer has not come yet."""
    name: str
    in_shape: Shape


@dataclass
class _TraceState:
    shape: Shape                    # output shape of everything read so far
    check: bool
    tol: float
    layers: list[Layer] = field(default_factory=list)
    synapse: _Pending | None = None             # synaptic layer waiting for BN / its neuron
    pool: _PendingPool | None = None
    flatten: _PendingFlatten | None = None
    L_phi: set[tuple[int, float]] = field(default_factory=set)
    checks: list[tuple[str, float]] = field(default_factory=list)
    neuron_at: dict[str, int] = field(default_factory=dict)   # QCFS name -> index of its layer (shortcut sources)


# --------------------------------------------------------------------------- helpers
def _pair(v) -> Pair:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _numel(shape: Shape) -> int:
    return shape[0] * shape[1] * shape[2]


def _weight_bias(mod: nn.Conv2d | nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    w = as_float64(mod.weight)
    return w, as_float64(mod.bias) if mod.bias is not None else np.zeros(w.shape[0])


def _check_fold(st: _TraceState, modules: Sequence[nn.Module | str], layer: Conv | Dense, in_shape: Shape,
                what: str, hint: str = "") -> None:
    """Record the fold error of ``layer`` against ``modules``; raise above the tolerance."""
    err = fold_error(modules, layer, in_shape)
    st.checks.append((layer.name, err))
    if err > st.tol:
        raise ExportError(f"folding {what} changed its output (relative error {err:.2e}){hint}")


def _close(st: _TraceState, neuron: Neuron | None) -> None:
    """Turn the pending synapse into a layer with ``neuron`` (None: the logits)."""
    pend = st.synapse
    assert pend is not None
    if pend.kind == "conv":
        lay: Conv | Dense = Conv("+".join(pend.names), pend.weight, pend.bias, pend.stride, pend.padding,
                                 pend.dilation, pend.groups, pend.in_shape, pend.out_shape, neuron, tuple(pend.skips))
    else:
        lay = Dense("+".join(pend.names), pend.weight, pend.bias, (pend.weight.shape[1], 1, 1), pend.out_shape,
                    neuron)
    if st.check:
        # The skips' folded shifts are in the layer's bias: check the main path without them.
        own = dataclasses.replace(lay, bias=pend.bias - pend.skip_bias) if pend.skips else lay
        _check_fold(st, pend.modules, own, pend.in_shape, lay.name,
                    "; this layer combination cannot be exported exactly")
    st.layers.append(lay)
    st.synapse = None


def _require_no_synapse(st: _TraceState, label: str) -> None:
    if st.synapse is not None:
        raise ExportError(f"module {label} follows '{st.synapse.names[0]}' with no QCFS activation in "
                          "between; only the last layer may have no neuron")


# --------------------------------------------------------------------------- synaptic layers
def _fold_pool_into_conv(pool: _PendingPool, w: np.ndarray, stride: Pair, padding: Pair, dilation: Pair,
                         label: str) -> tuple[np.ndarray, Pair, Pair, Pair]:
    """(weight, stride, padding, dilation) of "pending pool, then this conv" as one conv."""
    if padding != (0, 0):
        for d in (0, 1):
            # Pool windows must tile the map (no leftover rows, no overlap) for the
            # conv's zero padding to land on padding in the composed conv.
            if pool.kernel.shape[d] > pool.stride[d] or (pool.in_shape[1 + d] - pool.kernel.shape[d]) % pool.stride[d]:
                raise ExportError(f"AvgPool {pool.names[0]!r} before padded conv {label} does not tile its "
                                  f"{pool.in_shape[1:]} input; the fold would not be exact")
    w, stride, padding = compose_prefilter_conv(pool.kernel, pool.stride, w, stride, padding, dilation)
    return w, stride, padding, (1, 1)


def _on_conv(st: _TraceState, name: str, mod: nn.Conv2d, label: str) -> None:
    _require_no_synapse(st, label)
    if st.flatten is not None:
        raise ExportError(f"module {label} is a conv after a flatten; NetX cannot represent it")
    if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
        raise ExportError(f"module {label} uses padding '{mod.padding}'/{mod.padding_mode}; "
                          "only numeric zero padding can be exported")
    w, b = _weight_bias(mod)
    stride, padding, dilation = _pair(mod.stride), _pair(mod.padding), _pair(mod.dilation)
    in_shape, names, mods = st.shape, [], []
    if st.pool is not None:
        w, stride, padding, dilation = _fold_pool_into_conv(st.pool, w, stride, padding, dilation, label)
        in_shape, mods, names = st.pool.in_shape, list(st.pool.modules), list(st.pool.names)
        st.pool = None
    if mod.groups > 1 and in_shape[0] % mod.groups:
        raise ExportError(f"module {label}: groups do not divide the channels")
    if in_shape[0] != mod.in_channels:
        raise ExportError(f"module {label} expects {mod.in_channels} channels, gets {in_shape[0]}")
    out_shape = conv_output_shape(in_shape, w.shape[0], w.shape[2:], stride, padding, dilation)
    expect = conv_output_shape(st.shape, mod.out_channels, _pair(mod.kernel_size), _pair(mod.stride),
                               _pair(mod.padding), _pair(mod.dilation))
    if out_shape != expect or min(out_shape) < 1:
        raise ExportError(f"folding the AvgPool before {label} gives output {out_shape}, "
                          f"not {expect}; cannot be exported exactly")
    st.synapse = _Pending("conv", names + [name], mods + [mod], w, b, stride, padding, dilation,
                          int(mod.groups), in_shape, out_shape)
    st.shape = out_shape


def _on_linear(st: _TraceState, name: str, mod: nn.Linear, label: str) -> None:
    _require_no_synapse(st, label)
    flat = st.flatten
    if flat is None and (st.shape[1], st.shape[2]) != (1, 1):
        raise ExportError(f"module {label} is a Linear on a {st.shape} map without a Flatten before it")
    if _numel(st.shape) != mod.in_features:
        raise ExportError(f"module {label} expects {mod.in_features} inputs, gets {_numel(st.shape)}")
    w, b = _weight_bias(mod)
    in_shape = flat.in_shape if flat is not None else st.shape
    mods: list[nn.Module | str] = []
    names: list[str] = []
    if st.pool is not None:
        pool = st.pool
        w = compose_prefilter_dense(pool.kernel, pool.stride, w, pool.in_shape, in_shape)
        in_shape, mods, names = pool.in_shape, list(pool.modules), list(pool.names)
        st.pool = None
    if flat is not None:
        st.layers.append(Flatten(flat.name, in_shape, (_numel(in_shape), 1, 1)))
        mods, names = mods + ["flatten"], names + [flat.name]
        st.flatten = None
    st.synapse = _Pending("dense", names + [name], mods + [mod], w, b, in_shape=in_shape,
                          out_shape=(w.shape[0], 1, 1))
    st.shape = (w.shape[0], 1, 1)


def _on_batchnorm(st: _TraceState, name: str, mod: nn.BatchNorm1d | nn.BatchNorm2d, label: str) -> None:
    pend = st.synapse
    if pend is not None and pend.skips:
        raise ExportError(f"module {label} comes after a residual add; fold it into both branches "
                          "(BatchNorm before the add) to export")
    if pend is None or pend.bn_done or len(pend.modules) and isinstance(pend.modules[-1], INFERENCE_IDENTITIES):
        raise ExportError(f"module {label} does not directly follow a conv/linear layer; "
                          "only BatchNorm right after a conv or linear can be folded")
    if mod.running_mean is None:
        raise ExportError(f"module {label} has no running statistics; cannot be folded")
    pend.weight, pend.bias = fold_batchnorm_module(pend.weight, pend.bias, mod)
    pend.names.append(name)
    pend.modules.append(mod)
    pend.bn_done = True


# --------------------------------------------------------------------------- residual shortcuts
def _shortcut_synapse(sc: Shortcut, src_shape: Shape, where: str
                      ) -> tuple[np.ndarray, np.ndarray, tuple[Pair, Pair, Pair, int], bool]:
    """(weight, folded bias, (stride, padding, dilation, groups), has a conv) of a shortcut branch:
    a depthwise 1x1 conv of ones for an identity, else its conv with the BatchNorm folded in."""
    convs = [m for m in sc.modules if isinstance(m, nn.Conv2d)]
    bns = [m for m in sc.modules if isinstance(m, nn.BatchNorm2d)]
    core = [m for m in sc.modules if not isinstance(m, INFERENCE_IDENTITIES)]
    if not convs:
        if bns:
            raise ExportError(f"{where}: a BatchNorm without a conv on the shortcut cannot be folded")
        c = src_shape[0]
        return np.ones((c, 1, 1, 1)), np.zeros(c), ((1, 1), (0, 0), (1, 1), c), False
    if core[0] is not convs[0] or len(convs) > 1 or len(bns) > 1 or (bns and core[1] is not bns[0]):
        raise ExportError(f"{where}: a shortcut must be identity or one conv (+ one BatchNorm)")
    cv = convs[0]
    if cv.padding_mode != "zeros" or isinstance(cv.padding, str):
        raise ExportError(f"{where}: shortcut conv padding must be numeric zero padding")
    w, b = _weight_bias(cv)
    if bns:
        if bns[0].running_mean is None:
            raise ExportError(f"{where}: shortcut BatchNorm has no running statistics")
        w, b = fold_batchnorm_module(w, b, bns[0])
    if cv.in_channels != src_shape[0]:
        raise ExportError(f"{where}: shortcut conv expects {cv.in_channels} channels, gets {src_shape[0]}")
    return w, b, (_pair(cv.stride), _pair(cv.padding), _pair(cv.dilation), int(cv.groups)), True


def _on_shortcut(st: _TraceState, name: str, sc: Shortcut, label: str) -> None:
    pend = st.synapse
    if pend is None:
        raise ExportError(f"residual add '{name}' does not follow a conv branch")
    where = f"residual add '{sc.add}'"
    if pend.kind != "conv" or st.pool is not None or st.flatten is not None:
        raise ExportError(f"{where} must directly follow a conv (+ BatchNorm) branch")
    src = st.neuron_at[sc.fork]
    src_shape = st.layers[src].out_shape
    w, b, geo, has_conv = _shortcut_synapse(sc, src_shape, where)
    out = conv_output_shape(src_shape, w.shape[0], w.shape[2:], *geo[:3])
    if out != pend.out_shape:
        raise ExportError(f"{where}: the shortcut gives {out}, the conv branch {pend.out_shape}; they must "
                          "match to be added")
    sk = Skip("+".join(sc.names) or f"identity:{sc.fork}", src, w, *geo, src_shape)
    if st.check and has_conv:
        _check_fold(st, sc.modules, Conv(sk.name, w, b, *geo, src_shape, out, None), src_shape,
                    f"shortcut {sk.name}")
    pend.skips.append(sk)
    pend.bias = pend.bias + b
    pend.skip_bias = pend.skip_bias + b
    pend.names.append(sc.add)


# --------------------------------------------------------------------------- neurons, pools, flatten
def _on_qcfs(st: _TraceState, name: str, mod: QCFS, label: str) -> None:
    if st.synapse is None:
        raise ExportError(f"module {label} does not follow a conv/linear layer; a neuron needs a synapse")
    st.L_phi.add((int(mod.L), float(mod.phi)))
    st.synapse.modules.append(mod)
    st.synapse.names.append(name)
    _close(st, Neuron(float(mod.lam.detach().clamp(min=1e-3)), float(mod.phi)))
    st.neuron_at[name] = len(st.layers) - 1


def _pool_window(mod: nn.AvgPool2d | nn.AdaptiveAvgPool2d, shape: Shape, label: str) -> tuple[Pair, Pair]:
    """(kernel, stride) of an average pool on a ``shape`` map."""
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        osz = _pair(mod.output_size)
        osz = tuple(shape[1 + d] if osz[d] is None else osz[d] for d in (0, 1))
        if shape[1] % osz[0] or shape[2] % osz[1]:
            raise ExportError(f"module {label}: output size {osz} does not divide the {shape[1:]} map")
        k = (shape[1] // osz[0], shape[2] // osz[1])
        return k, k
    if mod.ceil_mode or _pair(mod.padding) != (0, 0) or mod.divisor_override:
        raise ExportError(f"module {label} uses padding/ceil_mode/divisor_override; "
                          "only plain average pooling can be folded")
    return _pair(mod.kernel_size), _pair(mod.stride if mod.stride is not None else mod.kernel_size)


def _on_avgpool(st: _TraceState, name: str, mod: nn.AvgPool2d | nn.AdaptiveAvgPool2d, label: str) -> None:
    if st.synapse is not None:
        raise ExportError(f"module {label} follows '{st.synapse.names[-1]}' before its QCFS activation; "
                          "only pooling after a spiking layer can be folded")
    if st.flatten is not None:
        raise ExportError(f"module {label} comes after a flatten")
    k, s = _pool_window(mod, st.shape, label)
    pooled = conv_output_shape(st.shape, st.shape[0], k, s, (0, 0), (1, 1))
    if min(pooled) < 1:
        raise ExportError(f"module {label}: window {k} larger than the {st.shape[1:]} map")
    if st.pool is None:
        st.pool = _PendingPool(box_kernel(k), s, st.shape, [name], [mod])
    else:   # pool of a pool: compose the two filters into one
        p = st.pool
        kk, ss, _ = compose_prefilter_conv(p.kernel, p.stride, box_kernel(k)[None, None], s, (0, 0), (1, 1))
        st.pool = _PendingPool(kk[0, 0], ss, p.in_shape, p.names + [name], p.modules + [mod])
    st.shape = pooled


def _on_flatten(st: _TraceState, name: str, mod: nn.Flatten | str, label: str) -> None:
    if isinstance(mod, nn.Flatten) and (mod.start_dim != 1 or mod.end_dim != -1):
        raise ExportError(f"module {label} must flatten dims 1..-1")
    if st.synapse is not None:
        raise ExportError(f"module {label} follows '{st.synapse.names[-1]}' before its QCFS activation")
    st.flatten = _PendingFlatten(name, st.shape)
    st.shape = (_numel(st.shape), 1, 1)


def _on_identity(st: _TraceState, name: str, mod: nn.Module, label: str) -> None:
    if st.synapse is not None:
        st.synapse.modules.append(mod)
    elif st.pool is not None:
        st.pool.modules.append(mod)


# --------------------------------------------------------------------------- refusals and dispatch
def _refuse_maxpool(st: _TraceState, name: str, mod: nn.Module, label: str) -> None:
    raise ExportError(f"module {label} is a max-pool; NetX cannot represent it and spikes cannot "
                      "max-pool exactly: train with QCFS (prepare_ann turns MaxPool into AvgPool)")


def _refuse_relu(st: _TraceState, name: str, mod: nn.Module, label: str) -> None:
    raise ExportError(f"module {label} is ReLU, not QCFS; only QCFS networks convert without "
                      "threshold balancing (train with --activation qcfs)")


def _refuse_unsupported(st: _TraceState, name: str, mod: nn.Module, label: str) -> None:
    raise ExportError(f"module {label} is not supported by the NetX exporter "
                      "(supported: Conv2d, Linear, BatchNorm, QCFS, AvgPool2d, Flatten, Dropout)")


_Handler = Callable[[_TraceState, str, object, str], None]
# First match wins; a functional flatten is the chain item "flatten" (a str).
_HANDLERS: tuple[tuple[type | tuple[type, ...], _Handler], ...] = (
    (Shortcut, _on_shortcut),
    (INFERENCE_IDENTITIES, _on_identity),
    (nn.Conv2d, _on_conv),
    (nn.Linear, _on_linear),
    ((nn.BatchNorm2d, nn.BatchNorm1d), _on_batchnorm),
    (QCFS, _on_qcfs),
    ((nn.AvgPool2d, nn.AdaptiveAvgPool2d), _on_avgpool),
    ((nn.Flatten, str), _on_flatten),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d), _refuse_maxpool),
    (nn.ReLU, _refuse_relu),
)


def _handler(mod: object) -> _Handler:
    return next((h for types, h in _HANDLERS if isinstance(mod, types)), _refuse_unsupported)


def _finish(st: _TraceState, input_shape: Sequence[int]) -> Graph:
    """The graph once every module is read: nothing may be left pending but the logits layer."""
    if st.pool is not None:
        raise ExportError(f"AvgPool {st.pool.names[0]!r} is not followed by a conv or linear layer to fold into")
    if st.flatten is not None:
        raise ExportError(f"flatten {st.flatten.name!r} is not followed by a linear layer")
    if st.synapse is None:
        raise ExportError("the model must end with a conv or linear layer without activation (the logits)")
    _close(st, None)
    if len(st.L_phi) != 1:
        raise ExportError(f"all QCFS layers must share one L and φ, found {sorted(st.L_phi) or 'none'}")
    L, phi = st.L_phi.pop()
    return Graph(shape_in(input_shape), tuple(st.layers), L, phi, tuple(st.checks))


def trace(model: nn.Module, input_shape: Sequence[int], *, check: bool = True, tol: float = 1e-9) -> Graph:
    """Flatten a converted (QCFS) model into a :class:`~netx_export.convert.ir.Graph`; see the module
    docstring for the rules.

    ``input_shape`` is (C, H, W). With ``check``, every folded layer is compared with the PyTorch
    modules it replaces on random float64 inputs; a relative error above ``tol`` raises ExportError.
    """
    model = model.eval()
    shape: Shape = tuple(int(s) for s in input_shape)  # type: ignore[assignment]
    if len(shape) != 3:
        raise ExportError(f"input shape must be (C, H, W), got {tuple(input_shape)}")
    st = _TraceState(shape, check, tol)
    for name, mod in leaf_chain(model):
        label = f"'{name}' ({type(mod).__name__ if not isinstance(mod, str) else 'flatten'})"
        _handler(mod)(st, name, mod, label)
    return _finish(st, input_shape)
