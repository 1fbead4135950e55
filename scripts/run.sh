#!/usr/bin/env bash
# Sets up, builds and runs the main job: `dsv4 generate` on the bundled default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target dsv4
if (($# == 0)); then
  set -- --prompt "And God said" --max-new-tokens 200
fi
exec "$BUILD_DIR/tools/dsv4" generate "$@"
