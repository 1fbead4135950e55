// Shared by the MoE test and benchmark: random 4-bit expert sets in the stored
// (checkpoint) formats, their upload in the kernels' fragment layout, and the CPU
// reference of the layer (FP32/FP64 math on the exactly dequantized weights).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cuda/moe/moe.h"
#include "cuda/moe/moe_pack.h"
#include "dsv4/dtype.h"
#include "dsv4/error.h"
#include "dsv4/weight_format.h"
#include "moe_random.h"

namespace dsv4::moe_test {

using cuda::moe::ExpertFormat;

#define DSV4_CUDA_OK(call)                                                                          \
  do {                                                                                              \
    const cudaError_t err_ = (call);                                                                \
    DSV4_CHECK(err_ == cudaSuccess, "{}:{}: {} -> {}", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
  } while (0)

// Experts 0..experts-1 routed, index `experts` the shared one. Matrices per expert:
// 0 = w1 (gate) [I, H], 1 = w3 (up) [I, H], 2 = w2 (down) [H, I], stored as the
// checkpoint stores them (packed E2M1 rows, E4M3 or E8M0 block scales).
struct ExpertSet {
  ExpertFormat format = ExpertFormat::kNVFP4;
  int hidden = 0, intermediate = 0, experts = 0;
  std::vector<uint8_t> data[3], scales[3];
  std::vector<float> tensor_scale[3];
  int block() const { return format == ExpertFormat::kNVFP4 ? 16 : 32; }
  int64_t rows(int which) const { return which == 2 ? hidden : intermediate; }
  int64_t cols(int which) const { return which == 2 ? intermediate : hidden; }
  int64_t data_bytes(int which) const { return rows(which) * cols(which) / 2; }
  int64_t scale_bytes(int which) const { return rows(which) * cols(which) / block(); }
  QuantMatrix matrix(int e, int which) const {
    QuantMatrix m;
    m.name = "expert" + std::to_string(e) + (which == 0 ? ".w1" : which == 1 ? ".w3" : ".w2");
    m.format = format == ExpertFormat::kNVFP4 ? WeightFormat::kNVFP4 : WeightFormat::kMXFP4;
    m.rows = rows(which);
    m.cols = cols(which);
    m.data = data[which].data() + e * data_bytes(which);
    m.scales = scales[which].data() + e * scale_bytes(which);
    m.scale_dtype = format == ExpertFormat::kNVFP4 ? DType::kF8_E4M3 : DType::kF8_E8M0;
    m.scale_rows = m.rows;
    m.scale_cols = m.cols / block();
    m.tensor_scale = tensor_scale[which][e];
    return m;
  }
  // Stored bytes of one expert (data + scales of the three matrices).
  int64_t expert_bytes() const {
    int64_t total = 0;
    for (int w = 0; w < 3; ++w) total += data_bytes(w) + scale_bytes(w);
    return total;
  }
};

// Random weights with output magnitudes of a few units: E2M1 codes uniform; scales
// around 2^-6 (MXFP4 exponents 119..123; NVFP4 E4M3 0.5..2 times a tensor scale of
// ~0.01), plus rare zero / subnormal NVFP4 scales and rare tiny MXFP4 exponents so
// the packer's special cases run.
inline ExpertSet make_expert_set(ExpertFormat format, int hidden, int intermediate, int experts, uint64_t seed) {
  ExpertSet set;
  set.format = format;
  set.hidden = hidden;
  set.intermediate = intermediate;
  set.experts = experts;
  const int total = experts + 1;
  for (int w = 0; w < 3; ++w) {
    set.data[w].resize(static_cast<size_t>(total * set.data_bytes(w)));
    set.scales[w].resize(static_cast<size_t>(total * set.scale_bytes(w)));
    set.tensor_scale[w].resize(total);
    const int64_t data_words = static_cast<int64_t>(set.data[w].size()) / 8;
    uint8_t* data = set.data[w].data();
#pragma omp parallel for schedule(static)
    for (int64_t chunk = 0; chunk < (data_words + 65535) / 65536; ++chunk) {
      uint64_t state = seed * 1000003 + w * 7919 + chunk;
      const int64_t end = std::min(data_words, (chunk + 1) * 65536);
      for (int64_t i = chunk * 65536; i < end; ++i) {
        const uint64_t v = splitmix(state);
        std::memcpy(data + i * 8, &v, 8);
      }
    }
    uint64_t state = seed * 31 + w;
    for (auto& s : set.scales[w]) {
      const uint64_t r = splitmix(state);
      if (format == ExpertFormat::kNVFP4) {
        const int pick = static_cast<int>(r % 1000);
        s = pick == 0 ? 0 : pick == 1 ? static_cast<uint8_t>(1 + (r >> 20) % 7) : static_cast<uint8_t>(0x30 + (r >> 20) % 16);
      } else {
        const int pick = static_cast<int>(r % 2000);
        s = pick == 0 ? static_cast<uint8_t>((r >> 20) % 4) : static_cast<uint8_t>(119 + (r >> 20) % 5);
      }
    }
    for (int e = 0; e < total; ++e) {
      const uint64_t r = splitmix(state);
      set.tensor_scale[w][e] = format == ExpertFormat::kNVFP4 ? 0.008f + 0.004f * static_cast<float>(r % 1000) / 1000.0f : 1.0f;
    }
  }
  return set;
}

// Router weights [experts, hidden] FP32, bias [experts].
struct RouterWeights {
  std::vector<float> weight, bias;
};
inline RouterWeights make_router(int experts, int hidden, uint64_t seed) {
  RouterWeights r;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> w(0.0f, 0.03f), b(0.0f, 0.1f);
  r.weight.resize(static_cast<size_t>(experts) * hidden);
  for (auto& v : r.weight) v = w(rng);
  r.bias.resize(experts);
  for (auto& v : r.bias) v = b(rng);
  return r;
}

inline std::vector<uint16_t> make_activations(int tokens, int hidden, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<uint16_t> x(static_cast<size_t>(tokens) * hidden);
  for (auto& v : x) v = float_to_bf16(n(rng));
  return x;
}

// FP32 activations that are not BF16-exact (routing from them differs from BF16 x).
inline std::vector<float> make_activations_f32(int tokens, int hidden, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(tokens) * hidden);
  for (auto& v : x) v = n(rng);
  return x;
}
inline std::vector<uint16_t> to_bf16(const std::vector<float>& x) {
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = float_to_bf16(x[i]);
  return out;
}

template <typename T>
T* device_copy(const std::vector<T>& host) {
  T* ptr = nullptr;
  DSV4_CUDA_OK(cudaMalloc(&ptr, std::max<size_t>(1, host.size() * sizeof(T))));
  if (!host.empty()) DSV4_CUDA_OK(cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return ptr;
}

// ---- grouped GEMM tests (kernel against kernel on random packed weights) --------------

// A tile list in dispatch.cu's layout (per tile: expert, first slot, slot count) on the
// device, followed by `spare` entries of -1: max_tiles = count + spare, as moe_forward
// sizes it, so CTAs past *tile_count must stop without reading the padding (a kernel that
// read it would fault or differ).
struct DeviceTileList {
  int32_t* expert = nullptr;  // [max_tiles]
  int32_t* begin = nullptr;   // [max_tiles]
  int32_t* rows = nullptr;    // [max_tiles]
  int32_t* count = nullptr;   // [1]: the tile count
  int max_tiles = 0;

  DeviceTileList(const std::vector<int32_t>& tile_expert, const std::vector<int32_t>& tile_begin,
                 const std::vector<int32_t>& tile_rows, int spare) {
    auto padded = [spare](std::vector<int32_t> v) {
      v.resize(v.size() + spare, -1);
      return v;
    };
    expert = device_copy(padded(tile_expert));
    begin = device_copy(padded(tile_begin));
    rows = device_copy(padded(tile_rows));
    const std::vector<int32_t> tile_count{static_cast<int32_t>(tile_expert.size())};
    count = device_copy(tile_count);
    max_tiles = tile_count[0] + spare;
  }
  ~DeviceTileList() {
    for (int32_t* ptr : {expert, begin, rows, count}) cudaFree(ptr);
  }
  DeviceTileList(const DeviceTileList&) = delete;
  DeviceTileList& operator=(const DeviceTileList&) = delete;
};

// One of the two grouped GEMMs of a layer: L1 (W13 [n = 2 I, k = H], gathered x rows)
// or L2 (W2 [n = H, k = I], h rows).
struct GemmLayer {
  bool l1;
  int n, k;
};

// One layer's GEMM inputs on the device: random packed weights (random_bytes) and kernel
// scale codes (random_scales) of `experts` experts of [n, k], per-expert factors (both
// factor_a and factor_b), the activations and the slot arrays.
struct DeviceGemmInputs {
  uint8_t* weights = nullptr;     // [experts][n / 16][k / 64][512]
  uint8_t* scales = nullptr;      // [experts][n / 16][k / 64][frag_scale_bytes]
  float* factor_a = nullptr;      // [experts]
  float* factor_b = nullptr;      // [experts]
  uint16_t* act = nullptr;        // L1 x [tokens, k], L2 h [slots, k]
  int32_t* slot_token = nullptr;  // [slots]
  float* slot_weight = nullptr;   // [slots]

  DeviceGemmInputs(ExpertFormat format, int experts, int n, int k, uint64_t weight_seed, uint64_t scale_seed,
                   const std::vector<float>& factors, const std::vector<uint16_t>& activations,
                   const std::vector<int32_t>& slot_tokens, const std::vector<float>& slot_weights) {
    const size_t wbytes = size_t(experts) * n * k / 2;
    const size_t sbytes = size_t(experts) * (n / 16) * (k / 64) * cuda::moe::frag_scale_bytes(format);
    weights = device_copy(random_bytes(wbytes, weight_seed));
    scales = device_copy(random_scales(format, sbytes, scale_seed));
    factor_a = device_copy(factors);
    factor_b = device_copy(factors);
    act = device_copy(activations);
    slot_token = device_copy(slot_tokens);
    slot_weight = device_copy(slot_weights);
  }
  ~DeviceGemmInputs() {
    for (void* ptr : {static_cast<void*>(weights), static_cast<void*>(scales), static_cast<void*>(factor_a),
                      static_cast<void*>(factor_b), static_cast<void*>(act), static_cast<void*>(slot_token),
                      static_cast<void*>(slot_weight)})
      cudaFree(ptr);
  }
  DeviceGemmInputs(const DeviceGemmInputs&) = delete;
  DeviceGemmInputs& operator=(const DeviceGemmInputs&) = delete;
};

// The GroupedGemmParams fields every prefill GEMM test sets (device pointers); the
// config-specific ones (act8 / act_scale, act_rows / act_perm) are the caller's.
inline cuda::moe::GroupedGemmParams gemm_test_params(ExpertFormat format, cuda::moe::TileConfig config, int n, int k,
                                                     const uint8_t* weights, const uint8_t* scales,
                                                     const float* factor_a, const float* factor_b, const uint16_t* act,
                                                     const int32_t* slot_token, const float* slot_weight,
                                                     const DeviceTileList& tiles, float swiglu_limit, uint16_t* out) {
  cuda::moe::GroupedGemmParams p;
  p.format = format;
  p.config = config;
  p.weights = weights;
  p.scales = scales;
  p.factor_a = factor_a;
  p.factor_b = factor_b;
  p.act = act;
  p.slot_token = slot_token;
  p.slot_weight = slot_weight;
  p.tile_expert = tiles.expert;
  p.tile_slot_begin = tiles.begin;
  p.tile_row_count = tiles.rows;
  p.tile_count = tiles.count;
  p.max_tiles = tiles.max_tiles;
  p.n = n;
  p.k = k;
  p.swiglu_limit = swiglu_limit;
  p.out = out;
  return p;
}

inline cuda::moe::GroupedGemmParams gemm_test_params(ExpertFormat format, cuda::moe::TileConfig config, int n, int k,
                                                     const DeviceGemmInputs& in, const DeviceTileList& tiles,
                                                     float swiglu_limit, uint16_t* out) {
  return gemm_test_params(format, config, n, k, in.weights, in.scales, in.factor_a, in.factor_b, in.act, in.slot_token,
                          in.slot_weight, tiles, swiglu_limit, out);
}

// got vs want [slots, cols] BF16, per element: both finite and |got - want| <= 1e-2 x
// max |want row| (the MoeGemm bound); `identical` counts the elements bitwise equal to
// `same` (want itself, or a third kernel's output). first: the first failure, got named
// got_name and want "wgmma" (kPrefillWgmma, the oracle of these tests).
struct GemmCompare {
  int64_t bad = 0, identical = 0, total = 0;
  double max_row = 0;
  std::string first;
};
inline GemmCompare compare_gemm_outputs(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want,
                                        const std::vector<uint16_t>& same, int slots, int cols, const char* got_name) {
  GemmCompare c;
  for (int s = 0; s < slots; ++s) {
    double row_max = 0;
    for (int j = 0; j < cols; ++j) row_max = std::max(row_max, std::abs(double{bf16_to_float(want[size_t(s) * cols + j])}));
    c.max_row = std::max(c.max_row, row_max);
    for (int j = 0; j < cols; ++j) {
      const size_t i = size_t(s) * cols + j;
      const double g = bf16_to_float(got[i]), w = bf16_to_float(want[i]);
      ++c.total;
      if (got[i] == same[i]) ++c.identical;
      const bool ok = std::isfinite(g) && std::isfinite(w) && std::abs(g - w) <= 1e-2 * row_max + 1e-30;
      if (!ok) {
        if (c.bad == 0)
          c.first = "slot " + std::to_string(s) + " col " + std::to_string(j) + ": " + got_name + " " +
                    std::to_string(g) + ", wgmma " + std::to_string(w) + " (row max " + std::to_string(row_max) + ")";
        ++c.bad;
      }
    }
  }
  return c;
}

// The layer's weights on the device in the kernels' layout.
struct DeviceMoe {
  cuda::moe::MoeLayerWeights weights;
  cuda::moe::PackStats stats;
  std::vector<void*> buffers;
  int64_t packed_expert_bytes = 0;  // W13 + W2 data and scales of one expert, as streamed

  DeviceMoe(const ExpertSet& set, const RouterWeights& router, int top_k, float routed_scaling_factor,
            float swiglu_limit, const std::vector<int32_t>* tid2eid = nullptr, int64_t vocab = 0) {
    const int H = set.hidden, I = set.intermediate, total = set.experts + 1;
    const ExpertFormat f = set.format;
    const int64_t w13_bytes = cuda::moe::packed_data_bytes(2 * I, H);
    const int64_t w13_scale_bytes = cuda::moe::packed_scale_bytes(f, 2 * I, H);
    const int64_t w2_bytes = cuda::moe::packed_data_bytes(H, I);
    const int64_t w2_scale_bytes = cuda::moe::packed_scale_bytes(f, H, I);
    packed_expert_bytes = w13_bytes + w13_scale_bytes + w2_bytes + w2_scale_bytes;
    std::vector<uint8_t> w13(static_cast<size_t>(total * w13_bytes)), w13s(static_cast<size_t>(total * w13_scale_bytes));
    std::vector<uint8_t> w2(static_cast<size_t>(total * w2_bytes)), w2s(static_cast<size_t>(total * w2_scale_bytes));
    std::vector<float> gate(total), up(total), down(total);
    for (int e = 0; e < total; ++e) {
      const QuantMatrix m1 = set.matrix(e, 0), m3 = set.matrix(e, 1), m2 = set.matrix(e, 2);
      cuda::moe::pack_w13(m1, m3, w13.data() + e * w13_bytes, w13s.data() + e * w13_scale_bytes, &gate[e], &up[e],
                          &stats);
      cuda::moe::pack_w2(m2, w2.data() + e * w2_bytes, w2s.data() + e * w2_scale_bytes, &down[e], &stats);
    }
    weights.format = f;
    weights.hidden = H;
    weights.intermediate = I;
    weights.experts = set.experts;
    weights.top_k = top_k;
    weights.has_shared = true;
    weights.w13 = keep(device_copy(w13));
    weights.w13_scales = keep(device_copy(w13s));
    weights.w2 = keep(device_copy(w2));
    weights.w2_scales = keep(device_copy(w2s));
    weights.gate_factor = keep(device_copy(gate));
    weights.up_factor = keep(device_copy(up));
    weights.down_factor = keep(device_copy(down));
    weights.router_weight = keep(device_copy(router.weight));
    weights.router_bias = keep(device_copy(router.bias));
    if (tid2eid) weights.tid2eid = keep(device_copy(*tid2eid));
    weights.vocab_size = vocab;
    weights.routed_scaling_factor = routed_scaling_factor;
    weights.swiglu_limit = swiglu_limit;
  }
  template <typename T>
  T* keep(T* ptr) {
    buffers.push_back(const_cast<void*>(static_cast<const void*>(ptr)));
    return ptr;
  }
  ~DeviceMoe() {
    for (void* b : buffers) cudaFree(b);
  }
  DeviceMoe(const DeviceMoe&) = delete;
  DeviceMoe& operator=(const DeviceMoe&) = delete;
};

// ---- CPU reference -------------------------------------------------------------------

inline double softplus_ref(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

// scores [tokens, experts] = sqrt(softplus(x . w)) (FP64 dots of the FP32 inputs).
inline std::vector<double> cpu_scores_f32(const std::vector<float>& x, const RouterWeights& r, int tokens, int hidden,
                                          int experts) {
  std::vector<double> scores(static_cast<size_t>(tokens) * experts);
#pragma omp parallel for schedule(static)
  for (int t = 0; t < tokens; ++t) {
    const float* xf = x.data() + static_cast<size_t>(t) * hidden;
    for (int e = 0; e < experts; ++e) {
      double dot = 0;
      const float* w = r.weight.data() + static_cast<size_t>(e) * hidden;
      for (int k = 0; k < hidden; ++k) dot += static_cast<double>(xf[k]) * w[k];
      scores[static_cast<size_t>(t) * experts + e] = std::sqrt(softplus_ref(dot));
    }
  }
  return scores;
}
// The same from BF16 inputs.
inline std::vector<double> cpu_scores(const std::vector<uint16_t>& x, const RouterWeights& r, int tokens, int hidden,
                                      int experts) {
  std::vector<float> xf(x.size());
  for (size_t i = 0; i < x.size(); ++i) xf[i] = bf16_to_float(x[i]);
  return cpu_scores_f32(xf, r, tokens, hidden, experts);
}

struct RoutingCheck {
  int mismatched_ids = 0;   // picks that differ and are not near-ties
  int near_ties = 0;        // picks that differ within the tie tolerance
  double max_weight_error = 0;
  std::string first_problem;
};

// Compares the GPU routing with the reference selection on the same scores.
inline RoutingCheck check_routing(const std::vector<double>& scores, const RouterWeights& r, int tokens, int experts,
                                  int top_k, double scaling, const std::vector<int32_t>& gpu_ids,
                                  const std::vector<float>& gpu_weights, const std::vector<int32_t>* tid2eid,
                                  const std::vector<int32_t>* token_ids) {
  RoutingCheck check;
  std::vector<int> order(experts);
  std::vector<double> biased(experts);
  for (int t = 0; t < tokens; ++t) {
    const double* s = scores.data() + static_cast<size_t>(t) * experts;
    std::vector<int> picked(top_k);
    if (tid2eid) {
      const int id = (*token_ids)[t];
      for (int k = 0; k < top_k; ++k) picked[k] = (*tid2eid)[static_cast<size_t>(id) * top_k + k];
    } else {
      for (int e = 0; e < experts; ++e) biased[e] = s[e] + r.bias[e];
      for (int e = 0; e < experts; ++e) order[e] = e;
      std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&](int a, int b) {
        return biased[a] > biased[b] || (biased[a] == biased[b] && a < b);
      });
      for (int k = 0; k < top_k; ++k) picked[k] = order[k];
    }
    const int32_t* g = gpu_ids.data() + static_cast<size_t>(t) * top_k;
    bool tie = false;
    for (int k = 0; k < top_k; ++k) {
      if (g[k] == picked[k]) continue;
      const bool near = !tid2eid && g[k] >= 0 && g[k] < experts && std::abs(biased[g[k]] - biased[picked[k]]) < 1e-5;
      if (near) {
        tie = true;
      } else {
        if (check.mismatched_ids == 0)
          check.first_problem = "token " + std::to_string(t) + " k " + std::to_string(k) + ": gpu expert " +
                                std::to_string(g[k]) + ", reference " + std::to_string(picked[k]);
        ++check.mismatched_ids;
      }
    }
    if (tie) {
      ++check.near_ties;
      continue;  // weights follow the other selection
    }
    double sum = 0;
    for (int k = 0; k < top_k; ++k) sum += s[picked[k]];
    for (int k = 0; k < top_k; ++k) {
      const double w = s[picked[k]] / (sum + 1e-20) * scaling;
      check.max_weight_error =
          std::max(check.max_weight_error, std::abs(w - gpu_weights[static_cast<size_t>(t) * top_k + k]) / std::max(1.0, std::abs(w)));
    }
  }
  return check;
}

// Reference output rows [rows.size(), hidden] for the given routing (GPU's ids and
// weights): shared(x) + sum_k w_k expert_k(x); FP32 dequantized weights, FP64 dots.
inline std::vector<double> cpu_moe_rows(const ExpertSet& set, const std::vector<uint16_t>& x,
                                        const std::vector<int>& rows, int top_k, const std::vector<int32_t>& ids,
                                        const std::vector<float>& weights, double swiglu_limit) {
  const int H = set.hidden, I = set.intermediate;
  // (expert -> list of (row index, k)).
  std::map<int, std::vector<std::pair<int, int>>> work;
  for (int ri = 0; ri < static_cast<int>(rows.size()); ++ri) {
    for (int k = 0; k < top_k; ++k) {
      const int e = ids[static_cast<size_t>(rows[ri]) * top_k + k];
      if (e >= 0) work[e].push_back({ri, k});
    }
    work[set.experts].push_back({ri, top_k});
  }
  std::vector<std::pair<int, std::vector<std::pair<int, int>>>> items(work.begin(), work.end());
  // contributions [rows, top_k + 1, H]
  std::vector<double> contrib(rows.size() * (top_k + 1) * static_cast<size_t>(H), 0.0);
#pragma omp parallel for schedule(dynamic, 1)
  for (int it = 0; it < static_cast<int>(items.size()); ++it) {
    const int e = items[it].first;
    std::vector<float> w1(static_cast<size_t>(I) * H), w3(static_cast<size_t>(I) * H), w2(static_cast<size_t>(H) * I);
    dequantize_rows(set.matrix(e, 0), 0, I, w1.data());
    dequantize_rows(set.matrix(e, 1), 0, I, w3.data());
    dequantize_rows(set.matrix(e, 2), 0, H, w2.data());
    std::vector<double> xf(H), h(I);
    for (const auto& [ri, k] : items[it].second) {
      const int t = rows[ri];
      for (int c = 0; c < H; ++c) xf[c] = bf16_to_float(x[static_cast<size_t>(t) * H + c]);
      for (int j = 0; j < I; ++j) {
        double g = 0, u = 0;
        const float* r1 = w1.data() + static_cast<size_t>(j) * H;
        const float* r3 = w3.data() + static_cast<size_t>(j) * H;
        for (int c = 0; c < H; ++c) g += xf[c] * r1[c], u += xf[c] * r3[c];
        g = std::min(g, swiglu_limit);
        u = std::clamp(u, -swiglu_limit, swiglu_limit);
        h[j] = g / (1.0 + std::exp(-g)) * u;
      }
      const double w = k < top_k ? weights[static_cast<size_t>(t) * top_k + k] : 1.0;
      double* out = contrib.data() + (static_cast<size_t>(ri) * (top_k + 1) + k) * H;
      for (int d = 0; d < H; ++d) {
        double y = 0;
        const float* r2 = w2.data() + static_cast<size_t>(d) * I;
        for (int j = 0; j < I; ++j) y += h[j] * r2[j];
        out[d] = y * w;
      }
    }
  }
  std::vector<double> result(rows.size() * static_cast<size_t>(H), 0.0);
  for (size_t ri = 0; ri < rows.size(); ++ri)
    for (int k = 0; k <= top_k; ++k)
      for (int d = 0; d < H; ++d) result[ri * H + d] += contrib[(ri * (top_k + 1) + k) * H + d];
  return result;
}

struct RowCompare {
  double min_cosine = 1.0;
  int worst_row = -1;
  int bad_rows = 0;          // cosine below the bound
  int non_finite = 0;        // NaN/Inf outputs (unwritten rows are NaN-poisoned)
  double max_abs_error = 0;
};
inline RowCompare compare_rows(const std::vector<double>& ref, const std::vector<float>& gpu_out,
                               const std::vector<int>& rows, int hidden, double bound) {
  RowCompare c;
  for (size_t ri = 0; ri < rows.size(); ++ri) {
    double dot = 0, nr = 0, ng = 0;
    for (int d = 0; d < hidden; ++d) {
      const double r = ref[ri * hidden + d];
      const double g = gpu_out[static_cast<size_t>(rows[ri]) * hidden + d];
      if (!std::isfinite(g)) ++c.non_finite;
      dot += r * g, nr += r * r, ng += g * g;
      c.max_abs_error = std::max(c.max_abs_error, std::abs(r - g));
    }
    const double cosine = dot / std::sqrt(nr * ng + 1e-300);
    if (!(cosine >= bound)) ++c.bad_rows;
    if (!(cosine >= c.min_cosine)) c.min_cosine = cosine, c.worst_row = rows[ri];
  }
  return c;
}

}  // namespace dsv4::moe_test
