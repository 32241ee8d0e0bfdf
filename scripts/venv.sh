#!/usr/bin/env bash
# Create or reuse .venv/ with the pinned stack; a no-op (about a second) when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.qcfs2lava-stamp
want=$(cat scripts/requirements.txt scripts/requirements-lava.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
pipi() {  # quiet pip; its output is shown only when it fails
  if ! .venv/bin/python -m pip install -q "$@" >"$log" 2>&1; then
    grep -v "is ignored: it is neither" "$log" >&2; echo "[venv] pip install $* failed" >&2; exit 1
  fi
}
echo "[venv] installing the pinned stack into .venv/ (first run: a few minutes)" >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pipi --upgrade pip
pipi -r scripts/requirements.txt
# Lava declares Python <3.11 and torch <2.4: exact pins, no dependency resolution (see the file).
pipi --no-deps --ignore-requires-python -r scripts/requirements-lava.txt
pipi --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
echo "[venv] ready" >&2
