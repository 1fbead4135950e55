// Elementwise and matrix primitives of the CPU reference backend (FP32).
// Row-major everywhere; shapes in comments as [rows, cols].
#pragma once
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "dsv4/weight_format.h"

namespace dsv4::cpu {

// y[n, out] = x[n, in] @ W^T for a stored weight of any format. Parallel over
// blocks of output rows; each block is dequantized once into thread-local FP32.
void linear(const QuantMatrix& weight, const float* x, int64_t tokens, float* y);
std::vector<float> linear(const QuantMatrix& weight, std::span<const float> x, int64_t tokens);
// y[n, r] = x[n, :] . W[row_begin + r, :] for r < row_count (a row slice of W, e.g. one
// group of the grouped output projection or one expert of a fused tensor).
void linear_rows(const QuantMatrix& weight, int64_t row_begin, int64_t row_count, const float* x, int64_t tokens,
                 float* y);

// Weighted RMSNorm over rows of width `width`: y = w * (x * rsqrt(mean(x^2) + eps)).
void rms_norm(float* rows, int64_t count, int64_t width, const float* weight, double eps);
// Unweighted RMSNorm (transformers' DeepseekV4UnweightedRMSNorm).
void rms_norm_unweighted(float* rows, int64_t count, int64_t width, double eps);

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
// torch.nn.functional.softplus with beta=1, threshold=20.
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

// In-place softmax over `values` (max-subtracted, FP32).
void softmax(float* values, int64_t count);

float dot(const float* a, const float* b, int64_t count);

// values[i] = BF16(values[i]) (round to nearest even): emulates a BF16 store.
void round_to_bf16(float* values, int64_t count);

}  // namespace dsv4::cpu
