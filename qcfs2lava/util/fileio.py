"""Writing files safely: the one output-path check every command runs before it starts work, and
atomic writes (a temporary file beside the target, renamed over it when complete), so that a failed
or interrupted write never leaves a half-written file. No torch here: every layer uses it.

* An output that is a device, a pipe or a socket (``/dev/null``, ``/dev/stdout``, a FIFO) is written
  into directly — renaming over it would replace the device node — and a write error there (e.g.
  ``/dev/full``: no space left) is one line, like any other.
* An output that is a symbolic link is written atomically at the file it points to; the link stays.
* Temporary files are named ``tmp-<pid>-<random>-<name>``; one left by a process that no longer runs
  (killed inside the write window) is removed by the next write to the same path.
* Errors a user can cause (a directory, a read-only or full file system, an output that is one of the
  command's inputs) raise :class:`~qcfs2lava.util.errors.UserError` with the path and the reason.
"""
from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import stat
import tempfile
import time
from typing import Any, Callable, Iterable

from qcfs2lava.util.errors import UserError

__all__ = ["check_outputs", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_write_png", "file_sha256"]

_START = time.time()


def _is_special(path: str) -> bool:
    """An existing non-regular, non-directory file (device, FIFO, socket), following links."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(outputs: Iterable[tuple[str, str | None]], inputs: Iterable[str | None] = ()) -> None:
    """Refuse, before any work, outputs that cannot be written or would destroy an input.

    ``outputs``: (option name, path or None) pairs, e.g. ``[("--json", a.json), ("-o", a.output)]``."""
    ins = [p for p in inputs if p]
    seen: list[tuple[str, str]] = []
    for opt, path in outputs:
        if not path:
            continue
        if os.path.isdir(path):
            raise UserError(f"{opt} {path}: is a directory; name a file")
        for i in ins:
            if (os.path.exists(i) and os.path.exists(path) and _same_file(i, path)) or \
                    os.path.realpath(i) == os.path.realpath(path):
                raise UserError(f"{opt} {path} would overwrite the input {i}; choose another path")
        for other_opt, other in seen:
            if os.path.realpath(other) == os.path.realpath(path) and not _is_special(path):
                raise UserError(f"{opt} and {other_opt} both name {path}; choose two paths")
        seen.append((opt, path))
        if _is_special(path):
            if not os.access(path, os.W_OK):
                raise UserError(f"{opt} {path}: not writable")
            continue
        folder = os.path.dirname(os.path.abspath(os.path.realpath(path)))
        while not os.path.exists(folder):
            folder = os.path.dirname(folder)
        if not os.path.isdir(folder):
            raise UserError(f"{opt} {path}: {folder} is not a directory")
        if not os.access(folder, os.W_OK | os.X_OK):
            ro = os.statvfs(folder).f_flag & os.ST_RDONLY
            raise UserError(f"{opt} {path}: {'read-only file system' if ro else 'permission denied'} ({folder})")


def _remove_stale_temporaries(folder: str, name: str) -> None:
    """Temporaries of earlier writes to ``folder/name`` whose process is gone (or, in the old naming
    without a pid, older than this process)."""
    for tmp in glob.glob(os.path.join(glob.escape(folder), f"tmp-*-{glob.escape(name)}")):
        parts = os.path.basename(tmp).split("-")
        try:
            if len(parts) > 3 and parts[1].isdigit():
                pid = int(parts[1])
                if pid == os.getpid():
                    continue
                try:
                    os.kill(pid, 0)
                    continue                    # its writer still runs
                except ProcessLookupError:
                    pass
                except PermissionError:
                    continue
            elif os.path.getmtime(tmp) >= _START:
                continue
            os.unlink(tmp)
        except OSError:
            pass


def _user_error(path: str, e: OSError) -> UserError:
    reason = e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        reason = "no space left on device"
    return UserError(f"cannot write {path}: {reason}")


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, then rename it over ``path``
    (see the module docstring for devices and links)."""
    if os.path.isdir(path):
        raise UserError(f"cannot write {path}: is a directory")
    if _is_special(path):
        _write_special(path, write)
        return
    target = os.path.realpath(path)             # a link stays a link; its file is replaced
    folder = os.path.dirname(target)
    try:
        os.makedirs(folder, exist_ok=True)
        _remove_stale_temporaries(folder, os.path.basename(target))
        # torch.save refuses file names that start with a dot, so the prefix has none.
        fd, tmp = tempfile.mkstemp(prefix=f"tmp-{os.getpid()}-", suffix="-" + os.path.basename(target), dir=folder)
        os.close(fd)
    except OSError as e:
        raise _user_error(path, e) from None
    try:
        write(tmp)
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except OSError as e:
        _discard(tmp)
        raise _user_error(path, e) from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _write_special(path: str, write: Callable[[str], None]) -> None:
    """Devices and pipes: render into a temporary file elsewhere, then copy its bytes into ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f"tmp-{os.getpid()}-")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as src, open(path, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    except OSError as e:
        raise _user_error(path, e) from None
    finally:
        _discard(tmp)


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


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
