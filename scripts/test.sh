#!/usr/bin/env bash
# Install everything the tests need and run them all. The README's test command; CI runs it too.
#   - system packages (tmux, openssh-server, podman, runc, busybox-static) via scripts/setup-test-system.sh
#   - a virtualenv in .venv with the project and its test extras
#   - ruff, mypy, the import-layer check and the whole pytest suite (exit code 5, "no tests", fails)
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

.venv/bin/ruff check engine storage api_compat stepflow_tui tests bench
.venv/bin/mypy engine storage api_compat stepflow_tui
status=0
.venv/bin/python -m pytest -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
