#!/usr/bin/env bash
# Create or reuse .venv/ with the pinned stack; a no-op (about a second) when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.qcfs2lava-stamp
want=$(cat scripts/requirements.txt scripts/requirements-lava.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
echo "[venv] installing the pinned stack into .venv/ (first run: several minutes)" >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >&2
.venv/bin/python -m pip install -q -r scripts/requirements.txt >&2
.venv/bin/python -m pip install -q --no-deps --ignore-requires-python -r scripts/requirements-lava.txt >&2
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >&2
echo "$want" > "$stamp"
