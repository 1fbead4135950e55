#!/usr/bin/env bash
# On the GPU machine, from the repo root, in one `device` call:
#   run(command="bash scripts/device_check.sh", carry=[".deps/device-root", ".deps/cutlass"])
# (first, here: bash scripts/setup.sh && bash scripts/device_deps.sh)
# Builds with all cores (CUDA tests registered), runs every CUDA test and the CPU
# suite, and writes results under $OUT: summary.jsonl + logs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
root=$PWD/.deps/device-root
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSV4_CUDA_TESTS=ON \
  -DCMAKE_PREFIX_PATH="$root/usr" -DDSV4_GTEST_SOURCE_DIR="$root/googletest" > "$OUT/configure.log" 2>&1
configure_rc=$?
cmake --build build-device -j"$(nproc)" > "$OUT/build.log" 2>&1
build_rc=$?
(cd build-device && ctest --output-on-failure -j4 > "$OUT/ctest.log" 2>&1)
ctest_rc=$?
tail -5 "$OUT/ctest.log"
# Every CUDA test binary under compute-sanitizer memcheck and racecheck.
sanitizer_rc=0
for test in build-device/tests/cuda/cuda_*; do
  [[ -x $test ]] || continue
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 9 "$test" > "$OUT/sanitizer_$(basename "$test")_$tool.log" 2>&1 || sanitizer_rc=1
    echo "$(basename "$test") $tool: $(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer_$(basename "$test")_$tool.log" | tail -1)"
  done
done
passed=$(grep -c "Passed" "$OUT/ctest.log")
failed=$(grep -c "\*\*\*Failed\|Exception" "$OUT/ctest.log")
printf '{"date":"%s","gpu":"%s","configure_rc":%d,"build_rc":%d,"ctest_rc":%d,"sanitizer_rc":%d,"passed":%d,"failed":%d}\n' \
  "$(date -u +%FT%TZ)" "$(head -1 "$OUT/gpu.txt")" "$configure_rc" "$build_rc" "$ctest_rc" "$sanitizer_rc" "$passed" "$failed" \
  | tee -a "$OUT/summary.jsonl"
[[ $build_rc -eq 0 ]] || tail -30 "$OUT/build.log"
exit $((configure_rc || build_rc || ctest_rc || sanitizer_rc))
