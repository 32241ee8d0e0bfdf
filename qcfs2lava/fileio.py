"""Atomic file writes: a temporary file beside the target, renamed over it when complete, so a
failed or interrupted write never leaves a half-written file. No torch import here: the
numpy-only exporter stages use it too."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_write_png"]


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, then rename it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # torch.save refuses file names that start with a dot, so the prefix has none.
    fd, tmp = tempfile.mkstemp(prefix="tmp-", suffix="-" + os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, w)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _plain(o: Any) -> Any:
    return None if isinstance(o, float) and o != o else str(o)


def atomic_write_json(path: str, obj: Any) -> None:
    """JSON with indentation; NaN becomes null and unknown objects their ``str``."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_plain) + "\n")


def atomic_write_png(path: str, fig: Any, **savefig_kwargs: Any) -> None:
    """A matplotlib figure as PNG, rendered in memory first: a failed render leaves no file."""
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig_kwargs)
    atomic_write_bytes(path, buf.getvalue())
