"""Make lava-nc 0.10.0 importable on Python 3.11, without touching site-packages.

Why: lava-nc declares Python <3.11. On 3.11, ``dataclasses`` rejects defaults whose class
is unhashable, and ``lava/magma/compiler/var_model.py`` declares ``CoreEncoder.x:
ByteEncoder = ByteEncoder()`` with ``ByteEncoder`` a plain (eq=True, hence unhashable)
dataclass, so importing almost anything from Lava raises ``ValueError: mutable default``.

What: a meta-path finder that loads exactly that module from its own source with one
change, ``@dataclass`` → ``@dataclass(unsafe_hash=True)`` on ``ByteEncoder``. Instances
stay equal-by-value; they only become hashable, which is all 3.11 asks. The module keeps its
real file name, so tracebacks and ``inspect`` still point at Lava's code. Nothing is done on
Python < 3.11, where the original imports fine, or if Lava's source no longer has the line.

Call :func:`install` before the first Lava import (``netx_export.lava`` does it for you).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys

TARGET = "lava.magma.compiler.var_model"
_OLD = "@dataclass\nclass ByteEncoder:"
_NEW = "@dataclass(unsafe_hash=True)\nclass ByteEncoder:"


def needs_patch(version: tuple[int, int] = sys.version_info[:2]) -> bool:
    """The dataclass check that breaks lava-nc 0.10.0 arrived with Python 3.11."""
    return version >= (3, 11)


def patch_source(source: str) -> str:
    """Return ``var_model.py``'s source with ``ByteEncoder`` made hashable (unchanged if absent)."""
    return source.replace(_OLD, _NEW, 1)


class _PatchingLoader(importlib.machinery.SourceFileLoader):
    def get_data(self, path):  # type: ignore[override]
        data = super().get_data(path)
        if str(path).endswith(".py"):
            return patch_source(data.decode("utf-8")).encode("utf-8")
        return data

    def get_code(self, fullname):  # type: ignore[override]
        # Compile from (patched) source, never from a cached .pyc of the original.
        source = self.get_data(self.get_filename(fullname))
        return compile(source, self.get_filename(fullname), "exec", dont_inherit=True)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.origin:
            return None
        loader = _PatchingLoader(fullname, spec.origin)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


_FINDER = _Finder()


def install() -> bool:
    """Install the import hook (idempotent). Returns True when the hook is active."""
    if not needs_patch():
        return False
    if TARGET in sys.modules:   # already imported, patched or not: nothing left to do
        return any(f is _FINDER for f in sys.meta_path)
    if not any(f is _FINDER for f in sys.meta_path):
        sys.meta_path.insert(0, _FINDER)
    return True
