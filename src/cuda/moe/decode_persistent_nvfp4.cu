// NVFP4 instantiations of the persistent decode kernel (one format per translation unit, as
// grouped_gemm_nvfp4.cu: compile time per file stays short).
#include "cuda/moe/decode_persistent.cuh"

namespace dsv4::cuda::moe::detail {

cudaError_t launch_persistent_nvfp4(const DecodePersistentParams& p) {
  return launch_decode_persistent_format<ExpertFormat::kNVFP4>(p);
}
int persistent_ctas_nvfp4() { return decode_persistent_resident_ctas<ExpertFormat::kNVFP4, false, false>(); }

}  // namespace dsv4::cuda::moe::detail
