#!/usr/bin/env bash
# One command: install everything the tests need, then run them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
.venv/bin/python -m pytest -q "$@"
