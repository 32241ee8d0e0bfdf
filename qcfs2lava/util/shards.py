"""Shards of a run: which samples shard K of N takes, and how per-sample files of shards join.

A run over n samples split into N shards gives shard K the contiguous samples
``[K·n // N, (K+1)·n // N)`` (:meth:`Shard.span`), so the shards cover 0..n−1 once, in order, and
joining their results in shard order gives the samples in the order of one unsharded run. The same
split serves ``--shard K/N`` (one shard per command, for batch schedulers), ``--workers N`` (N
shards on one machine) and ``torchrun`` (one shard per rank).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Shard", "parse_shard", "concat_samples"]


@dataclass(frozen=True)
class Shard:
    index: int      # K, 0 ≤ K < count
    count: int      # N ≥ 1

    def __post_init__(self) -> None:
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= K < N and N >= 1")

    def span(self, n: int) -> tuple[int, int]:
        """(start, stop) of this shard's samples among n."""
        return self.index * n // self.count, (self.index + 1) * n // self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` → :class:`Shard` (ValueError with the reason otherwise)."""
    parts = str(text).split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"'{text}' is not K/N (e.g. 0/4: the first of four shards)")
    return Shard(int(parts[0]), int(parts[1]))


def concat_samples(parts: Sequence[dict[str, np.ndarray]], sample_axis: dict[str, int]) -> dict[str, np.ndarray]:
    """Per-sample arrays of consecutive shards (each a dict of arrays, in shard order) joined into one:
    key k is concatenated along ``sample_axis[k]``; keys not listed there (e.g. ``layer_names``) must
    be equal in every part and are kept once."""
    if not parts:
        raise ValueError("no parts to join")
    keys = list(parts[0])
    for i, p in enumerate(parts[1:], 1):
        if list(p) != keys:
            raise ValueError(f"part {i} holds {sorted(p)}, part 0 {sorted(keys)}")
    out: dict[str, np.ndarray] = {}
    for k in keys:
        if k in sample_axis:
            out[k] = np.concatenate([p[k] for p in parts], axis=sample_axis[k])
        else:
            if any(not np.array_equal(p[k], parts[0][k]) for p in parts[1:]):
                raise ValueError(f"'{k}' differs between parts")
            out[k] = parts[0][k]
    return out
