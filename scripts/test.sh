#!/usr/bin/env bash
# The test command: set up .venv if needed, then run the whole suite, one worker per core
# (pytest-xdist; PARECO_TEST_WORKERS=0 runs it in this process). Tests sharing a module fixture stay
# on one worker (--dist loadgroup, see tests/conftest.py). A worker that dies ends the run at once
# (--max-worker-restart=0): with loadgroup, the replacement worker was left idle and the run hung.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
exec .venv/bin/python -m pytest -n "${PARECO_TEST_WORKERS:-auto}" --dist loadgroup --max-worker-restart=0 "$@"
