// The attention pieces driven together through batches of several chunk patterns and
// several sequences, each stage compared with the CPU reference after every batch:
//   compressor entries (attention BF16 and indexer FP32) vs cpu::CompressorState::entries
//     fed the same x through F32 CompressorWeights (the GPU gets x W^T from cpu::linear);
//   indexer picks vs cpu::indexer_select on CPU scores over the GPU's indexer keys
//     (a differing pick only where the two scores are within 1e-4 relative);
//   attention output vs a CPU loop (FP64) over the same keys: BF16-rounded window rows
//     of the host's kv, the GPU's entries, the GPU's (checked) picks.
// Caches, entries, selections and outputs start as NaN / garbage so stray reads show;
// entry rows not yet pooled and the unused slots between sequences must stay NaN.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "attention/attention_test_util.h"
#include "cpu/attention.h"
#include "cpu/compressor.h"
#include "cpu/cpu_ops.h"
#include "cpu/rope.h"
#include "cuda/attention/attention.h"

namespace dsv4::attention_test {
namespace {

using cuda::attention::CompressedKeys;

struct LayerShape {
  std::string name;
  CompressedKeys mode = CompressedKeys::kNone;  // kNone sliding, kAllVisible HCA, kSelected CSA
  int heads = 4, head_dim = 64, rope_dim = 16, window = 8, rate = 4;
  int index_heads = 0, index_dim = 0, top_k = 0;  // CSA only
  int hidden = 32;                                // compressor input width (x)
  cuda::attention::CompressorParams::Kernel compressor_kernel = cuda::attention::CompressorParams::Kernel::kAuto;
};

using Batch = std::vector<std::pair<int, int>>;  // (sequence, tokens) in row order
struct Schedule {
  std::string name;
  int sequences = 1;
  std::vector<Batch> batches;
};

constexpr float kRmsEps = 1e-6f;

// The weights of one compressor as F32 host arrays and the CPU views of them.
struct CompressorSet {
  int dim = 0, width = 0, rate = 0;
  bool overlapping = false;
  std::vector<float> wkv, wgate, ape, norm;
  CompressorWeights weights;
  DeviceArray<float> d_ape, d_norm;
  void init(Random& random, int dim_, int rate_, bool overlapping_, int hidden) {
    dim = dim_;
    rate = rate_;
    overlapping = overlapping_;
    width = (overlapping ? 2 : 1) * dim;
    const float w_range = 1.0f / std::sqrt(static_cast<float>(hidden));
    wkv = random.vector(static_cast<size_t>(width) * hidden, -w_range, w_range);
    wgate = random.vector(static_cast<size_t>(width) * hidden, -2 * w_range, 2 * w_range);
    ape = random.vector(static_cast<size_t>(rate) * width, -1.0f, 1.0f);
    norm = random.vector(static_cast<size_t>(dim), 0.8f, 1.2f);
    weights.wkv = f32_matrix("wkv", wkv, width, hidden);
    weights.wgate = f32_matrix("wgate", wgate, width, hidden);
    weights.ape.shape = {rate, width};
    weights.ape.values = ape;
    weights.norm.shape = {dim};
    weights.norm.values = norm;
    d_ape = DeviceArray<float>(ape.size());
    d_ape.upload(ape);
    d_norm = DeviceArray<float>(norm.size());
    d_norm.upload(norm);
  }
};

class Pipeline {
 public:
  Pipeline(const LayerShape& shape, const Schedule& schedule, uint64_t seed)
      : s_(shape), schedule_(schedule), random_(seed) {
    const int sequences = schedule.sequences;
    std::vector<int> totals(sequences, 0);
    for (const Batch& batch : schedule.batches) {
      int batch_tokens = 0;
      for (auto [seq, count] : batch) {
        totals[seq] += count;
        max_chunk_ = std::max(max_chunk_, count);
        batch_tokens += count;
      }
      max_batch_tokens_ = std::max(max_batch_tokens_, batch_tokens);
    }
    const int max_total = *std::max_element(totals.begin(), totals.end());
    slots_ = 2 * sequences + 1;  // sequence s in slot 2 s + 1: the even slots stay untouched
    ring_rows_ = s_.window - 1 + max_chunk_ + 3;
    max_entries_ = max_total / s_.rate + 1;

    RopeConfig rope_config;
    rope_config.rope_dim = s_.rope_dim;
    rope_ = cpu::RopeTable(rope_config);
    const std::vector<float> inv_freq = rope_inv_freq(rope_config);
    d_inv_freq_ = DeviceArray<float>(inv_freq.size());
    d_inv_freq_.upload(inv_freq);
    RopeConfig index_rope_config;
    index_rope_config.rope_dim = std::min(s_.rope_dim, std::max(s_.index_dim, 2));
    index_rope_ = cpu::RopeTable(index_rope_config);
    const std::vector<float> index_inv_freq = rope_inv_freq(index_rope_config);
    d_index_inv_freq_ = DeviceArray<float>(index_inv_freq.size());
    d_index_inv_freq_.upload(index_inv_freq);

    // Host data per sequence and position.
    x_.resize(sequences);
    kv_rows_.resize(sequences);
    for (int seq = 0; seq < sequences; ++seq) {
      x_[seq] = random_.vector(static_cast<size_t>(totals[seq]) * s_.hidden, -1.0f, 1.0f);
      kv_rows_[seq] = random_.vector(static_cast<size_t>(totals[seq]) * s_.head_dim, -1.0f, 1.0f);
    }
    sinks_ = random_.vector(s_.heads, -1.0f, 2.0f);
    d_sinks_ = DeviceArray<float>(sinks_.size());
    d_sinks_.upload(sinks_);

    d_window_ = DeviceArray<uint16_t>(static_cast<size_t>(slots_) * ring_rows_ * s_.head_dim);
    d_window_.fill(kBf16NaN);
    d_error_ = DeviceArray<int32_t>(1);
    d_error_.fill(0);
    next_position_.assign(sequences, 0);

    if (compressed()) {
      attn_.init(random_, s_.head_dim, s_.rate, csa(), s_.hidden);
      attn_states_.resize(sequences);
      for (auto& state : attn_states_) state.init(s_.rate, s_.head_dim, csa());
      attn_state_rows_ = (csa() ? 2 : 1) * s_.rate;
      d_attn_state_kv_ = DeviceArray<float>(static_cast<size_t>(slots_) * attn_state_rows_ * attn_.width);
      d_attn_state_gate_ = DeviceArray<float>(d_attn_state_kv_.size());
      d_attn_state_kv_.fill(kNaN);
      d_attn_state_gate_.fill(kNaN);
      d_attn_entries_ = DeviceArray<uint16_t>(static_cast<size_t>(slots_) * max_entries_ * s_.head_dim);
      d_attn_entries_.fill(kBf16NaN);
    }
    if (csa()) {
      index_.init(random_, s_.index_dim, s_.rate, true, s_.hidden);
      index_states_.resize(sequences);
      for (auto& state : index_states_) state.init(s_.rate, s_.index_dim, true);
      d_index_state_kv_ = DeviceArray<float>(static_cast<size_t>(slots_) * 2 * s_.rate * index_.width);
      d_index_state_gate_ = DeviceArray<float>(d_index_state_kv_.size());
      d_index_state_kv_.fill(kNaN);
      d_index_state_gate_.fill(kNaN);
      d_index_entries_ = DeviceArray<float>(static_cast<size_t>(slots_) * max_entries_ * s_.index_dim);
      d_index_entries_.fill(kNaN);
    }
  }

  void run() {
    for (size_t b = 0; b < schedule_.batches.size(); ++b) {
      run_batch(static_cast<int>(b), schedule_.batches[b]);
      if (::testing::Test::HasFailure()) {
        ADD_FAILURE() << "stopped after the first failing batch " << b << " of " << label();
        return;
      }
    }
  }

 private:
  bool compressed() const { return s_.mode != CompressedKeys::kNone; }
  bool csa() const { return s_.mode == CompressedKeys::kSelected; }
  int slot_of(int seq) const { return 2 * seq + 1; }
  std::string label() const { return s_.name + " / " + schedule_.name; }

  // Raw projections of a chunk computed exactly as compressor_append does.
  static void project(const CompressorSet& set, const float* x, int count, int hidden, std::vector<float>& kv,
                      std::vector<float>& gate, int row) {
    const std::vector<float> chunk_kv = cpu::linear(set.weights.wkv, std::span<const float>(x, count * hidden), count);
    const std::vector<float> chunk_gate =
        cpu::linear(set.weights.wgate, std::span<const float>(x, count * hidden), count);
    std::copy(chunk_kv.begin(), chunk_kv.end(), kv.begin() + static_cast<size_t>(row) * set.width);
    std::copy(chunk_gate.begin(), chunk_gate.end(), gate.begin() + static_cast<size_t>(row) * set.width);
  }

  cuda::attention::CompressorParams compressor_params(const CompressorSet& set, const DeviceArray<float>& kv,
                                                      const DeviceArray<float>& gate, DeviceArray<float>& state_kv,
                                                      DeviceArray<float>& state_gate, void* entries, bool bf16,
                                                      const DeviceArray<float>& inv_freq, int rope_dim,
                                                      const cuda::TokenBatch& batch) {
    cuda::attention::CompressorParams p;
    p.kv_proj = kv.get();
    p.gate_proj = gate.get();
    p.ape = set.d_ape.get();
    p.norm_weight = set.d_norm.get();
    p.inv_freq = inv_freq.get();
    p.rope_dim = rope_dim;
    p.rate = set.rate;
    p.dim = set.dim;
    p.overlapping = set.overlapping;
    p.rms_eps = kRmsEps;
    p.state_kv = state_kv.get();
    p.state_gate = state_gate.get();
    p.state_rows = (set.overlapping ? 2 : 1) * set.rate;
    p.entries = entries;
    p.entries_bf16 = bf16;
    p.max_entries = max_entries_;
    p.batch = batch;
    p.error_flag = d_error_.get();
    p.kernel = s_.compressor_kernel;
    return p;
  }

  void run_batch(int b, const Batch& batch_spec) {
    BatchArrays rows;
    std::vector<int> row_seq;
    for (auto [seq, count] : batch_spec) {
      rows.add_sequence(slot_of(seq), next_position_[seq], count);
      row_seq.insert(row_seq.end(), count, seq);
    }
    const int tokens = rows.tokens();
    const cuda::TokenBatch batch = rows.upload();

    // Batch inputs: kv rows, queries, compressor projections; CPU compressors advance.
    std::vector<float> kv(static_cast<size_t>(tokens) * s_.head_dim);
    for (int t = 0; t < tokens; ++t)
      std::copy_n(kv_rows_[row_seq[t]].data() + static_cast<size_t>(rows.positions[t]) * s_.head_dim, s_.head_dim,
                  kv.data() + static_cast<size_t>(t) * s_.head_dim);
    const std::vector<float> q = random_.vector(static_cast<size_t>(tokens) * s_.heads * s_.head_dim, -3.0f, 3.0f);
    std::vector<float> attn_kv, attn_gate, index_kv, index_gate;
    if (compressed()) {
      attn_kv.assign(static_cast<size_t>(tokens) * attn_.width, 0.0f);
      attn_gate.assign(attn_kv.size(), 0.0f);
    }
    if (csa()) {
      index_kv.assign(static_cast<size_t>(tokens) * index_.width, 0.0f);
      index_gate.assign(index_kv.size(), 0.0f);
    }
    int row = 0;
    for (auto [seq, count] : batch_spec) {
      const float* x = x_[seq].data() + static_cast<size_t>(next_position_[seq]) * s_.hidden;
      if (compressed()) {
        project(attn_, x, count, s_.hidden, attn_kv, attn_gate, row);
        cpu::compressor_append(attn_states_[seq], attn_.weights, rope_, kRmsEps, x, count);
      }
      if (csa()) {
        project(index_, x, count, s_.hidden, index_kv, index_gate, row);
        cpu::compressor_append(index_states_[seq], index_.weights, index_rope_, kRmsEps, x, count);
      }
      row += count;
      next_position_[seq] += count;
    }

    DeviceArray<float> d_kv(kv.size()), d_q(q.size());
    d_kv.upload(kv);
    d_q.upload(q);
    DeviceArray<float> d_out(q.size());
    d_out.fill(kNaN);
    cuda::attention::kv_window_write(d_kv.get(), s_.head_dim, d_window_.get(), ring_rows_, batch, nullptr);

    DeviceArray<float> d_attn_kv(attn_kv.size()), d_attn_gate(attn_gate.size());
    if (compressed()) {
      d_attn_kv.upload(attn_kv);
      d_attn_gate.upload(attn_gate);
      cuda::attention::compressor_update(
          compressor_params(attn_, d_attn_kv, d_attn_gate, d_attn_state_kv_, d_attn_state_gate_,
                            d_attn_entries_.get(), true, d_inv_freq_, s_.rope_dim, batch),
          nullptr);
    }
    DeviceArray<float> d_index_kv(index_kv.size()), d_index_gate(index_gate.size());
    DeviceArray<float> d_index_q, d_head_weights, d_scores;
    DeviceArray<int32_t> d_selected;
    std::vector<float> index_q, head_weights;
    if (csa()) {
      d_index_kv.upload(index_kv);
      d_index_gate.upload(index_gate);
      cuda::attention::compressor_update(
          compressor_params(index_, d_index_kv, d_index_gate, d_index_state_kv_, d_index_state_gate_,
                            d_index_entries_.get(), false, d_index_inv_freq_,
                            static_cast<int>(index_rope_.rope_dim()), batch),
          nullptr);
      index_q = random_.vector(static_cast<size_t>(tokens) * s_.index_heads * s_.index_dim, -1.0f, 1.0f);
      head_weights = random_.vector(static_cast<size_t>(tokens) * s_.index_heads, -1.0f, 1.0f);
      d_index_q = DeviceArray<float>(index_q.size());
      d_index_q.upload(index_q);
      d_head_weights = DeviceArray<float>(head_weights.size());
      d_head_weights.upload(head_weights);
      d_scores = DeviceArray<float>(static_cast<size_t>(tokens) * max_entries_);
      d_scores.fill(kNaN);
      d_selected = DeviceArray<int32_t>(static_cast<size_t>(tokens) * s_.top_k);
      d_selected.fill(0x7f7f7f7f);  // must all be overwritten
      cuda::attention::IndexerParams ip;
      ip.q = d_index_q.get();
      ip.head_weights = d_head_weights.get();
      ip.entries = d_index_entries_.get();
      ip.max_entries = max_entries_;
      ip.heads = s_.index_heads;
      ip.dim = s_.index_dim;
      ip.rate = s_.rate;
      ip.top_k = s_.top_k;
      ip.batch = batch;
      ip.scores = d_scores.get();
      ip.selected = d_selected.get();
      ip.fp32_scores = true;  // FP32 scores: the near-tie allowance below is FP32-level (the BF16 path: indexer_test)
      cuda::attention::indexer_topk(ip, nullptr);
    }

    cuda::attention::SparseAttentionParams ap;
    ap.q = d_q.get();
    ap.heads = s_.heads;
    ap.head_dim = s_.head_dim;
    ap.window_kv = d_window_.get();
    ap.ring_rows = ring_rows_;
    ap.window = s_.window;
    ap.compressed = s_.mode;
    ap.entries = compressed() ? d_attn_entries_.get() : nullptr;
    ap.max_entries = max_entries_;
    ap.rate = s_.rate;
    ap.selected = csa() ? d_selected.get() : nullptr;
    ap.top_k = s_.top_k;
    ap.sinks = d_sinks_.get();
    ap.scale = 1.0f / std::sqrt(static_cast<float>(s_.head_dim));
    ap.batch = batch;
    ap.out = d_out.get();
    // The FP32 kernel: the FP32-level comparison below (kAuto would take the BF16 wgmma
    // kernel at V4 shapes; it gets its own pass at BF16-level bounds after this one).
    ap.kernel = cuda::attention::SparseAttentionParams::Kernel::kSimple;
    cuda::attention::sparse_attention(ap, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());

    const std::string at = label() + ", batch " + std::to_string(b);
    EXPECT_EQ(d_error_.download()[0], 0) << at << ": error flag set";

    std::vector<uint16_t> attn_entries;
    if (compressed()) {
      attn_entries = d_attn_entries_.download();
      check_entries(at + ": attention entries (BF16)", attn_entries.data(), nullptr, attn_states_, s_.head_dim);
    }
    std::vector<int32_t> selected;
    if (csa()) {
      const std::vector<float> index_entries = d_index_entries_.download();
      check_entries(at + ": indexer entries (FP32)", nullptr, index_entries.data(), index_states_, s_.index_dim);
      selected = d_selected.download();
      check_selection(at, rows, index_entries, index_q, head_weights, selected);
    }
    if (::testing::Test::HasFailure()) return;  // attention would only repeat the upstream error
    check_attention(at, rows, row_seq, q, attn_entries, selected, d_out.download(), kFp32Bounds);

    // The wgmma kernel (heads % 64 == 0, head_dim 512: the V4 shapes of FlashShapes) on
    // the same caches, without and with split-KV (auto, workspace for up to 16 splits).
    // It rounds q and P to BF16; the reference takes the BF16-rounded q, so what is left
    // is P's rounding (2^-9 relative per weight): sparse_attention_wgmma_test's bounds.
    if (s_.heads % 64 == 0 && s_.head_dim == 512) {
      std::vector<float> q_bf16(q.size());
      for (size_t i = 0; i < q.size(); ++i) q_bf16[i] = round_bf16(q[i]);
      const int64_t floats = cuda::attention::sparse_attention_workspace_floats(tokens, s_.heads, 16);
      DeviceArray<float> workspace(static_cast<size_t>(floats));
      using Kernel = cuda::attention::SparseAttentionParams::Kernel;
      std::vector<float> want;  // the BF16-q reference, computed once
      for (Kernel kernel : {Kernel::kWgmma, Kernel::kWgmmaShareP}) {
        ap.kernel = kernel;
        for (int splits : {1, 0}) {
          workspace.fill(kNaN);
          ap.kv_splits = splits;
          ap.split_workspace = splits == 1 ? nullptr : workspace.get();
          ap.split_workspace_floats = splits == 1 ? 0 : floats;
          d_out.fill(kNaN);
          cuda::attention::sparse_attention(ap, nullptr);
          DSV4_CUDA_CHECK(cudaDeviceSynchronize());
          check_attention(at + (kernel == Kernel::kWgmma ? ", wgmma kernel" : ", wgmma share-P kernel") +
                              ", kv_splits " + std::to_string(splits),
                          rows, row_seq, q_bf16, attn_entries, selected, d_out.download(), kBf16Bounds, &want);
        }
      }
    }
  }

  // Attention-output bounds: elementwise atol + rtol, and (when > 0) the cosine of every
  // (token, head) row against the reference at least min_cosine.
  struct Bounds {
    double atol, rtol, min_cosine;
  };
  static constexpr Bounds kFp32Bounds{1e-4, 1e-4, 0.0};
  static constexpr Bounds kBf16Bounds{3e-3, 5e-3, 0.9999};

  // GPU entries of every slot vs the CPU states; rows past entry_count and the unused
  // slots must still be NaN.
  void check_entries(const std::string& what, const uint16_t* bf16, const float* f32,
                     const std::vector<cpu::CompressorState>& states, int dim) {
    const size_t slot_elems = static_cast<size_t>(max_entries_) * dim;
    auto value = [&](size_t i) { return bf16 ? bf16_to_float(bf16[i]) : f32[i]; };
    for (int slot = 0; slot < slots_; ++slot) {
      const bool used = slot % 2 == 1;
      const int64_t count = used ? states[slot / 2].entry_count : 0;
      std::vector<float> got(static_cast<size_t>(count) * dim);
      for (size_t i = 0; i < got.size(); ++i) got[i] = value(slot * slot_elems + i);
      if (count > 0)
        expect_close(what, got.data(), states[slot / 2].entries.data(), got.size(), bf16 ? 1e-4 : 1e-4,
                     bf16 ? 1.0 / 128 : 1e-4, [&](size_t i) {
                       return "slot " + std::to_string(slot) + " entry " + std::to_string(i / dim) + " channel " +
                              std::to_string(i % dim);
                     });
      for (size_t i = static_cast<size_t>(count) * dim; i < slot_elems; ++i) {
        if (!std::isnan(value(slot * slot_elems + i))) {
          ADD_FAILURE() << what << ": slot " << slot << " entry " << i / dim << " channel " << i % dim
                        << " was written (value " << value(slot * slot_elems + i) << ") but only " << count
                        << " entries exist";
          break;
        }
      }
    }
  }

  void check_selection(const std::string& at, const BatchArrays& rows, const std::vector<float>& index_entries,
                       const std::vector<float>& index_q, const std::vector<float>& head_weights,
                       const std::vector<int32_t>& selected) {
    const int heads = s_.index_heads, dim = s_.index_dim, top_k = s_.top_k;
    const float score_scale = 1.0f / std::sqrt(static_cast<float>(dim));
    const float weight_scale = 1.0f / std::sqrt(static_cast<float>(heads));
    for (int t = 0; t < rows.tokens(); ++t) {
      const int position = rows.positions[t], slot = rows.slots[t];
      const int visible = std::min((position + 1) / s_.rate, max_entries_);
      std::vector<float> scores(visible);
      for (int w = 0; w < visible; ++w) {
        const float* key = index_entries.data() + (static_cast<size_t>(slot) * max_entries_ + w) * dim;
        float total = 0;
        for (int h = 0; h < heads; ++h) {
          const float* qh = index_q.data() + (static_cast<size_t>(t) * heads + h) * dim;
          const float relu = std::max(cpu::dot(qh, key, dim), 0.0f) * score_scale;
          total += relu * (head_weights[static_cast<size_t>(t) * heads + h] * weight_scale);
        }
        scores[w] = total;
      }
      const std::vector<int64_t> want = cpu::indexer_select(scores.data(), visible, top_k);
      const int32_t* got = selected.data() + static_cast<size_t>(t) * top_k;
      const std::string token = at + ", token " + std::to_string(t) + " (slot " + std::to_string(slot) +
                                ", position " + std::to_string(position) + ", visible " + std::to_string(visible) +
                                ")";
      const int expected = static_cast<int>(want.size());
      bool shape_ok = true;
      for (int i = 0; i < top_k; ++i) {
        const bool ok = i < expected ? (got[i] >= 0 && got[i] < visible && (i == 0 || got[i] > got[i - 1]))
                                     : got[i] == -1;
        if (!ok) {
          ADD_FAILURE() << token << ": selected[" << i << "] = " << got[i] << " (want " << expected
                        << " ascending picks in [0, visible), then -1)";
          shape_ok = false;
          break;
        }
      }
      if (!shape_ok || expected == 0) continue;
      float threshold = std::numeric_limits<float>::infinity(), row_max = 0;
      for (int64_t w : want) threshold = std::min(threshold, scores[w]);
      for (float v : scores) row_max = std::max(row_max, std::fabs(v));
      for (int i = 0; i < expected; ++i) {
        if (std::binary_search(want.begin(), want.end(), static_cast<int64_t>(got[i]))) continue;
        const float mine = scores[got[i]];
        const double tolerance = 1e-4 * std::max(std::fabs(mine), std::fabs(threshold)) + 1e-6 * row_max;
        if (std::fabs(mine - threshold) > tolerance)
          ADD_FAILURE() << token << ": picked entry " << got[i] << " (CPU score " << mine
                        << ") which the CPU does not pick; its k-th score is " << threshold;
      }
    }
  }

  // FP64 attention over the same keys (BF16 window rows of the host's kv, the GPU's
  // entries and picks) for queries q.
  std::vector<float> reference(const BatchArrays& rows, const std::vector<int>& row_seq, const std::vector<float>& q,
                               const std::vector<uint16_t>& attn_entries, const std::vector<int32_t>& selected) {
    const int heads = s_.heads, head_dim = s_.head_dim;
    std::vector<float> want(q.size());
    std::vector<std::vector<float>> keys;
    for (int t = 0; t < rows.tokens(); ++t) {
      const int position = rows.positions[t], slot = rows.slots[t], seq = row_seq[t];
      keys.clear();
      for (int p = std::max(0, position - s_.window + 1); p <= position; ++p) {
        std::vector<float> key(head_dim);
        for (int d = 0; d < head_dim; ++d)
          key[d] = round_bf16(kv_rows_[seq][static_cast<size_t>(p) * head_dim + d]);
        keys.push_back(std::move(key));
      }
      auto add_entry = [&](int w) {
        std::vector<float> key(head_dim);
        for (int d = 0; d < head_dim; ++d)
          key[d] = bf16_to_float(attn_entries[(static_cast<size_t>(slot) * max_entries_ + w) * head_dim + d]);
        keys.push_back(std::move(key));
      };
      const int visible = compressed() ? std::min((position + 1) / s_.rate, max_entries_) : 0;
      if (s_.mode == CompressedKeys::kAllVisible)
        for (int w = 0; w < visible; ++w) add_entry(w);
      if (csa())
        for (int i = 0; i < s_.top_k; ++i)
          if (const int w = selected[static_cast<size_t>(t) * s_.top_k + i]; w >= 0) add_entry(w);
      for (int h = 0; h < heads; ++h) {
        const float* qh = q.data() + (static_cast<size_t>(t) * heads + h) * head_dim;
        std::vector<double> logits(keys.size() + 1);
        double max_logit = sinks_[h];
        for (size_t k = 0; k < keys.size(); ++k) {
          double dot = 0;
          for (int d = 0; d < head_dim; ++d) dot += static_cast<double>(qh[d]) * keys[k][d];
          logits[k] = dot / std::sqrt(static_cast<double>(head_dim));
          max_logit = std::max(max_logit, logits[k]);
        }
        double denominator = std::exp(sinks_[h] - max_logit);  // the sink: denominator only
        for (size_t k = 0; k < keys.size(); ++k) {
          logits[k] = std::exp(logits[k] - max_logit);
          denominator += logits[k];
        }
        std::vector<double> sum(head_dim, 0.0);
        for (size_t k = 0; k < keys.size(); ++k)
          for (int d = 0; d < head_dim; ++d) sum[d] += logits[k] * keys[k][d];
        for (int d = 0; d < head_dim; ++d)
          want[(static_cast<size_t>(t) * heads + h) * head_dim + d] = static_cast<float>(sum[d] / denominator);
      }
    }
    return want;
  }

  void check_attention(const std::string& at, const BatchArrays& rows, const std::vector<int>& row_seq,
                       const std::vector<float>& q, const std::vector<uint16_t>& attn_entries,
                       const std::vector<int32_t>& selected, const std::vector<float>& out, const Bounds& bounds,
                       std::vector<float>* want_cache = nullptr) {
    const int heads = s_.heads, head_dim = s_.head_dim;
    std::vector<float> own;
    std::vector<float>& want = want_cache != nullptr ? *want_cache : own;
    if (want.size() != out.size()) want = reference(rows, row_seq, q, attn_entries, selected);
    auto where = [&](size_t i) {
      const size_t t = i / (static_cast<size_t>(heads) * head_dim);
      return "token " + std::to_string(t) + " (slot " + std::to_string(rows.slots[t]) + ", position " +
             std::to_string(rows.positions[t]) + ") head " + std::to_string((i / head_dim) % heads) + " channel " +
             std::to_string(i % head_dim);
    };
    expect_close(at + ": attention output", out.data(), want.data(), out.size(), bounds.atol, bounds.rtol, where);
    if (bounds.min_cosine > 0) {
      double worst_cos = 1.0;
      size_t worst_row = 0;
      for (size_t r = 0; r < out.size() / head_dim; ++r) {
        double gw = 0, gg = 0, ww = 0;
        for (int d = 0; d < head_dim; ++d) {
          const double g = out[r * head_dim + d], w = want[r * head_dim + d];
          gw += g * w, gg += g * g, ww += w * w;
        }
        if (ww < 1e-12) continue;  // a row without keys: checked elementwise
        const double cosine = gw / std::sqrt(std::max(gg, 1e-300) * ww);
        if (!(cosine >= worst_cos)) worst_cos = cosine, worst_row = r;
      }
      EXPECT_GE(worst_cos, bounds.min_cosine) << at << ": worst row cosine at " << where(worst_row * head_dim);
    }
  }

  LayerShape s_;
  Schedule schedule_;
  Random random_;
  int slots_ = 0, ring_rows_ = 0, max_entries_ = 0, max_chunk_ = 0, max_batch_tokens_ = 0, attn_state_rows_ = 0;
  cpu::RopeTable rope_, index_rope_;
  DeviceArray<float> d_inv_freq_, d_index_inv_freq_, d_sinks_;
  std::vector<std::vector<float>> x_, kv_rows_;  // per sequence: [positions, hidden], [positions, head_dim]
  std::vector<float> sinks_;
  std::vector<int> next_position_;
  DeviceArray<uint16_t> d_window_;  // [slots, ring_rows, head_dim]
  DeviceArray<int32_t> d_error_;
  CompressorSet attn_, index_;
  std::vector<cpu::CompressorState> attn_states_, index_states_;
  DeviceArray<float> d_attn_state_kv_, d_attn_state_gate_, d_index_state_kv_, d_index_state_gate_;
  DeviceArray<uint16_t> d_attn_entries_;  // [slots, max_entries, head_dim] BF16
  DeviceArray<float> d_index_entries_;    // [slots, max_entries, index_dim] FP32
};

// ---- shapes and schedules ---------------------------------------------------------------

LayerShape sliding(int head_dim, int rope_dim, int window) {
  LayerShape s;
  s.name = "sliding hd" + std::to_string(head_dim) + " w" + std::to_string(window);
  s.mode = CompressedKeys::kNone;
  s.head_dim = head_dim;
  s.rope_dim = rope_dim;
  s.window = window;
  return s;
}
LayerShape hca(int heads, int head_dim, int rope_dim, int window, int rate) {
  LayerShape s;
  s.name = "HCA hd" + std::to_string(head_dim) + " rope" + std::to_string(rope_dim) + " w" + std::to_string(window) +
           " rate" + std::to_string(rate);
  s.mode = CompressedKeys::kAllVisible;
  s.heads = heads;
  s.head_dim = head_dim;
  s.rope_dim = rope_dim;
  s.window = window;
  s.rate = rate;
  return s;
}
LayerShape csa(int heads, int head_dim, int rope_dim, int window, int index_heads, int index_dim, int top_k) {
  LayerShape s = hca(heads, head_dim, rope_dim, window, 4);
  s.name = "CSA hd" + std::to_string(head_dim) + " rope" + std::to_string(rope_dim) + " w" + std::to_string(window) +
           " idx" + std::to_string(index_heads) + "x" + std::to_string(index_dim) + " top" + std::to_string(top_k);
  s.mode = CompressedKeys::kSelected;
  s.index_heads = index_heads;
  s.index_dim = index_dim;
  s.top_k = top_k;
  return s;
}

Schedule one_prefill(int tokens) { return {"prefill " + std::to_string(tokens), 1, {{{0, tokens}}}}; }
Schedule prefill_then_decode(int prefill, int steps) {
  Schedule s{"prefill " + std::to_string(prefill) + " + " + std::to_string(steps) + " decode", 1, {{{0, prefill}}}};
  for (int i = 0; i < steps; ++i) s.batches.push_back({{0, 1}});
  return s;
}
Schedule odd_chunks() {
  Schedule s{"chunks 5,1,1,13,2,7,1,11", 1, {}};
  for (int n : {5, 1, 1, 13, 2, 7, 1, 11}) s.batches.push_back({{0, n}});
  return s;
}
// Three sequences: a mixed prefill batch, decode batches of all three at different
// positions, a mixed batch again, then decode.
Schedule three_sequences() {
  Schedule s{"three sequences", 3, {{{0, 9}, {1, 22}, {2, 3}}}};
  for (int i = 0; i < 6; ++i) s.batches.push_back({{0, 1}, {1, 1}, {2, 1}});
  s.batches.push_back({{0, 1}, {1, 6}, {2, 1}});
  s.batches.push_back({{2, 10}});
  for (int i = 0; i < 4; ++i) s.batches.push_back({{1, 1}, {2, 1}, {0, 1}});
  return s;
}

void run(const LayerShape& shape, const Schedule& schedule, uint64_t seed = 1) {
  SCOPED_TRACE(shape.name + " / " + schedule.name);
  Pipeline(shape, schedule, seed).run();
}

std::vector<Schedule> standard_schedules() {
  return {one_prefill(77), prefill_then_decode(13, 20), odd_chunks(), three_sequences()};
}

TEST(AttentionPipeline, SlidingOnly) {
  for (const Schedule& schedule : standard_schedules()) run(sliding(64, 16, 8), schedule);
  for (const Schedule& schedule : standard_schedules()) run(sliding(128, 64, 16), schedule);
}

TEST(AttentionPipeline, HeavilyCompressed) {
  for (const Schedule& schedule : standard_schedules()) run(hca(4, 64, 16, 8, 8), schedule);
  for (const Schedule& schedule : standard_schedules()) run(hca(5, 128, 64, 16, 16), schedule);
}

TEST(AttentionPipeline, HeavilyCompressedRate128LongPrefill) {
  // Chunks longer than the ring (state_rows = 128), windows closing inside and across chunks.
  run(hca(8, 128, 64, 128, 128), one_prefill(300));
  run(hca(8, 128, 64, 128, 128), {"prefill 200, 57, 140, decode", 1, {{{0, 200}}, {{0, 57}}, {{0, 140}}, {{0, 1}}}});
}

TEST(AttentionPipeline, CompressedSparse) {
  for (const Schedule& schedule : standard_schedules()) run(csa(4, 64, 16, 8, 4, 32, 3), schedule);
  for (const Schedule& schedule : standard_schedules()) run(csa(8, 128, 64, 16, 8, 32, 6), schedule);
  run(csa(6, 64, 16, 128, 32, 32, 128), prefill_then_decode(530, 3));  // visible crosses top_k 128
}

// The same pipelines with the opt-in kWide compressor kernels (CompressorParams::kernel):
// entries vs the CPU twin at the same bounds (cuda_compressor_test: bitwise kSimple's).
LayerShape wide(LayerShape shape) {
  shape.name += " wide compressor";
  shape.compressor_kernel = cuda::attention::CompressorParams::Kernel::kWide;
  return shape;
}
TEST(AttentionPipeline, WideCompressor) {
  for (const Schedule& schedule : standard_schedules()) run(wide(hca(5, 128, 64, 16, 16)), schedule);
  for (const Schedule& schedule : standard_schedules()) run(wide(csa(8, 128, 64, 16, 8, 32, 6)), schedule);
  run(wide(hca(8, 128, 64, 128, 128)), {"prefill 200, 57, 140, decode", 1, {{{0, 200}}, {{0, 57}}, {{0, 140}}, {{0, 1}}}});
  const Schedule prefill_decode{"flash prefill 263 + decode", 1, {{{0, 263}}, {{0, 1}}, {{0, 1}}, {{0, 5}}}};
  run(wide(csa(64, 512, 64, 128, 64, 128, 512)), prefill_decode);
  run(wide(hca(64, 512, 64, 128, 128)), prefill_decode);
}

// V4-Flash attention shapes at a few hundred positions (visible < top_k for CSA).
TEST(AttentionPipeline, FlashShapes) {
  const Schedule prefill_decode{"flash prefill 263 + decode", 1, {{{0, 263}}, {{0, 1}}, {{0, 1}}, {{0, 5}}}};
  run(csa(64, 512, 64, 128, 64, 128, 512), prefill_decode);
  run(hca(64, 512, 64, 128, 128), prefill_decode);
  run(sliding(512, 64, 128), three_sequences());
}

}  // namespace
}  // namespace dsv4::attention_test
