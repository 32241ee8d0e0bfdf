"""What every subcommand shares: JSON output, boolean flags, one-time deprecation notes."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Callable

from qcfs2lava.util.fileio import atomic_write_json

__all__ = ["write_json", "output_folder", "bool_flag", "deprecated_alias", "RAW", "Parser", "integer", "number", "MAX_STEPS"]

RAW = argparse.RawDescriptionHelpFormatter


def write_json(path: str | None, obj: Any) -> None:
    """``obj`` as JSON at ``path`` (atomically), if a path was given."""
    if path:
        atomic_write_json(path, obj)


def output_folder(path: str, opt: str, inputs: list[str | None] = ()) -> None:
    """Refuse, before any work, an output folder that is a file, or one of the command's inputs."""
    import os

    from qcfs2lava.util.errors import UserError
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{opt} {path}: is a file; name a folder (created if missing)")
    for i in inputs:
        if i and os.path.realpath(i) == os.path.realpath(path):
            raise UserError(f"{opt} {path} would overwrite the input {i}; choose another folder")
    folder = os.path.abspath(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{opt} {path}: cannot write in {folder}")


def bool_flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction, default=True,
                   help=help)


def deprecated_alias(new: str) -> type[argparse.Action]:
    """An argparse action for an old spelling: stores into the new option's ``dest`` and says once, on
    stderr, which spelling replaces it."""

    class _Alias(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"qcfs2lava: note: {option_string} is deprecated; use {new}", file=sys.stderr)
            setattr(namespace, self.dest, values)
    return _Alias


class Parser(argparse.ArgumentParser):
    """argparse with the project's one-line errors (``qcfs2lava: error: …``, exit code 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog.split()[0]}: error: {self.prog.partition(' ')[2] + ': ' if ' ' in self.prog else ''}"
                     f"{message}\n")


MAX_STEPS = 1 << 20          # time steps per sample: far beyond any study, and exact in every counter


def integer(lo: int = 1, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            bounds = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {v}")
        return v
    return parse


def number(lo: float | None = None, hi: float | None = None, *, above: float | None = None
           ) -> Callable[[str], float]:
    """An argparse type: a finite float in [lo, hi] (or > ``above``)."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if (lo is not None and v < lo) or (hi is not None and v > hi) or (above is not None and v <= above):
            bounds = [f">= {lo:g}" if lo is not None else "", f"<= {hi:g}" if hi is not None else "",
                      f"> {above:g}" if above is not None else ""]
            raise argparse.ArgumentTypeError(f"must be {' and '.join(b for b in bounds if b)}, got {v:g}")
        return v
    return parse
