#!/usr/bin/env bash
# Installs every build/test dependency of dsv4 (Debian packages + PyPI wheels).
# Idempotent; safe to re-run. CUTLASS/CuTe headers come from the nvidia-cutlass
# wheel into .deps/cutlass (never vendored).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(cmake ninja-build g++ pkg-config ccache
  nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev libcpp-httplib-dev libpcre2-dev
  libgtest-dev libgmock-dev libbenchmark-dev python3 python3-pip bible-kjv-text)

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# CUTLASS / CuTe headers (only needed to build the CUDA backend).
if command -v nvcc >/dev/null 2>&1 && [[ ! -d .deps/cutlass/include/cute ]]; then
  echo "setup: fetching CUTLASS headers (PyPI nvidia-cutlass)"
  mkdir -p .deps/wheels
  python3 -m pip download -q --no-deps --only-binary=:all: -d .deps/wheels "nvidia-cutlass==4.2.0.0"
  rm -rf .deps/cutlass_unpacked && mkdir -p .deps/cutlass_unpacked
  python3 -m zipfile -e .deps/wheels/nvidia_cutlass-*.whl .deps/cutlass_unpacked
  mkdir -p .deps/cutlass
  src=.deps/cutlass_unpacked/cutlass_library/source
  rm -rf .deps/cutlass/include .deps/cutlass/util && mkdir -p .deps/cutlass/include
  cp -r "$src/include/cutlass" "$src/include/cute" .deps/cutlass/include/
  cp -r "$src/tools/util/include/cutlass/util" .deps/cutlass/include/cutlass/ 2>/dev/null || true
  rm -rf .deps/cutlass_unpacked
fi
# cuobjdump + nvdisasm (PyPI nvidia-cuda-cuobjdump / -nvdisasm; the toolkit here has nvcc and
# ptxas but not them): the SASS check (scripts/sass_assert.sh, ctest sass_tensor_cores)
# reads the built kernels.
if command -v nvcc >/dev/null 2>&1 && [[ ! -x .deps/cuobjdump/bin/nvdisasm ]]; then
  echo "setup: fetching cuobjdump and nvdisasm (PyPI nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm)"
  mkdir -p .deps/wheels
  python3 -m pip download -q --no-deps --only-binary=:all: -d .deps/wheels "nvidia-cuda-cuobjdump==13.5.37" \
    "nvidia-cuda-nvdisasm==13.5.37"
  rm -rf .deps/cuobjdump_unpacked && mkdir -p .deps/cuobjdump_unpacked
  for wheel in .deps/wheels/nvidia_cuda_cuobjdump-*.whl .deps/wheels/nvidia_cuda_nvdisasm-*.whl; do
    python3 -m zipfile -e "$wheel" .deps/cuobjdump_unpacked
  done
  rm -rf .deps/cuobjdump && mkdir -p .deps/cuobjdump
  cp -r .deps/cuobjdump_unpacked/nvidia/cu13/bin .deps/cuobjdump/
  chmod +x .deps/cuobjdump/bin/*
  rm -rf .deps/cuobjdump_unpacked
fi
echo "setup: done"
