#!/usr/bin/env bash
# Asserts the SASS facts issues 5 and 6 ask for, on the built CUDA library (no GPU needed):
# the wgmma kernels issue HGMMA (BF16) and the W4A8 kernels QGMMA (FP8), and the default
# kernels have no local-memory traffic (STL / LDL: spills). ctest runs it as
# sass_tensor_cores; by hand: bash scripts/sass_assert.sh build-lead/src/cuda/libdsv4_cuda.a
set -euo pipefail
lib=${1:?usage: sass_assert.sh path/to/libdsv4_cuda.a}
lines=$(bash "$(dirname "$0")/sass_check.sh" . "$lib")
fail=0
# The JSON lines of the kernels whose mangled name matches REGEX.
rows_matching() { grep -E "\"kernel\":\"[^\"]*($1)" <<< "$lines" || true; }
# expect REGEX FIELD: every kernel whose mangled name matches REGEX has FIELD > 0 (and one exists).
expect() {
  local regex=$1 field=$2 rows
  rows=$(rows_matching "$regex")
  if [[ -z $rows ]]; then
    echo "sass_assert: no kernel matches /$regex/ (expected one with $field > 0)"
    fail=1
    return
  fi
  while read -r row; do
    local count kernel
    count=$(sed -E "s/.*\"$field\":([0-9]+).*/\1/" <<< "$row")
    kernel=$(sed -E 's/.*"kernel":"([^"]*)".*/\1/' <<< "$row")
    if ((count == 0)); then
      echo "sass_assert: $kernel has no ${field^^} (expected > 0)"
      fail=1
    fi
  done <<< "$rows"
}
# none REGEX: kernels matching REGEX have no STL / LDL.
none_local() {
  local rows
  rows=$(rows_matching "$1")
  while read -r row; do
    [[ -z $row ]] && continue
    if grep -qvE '"local_stores_stl":0,"local_loads_ldl":0' <<< "$row"; then
      echo "sass_assert: local memory traffic (spills) in $(sed -E 's/.*"kernel":"([^"]*)".*/\1/' <<< "$row")"
      fail=1
    fi
  done <<< "$rows"
}
expect 'moe_grouped_gemm_wgmma_kernel' hgmma          # MoE W4A16 prefill (wgmma, pipelined)
expect 'moe_grouped_gemm_w4a8' qgmma                  # MoE W4A8 (FP8 wgmma)
expect 'sparse_attention_pipelined_kernel' hgmma      # sparse MQA attention, pipelined
expect 'sparse_attention_wgmma_kernel' hgmma
expect 'sparse_attention_pingpong_kernel' hgmma       # ping-pong attention (kAuto)
expect 'sparse_attention_pingpong_persistent_kernel' hgmma  # opt-in persistent ping-pong
expect 'sparse_attention_localp_kernel' hgmma         # opt-in local-P pairs (kWgmmaLocalP)
expect 'moe_grouped_gemm_wgmma_wide_kernel' hgmma     # opt-in N = 256 MoE prefill
expect 'indexer_scores_wgmma_kernel' hgmma            # Lightning indexer scores
expect 'moe_grouped_gemm_kernel' hmma                 # MoE decode tiles (mma.sync)
none_local 'moe_grouped_gemm_wgmma_kernel|moe_grouped_gemm_wgmma_wide_kernel|sparse_attention_pipelined_kernel|sparse_attention_pingpong_kernel|sparse_attention_pingpong_persistent_kernel|sparse_attention_localp_kernel|indexer_scores_wgmma_kernel'
none_local 'moe_grouped_gemm_kernelINS2_8GemmTileILi128ELi8ELi128E'  # the default decode tile
if ((fail)); then exit 1; fi
echo "sass_assert: $(wc -l <<< "$lines") kernels checked: tensor-core instructions present, no spills in the default kernels"
