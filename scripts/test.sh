#!/usr/bin/env bash
# Install the project with its test and docs extras into .venv, make sure MariaDB, Redis and
# nginx are there, then run every check CI runs: the layer contracts, ruff, mypy, the reference
# docs (mkdocs build --strict: a broken link or docstring reference fails), the whole test suite,
# and the protocol suite again against a two-node cluster, on the anyio transport and over
# WebSocket.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# The locked versions (constraints.txt, refreshed by scripts/lock.sh): a fresh clone gets what
# passed here, not whatever was released since.
.venv/bin/pip install --quiet -c constraints.txt -e '.[test,docs]'

echo "== services (MariaDB, Redis, nginx)"
bash scripts/services.sh

echo "== import layers"
.venv/bin/lint-imports
echo "== ruff"
.venv/bin/ruff check chatserver tests benchmarks
echo "== mypy"
.venv/bin/mypy chatserver
echo "== docs (mkdocs build --strict, into a throw-away folder)"
docs_site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$docs_site"
rm -rf "$docs_site"
echo "== pytest: the integration tests but the protocol suite (real sockets, services, processes, Chromium)"
.venv/bin/python -m pytest --durations=30 "$@" tests/integration \
    --ignore-glob='*/integration/test_protocol_*.py'
# The protocol suite four ways, side by side: each run waits on sockets far more than it
# computes, and each has its own servers, ports, database and bus namespace. Each run's output
# is kept in a file and shown whole once all are done.
# The unit tests (in-process, CPU-bound) run beside them.
reruns=$(mktemp -d)
trap 'rm -rf "$reruns"' EXIT
.venv/bin/python -m pytest "$@" tests/unit > "$reruns/unit" 2>&1 & unit=$!
.venv/bin/python -m pytest "$@" tests/integration/test_protocol_*.py > "$reruns/protocol" 2>&1 &
protocol=$!
CHATSERVER_TEST_CLUSTER=1 .venv/bin/python -m pytest "$@" tests/integration/test_protocol_*.py \
    > "$reruns/cluster" 2>&1 & cluster=$!
CHATSERVER_TEST_TRANSPORT=anyio .venv/bin/python -m pytest "$@" tests/integration/test_protocol_*.py \
    > "$reruns/anyio" 2>&1 & anyio=$!
CHATSERVER_TEST_TRANSPORT=websocket .venv/bin/python -m pytest "$@" \
    tests/integration/test_protocol_*.py > "$reruns/websocket" 2>&1 & websocket=$!
failed=0
for run in unit protocol cluster anyio websocket; do
    case $run in
        protocol) echo "== pytest: the protocol suite (one node, TCP)" ;;
        unit) echo "== pytest: the unit tests (in-process: use cases, adapters' contracts, models)" ;;
        cluster) echo "== the protocol suite again, against two nodes behind nginx" ;;
        anyio) echo "== the protocol suite again, on the anyio-streams transport (serve --transport anyio)" ;;
        websocket) echo "== the protocol suite again, every client over WebSocket (serve --ws-port, /ws)" ;;
    esac
    wait "${!run}" || failed=1
    cat "$reruns/$run"
done
exit $failed
