#!/usr/bin/env bash
# Run the test suite in .venv/ (created on first use). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
exec .venv/bin/python -m pytest -q "$@"
