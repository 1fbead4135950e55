// Programmatic dependent launch (PDL, sm_90+): a kernel launched this way may be scheduled
// before the previous kernel in the stream has finished (once all of that kernel's CTAs have
// run griddepcontrol.launch_dependents or exited); it must run griddepcontrol.wait before
// reading anything the previous kernel writes. Graph capture keeps the attribute as a
// programmatic edge. Host code, for .cu translation units.
#pragma once
#include <cuda_runtime.h>

#include <utility>

namespace dsv4::cuda {

// kernel<<<grid, block, dynamic_smem, stream>>>(args...) with
// cudaLaunchAttributeProgrammaticStreamSerialization; returns cudaLaunchKernelEx's error.
template <class... KernelArgs, class... Args>
cudaError_t launch_programmatic(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t dynamic_smem,
                                cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = dynamic_smem;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace dsv4::cuda
