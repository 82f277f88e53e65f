#!/usr/bin/env bash
# System packages the stream tests use: Debian's Chromium + ChromeDriver (the served page is
# loaded in real headless Chromium) Xvfb + xdotool (the OpenCV window on a virtual display, driven by real key presses).
# Idempotent: installs only what is missing. Needs root or passwordless sudo; without either it
# says so and the tests that need these packages skip with that reason.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
command -v xdotool >/dev/null 2>&1 || need+=(xdotool)
if [ ${#need[@]} -eq 0 ]; then
    echo "install-test-deps: chromium, chromedriver, Xvfb and xdotool already installed"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "install-test-deps: cannot install ${need[*]} (not root, no passwordless sudo);" \
         "the browser / window tests will skip" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: no apt-get here; install ${need[*]} by hand" \
         "(the browser / window tests skip without them)" >&2
    exit 0
fi
echo "install-test-deps: installing ${need[*]}"
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "install-test-deps: done ($(chromium --version 2>/dev/null || echo 'chromium ?'))"
