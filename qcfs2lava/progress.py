"""A small progress bar for long jobs: count, rate, ETA and live metrics on stderr.

On a terminal it redraws one line; elsewhere (CI, logs) it prints a line at most every
``interval`` seconds and once at the end, so logs stay short.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int, desc: str = "", unit: str = "it", stream: TextIO | None = None,
                 interval: float = 5.0, enabled: bool = True):
        self.total, self.desc, self.unit = max(int(total), 1), desc, unit
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.2 if self.tty else interval
        self.enabled = enabled
        self.n = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self.info = ""

    def update(self, k: int = 1, **metrics) -> None:
        self.n += k
        if metrics:
            self.info = " ".join(f"{key}={v:.4g}" if isinstance(v, float) else f"{key}={v}"
                                 for key, v in metrics.items())
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.interval or self.n >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        el = now - self.start
        rate = self.n / el if el > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        frac = min(self.n / self.total, 1.0)
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        line = (f"{self.desc} [{bar}] {self.n}/{self.total} {100 * frac:3.0f}% "
                f"{rate:.1f} {self.unit}/s elapsed {_fmt_time(el)} ETA {_fmt_time(eta)} {self.info}").rstrip()
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.n >= self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.n < self.total and self.tty:
            self.stream.write("\n")
