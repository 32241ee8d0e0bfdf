"""Per-sample results as ``.npz`` files, one format for every backend (the float SNN of
``evaluate``, the reference simulator and Lava of ``simulate``), so that two runs can be compared
sample by sample. Written atomically; read back with :func:`load_npz` (no pickled objects).

``--save-outputs F.npz``: ``logits`` (T, N, K) — the readout after t = 1..T steps (float SNN: the mean
output; fixed point: the summed integer readout) —, ``predictions`` (T, N) = their argmax (the first
maximal class on ties), ``labels`` (N,), ``indices`` (N,) = each sample's position in the test split,
and any extras (``evaluate``: ``ann_logits`` (N, K)).

``--save-spikes F.npz``: per spiking layer i, ``layer{i}`` (T, N) = the spikes of all its neurons in
step t of sample n; ``layer_names``; with ``simulate --neuron-spikes`` also ``layer{i}_neurons`` (N, C,
H, W) = each neuron's spikes over all T steps, in the smallest unsigned type that holds T.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from qcfs2lava.util.fileio import atomic_write_bytes

__all__ = ["spike_summary", "save_outputs", "save_spikes", "load_npz"]


def spike_summary(spikes: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Recorded spikes (per layer (T, N, ...)) → per layer the spikes per sample and step (T, N) and
    per neuron and sample over all steps (N, ...): what :func:`save_spikes` writes."""
    steps, neurons = [], []
    for s in spikes:
        s = np.asarray(s)
        steps.append(s.reshape(s.shape[0], s.shape[1], -1).sum(axis=2, dtype=np.int64))
        neurons.append(s.sum(axis=0, dtype=np.int64))
    return steps, neurons


def _write_npz(path: str, arrays: dict[str, np.ndarray], compressed: bool = False) -> None:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def save_outputs(path: str, logits: np.ndarray, labels: np.ndarray, indices: np.ndarray | None = None,
                 **extra: np.ndarray) -> None:
    """``path`` (.npz): ``logits`` (T, N, K) at every t, ``predictions`` (T, N) their argmax, ``labels``
    (N,), ``indices`` (N,), each sample's position in the test set (default 0..N−1), and ``extra``."""
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"logits must be (T, N, K), got {logits.shape}")
    n = int(logits.shape[1])
    labels = np.asarray(labels).reshape(-1)
    if labels.shape != (n,):
        raise ValueError(f"{labels.shape[0]} labels for {n} samples")
    idx = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.shape != (n,):
        raise ValueError(f"{idx.shape[0]} indices for {n} samples")
    _write_npz(path, dict(logits=logits, predictions=logits.argmax(axis=2), labels=labels.astype(np.int64),
                          indices=idx, **{k: np.asarray(v) for k, v in extra.items()}))


def save_spikes(path: str, step_counts: Sequence[np.ndarray], neuron_counts: Sequence[np.ndarray] | None = None,
                names: Sequence[str] | None = None) -> None:
    """``path`` (.npz, compressed), per synaptic layer i: ``layer{i}`` (T, N) spikes per sample and
    step, summed over the layer's neurons; with ``neuron_counts`` also ``layer{i}_neurons`` (N, C, H,
    W), each neuron's spikes over all T steps per sample (the smallest unsigned type that holds T);
    with ``names`` the layer names as ``layer_names``."""
    arrays: dict[str, np.ndarray] = {}
    T = 0
    for i, c in enumerate(step_counts):
        c = np.asarray(c, dtype=np.int64)
        if c.ndim != 2:
            raise ValueError(f"layer {i}: step counts must be (T, N), got {c.shape}")
        arrays[f"layer{i}"] = c
        T = max(T, int(c.shape[0]))
    if neuron_counts is not None:
        dtype = np.uint8 if T < 1 << 8 else np.uint16 if T < 1 << 16 else np.uint32
        for i, c in enumerate(neuron_counts):
            arrays[f"layer{i}_neurons"] = np.asarray(c).astype(dtype)
    if names is not None:
        arrays["layer_names"] = np.asarray(list(names), dtype=str)
    _write_npz(path, arrays, compressed=True)


def load_npz(path: str) -> dict[str, np.ndarray]:
    """A file written by :func:`save_outputs` or :func:`save_spikes`, as plain arrays."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
