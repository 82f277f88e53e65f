#!/usr/bin/env bash
# One command: install stargan-rt, then run the main job on the built-in demo model: build (or
# reuse) the engine for the best target on this machine and stream the bundled sample video
# through it, headless. Writes out/quickstart.mp4 and out/quickstart-stats.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh export      # runtime + torch/onnxsim for the first export
mkdir -p out
.venv/bin/stargan-rt info
.venv/bin/stargan-rt webcam --domain smile --source sample --headless \
    --record out/quickstart.mp4 --stats out/quickstart-stats.json "$@"
echo "wrote out/quickstart.mp4 and out/quickstart-stats.json"
echo "the demo model was trained on synthetic faces only: real faces come out blurred."
echo "For real faces: .venv/bin/stargan-rt pull celeba-128, then --model celeba-128 (README: Real faces)"
