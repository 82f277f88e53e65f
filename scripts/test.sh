#!/usr/bin/env bash
# One command: install everything the tests need, then run them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
scripts/install-test-deps.sh   # Debian chromium, chromedriver, xvfb, xdotool for the browser/window tests
.venv/bin/python -m pytest -q "$@"
