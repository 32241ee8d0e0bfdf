"""Your own network: a factory in your installed code, named ``package.module:function``.

``qcfs2lava train --model pkg.mod:make --model-kwargs '{"width": 32}'`` builds ``make(width=32)``, a
ReLU (or already QCFS) ``nn.Module``. The checkpoint records only the factory's import path and its
JSON keyword arguments — never pickled code — and every later command rebuilds the network by
importing that factory again.

A checkpoint is data, so it must not be able to make us call an arbitrary function (``os:system``
with arguments of its choosing): a factory is called only if it carries the :func:`model_factory`
mark, which a function gets in your own code::

    import qcfs2lava

    @qcfs2lava.model_factory
    def make(width: int = 32) -> torch.nn.Module: ...

Importing the named module still runs that module's top-level code, as any import does; only name
modules you trust (your own package).
"""
from __future__ import annotations

import importlib
import json
import re
from typing import Any, Callable, TypeVar

from torch import nn

from qcfs2lava.util.errors import UserError

__all__ = ["model_factory", "is_factory_spec", "resolve_factory", "build_from_factory", "parse_kwargs"]

_MARK = "__qcfs2lava_model_factory__"
_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

F = TypeVar("F", bound=Callable[..., nn.Module])


def model_factory(func: F) -> F:
    """Mark ``func`` as a network factory that checkpoints may name (returns ``func`` itself)."""
    setattr(func, _MARK, True)
    return func


def is_factory_spec(text: str) -> bool:
    """Whether ``text`` has the form ``package.module:function``."""
    return bool(_SPEC.match(text))


def resolve_factory(spec: str) -> Callable[..., nn.Module]:
    """The marked factory named ``package.module:function``; one-line :class:`UserError` otherwise."""
    if not is_factory_spec(spec):
        raise UserError(f"--model {spec!r}: expected package.module:function")
    mod_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise UserError(f"model factory {spec}: cannot import {mod_name} ({e}); is your package installed "
                        "(or on PYTHONPATH)?") from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise UserError(f"model factory {spec}: importing {mod_name} failed ({type(e).__name__}: {e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"model factory {spec}: {mod_name} has no '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj) or not getattr(obj, _MARK, False):
        raise UserError(f"model factory {spec} is not marked as one; decorate it with @qcfs2lava.model_factory "
                        "(a checkpoint never calls anything else)")
    return obj


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """``--model-kwargs`` JSON: an object of plain values (what a checkpoint can store)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--model-kwargs is not JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(value, dict):
        raise UserError(f"--model-kwargs must be a JSON object, got {type(value).__name__}")
    return value


def build_from_factory(spec: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """``factory(**kwargs)`` for the marked factory ``spec``, checked to be an ``nn.Module``."""
    factory = resolve_factory(spec)
    try:
        model = factory(**(kwargs or {}))
    except Exception as e:  # noqa: BLE001 - the user's code failed
        raise UserError(f"model factory {spec}({_show(kwargs)}) failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model factory {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _show(kwargs: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in (kwargs or {}).items())
