"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""
from __future__ import annotations

import sys
from typing import Any, Callable

__all__ = ["UserError", "DataError", "CheckpointError", "ConversionError", "Terminated", "terminate_on_sigterm",
           "run_reporting_errors"]


class UserError(Exception):
    """Bad input from the user: a missing file, a corrupt checkpoint, an unsupported layer."""


class DataError(UserError):
    """A data set is missing or malformed on disk."""


class CheckpointError(UserError):
    """A checkpoint file cannot be read or is not a qcfs2lava checkpoint."""


class ConversionError(UserError):
    """A model contains something the ANN-to-SNN conversion cannot represent."""


class Terminated(BaseException):
    """SIGTERM arrived (see :func:`terminate_on_sigterm`): unwinds like Ctrl-C, exit code 143."""


def terminate_on_sigterm() -> Any:
    """Turn SIGTERM into :class:`Terminated` in the main thread, so that ``finally`` blocks and atomic
    writes clean up and the command exits with code 143 and one line, as after Ctrl-C. Returns the
    handler it replaced; outside the main thread it does nothing and returns ``None``."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Terminated()
    return signal.signal(signal.SIGTERM, handler)


def run_reporting_errors(prog: str, func: Callable[..., int], *args: Any) -> int:
    """``func(*args)``'s exit code; a :class:`UserError` becomes one line on stderr and exit code 2,
    Ctrl-C exit code 130 and SIGTERM exit code 143, each with one line (the convention of every command
    of ours). SIGTERM is turned into :class:`Terminated` only while ``func`` runs."""
    import signal
    previous = terminate_on_sigterm()
    try:
        return func(*args)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
