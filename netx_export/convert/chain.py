"""A PyTorch model as a chain of leaf modules (torch.fx, QCFS kept as a leaf): the tracer's input.

A residual add ``f(x) + g(x)`` becomes one chain item, a :class:`Shortcut`: the longer branch (more
layers) stays the chain, the shorter one — identity, or 1x1 conv + BN — is the shortcut, from the
QCFS module at the fork to the add. Anything else that is not a chain (concatenations, reused
outputs, several inputs, parameters read in forward()) is refused with an ExportError naming it.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Union

import torch
from torch import nn

from qcfs2lava.qcfs import QCFS

from netx_export.convert.folds import INFERENCE_IDENTITIES
from netx_export.errors import ExportError

__all__ = ["Shortcut", "ChainItem", "leaf_chain"]


@dataclass
class Shortcut:
    """Chain item for a residual add: the shorter branch, from the fork node to the add."""
    add: str                        # the add node's name
    fork: str                       # the fork node: the QCFS module whose output both branches read
    names: list[str]
    modules: list[nn.Module]


ChainItem = tuple[str, Union[nn.Module, str, Shortcut]]
_Run = list[tuple[torch.fx.Node, ChainItem]]        # chain items with the fx node each came from

_FLATTEN_FUNCS = {torch.flatten}
_ADDS = (operator.add, torch.add, operator.iadd)


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


def _is_add(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and node.target in _ADDS


class _ChainBuilder:
    """Walks the fx graph backwards from the output; ``memo`` holds the chain ending at each node."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules = modules
        self.memo: dict[torch.fx.Node, _Run] = {}

    def item(self, node: torch.fx.Node) -> ChainItem:
        if node.op == "get_attr":
            raise ExportError(f"{_owner(node)} reads a parameter in forward(); only layer modules can be exported")
        if node.op == "call_module":
            return (str(node.target), self.modules[str(node.target)])
        if (node.op == "call_function" and node.target in _FLATTEN_FUNCS) or \
                (node.op == "call_method" and node.target == "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start != 1:
                raise ExportError(f"flatten in {_owner(node)} must start at dim 1, got {start}")
            return (node.name, "flatten")
        tgt = getattr(node.target, "__name__", node.target)
        raise ExportError(f"operation '{tgt}' in {_owner(node)} is not a layer module NetX can represent")

    def chain(self, node: torch.fx.Node) -> _Run:
        # Iterative over single-input runs (deep nets), recursive only at adds.
        run: list[torch.fx.Node] = []
        while node not in self.memo and node.op != "placeholder" and not _is_add(node):
            ins = node.all_input_nodes
            if len(ins) != 1:
                raise ExportError(f"module {_owner(node, container=True)} has a branch with {len(ins)} inputs; "
                                  "only residual adds and single-input layers can be exported")
            run.append(node)
            node = ins[0]
        if node in self.memo:
            base = self.memo[node]
        elif node.op == "placeholder":
            base = []
        else:
            base = self.add(node)
            self.memo[node] = base
        for n in reversed(run):
            base = base + [(n, self.item(n))]
            self.memo[n] = base
        return base

    def add(self, node: torch.fx.Node) -> _Run:
        """The chain through a residual add: its longer branch, then a :class:`Shortcut` item."""
        ins = node.all_input_nodes
        if len(ins) != 2 or len(node.args) != 2 or node.kwargs:
            raise ExportError(f"the add in {_owner(node, container=True)} must have exactly two tensor operands")
        a, b = self.chain(ins[0]), self.chain(ins[1])
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
            if isinstance(fork_item[1], (nn.AvgPool2d, nn.AdaptiveAvgPool2d)) and k >= 2 \
                    and isinstance(main[k - 2][1][1], QCFS):
                # the ImageNet ResNet stem: conv 7x7/2, QCFS, pool 3x3/2, then the first block's fork
                raise ExportError(
                    f"{where}: its branches split after the pool '{fork_item[0]}' ({type(fork_item[1]).__name__}) "
                    f"that follows the QCFS '{main[k - 2][1][0]}': the pool turns spikes into averages, which the "
                    "shortcut would have to carry into the add, but a shortcut is a synapse from a neuron layer's "
                    "spikes (the pool is folded only into the next conv of the long branch). Exporting it needs a "
                    "neuron layer after the pool (a QCFS there) or no pool: the QCFS authors' ResNets keep the 3x3 "
                    "stem without a pool at every input size (official-resnet18/34, qcfs2lava import), which exports")
            raise ExportError(f"{where}: its branches split after '{fork_item[0]}', not after a QCFS "
                              "activation; shortcuts must start at a neuron layer")
        rest = short[k:]
        for _, (nm, mod) in rest:
            if not isinstance(mod, (nn.Conv2d, nn.BatchNorm2d) + INFERENCE_IDENTITIES):
                raise ExportError(f"{where}: its shortcut contains '{nm}' ({type(mod).__name__}); only identity or "
                                  "conv + BatchNorm shortcuts can be exported")
        return main + [(node, (node.name, Shortcut(node.name, fork_item[0], [nm for _, (nm, _m) in rest],
                                                   [m for _, (_n, m) in rest])))]


def _fx_graph(model: nn.Module) -> torch.fx.Graph:
    try:
        return _Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 - data-dependent control flow etc.
        raise ExportError(f"cannot trace {type(model).__name__}.forward into a layer sequence "
                          f"({str(e).splitlines()[0][:120]})") from None


def _check_covered(items: _Run, nodes: list[torch.fx.Node]) -> None:
    """Every node the chain does not contain must belong to some shortcut (else its result is unused
    or a branch we did not follow)."""
    covered = {n for n, _ in items}
    for n, (nm, it) in items:
        if isinstance(it, Shortcut):
            covered.update(m for m in nodes if m.op == "call_module" and str(m.target) in it.names)
    for n in nodes:
        if n.op in ("call_module", "call_function", "call_method") and n not in covered:
            raise ExportError(f"module {_owner(n, container=True)}: output of '{n.name}' does not reach the "
                              "logits along a chain or a residual shortcut")


def leaf_chain(model: nn.Module) -> list[ChainItem]:
    """The model as a chain of (name, leaf module); ``"flatten"`` stands for a functional flatten and
    a :class:`Shortcut` for a residual add (its longer branch is the chain).

    Refuses anything else that is not a chain (concatenations, reused outputs, several inputs)."""
    graph = _fx_graph(model)
    nodes = list(graph.nodes)
    if len([n for n in nodes if n.op == "placeholder"]) != 1:
        raise ExportError("models with more than one input cannot be exported")
    out = next(n for n in nodes if n.op == "output")
    res = out.all_input_nodes
    if len(res) != 1:
        raise ExportError("the model must return one tensor")
    items = _ChainBuilder(dict(model.named_modules())).chain(res[0])
    _check_covered(items, nodes)
    return [it for _, it in items]
