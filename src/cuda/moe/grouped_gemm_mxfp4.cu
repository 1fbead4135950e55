// MXFP4 instantiations of the grouped GEMMs (one format per translation unit keeps
// compile time per file short).
#include "cuda/moe/grouped_gemm.cuh"

namespace dsv4::cuda::moe::detail {

cudaError_t launch_mxfp4(const GroupedGemmParams& p, bool l1) {
  if (p.config == TileConfig::kPrefill)
    return l1 ? launch_grouped_gemm<PrefillTile, ExpertFormat::kMXFP4, true>(p)
              : launch_grouped_gemm<PrefillTile, ExpertFormat::kMXFP4, false>(p);
  // kDecodeKSplit needs k % 256 == 0; other shapes take the 4-warp decode tile (same 8-slot tiles).
  if (p.config == TileConfig::kDecodeKSplit && p.k % DecodeKSplitTile::BK == 0)
    return l1 ? launch_grouped_gemm<DecodeKSplitTile, ExpertFormat::kMXFP4, true>(p)
              : launch_grouped_gemm<DecodeKSplitTile, ExpertFormat::kMXFP4, false>(p);
  // kDecodeSplitK with split_k > 1: kDecode's tile, K split across CTAs; split_k <= 1 is kDecode.
  if (p.config == TileConfig::kDecodeSplitK && p.split_k > 1)
    return l1 ? launch_grouped_gemm<DecodeTile, ExpertFormat::kMXFP4, true, true>(p)
              : launch_grouped_gemm<DecodeTile, ExpertFormat::kMXFP4, false, true>(p);
  // kDecodeStream: kDecode's tile reading the decode stream layout (p.stream_weights) by
  // cp.async; kDecodeStreamBulk: the same by one TMA bulk copy per stage.
  if (p.config == TileConfig::kDecodeStream)
    return l1 ? launch_grouped_gemm<DecodeTile, ExpertFormat::kMXFP4, true, false, 1>(p)
              : launch_grouped_gemm<DecodeTile, ExpertFormat::kMXFP4, false, false, 1>(p);
  if (p.config == TileConfig::kDecodeStreamBulk)
    return l1 ? launch_grouped_gemm<DecodeTile, ExpertFormat::kMXFP4, true, false, 2>(p)
              : launch_grouped_gemm<DecodeTile, ExpertFormat::kMXFP4, false, false, 2>(p);
  return l1 ? launch_grouped_gemm<DecodeTile, ExpertFormat::kMXFP4, true>(p)
            : launch_grouped_gemm<DecodeTile, ExpertFormat::kMXFP4, false>(p);
}

}  // namespace dsv4::cuda::moe::detail
