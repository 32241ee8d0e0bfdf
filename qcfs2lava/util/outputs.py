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
from qcfs2lava.util.shards import concat_samples

__all__ = ["spike_summary", "output_arrays", "spike_arrays", "write_npz", "save_outputs", "save_spikes", "load_npz",
           "join_arrays", "join_npz"]


def spike_summary(spikes: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Recorded spikes (per layer (T, N, ...)) → per layer the spikes per sample and step (T, N) and
    per neuron and sample over all steps (N, ...): what :func:`save_spikes` writes."""
    steps, neurons = [], []
    for s in spikes:
        s = np.asarray(s)
        steps.append(s.reshape(s.shape[0], s.shape[1], -1).sum(axis=2, dtype=np.int64))
        neurons.append(s.sum(axis=0, dtype=np.int64))
    return steps, neurons


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """``arrays`` as ``path`` (.npz, atomically); spike files (no ``logits``) compressed."""
    buf = io.BytesIO()
    (np.savez if "logits" in arrays else np.savez_compressed)(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def output_arrays(logits: np.ndarray, labels: np.ndarray, indices: np.ndarray | None = None,
                  **extra: np.ndarray) -> dict[str, np.ndarray]:
    """What :func:`save_outputs` writes."""
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
    return dict(logits=logits, predictions=logits.argmax(axis=2), labels=labels.astype(np.int64), indices=idx,
                **{k: np.asarray(v) for k, v in extra.items()})


def save_outputs(path: str, logits: np.ndarray, labels: np.ndarray, indices: np.ndarray | None = None,
                 **extra: np.ndarray) -> None:
    """``path`` (.npz): ``logits`` (T, N, K) at every t, ``predictions`` (T, N) their argmax, ``labels``
    (N,), ``indices`` (N,), each sample's position in the test set (default 0..N−1), and ``extra``."""
    write_npz(path, output_arrays(logits, labels, indices, **extra))


def spike_arrays(step_counts: Sequence[np.ndarray], neuron_counts: Sequence[np.ndarray] | None = None,
                 names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """What :func:`save_spikes` writes."""
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
    return arrays


def save_spikes(path: str, step_counts: Sequence[np.ndarray], neuron_counts: Sequence[np.ndarray] | None = None,
                names: Sequence[str] | None = None) -> None:
    """``path`` (.npz, compressed), per synaptic layer i: ``layer{i}`` (T, N) spikes per sample and
    step, summed over the layer's neurons; with ``neuron_counts`` also ``layer{i}_neurons`` (N, C, H,
    W), each neuron's spikes over all T steps per sample (the smallest unsigned type that holds T);
    with ``names`` the layer names as ``layer_names``."""
    write_npz(path, spike_arrays(step_counts, neuron_counts, names))


def load_npz(path: str) -> dict[str, np.ndarray]:
    """A file written by :func:`save_outputs` or :func:`save_spikes`, as plain arrays."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _sample_axis(key: str) -> int | None:
    """The axis of a per-sample file's array that runs over samples (None: not per sample)."""
    if key == "layer_names":
        return None
    if key in ("logits", "predictions") or (key.startswith("layer") and key[5:].isdigit()):
        return 1                                    # (T, N, ...)
    return 0                                        # labels, indices, layer{i}_neurons, extras: (N, ...)


def join_arrays(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The per-sample arrays of consecutive shards (:mod:`qcfs2lava.util.shards`), in shard order,
    as one unsharded run holds them."""
    return concat_samples(parts, {k: a for k in parts[0] if (a := _sample_axis(k)) is not None})


def join_npz(paths: Sequence[str], out: str) -> None:
    """Per-sample files of consecutive shards, in shard order, joined into ``out``."""
    write_npz(out, join_arrays([load_npz(p) for p in paths]))
