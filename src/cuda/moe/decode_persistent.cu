// Host side of TileConfig::kDecodePersistent (decode_persistent.cuh): argument checks, the
// resident-CTA count and the K-slice choice.
#include <algorithm>

#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe {

namespace detail {
cudaError_t launch_persistent_nvfp4(const DecodePersistentParams& p);
cudaError_t launch_persistent_mxfp4(const DecodePersistentParams& p);
int persistent_ctas_nvfp4();
int persistent_ctas_mxfp4();
}  // namespace detail

namespace {

// launch_grouped_gemm's checks for one GEMM of the persistent kernel (kDecode's tile: 128 x 128).
bool gemm_ok(const GroupedGemmParams& p, bool l1) {
  if (p.n <= 0 || p.k <= 0 || p.n % 128 != 0 || p.k % 128 != 0) return false;
  if (p.weights == nullptr || p.scales == nullptr || p.act == nullptr || p.out == nullptr || p.factor_a == nullptr)
    return false;
  if (l1 ? (p.factor_b == nullptr || p.slot_token == nullptr) : p.slot_weight == nullptr) return false;
  if (p.split_k > 1 && (p.split_k > p.k / 128 || p.split_k > 65535 || p.split_partials == nullptr ||
                        p.split_done == nullptr || p.split_slots <= 0))
    return false;  // split_k in [2, k / 128], workspace from moe_workspace
  if (!l1 && p.combine_out != nullptr && (p.slot_of_pair == nullptr || p.combine_done == nullptr)) return false;
  return true;
}

}  // namespace

int moe_decode_persistent_ctas(ExpertFormat format) {
  const int ctas = format == ExpertFormat::kNVFP4 ? detail::persistent_ctas_nvfp4() : detail::persistent_ctas_mxfp4();
  return ctas > 0 ? ctas : kPersistentFallbackCtas;
}

int moe_persistent_split_k(int max_tiles, int n, int k, int ctas, int forced) {
  constexpr int kBK = 128, kMaxS = 16, kUnitOverheadTiles = 2;
  const int k_tiles = k / kBK;
  if (k_tiles <= 1 || max_tiles <= 0 || n < 128 || ctas <= 0) return 1;
  if (forced > 0) return std::min({forced, k_tiles, kMaxS});
  const int64_t units = static_cast<int64_t>(max_tiles) * (n / 128);
  int best = 1;
  int64_t best_cost = -1;
  for (int s = 1; s <= kMaxS && s <= k_tiles; s *= 2) {
    if (k_tiles % s != 0) break;
    const int64_t waves = (units * s + ctas - 1) / ctas;  // units of the busiest CTA
    const int64_t cost = waves * (k_tiles / s + kUnitOverheadTiles);
    if (best_cost < 0 || cost < best_cost) best = s, best_cost = cost;
  }
  return best;
}

cudaError_t launch_moe_decode_persistent(const DecodePersistentParams& p) {
  const GroupedGemmParams &l1 = p.l1, &l2 = p.l2;
  if (!gemm_ok(l1, true) || !gemm_ok(l2, false) || l1.combine_out != nullptr || p.grid_barrier == nullptr)
    return cudaErrorInvalidValue;
  if (l1.n != 2 * l2.k || l1.format != l2.format || l1.tile_count == nullptr || l1.tile_count != l2.tile_count ||
      l1.tile_expert != l2.tile_expert || l1.tile_slot_begin != l2.tile_slot_begin ||
      l1.tile_row_count != l2.tile_row_count || l1.max_tiles != l2.max_tiles)
    return cudaErrorInvalidValue;  // L2 reads L1's h over the same tile list
  if (l1.max_tiles <= 0) return cudaSuccess;
  return l1.format == ExpertFormat::kNVFP4 ? detail::launch_persistent_nvfp4(p) : detail::launch_persistent_mxfp4(p);
}

}  // namespace dsv4::cuda::moe
