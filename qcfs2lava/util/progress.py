"""Progress bars for long jobs: tqdm (count, rate, ETA) with live metrics, on stderr.

On a terminal the bar redraws every 0.2 s; elsewhere (CI, logs) tqdm prints at most every
``interval`` seconds, so logs stay short. ``bar.update(k, acc=0.93)`` advances by ``k`` and shows the
metrics beside the rate; ``bar.to(done)`` advances to ``done`` (a callback for code that reports
how many items it has finished).

In a worker process of a sharded run (``simulate --workers N``) the environment variable
:data:`REPORT_ENV` names a file: the bar then draws nothing and keeps the file holding the count
done, which the parent sums into one bar for all workers.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["Progress", "REPORT_ENV"]

REPORT_ENV = "QCFS2LAVA_PROGRESS_FILE"


class Progress(tqdm):
    """``tqdm`` with this project's defaults and ``update(k, **metrics)``."""

    def __init__(self, total: int, desc: str = "", unit: str = "it", stream: TextIO | None = None,
                 interval: float = 5.0, enabled: bool = True):
        self.report_to = os.environ.get(REPORT_ENV) or None
        self.done = 0
        enabled = enabled and not self.report_to
        stream = stream or sys.stderr
        tty = bool(getattr(stream, "isatty", lambda: False)())
        super().__init__(total=max(int(total), 1), desc=desc, unit=unit, file=stream, disable=not enabled,
                         mininterval=0.2 if tty else interval, ascii=not tty, dynamic_ncols=tty, leave=True,
                         delay=0.5)      # no "0%" line from a command that fails or finishes at once

    def update(self, k: int = 1, **metrics: Any) -> None:  # type: ignore[override]
        self.done += k
        if self.report_to:
            _write_count(self.report_to, self.done)
            return
        if metrics:
            self.set_postfix({key: (f"{v:.4g}" if isinstance(v, float) else v) for key, v in metrics.items()},
                             refresh=False)
        super().update(k)

    def to(self, done: int, **metrics: Any) -> None:
        """Advance to ``done`` items finished."""
        self.update(int(done) - self.done, **metrics)


def _write_count(path: str, done: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(str(done))
    os.replace(tmp, path)


# tqdm's default lock is a multiprocessing RLock, whose creation fixes the process start method; Lava
# then fails to select 'fork' ("context has already been set"). Our bars live in one process.
Progress.set_lock(threading.RLock())
