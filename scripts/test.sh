#!/usr/bin/env bash
# Install the project with its test extras into .venv, then run every check CI runs:
# the layer contracts, ruff, mypy and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'

echo "== import layers"
.venv/bin/lint-imports
echo "== ruff"
.venv/bin/ruff check chatserver tests
echo "== mypy"
.venv/bin/mypy chatserver
echo "== pytest"
.venv/bin/python -m pytest "$@"
