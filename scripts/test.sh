#!/usr/bin/env bash
# Install everything the tests need and run them all. The README's test command; CI runs it too.
#   - system packages (tmux, openssh-server, podman, runc, busybox-static) via scripts/setup-test-system.sh
#   - a virtualenv in .venv with the project and its test extras
#   - ruff, mypy, the import-layer check and the whole pytest suite (exit code 5, "no tests", fails),
#     in parallel (pytest-xdist), with the 20 slowest tests listed at the end
#
# Environment:
#   STEPFLOW_TEST_WORKERS  pytest worker processes (default: twice the cores, at most 8: most tests
#                          wait on subprocesses, servers and timers, so two a core keep the cores
#                          busy); 0 runs the tests serially in one process
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = "0" ] || command -v sudo >/dev/null 2>&1; then
    bash scripts/setup-test-system.sh
else
    echo "note: not root and no sudo: system packages for the SSH/Docker/tmux tests are not installed" >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

.venv/bin/ruff check engine storage api_compat stepflow_tui stepflow tests bench
.venv/bin/mypy engine storage api_compat stepflow_tui stepflow
cores=$(nproc 2>/dev/null || echo 2)
workers=${STEPFLOW_TEST_WORKERS:-$(( cores * 2 > 8 ? 8 : cores * 2 ))}
status=0
# --dist loadgroup: tests marked xdist_group("measured") run one at a time in one worker
.venv/bin/python -m pytest -p no:cacheprovider -n "$workers" --dist loadgroup --durations=20 "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
