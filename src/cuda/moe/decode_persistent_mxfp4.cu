// MXFP4 instantiations of the persistent decode kernel (one format per translation unit, as
// grouped_gemm_mxfp4.cu: compile time per file stays short).
#include "cuda/moe/decode_persistent.cuh"

namespace dsv4::cuda::moe::detail {

cudaError_t launch_persistent_mxfp4(const DecodePersistentParams& p) {
  return launch_decode_persistent_format<ExpertFormat::kMXFP4>(p);
}
int persistent_ctas_mxfp4() { return decode_persistent_resident_ctas<ExpertFormat::kMXFP4, false, false>(); }

}  // namespace dsv4::cuda::moe::detail
