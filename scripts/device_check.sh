#!/usr/bin/env bash
# Builds, tests and benchmarks the CUDA backend on the GPU machine, from the repo
# root, in ONE `run` call (first, here: bash scripts/setup.sh && bash scripts/device_deps.sh):
#
#   everything (all tests, CUDA tests under compute-sanitizer, all benchmarks + peers):
#     run(command="bash scripts/device_check.sh", carry=[".deps/device-root", ".deps/cutlass"], timeout_s=540)
#   the MoE family only (its test binary and benchmark, the torch peer, sanitizer last):
#     run(command="DSV4_CHECK=moe bash scripts/device_check.sh", carry=[".deps/device-root"], timeout_s=480)
#
# Switches (env): DSV4_CTEST_REGEX (moe mode, default ^Moe), DSV4_BENCH_TOKENS (default
# 1,8,64,4096,16384), DSV4_BENCH_PEER=0 skips the torch peer, DSV4_SANITIZER=0 skips the tools.
# Writes under $OUT (at most 8 files come back): summary.jsonl (one status line plus
# every benchmark's JSON lines), build.log, ctest.log, sanitizer.log, bench.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
mode=${DSV4_CHECK:-all}
root=$PWD/.deps/device-root
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)
echo "gpu: $gpu; mode: $mode; $(date -u +%FT%TZ)"
start=$SECONDS

extra=()
if [[ $mode == moe ]]; then
  # The MoE targets need none of the pkg-config libraries (PCRE2, cpp-httplib) that the
  # tokenizer / server want and the GPU machine lacks: stand-ins let the configure pass.
  mkdir -p build-device
  cat > build-device/stub_pkgconfig.cmake <<'CMAKE'
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL dsv4_stub_pkgconfig_targets)
function(dsv4_stub_pkgconfig_targets)
  foreach(target PkgConfig::PCRE2 PkgConfig::HTTPLIB)
    if(NOT TARGET ${target})
      add_library(${target} INTERFACE IMPORTED GLOBAL)
    endif()
  endforeach()
endfunction()
CMAKE
  extra=(-DCMAKE_PROJECT_INCLUDE="$PWD/build-device/stub_pkgconfig.cmake")
fi
cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSV4_CUDA_TESTS=ON "${extra[@]}" \
  -DCMAKE_PREFIX_PATH="$root/usr" -DDSV4_GTEST_SOURCE_DIR="$root/googletest" > "$OUT/build.log" 2>&1
configure_rc=$?
if [[ $mode == moe ]]; then targets=(--target cuda_moe_test bench_moe); else targets=(); fi
cmake --build build-device -j"$(nproc)" "${targets[@]}" >> "$OUT/build.log" 2>&1
build_rc=$?
echo "configure rc=$configure_rc build rc=$build_rc ($((SECONDS - start)) s)"
[[ $build_rc -eq 0 ]] || grep -E "error|Error" -A5 "$OUT/build.log" | head -60

# Tests: every test (all) or the MoE binary's tests (moe), through ctest.
if [[ $mode == moe ]]; then ctest_args=(-R "${DSV4_CTEST_REGEX:-^Moe}"); else ctest_args=(); fi
(cd build-device && ctest --output-on-failure -V -j2 "${ctest_args[@]}" > "$OUT/ctest.log" 2>&1)
ctest_rc=$?
grep -E "^\S*\[moe\]|tests passed|Failed|\*\*\*" "$OUT/ctest.log" | sed 's/^[0-9]*: //' | tail -60
passed=$(grep -cE "Test +#[0-9]+: .*Passed" "$OUT/ctest.log")
failed=$(grep -cE "\*\*\*Failed|\*\*\*Exception|\*\*\*Timeout" "$OUT/ctest.log")
echo "ctest rc=$ctest_rc passed=$passed failed=$failed ($((SECONDS - start)) s)"

# Benchmarks: their JSON lines go straight into summary.jsonl.
bench_rc=0
if [[ -x build-device/bench/bench_moe ]]; then
  tokens=${DSV4_BENCH_TOKENS:-1,8,64,4096,16384}
  build-device/bench/bench_moe --tokens "$tokens" --json "$OUT/summary.jsonl" 2>&1 | tee "$OUT/bench.log" || bench_rc=1
  if [[ ${DSV4_BENCH_PEER:-1} == 1 ]]; then
    PYTHONUNBUFFERED=1 python3 scripts/bench_moe_peer.py --tokens "$tokens" --json "$OUT/summary.jsonl" 2>&1 \
      | tee -a "$OUT/bench.log" || bench_rc=1
  fi
fi
echo "bench rc=$bench_rc ($((SECONDS - start)) s)"

printf '{"check":"device_check","mode":"%s","date":"%s","gpu":"%s","configure_rc":%d,"build_rc":%d,"ctest_rc":%d,"passed":%d,"failed":%d,"bench_rc":%d,"seconds":%d}\n' \
  "$mode" "$(date -u +%FT%TZ)" "$gpu" "$configure_rc" "$build_rc" "$ctest_rc" "$passed" "$failed" "$bench_rc" \
  "$((SECONDS - start))" | tee -a "$OUT/summary.jsonl"

# compute-sanitizer memcheck + racecheck on the CUDA test binaries; the MoE binary
# runs its small cases only (the V4-Flash ones take minutes under the tools).
sanitizer_rc=0
: > "$OUT/sanitizer.log"
[[ ${DSV4_SANITIZER:-1} == 1 ]] || echo "sanitizer skipped (DSV4_SANITIZER=0)"
for test in build-device/tests/cuda/cuda_*; do
  [[ ${DSV4_SANITIZER:-1} == 1 ]] || break
  [[ -x $test ]] || continue
  filter=()
  [[ $(basename "$test") == cuda_moe_test ]] && filter=(--gtest_filter='MoeSmall.*:MoeRouting.*:MoePack.*')
  for tool in memcheck racecheck; do
    timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 "$test" "${filter[@]}" >> "$OUT/sanitizer.log" 2>&1 || sanitizer_rc=1
    echo "$(basename "$test") $tool: $(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer.log" | tail -1)"
  done
done

printf '{"check":"sanitizer","mode":"%s","sanitizer_rc":%d,"seconds":%d}\n' "$mode" "$sanitizer_rc" "$((SECONDS - start))" \
  | tee -a "$OUT/summary.jsonl"
exit $((configure_rc || build_rc || ctest_rc || bench_rc || sanitizer_rc))
