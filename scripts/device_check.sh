#!/usr/bin/env bash
# Builds, tests and benchmarks the whole tree on the GPU machine in ONE `run` call, from
# the repo root. First, here: bash scripts/setup.sh && bash scripts/device_deps.sh
# (.deps/device-root: nlohmann-json, CLI11, fmt, PCRE2 headers + libpcre2-8.a, googletest
# source; about 5 MiB. The GPU machine has no pkg-config and no cpp-httplib: the HTTP
# server is not built there, `dsv4 serve` says so).
#
#   everything:
#     run(command="bash scripts/device_check.sh", carry=[".deps/device-root"], timeout_s=600)
#   one family (test binaries / benchmarks whose name matches the regex), plus extras:
#     run(command="DSV4_CHECK=moe bash scripts/device_check.sh", carry=[".deps/device-root"], timeout_s=600)
#   only extra commands (builds dsv4 only, no tests / benchmarks / sanitizer):
#     run(command="DSV4_CHECK=none DSV4_EXTRA='build-device/tools/dsv4 bench --device cuda --json $SUMMARY' bash scripts/device_check.sh",
#         carry=[".deps/device-root"], timeout_s=600)
#
# Steps, in order, each under its own timeout and a global deadline (DSV4_DEADLINE seconds
# after the start, default 560: about timeout_s - 40, so a hang cannot eat the call; steps that
# would start after it are recorded as "skipped"):
#   configure, build    all cores (nproc), ninja -k 0 (what can build, builds); ccache
#                       when present (CCACHE_DIR defaults to build-device/.ccache)
#   ctest_cpu           every ctest test that is not a CUDA one, -j nproc
#   ctest_cuda          every CUDA test (labels cuda_*), -j DSV4_CUDA_JOBS (default 4)
#   bench_<family>      every build-device/bench/bench_* binary: --json $SUMMARY plus
#                       $DSV4_BENCH_ARGS_<family> (e.g. DSV4_BENCH_ARGS_moe="--tokens 1,8")
#   peer_<family>       scripts/bench_<family>_peer.py with the same arguments (torch)
#   extra_<n>           each line of $DSV4_EXTRA, then of the file $DSV4_EXTRA_FILE
#                       (blank lines and # comments skipped), run with bash -c; they
#                       see $SUMMARY (append JSON lines there), $LOGS, $BUILD
#   memcheck_<bin>, racecheck_<bin>
#                       compute-sanitizer on every CUDA test binary, DSV4_SANITIZER_JOBS
#                       (default 3) at a time, long binaries with a gtest filter
#                       (DSV4_SANITIZER_FILTERS='bin=filter;racecheck:bin2=filter' adds/overrides)
# Selection: DSV4_CHECK=all (default) | none | <regex> matched against binary names
# (cuda_moe_test, bench_moe, tokenizer_test, ...). Switches: DSV4_BUILD=0 (reuse a warm
# build-device), DSV4_TESTS=0, DSV4_BENCH=0, DSV4_BENCH_PEER=0, DSV4_SANITIZER=0.
# Timeouts (s): DSV4_BUILD_TIMEOUT 420, DSV4_TEST_TIMEOUT 240, DSV4_BENCH_TIMEOUT 180,
# DSV4_EXTRA_TIMEOUT 300, DSV4_SANITIZER_TIMEOUT 150. DSV4_TAIL lines (default 25) of each
# benchmark / extra log are printed.
# Writes under $OUT: summary.jsonl (a first "env" line, one line per step: step, status,
# rc, seconds, ...; plus the benchmarks' own JSON lines) and logs.tar.gz (every step's
# log, ctest's LastTest.log, CMakeCache.txt). The last lines printed are a table of steps.
# Exit status: 0 when every step that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
repo=$PWD
build=build-device
root=$repo/.deps/device-root
export SUMMARY=$OUT/summary.jsonl BUILD=$build LOGS=$repo/$build/check-logs
rm -rf "$LOGS" && mkdir -p "$LOGS" && : > "$SUMMARY"
rows=$LOGS/.rows && : > "$rows"
start=$SECONDS
deadline=$((start + ${DSV4_DEADLINE:-560}))
tail_lines=${DSV4_TAIL:-25}
mode=${DSV4_CHECK:-all}
jobs=$(nproc)
[[ -x /usr/local/cuda/bin/nvcc ]] && ! command -v nvcc >/dev/null && export PATH=/usr/local/cuda/bin:$PATH
if command -v ccache >/dev/null; then
  export CCACHE_DIR=${CCACHE_DIR:-$repo/$build/.ccache}
  ccache_note=$(ccache --version | head -1)
else
  ccache_note="no ccache"
fi

json_str() {  # a JSON string literal
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/ }
  s=${s//$'\n'/ }
  s=${s//$'\r'/ }
  printf '"%s"' "$s"
}

# record NAME STATUS RC SECONDS DETAIL [EXTRA_JSON_FIELDS]
record() {
  printf '{"step":%s,"status":"%s","rc":%d,"seconds":%s,"detail":%s%s}\n' "$(json_str "$1")" "$2" "$3" "$4" \
    "$(json_str "$5")" "${6:+,$6}" >> "$SUMMARY"
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$4" "$5" >> "$rows"
}

# step NAME LIMIT DETAIL CMD...: CMD's output goes to $LOGS/NAME.log; at most LIMIT
# seconds (less when the deadline is nearer). DETAIL: a function given the log that
# prints the table's detail column, "=text", or "-". Sets step_rc.
step() {
  local name=$1 limit=$2 detail_fn=$3
  shift 3
  local left=$((deadline - SECONDS))
  if ((left < 10)); then
    record "$name" skipped 0 0 "deadline reached" && step_rc=0 && return 0
  fi
  ((limit > left)) && limit=$left
  local t0=$EPOCHREALTIME
  timeout -k 10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  step_rc=$?
  local seconds
  seconds=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  local status=ok
  ((step_rc != 0)) && status=FAIL
  ((step_rc == 124 || step_rc == 137)) && status=TIMEOUT
  local detail=""
  case $detail_fn in
    -) ;;
    =*) detail=${detail_fn#=} ;;
    *) detail=$($detail_fn "$LOGS/$name.log" 2>/dev/null) ;;
  esac
  ((step_rc == 124 || step_rc == 137)) && detail="killed after ${limit}s; $detail"
  record "$name" "$status" "$step_rc" "$seconds" "$detail" "\"limit\":$limit"
  return 0
}

ctest_detail() {
  local line
  line=$(grep -E "tests passed|tests failed" "$1" | tail -1)
  local failed
  failed=$(grep -E "^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Exception|Not Run|Subprocess aborted)" "$1" |
    sed -E 's/^\s+[0-9]+ - //; s/ \(.*//' | head -8 | tr '\n' ' ')
  echo "${line:-no summary}${failed:+; failed: $failed}"
}
sanitizer_detail() { grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$1" | grep -vE "^\[ +(OK|RUN)" | tail -3 | tr '\n' ' '; }
build_detail() { grep -cE "^FAILED: " "$1" | sed 's/$/ failed edges/'; }
last_line() { grep -v '^\s*$' "$1" | tail -1 | cut -c1-120; }

pack() {
  local extra=()
  for f in "$build/Testing/Temporary/LastTest.log" "$build/Testing/Temporary/LastTestsFailed.log" "$build/CMakeCache.txt"; do
    [[ -f $f ]] && extra+=("$f")
  done
  # Keep the tarball well under the 16 MiB a returned file may have: cut huge logs.
  for f in "$LOGS"/*.log; do
    [[ -f $f ]] || continue
    if (($(stat -c %s "$f") > 20000000)); then
      { head -c 5000000 "$f"; printf '\n[... cut by device_check.sh ...]\n'; tail -c 5000000 "$f"; } > "$f.cut"
      mv "$f.cut" "$f"
    fi
  done
  tar -czf "$OUT/logs.tar.gz" -C "$repo" "${build}/check-logs" "${extra[@]}" 2>/dev/null
}

table() {
  echo
  echo "== device_check ($mode) on ${gpu%%,*}: $(awk -F'\t' '$2=="ok"' "$rows" | wc -l) ok," \
    "$(awk -F'\t' '$2=="FAIL"||$2=="TIMEOUT"' "$rows" | wc -l) failed," \
    "$(awk -F'\t' '$2=="skipped"' "$rows" | wc -l) skipped; $((SECONDS - start)) s; \$OUT: summary.jsonl logs.tar.gz"
  awk -F'\t' '{ printf "%-28s %-8s %7s  %s\n", $1, $2, $3, substr($4, 1, 110) }' "$rows"
}

finish() {
  pack
  table
  if awk -F'\t' '$2=="FAIL"||$2=="TIMEOUT"' "$rows" | grep -q .; then exit 1; fi
  exit 0
}
trap 'record interrupted FAIL 130 0 "device_check.sh got a signal"; finish' INT TERM

gpu="no nvidia-smi"
command -v nvidia-smi >/dev/null && gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)
nvcc_version=$(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo "no nvcc")
sanitizer=$(command -v compute-sanitizer || echo "")
# The working tree's sources by content (the GPU machine's copy of .git may lag behind the
# tree it was given): compare with `bash scripts/tree_hash.sh` here.
tree_hash=$(bash scripts/tree_hash.sh 2>/dev/null || echo unknown)
printf '{"step":"env","mode":%s,"date":"%s","gpu":%s,"nvcc":%s,"cores":%d,"ccache":%s,"commit":%s,"tree":"%s"}\n' \
  "$(json_str "$mode")" "$(date -u +%FT%TZ)" "$(json_str "$gpu")" "$(json_str "$nvcc_version")" "$jobs" \
  "$(json_str "$ccache_note")" "$(json_str "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")" "$tree_hash" \
  >> "$SUMMARY"
echo "device_check: gpu: $gpu; $nvcc_version; $jobs cores; $ccache_note; mode: $mode; $(date -u +%FT%TZ)"

# ---- configure + build ----------------------------------------------------------------
if [[ ${DSV4_BUILD:-1} == 1 || ! -f $build/build.ninja ]]; then
  if [[ ! -d $root/usr/include ]]; then
    record configure FAIL 1 0 ".deps/device-root missing: run scripts/device_deps.sh here and carry it"
    finish
  fi
  step configure 120 last_line cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSV4_CUDA_TESTS=ON \
    -DDSV4_STATIC_DEPS=ON -DCMAKE_PREFIX_PATH="$root/usr" -DDSV4_GTEST_SOURCE_DIR="$root/googletest"
  if ((step_rc != 0)); then
    tail -30 "$LOGS/configure.log"
    finish
  fi
fi
# Executables of interest: test binaries (*_test, cuda_*) and benchmarks (bench_*).
mapfile -t binaries < <(ninja -C "$build" -t targets all 2>/dev/null |
  sed -nE 's/^(cuda_[A-Za-z0-9_]+|[A-Za-z0-9_]+_test|bench_[A-Za-z0-9_]+): phony$/\1/p' | grep -v '^cmake_' | sort -u)
selected=()
case $mode in
  all) selected=("${binaries[@]}") ;;
  none) ;;
  *) for b in "${binaries[@]}"; do [[ $b =~ $mode ]] && selected+=("$b"); done ;;
esac
echo "device_check: ${#selected[@]} of ${#binaries[@]} test/bench binaries selected: ${selected[*]}"
if [[ ${DSV4_BUILD:-1} == 1 ]]; then
  targets=()
  [[ $mode != all ]] && targets=(--target dsv4 "${selected[@]}")
  step build "${DSV4_BUILD_TIMEOUT:-420}" build_detail cmake --build "$build" -j"$jobs" "${targets[@]}" -- -k 0
  if ((step_rc != 0)); then
    grep -E "^FAILED: |error|Error" -A3 "$LOGS/build.log" | head -40
  fi
  echo "device_check: build rc=$step_rc ($((SECONDS - start)) s)"
fi

cpu_tests=() cuda_tests=() benches=()
for b in "${selected[@]}"; do
  case $b in
    bench_*) benches+=("$b") ;;
    cuda_*) cuda_tests+=("$b") ;;
    *) cpu_tests+=("$b") ;;
  esac
done
alternation() { local IFS='|'; echo "^($*)\$"; }

# ---- ctest ----------------------------------------------------------------------------
# Every test carries its binary's name as label (tests/CMakeLists.txt, tests/cuda/).
if [[ ${DSV4_TESTS:-1} == 1 ]]; then
  if [[ $mode == all ]]; then cpu_select=(-LE '^cuda_'); else cpu_select=(-L "$(alternation "${cpu_tests[@]}")"); fi
  if [[ $mode == all || ${#cpu_tests[@]} -gt 0 ]]; then
    step ctest_cpu "${DSV4_TEST_TIMEOUT:-240}" ctest_detail \
      ctest --test-dir "$build" --output-on-failure -j"$jobs" "${cpu_select[@]}"
    echo "device_check: ctest_cpu: $(ctest_detail "$LOGS/ctest_cpu.log")"
  fi
  if ((${#cuda_tests[@]})); then
    step ctest_cuda "${DSV4_TEST_TIMEOUT:-240}" ctest_detail \
      ctest --test-dir "$build" --output-on-failure -j"${DSV4_CUDA_JOBS:-4}" -L "$(alternation "${cuda_tests[@]}")"
    echo "device_check: ctest_cuda: $(ctest_detail "$LOGS/ctest_cuda.log")"
  fi
fi

# ---- benchmarks + peers ---------------------------------------------------------------
if [[ ${DSV4_BENCH:-1} == 1 ]]; then
  for b in "${benches[@]}"; do
    binary=$build/bench/$b
    [[ -x $binary ]] || { record "$b" FAIL 1 0 "$binary was not built"; continue; }
    family=${b#bench_}
    args_var=DSV4_BENCH_ARGS_$family
    args=${!args_var-}
    [[ $family == moe && -z $args && -n ${DSV4_BENCH_TOKENS:-} ]] && args="--tokens $DSV4_BENCH_TOKENS"
    read -ra args_array <<< "$args"
    step "$b" "${DSV4_BENCH_TIMEOUT:-180}" last_line "$binary" --json "$SUMMARY" "${args_array[@]}"
    echo "---- $b ${args}"; tail -n "$tail_lines" "$LOGS/$b.log"
    peer=scripts/bench_${family}_peer.py
    if [[ -f $peer && ${DSV4_BENCH_PEER:-1} == 1 ]]; then
      step "peer_$family" "${DSV4_BENCH_TIMEOUT:-180}" last_line \
        env PYTHONUNBUFFERED=1 python3 "$peer" --json "$SUMMARY" "${args_array[@]}"
      echo "---- peer_$family"; tail -n "$tail_lines" "$LOGS/peer_$family.log"
    fi
  done
fi

# ---- extra commands -------------------------------------------------------------------
extras=()
if [[ -n ${DSV4_EXTRA:-} ]]; then mapfile -t -O 0 extras <<< "$DSV4_EXTRA"; fi
if [[ -n ${DSV4_EXTRA_FILE:-} ]]; then
  if [[ -f $DSV4_EXTRA_FILE ]]; then
    mapfile -t more < "$DSV4_EXTRA_FILE"
    extras+=("${more[@]}")
  else
    record extra_file FAIL 1 0 "DSV4_EXTRA_FILE=$DSV4_EXTRA_FILE does not exist"
  fi
fi
n=0
for command in "${extras[@]}"; do
  [[ $command =~ ^[[:space:]]*(#|$) ]] && continue
  n=$((n + 1))
  echo "---- extra_$n: $command"
  step "extra_$n" "${DSV4_EXTRA_TIMEOUT:-300}" "=$command" bash -c "$command"
  tail -n "$tail_lines" "$LOGS/extra_$n.log"
done

# ---- compute-sanitizer ----------------------------------------------------------------
# Long binaries get a filter of their small cases (the full V4-Flash shapes take minutes
# under the tools). Binaries not listed run whole (their step may time out: TIMEOUT).
# A key "tool:binary" (racecheck:cuda_engine_test) applies to that tool only and wins
# over the plain "binary" key.
declare -A filters=(
  [cuda_moe_test]='MoeSmall.*:MoeRouting.*:MoePack.*'
  [cuda_engine_test]='CudaEngine.BadInput*:CudaEngine.GraphReplay*'
  [racecheck:cuda_engine_test]='CudaEngine.GraphReplay*'
  [cuda_pipeline_test]='AttentionPipeline.SlidingOnly:AttentionPipeline.HeavilyCompressed:AttentionPipeline.CompressedSparse'
  [cuda_moe_generic_test]='-*V4Sized*'
  [cuda_indexer_test]='-*FlashShape*:*Prefill2048*:*LongRow*'
  [cuda_sparse_attention_wgmma_test]='-*SplitKvLongHcaDecode*'
  # racecheck of the whole binary (11 cases, minus the long one) ran past 150 s (2026-12-02)
  [racecheck:cuda_sparse_attention_wgmma_test]='*LayoutSingleCta*:*KeyTiles48:*RescaleAcrossTiles:*EmptyAndPadding'
)
IFS=';' read -ra overrides <<< "${DSV4_SANITIZER_FILTERS:-}"
for o in "${overrides[@]}"; do [[ $o == *=* ]] && filters[${o%%=*}]=${o#*=}; done
if [[ ${DSV4_SANITIZER:-1} == 1 && ${#cuda_tests[@]} -gt 0 ]]; then
  if [[ -z $sanitizer ]]; then
    record sanitizer FAIL 1 0 "compute-sanitizer not found"
  else
    running=0
    for b in "${cuda_tests[@]}"; do
      binary=$build/tests/cuda/$b
      [[ -x $binary ]] || continue
      for tool in memcheck racecheck; do
        f=${filters[$tool:$b]:-${filters[$b]:-}}
        filter=()
        [[ -n $f ]] && filter=(--gtest_filter="$f")
        step "${tool}_${b#cuda_}" "${DSV4_SANITIZER_TIMEOUT:-150}" sanitizer_detail \
          compute-sanitizer --tool "$tool" --error-exitcode 9 --print-limit 50 "$binary" "${filter[@]}" &
        running=$((running + 1))
        if ((running >= ${DSV4_SANITIZER_JOBS:-3})); then wait -n; running=$((running - 1)); fi
      done
    done
    wait
  fi
fi
finish
