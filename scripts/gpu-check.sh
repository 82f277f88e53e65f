#!/usr/bin/env bash
# One prepared check of everything GPU-related (scripts/gpu_check.py says what it runs):
#
#   scripts/gpu-check.sh [OUT_DIR] [--dry-run] [--only STEPS] [--budget SECONDS]
#       on a machine with an NVIDIA GPU, CUDA, CMake and its own PyTorch (+ numpy); nothing is
#       installed from the network. Reports: OUT_DIR/gpu-check.{json,md} (default out/gpu-check).
#   scripts/gpu-check.sh --prepare-wheels [DIR]
#       here, with network: download the wheels the check needs beyond PyTorch and numpy
#       (OpenCV headless, safetensors; both abi3, any CPython >= 3.8) into DIR (default
#       gpu-wheels/, ignored by git); copy that folder with the checkout to the GPU machine.
#
# Python: $PYTHON, else .venv/bin/python when it has torch, else python3. When cv2 or safetensors
# is missing and gpu-wheels/ exists, they are installed from it (no index) into
# OUT_DIR/pydeps, which is put on PYTHONPATH with the checkout and training/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WHEELS_DEFAULT="$ROOT/gpu-wheels"
# Linux x86_64 by default; GPU_CHECK_PLATFORM=aarch64 for Grace Hopper machines.
ARCH="${GPU_CHECK_PLATFORM:-x86_64}"

if [ "${1:-}" = "--prepare-wheels" ]; then
    dest="${2:-$WHEELS_DEFAULT}"
    mkdir -p "$dest"
    "${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: \
        --implementation cp --python-version 3.10 --abi abi3 \
        --platform "manylinux2014_$ARCH" --platform "manylinux_2_17_$ARCH" \
        --platform "manylinux_2_28_$ARCH" \
        -d "$dest" "opencv-python-headless>=4.9,<5" "safetensors>=0.4"
    ls -l "$dest"
    exit 0
fi

if [ -n "${PYTHON:-}" ]; then
    py="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ] && "$ROOT/.venv/bin/python" -c "import torch" 2>/dev/null; then
    py="$ROOT/.venv/bin/python"
else
    py=python3
fi

# The report directory: the first argument that is not an option or an option's value.
out="$ROOT/out/gpu-check"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --only|--budget|--train-minutes) i=$((i + 1)) ;;
        -*) ;;
        *) out="${args[$i]}"; break ;;
    esac
done
mkdir -p "$out"

export PYTHONPATH="$ROOT:$ROOT/training${PYTHONPATH:+:$PYTHONPATH}"
if ! "$py" -c "import cv2, safetensors" 2>/dev/null; then
    wheels="${GPU_CHECK_WHEELS:-$WHEELS_DEFAULT}"
    if compgen -G "$wheels/*.whl" >/dev/null; then
        echo "installing OpenCV / safetensors from $wheels into $out/pydeps (no network)"
        if "$py" -m pip install -q --no-index --no-deps --find-links "$wheels" \
                --target "$out/pydeps" opencv-python-headless safetensors; then
            export PYTHONPATH="$PYTHONPATH:$out/pydeps"
        else
            echo "warning: installing the wheels failed; the steps that need them will fail" >&2
        fi
    else
        echo "warning: $py lacks cv2 or safetensors and no wheels are in $wheels:" \
             "the training, eval and translator steps will fail" \
             "(run scripts/gpu-check.sh --prepare-wheels on a machine with network first)" >&2
    fi
fi
exec "$py" "$ROOT/scripts/gpu_check.py" "$@"
