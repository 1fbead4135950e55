// Host-side TMA descriptor encoding (cuTensorMapEncodeTiled through the runtime's driver
// entry point, so nothing links libcuda directly).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv4::cuda {

// A 2D row-major tensor [outer][inner] of `type` at `base`, rows `row_bytes` apart (% 16),
// read in boxes [box_outer][box_inner] with `swizzle`. cudaErrorInvalidValue if the driver
// rejects the description (alignment, box limits), cudaErrorNotSupported without the entry point.
cudaError_t encode_tensor_map_2d(CUtensorMap* map, CUtensorMapDataType type, const void* base, uint64_t inner,
                                 uint64_t outer, uint64_t row_bytes, uint32_t box_inner, uint32_t box_outer,
                                 CUtensorMapSwizzle swizzle);

}  // namespace dsv4::cuda
