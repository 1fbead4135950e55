// `theta ** x` for an fp32 tensor x exactly as PyTorch's CPU kernel computes it, so
// that RoPE inverse frequencies match transformers bit for bit.
//
// Why this exists: transformers computes `base ** (arange(0, dim, 2).float() / dim)`
// on the CPU. torch's pow kernel (aten/src/ATen/native/cpu/PowKernel.cpp) runs
// Sleef_powf{8,16}_u10 on whole vector chunks and glibc powf (std::pow) on the tail,
// and the two differ in the last bit for some inputs (e.g. 160000^(18/256)). Which
// elements take which path depends on the vector width torch picked at run time.
#pragma once
#include <cstdint>

#include "dsv4/config.h"  // TorchCpuKernel, detect_torch_cpu_kernel

namespace dsv4 {

// Scalar port of SLEEF's vectorized xpowf (u10, FMA build) for one lane.
// `avx512_log` selects the AVX-512 flavour of logkf (getexp/getmant); both agree
// for normal inputs. Valid for finite x > 0 and finite y (RoPE bases and exponents);
// other inputs fall back to std::pow.
float sleef_powf_u10(float x, float y, bool avx512_log);

// out[i] = base ** exponents[i] as torch's CPU pow kernel computes it for a
// contiguous fp32 tensor of `count` elements.
void torch_pow_scalar_base(float base, const float* exponents, int64_t count, TorchCpuKernel kernel, float* out);

}  // namespace dsv4
