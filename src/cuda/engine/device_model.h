// The model's weights in device memory, in their stored formats (BF16 / FP8 block /
// NVFP4 / MXFP4 as DeviceMatrix views), except where a kernel wants another layout:
// 4-bit routed experts are pre-arranged at load into the fragment layout of the fast
// MoE kernels (src/cuda/moe) whenever their shapes fit those kernels; router gates
// are FP32 (selection must follow the reference).
#pragma once
#include <cstdint>
#include <vector>

#include "cuda/common/device_types.h"
#include "cuda/engine/arena.h"
#include "cuda/moe/moe.h"
#include "cuda/ops/ops.h"
#include "dsv4/weights.h"

namespace dsv4::cuda {

struct DeviceCompressor {
  DeviceMatrix wkv, wgate;       // [coff*dim, hidden]
  const float* ape = nullptr;    // [rate, coff*dim]
  const float* norm = nullptr;   // [dim]
};

struct DeviceAttention {
  DeviceMatrix wq_a, wq_b, wkv, wo_a, wo_b;
  const float* q_norm = nullptr;   // [q_lora_rank]
  const float* kv_norm = nullptr;  // [head_dim]
  const float* sinks = nullptr;    // [heads]
  bool has_compressor = false, has_indexer = false;
  DeviceCompressor compressor;     // dim = head_dim
  DeviceMatrix index_wq_b, index_weights_proj;
  DeviceCompressor index_compressor;  // dim = index_head_dim
};

struct DeviceMoeLayer {
  bool fast = false;                  // routed experts on the 4-bit kernels (src/cuda/moe)
  moe::MoeLayerWeights fast_weights;  // valid when fast
  ops::GenericMoeWeights generic;     // valid when !fast
  bool dense_shared = false;          // fast path with the shared expert outside the 4-bit kernels
  DeviceMatrix shared_w1, shared_w2, shared_w3;
};

struct DeviceLayer {
  AttentionType attention_type = AttentionType::kSliding;
  MlpType mlp_type = MlpType::kMoE;
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  ops::HyperWeights hc_attn, hc_ffn;
  DeviceAttention attn;
  DeviceMoeLayer moe;
};

struct DeviceModel {
  DeviceMatrix embed, head;
  const float* norm = nullptr;
  ops::HyperWeights hc_head;
  const float* inv_freq_main = nullptr;      // [rope_dim/2]
  const float* inv_freq_compress = nullptr;  // [rope_dim/2]
  std::vector<DeviceLayer> layers;
  // Largest element count of a matrix the linear op dequantizes to BF16 scratch (not
  // stored BF16 or F32), and the widest linear input.
  int64_t max_dequantized_elements = 0;
  int64_t max_linear_cols = 0;
  bool any_generic_moe = false;
  int64_t fast_moe_flushed_blocks = 0, fast_moe_zero_blocks = 0;
};

// Carves and (unless carver.sizing()) uploads the weights. QuantMatrix views with
// data == nullptr are synthetic: filled on the device with seeded random values of
// the right format (dsv4 bench's random-weight models). `stream` orders the uploads.
DeviceModel build_device_model(const ModelWeights& weights, Carver& carver, uint64_t seed, cudaStream_t stream);

// True when the fast 4-bit MoE kernels take this layer's routed experts.
bool fast_moe_applies(const ModelWeights& weights, const LayerWeights& layer);

}  // namespace dsv4::cuda
