#!/usr/bin/env bash
# The main job on the embedded default: set up .venv if needed, then run it end to end.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
exec .venv/bin/python -m benchmarks.demo "$@"
