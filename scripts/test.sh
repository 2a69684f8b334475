#!/usr/bin/env bash
# The test command: set up .venv if needed, then run the whole suite, one worker per core
# (pytest-xdist; PARECO_TEST_WORKERS=0 runs it in this process). Each test module runs on
# one worker, so that its module- and class-scoped fixtures (trained fronts, exports) are built once,
# not once per worker.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
exec .venv/bin/python -m pytest -n "${PARECO_TEST_WORKERS:-auto}" --dist loadfile "$@"
