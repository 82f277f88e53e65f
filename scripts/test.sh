#!/usr/bin/env bash
# One command: install everything the tests need, lint, then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh test
scripts/install-test-deps.sh   # Debian chromium, chromedriver, xvfb, xdotool for the browser/window tests
.venv/bin/python -m ruff check .   # configuration: [tool.ruff] in pyproject.toml
.venv/bin/python -m pytest -q "$@"
