#!/usr/bin/env bash
# Refresh constraints.txt, the versions that scripts/test.sh (and so CI) installs: the newest
# releases within pyproject.toml's ranges, resolved in a throw-away virtual environment.
# Run it after changing a dependency in pyproject.toml, then run scripts/test.sh and commit both.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --upgrade pip
"$tmp/venv/bin/pip" install --quiet '.[test,bench,docs]'
{
    echo "# The versions scripts/test.sh installs (pip install -c constraints.txt)."
    echo "# Made by scripts/lock.sh from pyproject.toml's ranges; refresh with that script."
    "$tmp/venv/bin/pip" freeze --exclude chatserver | LC_ALL=C sort -f
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages"
