#!/usr/bin/env bash
# Create or reuse .venv in the checkout and install pareco (editable) with its extras.
# Sourced by scripts/demo.sh and scripts/test.sh; reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.pareco-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setting up .venv (first time: a few minutes) ..." >&2
  # torch first, pinned, so pip takes the build this machine holds instead of resolving a newer one.
  # --no-cache-dir: the environment is 7.6 GB; a second copy of the downloaded wheels in pip's cache
  # is what a machine with little disk left cannot hold (a CI run failed with "No space left").
  .venv/bin/pip install -q --no-cache-dir torch==2.14.1 torchvision==0.29.1
  .venv/bin/pip install -q --no-cache-dir -e ".[all,dev,timm]"
  echo "$want" > "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
