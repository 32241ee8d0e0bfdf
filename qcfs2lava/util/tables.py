"""The accuracy-at-every-t table every command prints (evaluate, simulate: reference and Lava)."""
from __future__ import annotations

from typing import Sequence

REPORT_T = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def accuracy_table(acc: Sequence[float], ann: float | None = None) -> str:
    """Two lines: the headline time steps up to len(acc), then accuracies in %; ANN first if given."""
    ts = [t for t in REPORT_T if t <= len(acc)]
    head = " | ".join(f"T={t:<4d}" for t in ts)
    row = " | ".join(f"{100 * acc[t - 1]:6.2f}" for t in ts)
    if ann is not None:
        head, row = "   ANN | " + head, f"{100 * ann:6.2f} | " + row
    return head + "\n" + row
