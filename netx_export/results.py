"""What a run of a NetX file produces, whichever simulator or runner produced it, and its files.

:class:`SimResult` is the layout every backend reads back into (the reference simulator, the
stock-block simulator, the stock-block Lava runner; the IF_SUB Lava runner's ``LavaResult`` has the
same ``logits`` and ``spikes``). Their per-sample files (``--save-outputs``, ``--save-spikes``) are
written by :mod:`qcfs2lava.util.outputs`, the one format every backend shares.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SimResult"]


@dataclass(frozen=True, eq=False)
class SimResult:
    logits: np.ndarray                      # int64 (T, N, K): summed readout input up to t (integer units)
    spike_counts: tuple[np.ndarray, ...]    # per synaptic layer: (N,) spikes over all T steps
    neurons: tuple[int, ...]                # per synaptic layer: neurons per sample
    spikes: tuple[np.ndarray, ...] | None   # per synaptic layer: bool (T, N, C, H, W), if recorded
    saturated: int                          # v saturations (all layers, steps, samples)
    drive_clipped: int                      # input drive entries clipped to ±limit
    timing: str
    step_counts: tuple[np.ndarray, ...] | None = None     # per synaptic layer: (T, N) spikes per step, if counted
    neuron_counts: tuple[np.ndarray, ...] | None = None   # per synaptic layer: (N, C, H, W) spikes over T, if counted

    @property
    def T(self) -> int:
        return int(self.logits.shape[0])

    @property
    def predictions(self) -> np.ndarray:
        """(T, N) argmax of the readout at every t."""
        return self.logits.argmax(axis=2)

    def accuracy(self, labels: np.ndarray) -> np.ndarray:
        """(T,) fraction correct at every t = 1..T."""
        return (self.predictions == np.asarray(labels).reshape(1, -1)).mean(axis=1)
