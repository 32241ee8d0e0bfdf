#!/usr/bin/env bash
# The float SNN and the integer-exact reference simulator on a GPU (issue 17), one command:
#
#   bash benchmarks/gpu_check.sh CKPT DATA_DIR               # CUDA, full test set, T = 64
#   DEVICE=cpu N=20 T=4 bash benchmarks/gpu_check.sh m.pt ""  # the CPU smoke run CI does (digits)
#
# Exports CKPT, runs `evaluate` (ANN + float SNN) and `simulate --engine torch` (refsim) on DEVICE over
# the first N test images at T steps, then refsim on the CPU over the first CPU_N of them, and writes
# $OUT/gpu_check.json: accuracies at every t, seconds, image-steps/s, and whether refsim on DEVICE
# equals refsim on the CPU logit for logit (it must: the same integers). OUT defaults to
# benchmarks/results/gpu_check; PYTHON to .venv/bin/python.
set -euo pipefail
CKPT=${1:?usage: gpu_check.sh CKPT DATA_DIR (DATA_DIR may be "" for digits)}
DATA=${2:-}
DEVICE=${DEVICE:-cuda}
N=${N:-10000}
T=${T:-64}
CPU_N=${CPU_N:-500}
OUT=${OUT:-benchmarks/results/gpu_check}
PY=${PYTHON:-.venv/bin/python}
DD=()
[ -n "$DATA" ] && DD=(--data-dir "$DATA")
mkdir -p "$OUT"
"$PY" -m qcfs2lava export "$CKPT" -o "$OUT/model.net" "${DD[@]}"
"$PY" -m qcfs2lava evaluate "$CKPT" "${DD[@]}" --n "$N" --T "$T" --device "$DEVICE" --json "$OUT/float_snn.json"
"$PY" -m qcfs2lava simulate "$OUT/model.net" "${DD[@]}" --n "$N" --T "$T" --engine torch --device "$DEVICE" \
    --json "$OUT/refsim.json" --save-outputs "$OUT/refsim_outputs.npz"
CPU_N=$(( CPU_N < N ? CPU_N : N ))
"$PY" -m qcfs2lava simulate "$OUT/model.net" "${DD[@]}" --n "$CPU_N" --T "$T" --engine torch --device cpu \
    --json "$OUT/refsim_cpu.json" --save-outputs "$OUT/refsim_cpu_outputs.npz"
"$PY" - "$OUT" "$DEVICE" "$CKPT" <<'PY'
import json, sys
import numpy as np
out, device, ckpt = sys.argv[1:]
snn, ref, cpu = (json.load(open(f"{out}/{f}.json")) for f in ("float_snn", "refsim", "refsim_cpu"))
a, b = np.load(f"{out}/refsim_outputs.npz"), np.load(f"{out}/refsim_cpu_outputs.npz")
k = b["logits"].shape[1]
same = bool(np.array_equal(a["logits"][:, :k], b["logits"]))
steps = ref["n"] * ref["T"]
res = dict(checkpoint=ckpt, device=device, n=ref["n"], T=ref["T"],
           ann_accuracy=snn["ann_accuracy"], float_snn_accuracy=snn["snn_accuracy"], refsim_accuracy=ref["accuracy"],
           seconds=dict(float_snn=snn["seconds"], refsim=ref["seconds"], refsim_cpu=cpu["seconds"]),
           image_steps_per_second=dict(float_snn=steps / snn["seconds"], refsim=steps / ref["seconds"],
                                       refsim_cpu=cpu["n"] * cpu["T"] / cpu["seconds"]),
           refsim_device_equals_cpu=same, compared_samples=int(k))
json.dump(res, open(f"{out}/gpu_check.json", "w"), indent=1)
print(f"{device}: float SNN {snn['snn_accuracy'][-1]:.4f}, refsim {ref['accuracy'][-1]:.4f} at T={ref['T']} on "
      f"{ref['n']} images; refsim on {device} = refsim on the CPU over {k} samples: {same}")
sys.exit(0 if same else 1)
PY
