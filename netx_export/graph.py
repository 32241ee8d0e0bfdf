"""From a converted QCFS model to a flat, typed layer list (the first stage of the exporter).

NetX wires layers strictly in sequence and knows only ``conv``, ``flatten`` and ``dense`` (plus
``input``), each synaptic layer owning one neuron population. So the PyTorch model is traced
(``torch.fx``, QCFS kept as a leaf) into a chain of leaf modules, and:

* a residual add ``f(x) + g(x)`` before a QCFS becomes a :class:`Skip` of that layer: the longer
  branch (more layers) stays the chain, the shorter one — identity, or 1x1 conv + BN — becomes a
  second synapse from the neuron layer at the fork into the same neurons (format extension,
  docs/residual.md);

* BatchNorm is folded into the conv/linear before it (eval-mode running statistics);
* Dropout and Identity are dropped (they are identities at inference);
* every AvgPool is folded into the *following* conv (pool then conv is one strided conv with a
  larger kernel) or, after a flatten, into the following dense layer: NetX has no pooling layer,
  and folding is exact, while a separate depthwise "pool" layer would add neurons that re-quantise;
* each QCFS becomes the neuron of the synaptic layer before it: θ = λ, v(0) = φ·θ;
* the last synaptic layer has no neuron: it produces the logits.

Everything else (MaxPool, ReLU or other activations, concatenations, unknown modules) is refused
with a :class:`~netx_export.errors.ExportError` naming the module. Each fold is checked numerically
against the PyTorch modules it replaces (:func:`fold_error`), and :func:`check_graph` compares the
whole graph's ANN forward with the model's.

Weights here are float64 numpy arrays in PyTorch layout: conv ``[C_out, C_in/groups, kH, kW]``,
dense ``[N_out, N_in]`` with N_in in PyTorch's (C, H, W) flatten order. Shapes are (C, H, W).
"""
from __future__ import annotations

import copy
import dataclasses
import operator
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from qcfs2lava.qcfs import QCFS

from .conv import conv_output_shape
from .errors import ExportError

__all__ = ["Neuron", "Skip", "Conv", "Dense", "Flatten", "Layer", "Graph", "trace", "skip_forward", "calibrate_graph", "fold_batchnorm",
           "box_kernel", "compose_prefilter_conv", "compose_prefilter_dense", "fold_error",
           "graph_forward", "layer_forward", "check_graph", "conv_output_shape"]

Shape = tuple[int, int, int]
Pair = tuple[int, int]


# --------------------------------------------------------------------------- the IR
@dataclass(frozen=True)
class Neuron:
    """Integrate-and-fire neuron with reset by subtraction: fires when v ≥ θ, v(0) = v0_frac·θ.

    ``v0_frac`` is one float for the layer (φ), or a float64 array with one value per output
    channel (per neuron for dense layers) after low-T calibration (:func:`calibrate_graph`)."""
    theta: float
    v0_frac: float | np.ndarray

    @property
    def per_channel(self) -> bool:
        return isinstance(self.v0_frac, np.ndarray)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Neuron):
            return NotImplemented
        return self.theta == other.theta and np.array_equal(np.asarray(self.v0_frac), np.asarray(other.v0_frac)) \
            and self.per_channel == other.per_channel

    def __hash__(self) -> int:
        v0 = tuple(np.asarray(self.v0_frac).reshape(-1).tolist()) if self.per_channel else self.v0_frac
        return hash((self.theta, v0))


@dataclass(frozen=True, eq=False)
class Skip:
    """A residual shortcut into a layer's neurons: a conv on the output of the earlier neuron layer
    ``source`` (an index into ``Graph.layers``), summed into the current with the layer's own synapse,
    as the ANN adds before its activation. An identity shortcut is a depthwise 1x1 conv of ones.
    The shortcut's folded bias (its BN shift) is already part of the layer's bias."""
    name: str
    source: int
    weight: np.ndarray             # [C_out, C_in/groups, kH, kW], float64
    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int
    in_shape: Shape


@dataclass(frozen=True, eq=False)
class Conv:
    name: str                      # the PyTorch module(s) it came from, e.g. "features.3+features.4"
    weight: np.ndarray             # [C_out, C_in/groups, kH, kW], float64
    bias: np.ndarray               # [C_out], float64
    stride: Pair
    padding: Pair
    dilation: Pair
    groups: int
    in_shape: Shape
    out_shape: Shape
    neuron: Neuron | None
    skips: tuple[Skip, ...] = ()

    kind = "conv"


@dataclass(frozen=True, eq=False)
class Dense:
    name: str
    weight: np.ndarray             # [N_out, N_in], float64
    bias: np.ndarray               # [N_out], float64
    in_shape: Shape                # (N_in, 1, 1)
    out_shape: Shape               # (N_out, 1, 1)
    neuron: Neuron | None
    skips: tuple[Skip, ...] = ()   # always empty: shortcuts into dense layers are refused

    kind = "dense"


@dataclass(frozen=True, eq=False)
class Flatten:
    name: str
    in_shape: Shape
    out_shape: Shape               # (C·H·W, 1, 1), as slayer writes it

    kind = "flatten"


Layer = Union[Conv, Dense, Flatten]


@dataclass(frozen=True, eq=False)
class Graph:
    """A QCFS network: ``layers`` run in order on an input of ``input_shape``, each fed by the one
    before it and, for residual networks, by its :class:`Skip` shortcuts from earlier layers."""
    input_shape: Shape
    layers: tuple[Layer, ...]
    L: int
    phi: float
    fold_errors: tuple[tuple[str, float], ...] = ()   # (layer name, max relative error of the fold check)

    @property
    def synaptic(self) -> list[Conv | Dense]:
        return [lay for lay in self.layers if not isinstance(lay, Flatten)]

    @property
    def residual(self) -> bool:
        return any(getattr(lay, "skips", ()) for lay in self.layers)


# --------------------------------------------------------------------------- pure fold math
def fold_batchnorm(weight: np.ndarray, bias: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                   mean: np.ndarray, var: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """BN(W·x + b) = W'·x + b' with ``W' = W·g``, ``b' = (b − μ)·g + β``, ``g = γ/√(σ²+ε)`` per output channel."""
    g = gamma / np.sqrt(var + eps)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return weight * g.reshape(shape), (bias - mean) * g + beta


def box_kernel(kernel: Pair) -> np.ndarray:
    """The AvgPool2d window as a 2-D filter: ones/(kH·kW), shape (kH, kW)."""
    return np.full(kernel, 1.0 / (kernel[0] * kernel[1]))


def compose_prefilter_conv(pre: np.ndarray, pre_stride: Pair, weight: np.ndarray, stride: Pair,
                           padding: Pair, dilation: Pair) -> tuple[np.ndarray, Pair, Pair]:
    """One conv equal to "per-channel filter ``pre`` (stride ``pre_stride``, no padding), then conv ``weight``".

    The composite kernel is ``W'[o,i,a,b] = Σ_{u,v} W[o,i,u,v]·pre[a − u·D·s, b − v·D·s]`` (s the
    pre-filter stride, D the conv dilation): size ``(K−1)·D·s + k``, stride ``S·s``, padding ``P·s``,
    dilation 1. The padding is exact only when the pre-filter tiles its input (checked by the caller);
    ``pre`` acts identically on every channel, so grouped convs compose the same way.
    Also composes two pre-filters (pass a (1, 1, kH, kW) ``weight`` and zero padding).
    """
    kh, kw = pre.shape
    sh, sw = pre_stride
    o, i, KH, KW = weight.shape
    dh, dw = dilation
    out = np.zeros((o, i, (KH - 1) * dh * sh + kh, (KW - 1) * dw * sw + kw))
    for u in range(KH):
        for v in range(KW):
            out[:, :, u * dh * sh:u * dh * sh + kh, v * dw * sw:v * dw * sw + kw] += \
                weight[:, :, u, v, None, None] * pre
    return out, (stride[0] * sh, stride[1] * sw), (padding[0] * sh, padding[1] * sw)


def compose_prefilter_dense(pre: np.ndarray, pre_stride: Pair, weight: np.ndarray, in_shape: Shape,
                            pooled_shape: Shape) -> np.ndarray:
    """Dense weights on the un-pooled map equal to "pre-filter, flatten, dense ``weight``".

    ``W'[o, c, y, x] = Σ_{q,r} W[o, c, q, r]·pre[y − q·s, x − r·s]``; input rows the filter never
    reaches get weight 0, which is exact (unlike a conv's padding, a dense layer has no edge).
    """
    c, hp, wp = pooled_shape
    _, h, w = in_shape
    kh, kw = pre.shape
    sh, sw = pre_stride
    w4 = weight.reshape(weight.shape[0], c, hp, wp)
    out = np.zeros((weight.shape[0], c, h, w))
    for a in range(kh):
        for b in range(kw):
            out[:, :, a:a + sh * (hp - 1) + 1:sh, b:b + sw * (wp - 1) + 1:sw] += pre[a, b] * w4
    return out.reshape(weight.shape[0], -1)


# --------------------------------------------------------------------------- tracing
def _pair(v) -> Pair:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QCFS) or super().is_leaf_module(m, qualname)


def _owner(node: torch.fx.Node, container: bool = False) -> str:
    """The innermost named module a node belongs to (for error messages); with ``container``, the
    module that holds it (the block whose forward() branches), when there is one."""
    stack = list((node.meta.get("nn_module_stack") or {}).items())
    if container and node.op == "call_module" and len(stack) > 1:
        stack = stack[:-1]
    if stack:
        key, (name, cls) = stack[-1]
        return f"'{name or key}' ({getattr(cls, '__name__', cls)})"
    return "the model's forward()"


_FLATTEN_FUNCS = {torch.flatten}
_DROPS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)


@dataclass
class _Shortcut:
    """Chain item for a residual add: the shorter branch, from the fork node to the add."""
    add: str                        # the add node's name
    fork: str                       # the fork node: the QCFS module whose output both branches read
    names: list[str]
    modules: list[nn.Module]


_ADDS = (operator.add, torch.add, operator.iadd)
ChainItem = tuple[str, Union[nn.Module, str, _Shortcut]]


def _leaf_chain(model: nn.Module) -> list[ChainItem]:
    """The model as a chain of (name, leaf module); ``"flatten"`` stands for a functional flatten and
    a :class:`_Shortcut` for a residual add (its longer branch is the chain, see the module docstring).

    Refuses anything else that is not a chain (concatenations, reused outputs, several inputs)."""
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 - data-dependent control flow etc.
        raise ExportError(f"cannot trace {type(model).__name__}.forward into a layer sequence "
                          f"({str(e).splitlines()[0][:120]})") from None
    modules = dict(model.named_modules())
    nodes = list(graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise ExportError("models with more than one input cannot be exported")
    out = next(n for n in nodes if n.op == "output")
    memo: dict[torch.fx.Node, list[tuple[torch.fx.Node, ChainItem]]] = {}

    def item(node: torch.fx.Node) -> ChainItem:
        if node.op == "get_attr":
            raise ExportError(f"{_owner(node)} reads a parameter in forward(); only layer modules can be exported")
        if node.op == "call_module":
            return (str(node.target), modules[str(node.target)])
        if (node.op == "call_function" and node.target in _FLATTEN_FUNCS) or \
                (node.op == "call_method" and node.target == "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start != 1:
                raise ExportError(f"flatten in {_owner(node)} must start at dim 1, got {start}")
            return (node.name, "flatten")
        tgt = getattr(node.target, "__name__", node.target)
        raise ExportError(f"operation '{tgt}' in {_owner(node)} is not a layer module NetX can represent")

    def chain(node: torch.fx.Node) -> list[tuple[torch.fx.Node, ChainItem]]:
        # Iterative over single-input runs (deep nets), recursive only at adds.
        run: list[torch.fx.Node] = []
        while node not in memo and node.op != "placeholder" and not \
                (node.op == "call_function" and node.target in _ADDS):
            ins = node.all_input_nodes
            if len(ins) != 1:
                raise ExportError(f"module {_owner(node, container=True)} has a branch with {len(ins)} inputs; "
                                  "only residual adds and single-input layers can be exported")
            run.append(node)
            node = ins[0]
        if node in memo:
            base = memo[node]
        elif node.op == "placeholder":
            base = []
        else:
            base = _add(node)
            memo[node] = base
        for n in reversed(run):
            base = base + [(n, item(n))]
            memo[n] = base
        return base

    def _add(node: torch.fx.Node) -> list[tuple[torch.fx.Node, ChainItem]]:
        ins = node.all_input_nodes
        if len(ins) != 2 or len(node.args) != 2 or node.kwargs:
            raise ExportError(f"the add in {_owner(node, container=True)} must have exactly two tensor operands")
        a, b = chain(ins[0]), chain(ins[1])
        k = 0
        while k < min(len(a), len(b)) and a[k][0] is b[k][0]:
            k += 1
        main, short = (a, b) if len(a) - k >= len(b) - k else (b, a)
        if len(main) == k:
            raise ExportError(f"the add in {_owner(node, container=True)} adds a tensor to itself")
        where = f"the residual add in {_owner(node, container=True)}"
        if k == 0:
            raise ExportError(f"{where} has a branch from the network input; the input is injected as a bias, "
                              "so shortcuts must start at a neuron layer (QCFS)")
        fork_item = main[k - 1][1]
        if not isinstance(fork_item[1], QCFS):
            raise ExportError(f"{where}: its branches split after '{fork_item[0]}', not after a QCFS "
                              "activation; shortcuts must start at a neuron layer")
        rest = short[k:]
        for _, (nm, mod) in rest:
            if not isinstance(mod, (nn.Conv2d, nn.BatchNorm2d) + _DROPS):
                raise ExportError(f"{where}: its shortcut contains '{nm}' ({type(mod).__name__}); only identity or "
                                  "conv + BatchNorm shortcuts can be exported")
        return main + [(node, (node.name, _Shortcut(node.name, fork_item[0], [nm for _, (nm, _m) in rest],
                                                    [m for _, (_n, m) in rest])))]

    res = out.all_input_nodes
    if len(res) != 1:
        raise ExportError("the model must return one tensor")
    items = chain(res[0])
    # Every node the chain does not contain must belong to some shortcut (else its result is unused
    # or a branch we did not follow).
    covered = {n for n, _ in items}
    for n, (nm, it) in items:
        if isinstance(it, _Shortcut):
            covered.update(m for m in nodes if m.op == "call_module" and str(m.target) in it.names)
    for n in nodes:
        if n.op in ("call_module", "call_function", "call_method") and n not in covered:
            raise ExportError(f"module {_owner(n, container=True)}: output of '{n.name}' does not reach the "
                              "logits along a chain or a residual shortcut")
    return [it for _, it in items]


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
    skips: list[Skip] = dataclasses.field(default_factory=list)
    skip_bias: np.ndarray | float = 0.0


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy().copy()


def trace(model: nn.Module, input_shape: Sequence[int], *, check: bool = True, tol: float = 1e-9) -> Graph:
    """Flatten a converted (QCFS) model into a :class:`Graph`; see the module docstring for the rules.

    ``input_shape`` is (C, H, W). With ``check``, every folded layer is compared with the PyTorch
    modules it replaces on random float64 inputs; a relative error above ``tol`` raises ExportError.
    """
    model = model.eval()
    shape: Shape = tuple(int(s) for s in input_shape)  # type: ignore[assignment]
    if len(shape) != 3:
        raise ExportError(f"input shape must be (C, H, W), got {tuple(input_shape)}")
    chain = _leaf_chain(model)
    layers: list[Layer] = []
    pend: _Pending | None = None           # synaptic layer waiting for BN / its neuron
    pre: tuple[np.ndarray, Pair, Shape, list[str], list[nn.Module]] | None = None  # pending pool(s)
    L_phi: set[tuple[int, float]] = set()
    flat_pending: tuple[str, Shape] | None = None   # a Flatten seen, its dense not yet
    checks: list[tuple[str, float]] = []
    neuron_at: dict[str, int] = {}          # QCFS module name -> index of its layer (shortcut sources)

    def shortcut(sc: _Shortcut) -> None:
        assert pend is not None
        where = f"residual add '{sc.add}'"
        if pend.kind != "conv" or pre is not None or flat_pending is not None:
            raise ExportError(f"{where} must directly follow a conv (+ BatchNorm) branch")
        src = neuron_at[sc.fork]
        src_shape = layers[src].out_shape
        convs = [m for m in sc.modules if isinstance(m, nn.Conv2d)]
        bns = [m for m in sc.modules if isinstance(m, nn.BatchNorm2d)]
        core = [m for m in sc.modules if not isinstance(m, _DROPS)]
        if not convs:
            if bns:
                raise ExportError(f"{where}: a BatchNorm without a conv on the shortcut cannot be folded")
            c = src_shape[0]
            w, b = np.ones((c, 1, 1, 1)), np.zeros(c)
            stride, padding, dilation, groups = (1, 1), (0, 0), (1, 1), c
        else:
            if core[0] is not convs[0] or len(convs) > 1 or len(bns) > 1 or (bns and core[1] is not bns[0]):
                raise ExportError(f"{where}: a shortcut must be identity or one conv (+ one BatchNorm)")
            cv = convs[0]
            if cv.padding_mode != "zeros" or isinstance(cv.padding, str):
                raise ExportError(f"{where}: shortcut conv padding must be numeric zero padding")
            w = _np(cv.weight)
            b = _np(cv.bias) if cv.bias is not None else np.zeros(w.shape[0])
            if bns:
                bn = bns[0]
                if bn.running_mean is None:
                    raise ExportError(f"{where}: shortcut BatchNorm has no running statistics")
                gamma = _np(bn.weight) if bn.weight is not None else np.ones(bn.num_features)
                beta = _np(bn.bias) if bn.bias is not None else np.zeros(bn.num_features)
                w, b = fold_batchnorm(w, b, gamma, beta, _np(bn.running_mean), _np(bn.running_var), float(bn.eps))
            stride, padding, dilation, groups = _pair(cv.stride), _pair(cv.padding), _pair(cv.dilation), int(cv.groups)
            if cv.in_channels != src_shape[0]:
                raise ExportError(f"{where}: shortcut conv expects {cv.in_channels} channels, gets {src_shape[0]}")
        out = conv_output_shape(src_shape, w.shape[0], w.shape[2:], stride, padding, dilation)
        if out != pend.out_shape:
            raise ExportError(f"{where}: the shortcut gives {out}, the conv branch {pend.out_shape}; they must "
                              "match to be added")
        sk = Skip("+".join(sc.names) or f"identity:{sc.fork}", src, w, stride, padding, dilation, groups, src_shape)
        if check and convs:
            err = fold_error(sc.modules, Conv(sk.name, w, b, stride, padding, dilation, groups, src_shape, out, None),
                             src_shape)
            checks.append((sk.name, err))
            if err > tol:
                raise ExportError(f"folding shortcut {sk.name} changed its output (relative error {err:.2e})")
        pend.skips.append(sk)
        pend.bias = pend.bias + b
        pend.skip_bias = pend.skip_bias + b
        pend.names.append(sc.add)

    def close(neuron: Neuron | None) -> None:
        nonlocal pend
        assert pend is not None
        if pend.kind == "conv":
            lay: Layer = Conv("+".join(pend.names), pend.weight, pend.bias, pend.stride, pend.padding,
                              pend.dilation, pend.groups, pend.in_shape, pend.out_shape, neuron, tuple(pend.skips))
        else:
            lay = Dense("+".join(pend.names), pend.weight, pend.bias, (pend.weight.shape[1], 1, 1), pend.out_shape,
                        neuron)
        if check:
            # The skips' folded shifts are in the layer's bias: check the main path without them.
            own = dataclasses.replace(lay, bias=pend.bias - pend.skip_bias) if pend.skips else lay
            err = fold_error(pend.modules, own, pend.in_shape)
            checks.append((lay.name, err))
            if err > tol:
                raise ExportError(f"folding {lay.name} changed its output (relative error {err:.2e}); "
                                  "this layer combination cannot be exported exactly")
        layers.append(lay)
        pend = None

    for name, mod in chain:
        if isinstance(mod, _Shortcut):
            if pend is None:
                raise ExportError(f"residual add '{name}' does not follow a conv branch")
            shortcut(mod)
            continue
        label = f"'{name}' ({type(mod).__name__ if not isinstance(mod, str) else 'flatten'})"
        if isinstance(mod, _DROPS):
            if pend is not None:
                pend.modules.append(mod)
            elif pre is not None:
                pre[4].append(mod)
            continue
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            if pend is not None:
                raise ExportError(f"module {label} follows '{pend.names[0]}' with no QCFS activation in "
                                  "between; only the last layer may have no neuron")
            if isinstance(mod, nn.Conv2d):
                if flat_pending is not None:
                    raise ExportError(f"module {label} is a conv after a flatten; NetX cannot represent it")
                if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
                    raise ExportError(f"module {label} uses padding '{mod.padding}'/{mod.padding_mode}; "
                                      "only numeric zero padding can be exported")
                w = _np(mod.weight)
                b = _np(mod.bias) if mod.bias is not None else np.zeros(w.shape[0])
                stride, padding, dilation = _pair(mod.stride), _pair(mod.padding), _pair(mod.dilation)
                in_shape = shape
                mods: list[nn.Module | str] = []
                names = []
                if pre is not None:
                    pk, ps, pin, pnames, pmods = pre
                    if padding != (0, 0):
                        for d in (0, 1):
                            # Pool windows must tile the map (no leftover rows, no overlap) for the
                            # conv's zero padding to land on padding in the composed conv.
                            if pk.shape[d] > ps[d] or (pin[1 + d] - pk.shape[d]) % ps[d]:
                                raise ExportError(
                                    f"AvgPool {pnames[0]!r} before padded conv {label} does not tile its "
                                    f"{pin[1:]} input; the fold would not be exact")
                    w, stride, padding = compose_prefilter_conv(pk, ps, w, stride, padding, dilation)
                    dilation = (1, 1)
                    in_shape, mods, names = pin, list(pmods), list(pnames)
                    pre = None
                if mod.groups > 1 and in_shape[0] % mod.groups:
                    raise ExportError(f"module {label}: groups do not divide the channels")
                if in_shape[0] != mod.in_channels:
                    raise ExportError(f"module {label} expects {mod.in_channels} channels, gets {in_shape[0]}")
                out_shape = conv_output_shape(in_shape, w.shape[0], w.shape[2:], stride, padding, dilation)
                expect = conv_output_shape(shape, mod.out_channels, _pair(mod.kernel_size), _pair(mod.stride),
                                           _pair(mod.padding), _pair(mod.dilation))
                if out_shape != expect or min(out_shape) < 1:
                    raise ExportError(f"folding the AvgPool before {label} gives output {out_shape}, "
                                      f"not {expect}; cannot be exported exactly")
                pend = _Pending("conv", names + [name], mods + [mod], w, b, stride, padding, dilation,
                                int(mod.groups), in_shape, out_shape)
                shape = out_shape
            else:
                n_in = shape[0] * shape[1] * shape[2]
                if flat_pending is None and (shape[1], shape[2]) != (1, 1):
                    raise ExportError(f"module {label} is a Linear on a {shape} map without a Flatten before it")
                if n_in != mod.in_features:
                    raise ExportError(f"module {label} expects {mod.in_features} inputs, gets {n_in}")
                w = _np(mod.weight)
                b = _np(mod.bias) if mod.bias is not None else np.zeros(w.shape[0])
                in_shape = flat_pending[1] if flat_pending is not None else shape
                mods, names = [], []
                if pre is not None:
                    pk, ps, pin, pnames, pmods = pre
                    pooled = flat_pending[1] if flat_pending is not None else shape
                    w = compose_prefilter_dense(pk, ps, w, pin, pooled)
                    in_shape, mods, names = pin, list(pmods), list(pnames)
                    pre = None
                if flat_pending is not None:
                    fname, fshape = flat_pending
                    layers.append(Flatten(fname, in_shape, (in_shape[0] * in_shape[1] * in_shape[2], 1, 1)))
                    mods = mods + ["flatten"]
                    names = names + [fname]
                    flat_pending = None
                n_in = w.shape[1]
                pend = _Pending("dense", names + [name], mods + [mod], w, b, in_shape=in_shape,
                                out_shape=(w.shape[0], 1, 1))
                shape = (w.shape[0], 1, 1)
            continue
        if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
            if pend is not None and pend.skips:
                raise ExportError(f"module {label} comes after a residual add; fold it into both branches "
                                  "(BatchNorm before the add) to export")
            if pend is None or pend.bn_done or len(pend.modules) and isinstance(pend.modules[-1], _DROPS):
                raise ExportError(f"module {label} does not directly follow a conv/linear layer; "
                                  "only BatchNorm right after a conv or linear can be folded")
            if mod.running_mean is None:
                raise ExportError(f"module {label} has no running statistics; cannot be folded")
            gamma = _np(mod.weight) if mod.weight is not None else np.ones(mod.num_features)
            beta = _np(mod.bias) if mod.bias is not None else np.zeros(mod.num_features)
            pend.weight, pend.bias = fold_batchnorm(pend.weight, pend.bias, gamma, beta, _np(mod.running_mean),
                                                    _np(mod.running_var), float(mod.eps))
            pend.names.append(name)
            pend.modules.append(mod)
            pend.bn_done = True
            continue
        if isinstance(mod, QCFS):
            if pend is None:
                raise ExportError(f"module {label} does not follow a conv/linear layer; a neuron needs a synapse")
            L_phi.add((int(mod.L), float(mod.phi)))
            pend.modules.append(mod)
            pend.names.append(name)
            close(Neuron(float(mod.lam.detach().clamp(min=1e-3)), float(mod.phi)))
            neuron_at[name] = len(layers) - 1
            continue
        if isinstance(mod, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            if pend is not None:
                raise ExportError(f"module {label} follows '{pend.names[-1]}' before its QCFS activation; "
                                  "only pooling after a spiking layer can be folded")
            if flat_pending is not None:
                raise ExportError(f"module {label} comes after a flatten")
            if isinstance(mod, nn.AdaptiveAvgPool2d):
                osz = _pair(mod.output_size if not isinstance(mod.output_size, int) else mod.output_size)
                osz = tuple(shape[1 + d] if osz[d] is None else osz[d] for d in (0, 1))
                if shape[1] % osz[0] or shape[2] % osz[1]:
                    raise ExportError(f"module {label}: output size {osz} does not divide the {shape[1:]} map")
                k = s = (shape[1] // osz[0], shape[2] // osz[1])
            else:
                if mod.ceil_mode or _pair(mod.padding) != (0, 0) or mod.divisor_override:
                    raise ExportError(f"module {label} uses padding/ceil_mode/divisor_override; "
                                      "only plain average pooling can be folded")
                k, s = _pair(mod.kernel_size), _pair(mod.stride if mod.stride is not None else mod.kernel_size)
            pooled = conv_output_shape(shape, shape[0], k, s, (0, 0), (1, 1))
            if min(pooled) < 1:
                raise ExportError(f"module {label}: window {k} larger than the {shape[1:]} map")
            if pre is None:
                pre = (box_kernel(k), s, shape, [name], [mod])
            else:   # pool of a pool: compose the two filters into one
                pk, ps, pin, pnames, pmods = pre
                kk, ss, _ = compose_prefilter_conv(pk, ps, box_kernel(k)[None, None], s, (0, 0), (1, 1))
                pre = (kk[0, 0], ss, pin, pnames + [name], pmods + [mod])
            shape = pooled
            continue
        if isinstance(mod, nn.Flatten) or mod == "flatten":
            if isinstance(mod, nn.Flatten) and (mod.start_dim != 1 or mod.end_dim != -1):
                raise ExportError(f"module {label} must flatten dims 1..-1")
            if pend is not None:
                raise ExportError(f"module {label} follows '{pend.names[-1]}' before its QCFS activation")
            flat_pending = (name, shape)
            shape = (shape[0] * shape[1] * shape[2], 1, 1)
            continue
        if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d)):
            raise ExportError(f"module {label} is a max-pool; NetX cannot represent it and spikes cannot "
                              "max-pool exactly: train with QCFS (prepare_ann turns MaxPool into AvgPool)")
        if isinstance(mod, nn.ReLU):
            raise ExportError(f"module {label} is ReLU, not QCFS; only QCFS networks convert without "
                              "threshold balancing (train with --activation qcfs)")
        raise ExportError(f"module {label} is not supported by the NetX exporter "
                          "(supported: Conv2d, Linear, BatchNorm, QCFS, AvgPool2d, Flatten, Dropout)")

    if pre is not None:
        raise ExportError(f"AvgPool {pre[3][0]!r} is not followed by a conv or linear layer to fold into")
    if flat_pending is not None:
        raise ExportError(f"flatten {flat_pending[0]!r} is not followed by a linear layer")
    if pend is None:
        raise ExportError("the model must end with a conv or linear layer without activation (the logits)")
    close(None)
    if len(L_phi) != 1:
        raise ExportError(f"all QCFS layers must share one L and φ, found {sorted(L_phi) or 'none'}")
    L, phi = L_phi.pop()
    return Graph(shape_in(input_shape), tuple(layers), L, phi, tuple(checks))


def calibrate_graph(graph: Graph, calibration: dict[str, dict[str, Sequence[float]]]) -> Graph:
    """``graph`` with a low-T SNN calibration applied (:mod:`qcfs2lava.lowt`): for each QCFS module
    name in ``calibration``, the synaptic layer that owns that neuron gets its per-channel bias
    shift δ added to the folded bias (the same float units: the QCFS input) and its per-channel
    v(0)/θ. Layers not named keep their bias and scalar φ; the fold checks are not repeated (the
    calibrated layer deliberately differs from the PyTorch ANN)."""
    owner: dict[str, int] = {}
    for i, lay in enumerate(graph.layers):
        if not isinstance(lay, Flatten) and lay.neuron is not None:
            for part in lay.name.split("+"):
                owner[part] = i
    missing = sorted(set(calibration) - set(owner))
    if missing:
        raise ExportError(f"calibration names {', '.join(missing)}, which are not neurons of the traced graph")
    layers = list(graph.layers)
    for name, d in calibration.items():
        i = owner[name]
        lay = layers[i]
        assert not isinstance(lay, Flatten) and lay.neuron is not None
        c = lay.bias.shape[0]
        bias = lay.bias
        v0: float | np.ndarray = lay.neuron.v0_frac
        if d.get("bias") is not None:
            shift = np.asarray(d["bias"], dtype=np.float64).reshape(-1)
            if shift.shape != (c,):
                raise ExportError(f"calibration of {name}: {shift.size} bias shifts for {c} channels")
            bias = bias + shift
        if d.get("v0_frac") is not None:
            v0 = np.asarray(d["v0_frac"], dtype=np.float64).reshape(-1)
            if v0.shape != (c,):
                raise ExportError(f"calibration of {name}: {v0.size} initial potentials for {c} channels")
            if np.any(v0 < 0) or np.any(v0 >= 1):
                raise ExportError(f"calibration of {name}: v(0)/θ outside [0, 1)")
        layers[i] = dataclasses.replace(lay, bias=bias, neuron=Neuron(lay.neuron.theta, v0))
    return dataclasses.replace(graph, layers=tuple(layers))


def shape_in(s: Sequence[int]) -> Shape:
    return (int(s[0]), int(s[1]), int(s[2]))


# --------------------------------------------------------------------------- numerical checks
def layer_forward(lay: Layer, x: torch.Tensor) -> torch.Tensor:
    if isinstance(lay, Conv):
        return F.conv2d(x, torch.from_numpy(lay.weight), torch.from_numpy(lay.bias), lay.stride, lay.padding,
                        lay.dilation, lay.groups)
    if isinstance(lay, Dense):
        return F.linear(x.flatten(1), torch.from_numpy(lay.weight), torch.from_numpy(lay.bias))
    return x.flatten(1)


def skip_forward(skip: Skip, x: torch.Tensor) -> torch.Tensor:
    """The shortcut's contribution to its layer's current (no bias: that is in the layer's bias)."""
    return F.conv2d(x, torch.from_numpy(skip.weight).to(x.dtype), None, skip.stride, skip.padding, skip.dilation,
                    skip.groups)


@torch.no_grad()
def fold_error(modules: Sequence[nn.Module | str], layer: Conv | Dense, in_shape: Shape, n: int = 4,
               seed: int = 0) -> float:
    """Max relative difference between the folded ``layer`` and the PyTorch ``modules`` it replaces
    (pools, flatten, conv/linear, BN; QCFS/dropout skipped), on ``n`` random float64 inputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n,) + tuple(in_shape), generator=g, dtype=torch.float64)
    # A dense layer without its own flatten sees the previous dense's (N, 1, 1) output as a vector.
    ref = x.flatten(1) if isinstance(layer, Dense) and "flatten" not in modules else x
    for m in modules:
        if isinstance(m, (QCFS,) + _DROPS):
            continue
        if m == "flatten":
            ref = ref.flatten(1)
            continue
        m = copy.deepcopy(m).double().eval()
        ref = m(ref)
    got = layer_forward(layer, x)
    if got.shape != ref.shape:
        return float("inf")
    return float((got - ref).abs().max() / ref.abs().max().clamp(min=1e-30))


@torch.no_grad()
def graph_forward(graph: Graph, x: torch.Tensor,
                  on_input: Callable[[Layer, torch.Tensor], None] | None = None) -> torch.Tensor:
    """The graph as an ANN (QCFS activations, float64): ``λ·clip(⌊z·L/λ + φ⌋/L, 0, 1)`` per neuron.
    ``on_input(layer, h)`` sees every layer's input (calibration statistics); shortcut inputs are the
    outputs of their source layers. Residual layers add their :class:`Skip` currents before the neuron."""
    h = x.double()
    sources = {sk.source for lay in graph.layers for sk in getattr(lay, "skips", ())}
    kept: dict[int, torch.Tensor] = {}
    for i, lay in enumerate(graph.layers):
        if on_input is not None:
            on_input(lay, h)
        z = layer_forward(lay, h)
        for sk in getattr(lay, "skips", ()):
            z = z + skip_forward(sk, kept[sk.source])
        h = z
        if not isinstance(lay, Flatten) and lay.neuron is not None:
            lam = lay.neuron.theta
            h = lam * torch.clamp(torch.floor(h * graph.L / lam + graph.phi) / graph.L, 0.0, 1.0)
        if i in sources:
            kept[i] = h
    return h


@torch.no_grad()
def check_graph(model: nn.Module, graph: Graph, x: torch.Tensor) -> float:
    """Max |logit difference| between the model and its graph on ``x`` (both run in float64)."""
    m = copy.deepcopy(model).double().eval()
    return float((m(x.double()) - graph_forward(graph, x)).abs().max())
