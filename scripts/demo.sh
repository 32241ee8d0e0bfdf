#!/usr/bin/env bash
# The main job end to end on the bundled digits, in .venv/ (created on first use).
# Extra arguments go to `qcfs2lava demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
exec .venv/bin/qcfs2lava demo "$@"
