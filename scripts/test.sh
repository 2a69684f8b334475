#!/usr/bin/env bash
# The test command: set up .venv if needed, then run the whole suite, one worker per core
# (pytest-xdist; PARECO_TEST_WORKERS=0 runs it in this process). Each test module runs on
# one worker, so that its module- and class-scoped fixtures (trained fronts, exports) are built once,
# not once per worker; modules go out in the order tests/conftest.py sorts them (heaviest first).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
# mypy's cache lives with the environment: most of it is the installed packages' types (torch's above
# all), which every new checkout would analyse again (mypy over every package: 85 CPU-s cold, 4 warm).
export MYPY_CACHE_DIR="${MYPY_CACHE_DIR:-$PWD/.venv/mypy-cache}"
exec .venv/bin/python -m pytest -n "${PARECO_TEST_WORKERS:-auto}" --dist loadfile --no-loadscope-reorder "$@"
