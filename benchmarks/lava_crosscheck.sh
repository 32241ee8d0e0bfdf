#!/usr/bin/env bash
# Lava fixed_pt vs the reference simulator, spike for spike, in every layer, step and sample:
#   bash benchmarks/lava_crosscheck.sh STUDY_CKPT DIGITS_CKPT CIFAR_DIR [OUT_DIR]
# STUDY_CKPT: the CIFAR-10 study model (vgg-small QCFS, see benchmarks/README.md); DIGITS_CKPT: the
# demo's tiny digits model; CIFAR_DIR: a folder made by ../shared/data/make_cifar10.py (JPEG copy).
# Writes lava_crosscheck_{cifar10,cifar10_aligned,digits}.json into OUT_DIR (default
# benchmarks/results); exits non-zero on any mismatch. About 12 min on 2 busy cores.
set -euo pipefail
STUDY=$1 DIGITS=$2 DATA=$3 OUT=${4:-benchmarks/results}
PY=${PY:-.venv/bin/python}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
$PY -m qcfs2lava export "$STUDY" -o "$TMP/study.net" --data-dir "$DATA" --check
$PY -m qcfs2lava simulate "$TMP/study.net" --backend lava --compare --data-dir "$DATA" --n 200 --T 32 \
    --timing lava --json "$OUT/lava_crosscheck_cifar10.json"
$PY -m qcfs2lava simulate "$TMP/study.net" --backend lava --compare --data-dir "$DATA" --n 200 --T 32 \
    --timing aligned --json "$OUT/lava_crosscheck_cifar10_aligned.json"
$PY -m qcfs2lava export "$DIGITS" -o "$TMP/digits.net" --check
$PY -m qcfs2lava simulate "$TMP/digits.net" --backend lava --compare --T 32 --timing lava \
    --json "$OUT/lava_crosscheck_digits.json"
