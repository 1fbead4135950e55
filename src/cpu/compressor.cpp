#include "cpu/compressor.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/cpu_ops.h"
#include "cpu/kv_fp8.h"
#include "dsv4/error.h"

namespace dsv4::cpu {

void CompressorState::init(int64_t rate_, int64_t dim_, bool overlapping_) {
  rate = rate_;
  dim = dim_;
  overlapping = overlapping_;
  buffered = 0;
  buffer_kv.assign(static_cast<size_t>(rate * width()), 0.0f);
  buffer_gate.assign(static_cast<size_t>(rate * width()), 0.0f);
  has_overlap = false;
  overlap_kv.assign(static_cast<size_t>(rate * dim), 0.0f);
  overlap_gate.assign(static_cast<size_t>(rate * dim), 0.0f);
  entries.clear();
  entry_count = 0;
}

namespace {

// Pools the full window in state.buffer_* into one entry and appends it.
// Slots: CSA has 2*rate (previous window's Ca, then this window's Cb), HCA rate.
// Softmax over slots per channel (FP32); slots without data get weight 0.
void pool_window(CompressorState& state, const CompressorWeights& weights, const RopeTable& rope, double rms_eps) {
  const int64_t rate = state.rate, dim = state.dim, width = state.width();
  const float* ape = weights.ape.values.data();  // [rate, width]
  std::vector<float> entry(static_cast<size_t>(dim));
  std::vector<float> slot_gate(static_cast<size_t>(2 * rate));
  std::vector<float> slot_kv(static_cast<size_t>(2 * rate));
  // Cb half (or the whole projection for HCA) lives at column offset `current_offset`.
  const int64_t current_offset = state.overlapping ? dim : 0;
  for (int64_t c = 0; c < dim; ++c) {
    int64_t slots = 0;
    if (state.overlapping && state.has_overlap) {
      for (int64_t j = 0; j < rate; ++j) {
        slot_kv[slots] = state.overlap_kv[j * dim + c];
        slot_gate[slots++] = state.overlap_gate[j * dim + c];
      }
    }
    for (int64_t j = 0; j < rate; ++j) {
      slot_kv[slots] = state.buffer_kv[j * width + current_offset + c];
      slot_gate[slots++] = state.buffer_gate[j * width + current_offset + c] + ape[j * width + current_offset + c];
    }
    softmax(slot_gate.data(), slots);
    float sum = 0;
    for (int64_t s = 0; s < slots; ++s) sum += slot_kv[s] * slot_gate[s];
    entry[c] = sum;
  }
  if (state.overlapping) {  // this window's Ca (with its position bias) feeds the next entry
    for (int64_t j = 0; j < rate; ++j) {
      for (int64_t c = 0; c < dim; ++c) {
        state.overlap_kv[j * dim + c] = state.buffer_kv[j * width + c];
        state.overlap_gate[j * dim + c] = state.buffer_gate[j * width + c] + ape[j * width + c];
      }
    }
    state.has_overlap = true;
  }
  rms_norm(entry.data(), 1, dim, weights.norm.values.data(), rms_eps);
  rope.apply(entry.data(), 1, dim, state.entry_count * rate);
  if (state.round_entries_bf16 || state.round_entries_fp8) round_to_bf16(entry.data(), dim);
  if (state.round_entries_fp8) kv_fp8_round_trip(entry.data(), 1);
  state.entries.insert(state.entries.end(), entry.begin(), entry.end());
  state.entry_count += 1;
  state.buffered = 0;
}

}  // namespace

void compressor_append(CompressorState& state, const CompressorWeights& weights, const RopeTable& rope,
                       double rms_eps, const float* x, int64_t tokens) {
  const int64_t width = state.width();
  DSV4_CHECK(weights.wkv.rows == width && weights.wgate.rows == width,
             "compressor {}: projections have {} rows, expected {}", weights.wkv.name, weights.wkv.rows, width);
  const std::vector<float> kv = linear(weights.wkv, std::span<const float>(x, tokens * weights.wkv.cols), tokens);
  const std::vector<float> gate =
      linear(weights.wgate, std::span<const float>(x, tokens * weights.wgate.cols), tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    std::copy_n(kv.data() + t * width, width, state.buffer_kv.data() + state.buffered * width);
    std::copy_n(gate.data() + t * width, width, state.buffer_gate.data() + state.buffered * width);
    if (++state.buffered == state.rate) pool_window(state, weights, rope, rms_eps);
  }
}

}  // namespace dsv4::cpu
