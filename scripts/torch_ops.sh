#!/usr/bin/env bash
# Builds the PyTorch custom ops (torch_ops/, -DDSV4_TORCH_OPS=ON) in their own build dir
# and runs tests/torch. Not part of scripts/test.sh: the default build never needs torch.
#   bash scripts/torch_ops.sh                   # here: CPU ops (uses .deps/torch-venv if present)
#   run(command="bash scripts/torch_ops.sh", carry=[".deps/device-root"], timeout_s=330)   # GPU machine
# Switches: BUILD_DIR (default build-torch), PYTHON (default .deps/torch-venv/bin/python, else
# python3), DSV4_TORCH_CUDA=0 (CPU ops only even where nvcc exists).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-torch}
python=${PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x .deps/torch-venv/bin/python ]]; then python=.deps/torch-venv/bin/python; else python=python3; fi
fi
torch_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)') || {
  echo "torch_ops.sh: $python cannot import torch; install it, e.g. $python -m pip install torch pytest" >&2
  exit 1
}
prefix=$torch_prefix
args=()
# The GPU machine has no Debian dev packages: the carried root (scripts/device_deps.sh) has them.
if [[ -d .deps/device-root/usr ]] && ! pkg-config --exists libpcre2-8 2>/dev/null; then
  prefix="$PWD/.deps/device-root/usr;$prefix"
  args+=(-DDSV4_STATIC_DEPS=ON)
fi
cuda=${DSV4_TORCH_CUDA:-1}
if [[ $cuda == 0 ]] || ! command -v nvcc >/dev/null 2>&1; then
  args+=(-DDSV4_ENABLE_CUDA=OFF)
fi
mkdir -p "$build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSV4_TORCH_OPS=ON -DDSV4_BUILD_TESTS=OFF \
  -DCMAKE_PREFIX_PATH="$prefix" "${args[@]}" >"$build/configure.log" 2>&1 || { tail -40 "$build/configure.log"; exit 1; }
# dsv4: the CLI whose `quantize` output the tests compare with.
cmake --build "$build" -j"$(nproc)" --target dsv4_torch_ops dsv4
export DSV4_TORCH_OPS_LIB=$PWD/$build/torch_ops/libdsv4_torch_ops.so DSV4_CLI=$PWD/$build/tools/dsv4
# Where a GPU is visible the CUDA tests must run: a missing CUDA kernel fails instead of skipping.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then export DSV4_TORCH_REQUIRE_CUDA=1; fi
if "$python" -c 'import pytest' 2>/dev/null; then
  exec "$python" -m pytest -rs -s -v tests/torch
fi
echo "torch_ops.sh: pytest is not installed for $python: $python -m pip install pytest" >&2
exit 1
