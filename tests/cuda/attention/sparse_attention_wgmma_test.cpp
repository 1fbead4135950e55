// The wgmma sparse-attention kernel (sparse_attention_wgmma.cu; 64 heads per CTA,
// head_dim 512) against an FP64 CPU loop over the same BF16 keys, and against the FP32
// kernel (SparseAttentionParams::Kernel::kSimple) on the same inputs. q is BF16-exact
// here, so the only rounding left is P -> BF16: every output element within
// atol 3e-3 + rtol 5e-3 and the cosine of every (token, head) row >= 0.9999.
// Cases: key counts not multiples of 64 and 1, 2, 3, 8, 17 key tiles (the 2-stage
// pipeline wraps), CSA index lists with -1 / out-of-range padding in random order,
// duplicate-free random picks, windows at the sequence start, a query with only
// window entries, an empty index list, a padding token (position -1), prefill chunks
// and decode tokens of mixed lengths in one batch, 128 heads (2 head groups), later
// keys with much larger logits (O rescaled across tiles), split-KV off / 2 / 3 / 7 /
// auto. Rows no token may read are NaN (a read of one shows up as NaN).
// Every case runs the four wgmma variants: Kernel::kWgmma (S in both warpgroups, P in
// registers), kWgmmaShareP (each warpgroup half of a tile's keys, row maxima and P
// exchanged through shared memory), kWgmmaPipelined (share-P math, producer
// warpgroup, 48-key tiles in a 3-stage mbarrier ring) and kWgmmaPingPong (the same ring,
// the consumer warpgroups scoring alternate tiles), each with every kv_splits of the
// case; kWgmmaPingPong must also equal kWgmmaPipelined bit for bit (output, and the
// split workspace: partial O and (m, l)). Odd and even tile counts per CTA (which
// warpgroup scores the last tile) come from the tile sweeps and the splits.
// q_bf16 (the producer's cp.async copy of a BF16 q into the Q panel): every
// kWgmmaPipelined / kWgmmaPingPong run is repeated with q_bf16 = RNE(q) beside q and must
// give the same bits; on the first kv_splits value also a q that is not BF16-exact (random
// low mantissa bits, every 7th element an exact tie) run with that FP32 q alone against
// q = nullptr + its CPU RNE (float_to_bf16) as q_bf16: the same bits (the kernels' own
// rounding of q is RNE).
// LayoutSingleCta48KeyTiles / KeyTiles48: key counts around multiples of 48.
// SelectedFlashTopKAcrossSplits: 10-tile CSA lists (top_k 512) with 1..4 splits / auto.
// kWgmmaPingPongPersistent (the ping-pong kernel looping over work items): wherever
// kWgmmaPingPong runs with q_bf16 (beside q, and q = nullptr on the first kv_splits
// value) it runs too and must equal kWgmmaPingPong bit for bit (output and split
// workspace); PersistentManyItems: 700 tokens (more items than 2 x SMs) with padding
// tokens between; most other cases have fewer items than SMs.
// kWgmmaLocalP (64-key tiles in pairs, register-local P; not bitwise any other kernel):
// after the other kernels of every case, with q_bf16 and each kv_splits value, against the
// FP64 loop at the same bounds; on the first value again with q = nullptr (bitwise equal);
// LocalPKeyTiles64 (64 t + {0, 1, -1, -63} keys, t = 1, 2, 3, 8, 17) and
// LocalPPairMaxHandshake (growing / shrinking logits) run it alone. DSV4_TEST_SKIP_LOCALP=1
// leaves it out.
// BadParamsNameTheProblem: kWgmma / kWgmmaShareP / kWgmmaPipelined / kWgmmaPingPong /
// kWgmmaPingPongPersistent / kWgmmaLocalP on 8 heads, kv_splits without (enough) workspace, an unknown
// kernel value; q and q_bf16 both null, q_bf16 alone for a kernel that reads the FP32 q
// (kSimple, kWgmma, kWgmmaShareP, kAuto on a shape only the FP32 kernel takes), a
// misaligned q_bf16, kWgmmaPingPongPersistent without q_bf16; kWgmmaLocalP on head_dim 256
// and without q_bf16.
// out_bf16 (every case, every kernel family: kSimple, kWgmma, kWgmmaPingPong,
// kWgmmaPingPongPersistent, kWgmmaLocalP, each kv_splits of the case, so the split merge
// too): the host RNE of the plain FP32 output bit for bit.
// LayoutSingleCta: 1 token, 1..3 key tiles of structured values (nonzero-mean keys, logits
// spread ~2: no near-cancelling output); on failure it prints
// the first mismatching (head, channel) pairs so a fragment-layout bug is obvious.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "attention/attention_test_util.h"
#include "cuda/attention/attention.h"
#include "cuda/attention/internal.h"
#include "dsv4/error.h"

namespace dsv4::attention_test {
namespace {

using cuda::attention::CompressedKeys;
using Kernel = cuda::attention::SparseAttentionParams::Kernel;
constexpr int kDim = 512;

struct Sequence {
  int slot = 0, start = 0, count = 1;  // count tokens at positions start.. (start -1: one padding token)
};

struct WgmmaCase {
  int heads = 64, window = 128, ring_rows = 0 /* 0: fits the longest chunk */, rate = 4, max_entries = 64, top_k = 16;
  CompressedKeys mode = CompressedKeys::kNone;
  std::vector<Sequence> sequences;
  double junk_fraction = 0.3;    // kSelected: share of list positions holding -1 / out-of-range picks
  bool growing_logits = false;   // later keys of a token get much larger logits
  bool structured = false;       // small-integer patterns (LayoutSingleCta)
  std::vector<int> kv_splits = {1};  // each run separately; 0 = auto (workspace given)
  bool local_p_only = false;     // run only the FP32 kernel and kWgmmaLocalP (its 64-key tile sweeps)
};

int keys_of(const WgmmaCase& c, int position) {
  if (position < 0) return 0;
  const int n_window = position - std::max(0, position - c.window + 1) + 1;
  const int visible = c.mode == CompressedKeys::kNone ? 0 : std::min((position + 1) / c.rate, c.max_entries);
  return n_window + (c.mode == CompressedKeys::kAllVisible ? visible : c.mode == CompressedKeys::kSelected ? c.top_k : 0);
}

// Smallest position whose key list (HCA or none) has at least `keys` entries, or -1.
int position_with_keys(const WgmmaCase& c, int keys) {
  for (int p = 0; p < 1 << 20; ++p)
    if (keys_of(c, p) >= keys) return p;
  return -1;
}

// See run_wgmma_case: out_bf16 of each kernel against the host RNE of its plain FP32
// output, on every kv_splits of c (NaN-filled first: a missing write shows).
void check_out_bf16(const WgmmaCase& c, cuda::attention::SparseAttentionParams p, int tokens, const float* d_q,
                    const uint16_t* d_q_bf16) {
  const size_t count = static_cast<size_t>(tokens) * c.heads * kDim;
  DeviceArray<float> d_out(count);
  DeviceArray<uint16_t> d_out_bf16(count);
  const std::vector<Kernel> kernels = c.local_p_only ? std::vector<Kernel>{Kernel::kSimple, Kernel::kWgmmaLocalP}
                                                     : std::vector<Kernel>{Kernel::kSimple, Kernel::kWgmma,
                                                                           Kernel::kWgmmaPingPong,
                                                                           Kernel::kWgmmaPingPongPersistent,
                                                                           Kernel::kWgmmaLocalP};
  for (Kernel kernel : kernels) {
    for (int splits : c.kv_splits) {
      if (kernel == Kernel::kSimple && splits != c.kv_splits.front()) continue;  // no split-KV there
      SCOPED_TRACE("out_bf16, kernel " + std::to_string(static_cast<int>(kernel)) + ", kv_splits " +
                   std::to_string(splits));
      const bool needs_bf16_q = kernel == Kernel::kWgmmaPingPongPersistent || kernel == Kernel::kWgmmaLocalP;
      p.kernel = kernel;
      p.q = d_q;
      p.q_bf16 = needs_bf16_q ? d_q_bf16 : nullptr;
      const int64_t floats = cuda::attention::sparse_attention_workspace_floats(tokens, c.heads, splits == 0 ? 16 : splits);
      DeviceArray<float> workspace(static_cast<size_t>(std::max<int64_t>(floats, 1)));
      p.kv_splits = kernel == Kernel::kSimple ? 1 : splits;
      p.split_workspace = p.kv_splits == 1 ? nullptr : workspace.get();
      p.split_workspace_floats = p.kv_splits == 1 ? 0 : floats;
      auto run = [&](bool bf16) {
        p.out = bf16 ? nullptr : d_out.get();
        p.out_bf16 = bf16 ? d_out_bf16.get() : nullptr;
        d_out.fill(kNaN);
        d_out_bf16.fill(0xffff);
        cuda::attention::sparse_attention(p, nullptr);
        DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      };
      run(false);
      const std::vector<float> plain = d_out.download();
      run(true);
      const std::vector<uint16_t> got = d_out_bf16.download();
      size_t same = 0, first_bad = count;
      for (size_t i = 0; i < count; ++i) {
        const bool ok = got[i] == float_to_bf16(plain[i]);
        same += ok;
        if (!ok && first_bad == count) first_bad = i;
      }
      EXPECT_EQ(same, count) << "out_bf16 vs the host RNE of the FP32 output: " << same << " of " << count
                             << " identical; first difference at element " << first_bad;
      if (::testing::Test::HasFailure()) return;
    }
  }
}

void run_wgmma_case(const WgmmaCase& c, uint64_t seed) {
  Random random(seed);
  BatchArrays rows;
  int slots = 1, longest = 1;
  for (const Sequence& s : c.sequences) {
    if (s.start < 0) {
      rows.add_sequence(s.slot, 0, 1);
      rows.positions.back() = -1;
    } else {
      rows.add_sequence(s.slot, s.start, s.count);
    }
    slots = std::max(slots, s.slot + 1);
    longest = std::max(longest, s.count);
  }
  const int tokens = rows.tokens();
  const int ring_rows = c.ring_rows > 0 ? c.ring_rows : c.window - 1 + longest;
  const cuda::TokenBatch batch = rows.upload();

  std::vector<uint16_t> window(static_cast<size_t>(slots) * ring_rows * kDim, kBf16NaN);
  std::vector<uint16_t> entries(static_cast<size_t>(slots) * c.max_entries * kDim, kBf16NaN);
  std::vector<int32_t> selected(static_cast<size_t>(tokens) * c.top_k, -1);
  std::vector<float> u(kDim);  // growing_logits direction
  for (float& v : u) v = random.uniform(0.0f, 1.0f) < 0.5f ? -1.0f : 1.0f;
  // Fill one key row; `growth` in [0, 1] scales the shared direction u in.
  auto fill_row = [&](uint16_t* row, int id, float growth) {
    for (int d = 0; d < kDim; ++d) {
      // Structured keys in [-1/4, 3/4] (mean 1/4): with zero-mean patterns O is a near
      // cancellation (|O| ~ 0.005 from values of 0.5), and the 2^-9 rounding of P alone
      // then costs 1 - cos ~ 3e-4 (the run2 failure); with a nonzero mean |O| ~ 0.25.
      float v = c.structured ? static_cast<float>((id * 5 + d * 3) % 9 - 2) / 8.0f : random.uniform(-1.0f, 1.0f);
      if (c.growing_logits) v = 0.5f * v + 0.5f * growth * u[d];
      row[d] = float_to_bf16(v);
    }
  };
  // Per slot: ring rows of every position a token of it may read, entries up to the last visible.
  for (const Sequence& s : c.sequences) {
    if (s.start < 0) continue;
    const int last = s.start + s.count - 1;
    for (int pos = std::max(0, s.start - c.window + 1); pos <= last; ++pos)
      fill_row(window.data() + (static_cast<size_t>(s.slot) * ring_rows + pos % ring_rows) * kDim, pos,
               static_cast<float>(pos) / (last + 1));
    const int visible = c.mode == CompressedKeys::kNone ? 0 : std::min((last + 1) / c.rate, c.max_entries);
    for (int w = 0; w < visible; ++w)
      fill_row(entries.data() + (static_cast<size_t>(s.slot) * c.max_entries + w) * kDim, 1000 + w,
               1.0f + static_cast<float>(w) / visible);  // entries come after the window: larger still
  }
  auto bf16_row = [](const uint16_t* row) {
    std::vector<float> key(kDim);
    for (int d = 0; d < kDim; ++d) key[d] = bf16_to_float(row[d]);
    return key;
  };
  std::vector<std::vector<std::vector<float>>> keys(tokens);
  for (int t = 0; t < tokens; ++t) {
    const int p = rows.positions[t], slot = rows.slots[t];
    if (p < 0) continue;
    for (int pos = std::max(0, p - c.window + 1); pos <= p; ++pos)
      keys[t].push_back(bf16_row(window.data() + (static_cast<size_t>(slot) * ring_rows + pos % ring_rows) * kDim));
    const int visible = c.mode == CompressedKeys::kNone ? 0 : std::min((p + 1) / c.rate, c.max_entries);
    auto entry = [&](int w) { return bf16_row(entries.data() + (static_cast<size_t>(slot) * c.max_entries + w) * kDim); };
    if (c.mode == CompressedKeys::kAllVisible)
      for (int w = 0; w < visible; ++w) keys[t].push_back(entry(w));
    if (c.mode == CompressedKeys::kSelected) {
      // Duplicate-free random picks among the visible entries, junk in between, random order.
      std::vector<int> pool(visible);
      std::iota(pool.begin(), pool.end(), 0);
      for (int i = visible - 1; i > 0; --i) std::swap(pool[i], pool[random.next() % (i + 1)]);
      const int junk[] = {-1, -3, visible, c.max_entries, 1 << 30};
      size_t next = 0;
      for (int i = 0; i < c.top_k; ++i) {
        int32_t& pick = selected[static_cast<size_t>(t) * c.top_k + i];
        if (next < pool.size() && random.uniform(0.0f, 1.0f) >= c.junk_fraction) {
          pick = pool[next++];
          keys[t].push_back(entry(pick));
        } else {
          pick = junk[random.next() % 5];
        }
      }
    }
  }
  std::vector<float> q(static_cast<size_t>(tokens) * c.heads * kDim);
  for (size_t i = 0; i < q.size(); ++i) {
    const int d = static_cast<int>(i % kDim), h = static_cast<int>((i / kDim) % c.heads);
    // Structured q in [-1, 1] (period 9 in d): logits of one head spread over ~2.1, so a
    // key or row given the wrong logit / weight moves the cosine by >= 1.7e-3 (1 tile).
    float v = c.structured ? static_cast<float>((h * 7 + d * 2) % 9 - 4) / 4.0f : random.uniform(-2.0f, 2.0f);
    if (c.growing_logits) v = 0.25f * v + 0.5f * u[d];
    q[i] = round_bf16(v);
  }
  std::vector<float> sinks = random.vector(c.heads, -1.0f, 2.0f);

  // FP64 reference.
  const double scale = 1.0 / std::sqrt(static_cast<double>(kDim));
  std::vector<float> want(q.size(), 0.0f);
  for (int t = 0; t < tokens; ++t)
    for (int h = 0; h < c.heads; ++h) {
      const float* qh = q.data() + (static_cast<size_t>(t) * c.heads + h) * kDim;
      std::vector<double> weights(keys[t].size());
      double max_logit = sinks[h];
      for (size_t k = 0; k < keys[t].size(); ++k) {
        double dot = 0;
        for (int d = 0; d < kDim; ++d) dot += static_cast<double>(qh[d]) * keys[t][k][d];
        max_logit = std::max(max_logit, weights[k] = dot * scale);
      }
      double denominator = std::exp(sinks[h] - max_logit);
      for (double& w : weights) denominator += (w = std::exp(w - max_logit));
      for (int d = 0; d < kDim; ++d) {
        double sum = 0;
        for (size_t k = 0; k < keys[t].size(); ++k) sum += weights[k] * keys[t][k][d];
        want[(static_cast<size_t>(t) * c.heads + h) * kDim + d] = static_cast<float>(sum / denominator);
      }
    }

  DeviceArray<uint16_t> d_window(window.size()), d_entries(entries.size());
  d_window.upload(window);
  d_entries.upload(entries);
  DeviceArray<int32_t> d_selected(selected.size());
  d_selected.upload(selected);
  DeviceArray<float> d_q(q.size()), d_sinks(sinks.size()), d_out(q.size());
  d_q.upload(q);
  d_sinks.upload(sinks);
  // q_bf16 inputs: RNE of q (exact: q is BF16 here), and a q with random low mantissa
  // bits (every 7th element a tie; zeros kept) with its CPU RNE.
  std::vector<uint16_t> q_bf16(q.size()), q_rough_bf16(q.size());
  std::vector<float> q_rough(q.size());
  for (size_t i = 0; i < q.size(); ++i) {
    q_bf16[i] = float_to_bf16(q[i]);
    uint32_t bits = 0;
    std::memcpy(&bits, &q[i], 4);
    if (q[i] != 0.0f) bits = (bits & 0xffff0000u) | (i % 7 == 0 ? 0x8000u : static_cast<uint32_t>(random.next() & 0xffffu));
    std::memcpy(&q_rough[i], &bits, 4);
    q_rough_bf16[i] = float_to_bf16(q_rough[i]);
  }
  DeviceArray<uint16_t> d_q_bf16(q.size()), d_q_rough_bf16(q.size());
  DeviceArray<float> d_q_rough(q.size());
  d_q_bf16.upload(q_bf16);
  d_q_rough_bf16.upload(q_rough_bf16);
  d_q_rough.upload(q_rough);
  cuda::attention::SparseAttentionParams p;
  p.q = d_q.get();
  p.heads = c.heads;
  p.head_dim = kDim;
  p.window_kv = d_window.get();
  p.ring_rows = ring_rows;
  p.window = c.window;
  p.compressed = c.mode;
  p.entries = d_entries.get();
  p.max_entries = c.max_entries;
  p.rate = c.rate;
  p.selected = d_selected.get();
  p.top_k = c.top_k;
  p.sinks = d_sinks.get();
  p.scale = static_cast<float>(scale);
  p.batch = batch;
  p.out = d_out.get();

  auto where = [&](size_t i) {
    const size_t t = i / (static_cast<size_t>(c.heads) * kDim);
    return "token " + std::to_string(t) + " (position " + std::to_string(rows.positions[t]) + ", " +
           std::to_string(keys[t].size()) + " keys) head " + std::to_string((i / kDim) % c.heads) + " channel " +
           std::to_string(i % kDim);
  };
  auto check = [&](const std::string& what, const std::vector<float>& got, bool print_first) {
    expect_close(what, got.data(), want.data(), got.size(), 3e-3, 5e-3, where);
    double worst_cos = 1.0;
    size_t worst_row = 0;
    for (size_t r = 0; r < got.size() / kDim; ++r) {
      double gw = 0, gg = 0, ww = 0;
      for (int d = 0; d < kDim; ++d) {
        const double g = got[r * kDim + d], w = want[r * kDim + d];
        gw += g * w, gg += g * g, ww += w * w;
      }
      if (ww < 1e-12) continue;  // no keys: checked elementwise (0)
      const double cosine = gw / std::sqrt(std::max(gg, 1e-300) * ww);
      if (!(cosine >= worst_cos)) worst_cos = cosine, worst_row = r;
    }
    EXPECT_GE(worst_cos, 0.9999) << what << ": worst row cosine at " << where(worst_row * kDim);
    if (print_first && ::testing::Test::HasFailure()) {
      int printed = 0;
      for (size_t i = 0; i < got.size() && printed < 24; ++i)
        if (!(std::fabs(got[i] - want[i]) <= 3e-3 + 5e-3 * std::fabs(want[i]))) {
          std::printf("  mismatch %s: got %.6f want %.6f\n", where(i).c_str(), got[i], want[i]);
          ++printed;
        }
    }
  };

  // The FP32 kernel on the same inputs (oracle on the GPU).
  p.kernel = Kernel::kSimple;
  d_out.fill(kNaN);
  cuda::attention::sparse_attention(p, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  expect_close("fp32 kernel", d_out.download().data(), want.data(), want.size(), 1e-4, 1e-4, where);

  // out_bf16, every kernel family (the FP32 kernel, kWgmma's store, the ring kernels'
  // store_output, the split merge): the host RNE of the plain FP32 output bit for bit.
  check_out_bf16(c, p, tokens, d_q.get(), d_q_bf16.get());

  // DSV4_TEST_SKIP_PIPELINED=1 leaves kWgmmaPipelined, kWgmmaPingPong and
  // kWgmmaPingPongPersistent out, DSV4_TEST_SKIP_PINGPONG=1 the two ping-pong kernels and
  // DSV4_TEST_SKIP_PERSISTENT=1 the persistent one alone (a trap of their producer's
  // bounded mbarrier waits is sticky for the process: this isolates the other variants).
  auto env_is_1 = [](const char* name) {
    const char* value = std::getenv(name);
    return value != nullptr && std::string(value) == "1";
  };
  const bool skip_pipelined = env_is_1("DSV4_TEST_SKIP_PIPELINED");
  const bool skip_pingpong = skip_pipelined || env_is_1("DSV4_TEST_SKIP_PINGPONG");
  const bool skip_persistent = skip_pingpong || env_is_1("DSV4_TEST_SKIP_PERSISTENT");
  const bool skip_local_p = env_is_1("DSV4_TEST_SKIP_LOCALP");
  // kWgmmaPipelined's output and split workspace (partial O, then (m, l) per row) per
  // kv_splits value: kWgmmaPingPong is expected to match both bit for bit.
  std::vector<std::vector<float>> pipelined_out(c.kv_splits.size()), pipelined_workspace(c.kv_splits.size());
  for (Kernel kernel : {Kernel::kWgmma, Kernel::kWgmmaShareP, Kernel::kWgmmaPipelined, Kernel::kWgmmaPingPong}) {
    if (c.local_p_only) break;
    if (kernel == Kernel::kWgmmaPipelined && skip_pipelined) continue;
    if (kernel == Kernel::kWgmmaPingPong && skip_pingpong) continue;
    p.kernel = kernel;
    for (size_t split_case = 0; split_case < c.kv_splits.size(); ++split_case) {
      const int splits = c.kv_splits[split_case];
      SCOPED_TRACE(std::string(kernel == Kernel::kWgmma             ? "kWgmma"
                               : kernel == Kernel::kWgmmaShareP     ? "kWgmmaShareP"
                               : kernel == Kernel::kWgmmaPipelined  ? "kWgmmaPipelined"
                                                                    : "kWgmmaPingPong") +
                   ", kv_splits " + std::to_string(splits));
      const int64_t floats =
          cuda::attention::sparse_attention_workspace_floats(tokens, c.heads, splits == 0 ? 16 : splits);
      DeviceArray<float> workspace(static_cast<size_t>(std::max<int64_t>(floats, 1)));
      workspace.fill(kNaN);
      p.kv_splits = splits;
      p.split_workspace = splits == 1 ? nullptr : workspace.get();
      p.split_workspace_floats = splits == 1 ? 0 : floats;
      d_out.fill(kNaN);
      cuda::attention::sparse_attention(p, nullptr);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      const std::vector<float> got = d_out.download();
      check("wgmma kernel", got, c.structured);
      if (kernel == Kernel::kWgmmaPipelined) {
        pipelined_out[split_case] = got;
        if (splits != 1) pipelined_workspace[split_case] = workspace.download();
      }
      if (kernel == Kernel::kWgmmaPingPong && !pipelined_out[split_case].empty()) {
        // Same S (48-key wgmma, the same k order per element), m, row sums (both 24-key
        // halves kept), P and O updates: identical bits (NaN-filled unwritten workspace
        // rows included).
        const size_t same_out = count_identical_bits(got, pipelined_out[split_case]);
        EXPECT_EQ(same_out, got.size()) << "kWgmmaPingPong output vs kWgmmaPipelined: " << same_out << " of "
                                        << got.size() << " elements bitwise identical";
        if (splits != 1) {
          const std::vector<float> ws = workspace.download();
          const size_t same_ws = count_identical_bits(ws, pipelined_workspace[split_case]);
          EXPECT_EQ(same_ws, ws.size()) << "kWgmmaPingPong split workspace (partial O, m, l) vs kWgmmaPipelined: "
                                        << same_ws << " of " << ws.size() << " floats bitwise identical";
        }
      }
      if (kernel == Kernel::kWgmmaPipelined || kernel == Kernel::kWgmmaPingPong) {
        // The producer's Q copy from q_bf16 instead of the consumers' staging of q.
        auto run = [&](const float* q_fp32, const uint16_t* q_bits) {
          p.q = q_fp32;
          p.q_bf16 = q_bits;
          d_out.fill(kNaN);
          cuda::attention::sparse_attention(p, nullptr);
          DSV4_CUDA_CHECK(cudaDeviceSynchronize());
          return d_out.download();
        };
        const std::vector<float> with_bf16 = run(d_q.get(), d_q_bf16.get());
        const size_t same = count_identical_bits(with_bf16, got);
        EXPECT_EQ(same, got.size()) << "q_bf16 = RNE(q) beside q vs q alone: " << same << " of " << got.size()
                                    << " elements bitwise identical";
        // kWgmmaPingPongPersistent (q_bf16 only) on the same inputs: bitwise kWgmmaPingPong's
        // output and split workspace (NaN-filled first: a missing write shows).
        const bool persistent = kernel == Kernel::kWgmmaPingPong && !skip_persistent;
        if (persistent) {
          SCOPED_TRACE("kWgmmaPingPongPersistent");
          const std::vector<float> pingpong_ws = splits != 1 ? workspace.download() : std::vector<float>();
          workspace.fill(kNaN);
          p.kernel = Kernel::kWgmmaPingPongPersistent;
          const std::vector<float> persist_out = run(d_q.get(), d_q_bf16.get());
          p.kernel = kernel;
          const size_t same_persist = count_identical_bits(persist_out, with_bf16);
          EXPECT_EQ(same_persist, with_bf16.size())
              << "kWgmmaPingPongPersistent vs kWgmmaPingPong (q_bf16): " << same_persist << " of "
              << with_bf16.size() << " elements bitwise identical";
          if (splits != 1) {
            const std::vector<float> ws = workspace.download();
            const size_t same_ws = count_identical_bits(ws, pingpong_ws);
            EXPECT_EQ(same_ws, ws.size()) << "kWgmmaPingPongPersistent split workspace vs kWgmmaPingPong: "
                                          << same_ws << " of " << ws.size() << " floats bitwise identical";
          }
        }
        if (split_case == 0) {
          const std::vector<float> rough = run(d_q_rough.get(), nullptr);
          const std::vector<float> rough_bf16 = run(nullptr, d_q_rough_bf16.get());
          const size_t same_rough = count_identical_bits(rough_bf16, rough);
          EXPECT_EQ(same_rough, rough.size())
              << "q = nullptr + q_bf16 = CPU RNE of a non-BF16 q vs that FP32 q: " << same_rough << " of "
              << rough.size() << " elements bitwise identical";
          if (persistent) {
            SCOPED_TRACE("kWgmmaPingPongPersistent, q = nullptr");
            p.kernel = Kernel::kWgmmaPingPongPersistent;
            const std::vector<float> persist_rough = run(nullptr, d_q_rough_bf16.get());
            p.kernel = kernel;
            const size_t same_persist_rough = count_identical_bits(persist_rough, rough_bf16);
            EXPECT_EQ(same_persist_rough, rough_bf16.size())
                << "kWgmmaPingPongPersistent vs kWgmmaPingPong, q = nullptr + q_bf16: " << same_persist_rough
                << " of " << rough_bf16.size() << " elements bitwise identical";
          }
        }
        p.q = d_q.get();
        p.q_bf16 = nullptr;
      }
      if (::testing::Test::HasFailure() && c.structured) return;  // the first layout failure is the informative one
    }
  }

  // kWgmmaLocalP (q_bf16 required; 64-key tiles in pairs, P rounded at the tile's and at the
  // pair's max): against the FP64 loop at the wgmma bounds (check), with every kv_splits of
  // the case (NaN-filled output and workspace: a missing write shows); on the first value
  // again with q = nullptr, which must give the same bits (it reads only q_bf16; also a
  // determinism check). DSV4_TEST_SKIP_LOCALP=1 leaves it out.
  if (skip_local_p) return;
  for (size_t split_case = 0; split_case < c.kv_splits.size(); ++split_case) {
    const int splits = c.kv_splits[split_case];
    SCOPED_TRACE("kWgmmaLocalP, kv_splits " + std::to_string(splits));
    const int64_t floats = cuda::attention::sparse_attention_workspace_floats(tokens, c.heads, splits == 0 ? 16 : splits);
    DeviceArray<float> workspace(static_cast<size_t>(std::max<int64_t>(floats, 1)));
    workspace.fill(kNaN);
    p.kernel = Kernel::kWgmmaLocalP;
    p.kv_splits = splits;
    p.split_workspace = splits == 1 ? nullptr : workspace.get();
    p.split_workspace_floats = splits == 1 ? 0 : floats;
    p.q = d_q.get();
    p.q_bf16 = d_q_bf16.get();
    d_out.fill(kNaN);
    cuda::attention::sparse_attention(p, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<float> got = d_out.download();
    check("kWgmmaLocalP", got, c.structured);
    if (split_case == 0) {
      p.q = nullptr;
      d_out.fill(kNaN);
      cuda::attention::sparse_attention(p, nullptr);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      const std::vector<float> again = d_out.download();
      const size_t same = count_identical_bits(again, got);
      EXPECT_EQ(same, got.size()) << "kWgmmaLocalP with q = nullptr vs q beside q_bf16: " << same << " of "
                                  << got.size() << " elements bitwise identical";
    }
    p.q = d_q.get();
    p.q_bf16 = nullptr;
    if (::testing::Test::HasFailure() && c.structured) return;
  }
}

TEST(SparseAttentionWgmma, LayoutSingleCta) {
  for (int tiles : {1, 2, 3}) {
    WgmmaCase c;
    c.window = 192;
    c.structured = true;
    c.sequences = {{0, 64 * tiles - 1, 1}};  // exactly `tiles` full tiles of window keys
    SCOPED_TRACE("tiles " + std::to_string(tiles));
    run_wgmma_case(c, 1);
    if (HasFailure()) return;  // the first layout failure is the informative one
  }
}

// kWgmmaPipelined gathers 48-key tiles into a 3-stage ring: 1..4 full 48-key tiles (4
// wraps the ring) of structured values, one CTA.
TEST(SparseAttentionWgmma, LayoutSingleCta48KeyTiles) {
  for (int tiles : {1, 2, 3, 4}) {
    WgmmaCase c;
    c.window = 192;
    c.structured = true;
    c.sequences = {{0, 48 * tiles - 1, 1}};
    SCOPED_TRACE("48-key tiles " + std::to_string(tiles));
    run_wgmma_case(c, 5);
    if (HasFailure()) return;
  }
}

// Key counts around multiples of 48 (the pipelined kernel's tile) up to 10 tiles (the
// 3-stage ring wraps 3 times), HCA lists, split-KV off / 2 / 5 (split
// boundaries inside the ring).
TEST(SparseAttentionWgmma, KeyTiles48) {
  for (int tiles : {1, 2, 3, 4, 5, 7, 10}) {
    for (int extra : {0, 1, -1, -47}) {
      WgmmaCase c;
      c.mode = CompressedKeys::kAllVisible;
      c.window = 32;
      c.max_entries = 1200;
      const int want_keys = 48 * tiles + extra;
      if (want_keys <= 0) continue;
      const int p = position_with_keys(c, want_keys);
      ASSERT_GE(p, 0) << want_keys << " keys";
      c.sequences = {{0, p, 1}, {1, p / 3, 1}};
      c.kv_splits = {1, 2, 5};
      SCOPED_TRACE("keys " + std::to_string(keys_of(c, p)));
      run_wgmma_case(c, 70 + tiles * 48 + extra);
    }
  }
}

// kWgmmaLocalP's tiles: key counts 64 t + {0, 1, -1, -63} for t = 1, 2, 3, 8, 17 (odd and
// even tile counts: the last pair with and without its second tile), HCA lists, split-KV
// off / 2 / 3 (split ranges of odd length, empty ranges); the FP32 kernel and kWgmmaLocalP only.
TEST(SparseAttentionWgmma, LocalPKeyTiles64) {
  for (int tiles : {1, 2, 3, 8, 17}) {
    for (int extra : {0, 1, -1, -63}) {
      WgmmaCase c;
      c.mode = CompressedKeys::kAllVisible;
      c.window = 32;
      c.max_entries = 1200;
      c.local_p_only = true;
      const int want_keys = 64 * tiles + extra;
      const int p = position_with_keys(c, want_keys);
      ASSERT_GE(p, 0) << want_keys << " keys";
      c.sequences = {{0, p, 1}, {1, p / 2, 1}, {2, -1, 1}, {3, p / 3, 1}};
      c.kv_splits = {1, 2, 3};
      SCOPED_TRACE("keys " + std::to_string(keys_of(c, p)));
      run_wgmma_case(c, 90 + tiles * 64 + extra);
    }
  }
}

// The pair handshake under changing maxima: logits growing along the list (tile 2i + 1
// above tile 2i: m1 > m0, P of tile 2i rescaled by 2^(m0 - m1) < 1), 2..10 tiles (HCA),
// then CSA lists of the same entries in random order (maxima that grow in some pairs and
// not in others), 6 tiles; kWgmmaLocalP only.
TEST(SparseAttentionWgmma, LocalPPairMaxHandshake) {
  WgmmaCase c;
  c.mode = CompressedKeys::kAllVisible;
  c.growing_logits = true;
  c.window = 64;
  c.max_entries = 600;
  c.local_p_only = true;
  c.sequences = {{0, 63, 1}, {1, 200, 1}, {2, 700, 1}, {3, 1500, 1}, {4, 2300, 1}};
  c.kv_splits = {1, 2};
  run_wgmma_case(c, 57);
  c.mode = CompressedKeys::kSelected;
  c.top_k = 300;
  c.junk_fraction = 0.2;
  run_wgmma_case(c, 58);
}

TEST(SparseAttentionWgmma, PartialTilesAndSequenceStart) {
  WgmmaCase c;  // window 128, no compressed keys
  c.sequences = {{1, 0, 1}, {2, 1, 1}, {3, 5, 1}, {4, 63, 1}, {5, 64, 1}, {6, 100, 1}, {7, 500, 1}};
  run_wgmma_case(c, 2);
}

TEST(SparseAttentionWgmma, KeyTilesHca) {
  for (int tiles : {1, 2, 3, 8, 17}) {
    for (int extra : {0, -5, -63}) {
      WgmmaCase c;
      c.mode = CompressedKeys::kAllVisible;
      c.window = 32;  // past position 31 every key count is reached exactly
      c.max_entries = 1200;
      const int want_keys = 64 * tiles + extra;
      if (want_keys <= 0) continue;
      const int p = position_with_keys(c, want_keys);
      ASSERT_GE(p, 0) << want_keys << " keys";
      c.sequences = {{0, p, 1}, {1, p / 2, 1}};
      c.kv_splits = {1, 3};
      SCOPED_TRACE("keys " + std::to_string(keys_of(c, p)));
      run_wgmma_case(c, 10 + tiles * 64 + extra);
    }
  }
}

TEST(SparseAttentionWgmma, SelectedWithPadding) {
  WgmmaCase c;
  c.mode = CompressedKeys::kSelected;
  c.max_entries = 400;
  c.top_k = 150;
  // visible 0 (only window keys), 1, 25, 150 (of top_k 150), 400 (capped), 400
  c.sequences = {{0, 2, 1}, {1, 5, 1}, {2, 99, 1}, {3, 603, 1}, {4, 1700, 1}, {5, 3000, 1}};
  c.kv_splits = {1, 2};
  run_wgmma_case(c, 20);
  c.junk_fraction = 1.0;  // empty index lists: window keys only
  run_wgmma_case(c, 21);
}

TEST(SparseAttentionWgmma, SelectedFlashTopKAcrossSplits) {
  // V4-Flash CSA lists: window 128 + top_k 512 = 10 key tiles, picks read one tile ahead
  // of their gather (fetch_picks), across split boundaries (2, 3, 4 splits, auto).
  WgmmaCase c;
  c.mode = CompressedKeys::kSelected;
  c.max_entries = 1100;
  c.top_k = 512;
  c.junk_fraction = 0.1;
  // visible 1000 (> top_k), 512 (== top_k), 75, 1100 (capped), 0 (window keys only)
  c.sequences = {{0, 3999, 1}, {1, 2047, 1}, {2, 300, 1}, {3, 4500, 1}, {4, 2, 1}};
  c.kv_splits = {1, 2, 3, 4, 0};
  run_wgmma_case(c, 25);
}

TEST(SparseAttentionWgmma, EmptyAndPadding) {
  WgmmaCase c;
  c.mode = CompressedKeys::kSelected;
  c.top_k = 8;
  c.junk_fraction = 1.0;
  c.sequences = {{0, -1, 1}, {1, 0, 1}, {2, 40, 1}, {3, -1, 1}};
  c.kv_splits = {1, 4};
  run_wgmma_case(c, 30);
}

TEST(SparseAttentionWgmma, MixedBatchPrefillAndDecode) {
  WgmmaCase c;
  c.mode = CompressedKeys::kSelected;
  c.max_entries = 200;
  c.top_k = 96;
  c.heads = 128;  // two head groups per token
  c.sequences = {{0, 0, 21}, {1, 300, 30}, {2, 777, 1}, {3, 5, 1}, {4, 130, 3}};
  c.kv_splits = {1, 0};
  run_wgmma_case(c, 40);
}

TEST(SparseAttentionWgmma, RescaleAcrossTiles) {
  for (CompressedKeys mode : {CompressedKeys::kNone, CompressedKeys::kAllVisible}) {
    WgmmaCase c;
    c.mode = mode;
    c.growing_logits = true;
    c.max_entries = 600;
    c.sequences = {{0, 127, 1}, {1, 1000, 1}, {2, 2200, 1}};
    c.kv_splits = {1, 2, 7};
    SCOPED_TRACE("mode " + std::to_string(static_cast<int>(mode)));
    run_wgmma_case(c, 50 + static_cast<int>(mode));
  }
}

TEST(SparseAttentionWgmma, SplitKvLongHcaDecode) {
  WgmmaCase c;
  c.mode = CompressedKeys::kAllVisible;
  c.rate = 128;
  c.max_entries = 1024;
  c.sequences = {{0, 131071, 1}, {1, 40000, 1}, {2, 200, 1}};  // 1024 + 128, 312 + 128, 1 + 128 keys
  c.kv_splits = {1, 0, 2, 3, 7, 16};
  run_wgmma_case(c, 60);
}

// kWgmmaPingPongPersistent with more work items than 2 x SMs (700 tokens: each CTA of
// the 132-SM H200 loops over 5-6 items, 15-16 with 3 splits): HCA lists of 1..7 48-key
// tiles (the ring's stage and phase run on across items), padding tokens (items without
// tiles) between the sequences, split-KV off / 3 (empty split ranges: more items
// without tiles). Every kernel runs as
// in the other cases; the persistent one must equal kWgmmaPingPong bit for bit.
TEST(SparseAttentionWgmma, PersistentManyItems) {
  WgmmaCase c;
  c.mode = CompressedKeys::kAllVisible;
  c.window = 32;
  c.max_entries = 300;
  c.sequences = {{0, 0, 300}};  // 1 .. 107 keys
  for (int i = 0; i < 20; ++i) c.sequences.push_back({2, -1, 1});
  c.sequences.push_back({1, 900, 200});  // 257 .. 307 keys: 6 / 7 tiles
  for (int i = 0; i < 20; ++i) c.sequences.push_back({2, -1, 1});
  c.sequences.push_back({3, 40, 160});   // 42 .. 82 keys: 1 / 2 tiles
  c.kv_splits = {1, 3};  // (auto would pick 1 split here)
  run_wgmma_case(c, 80);
}

TEST(SparseAttentionWgmma, BadParamsNameTheProblem) {
  // Host-side checks only (they throw before any launch).
  alignas(16) static float fake_f[4] = {};
  alignas(16) static uint16_t fake_kv[8] = {};
  static int32_t fake_i[1] = {0};
  cuda::attention::SparseAttentionParams p;
  p.q = p.sinks = p.out = fake_f;
  p.window_kv = p.entries = fake_kv;
  p.heads = 8;
  p.head_dim = kDim;
  p.ring_rows = p.window = 128;
  p.batch.tokens = 1;
  p.batch.positions = p.batch.slots = fake_i;
  p.kernel = Kernel::kWgmma;  // 8 heads: not a multiple of 64
  EXPECT_THROW(cuda::attention::sparse_attention(p, nullptr), Error);
  p.kernel = Kernel::kWgmmaShareP;
  EXPECT_THROW(cuda::attention::sparse_attention(p, nullptr), Error);
  p.kernel = Kernel::kWgmmaPipelined;
  EXPECT_THROW(cuda::attention::sparse_attention(p, nullptr), Error);
  p.kernel = Kernel::kWgmmaPingPong;
  EXPECT_THROW(cuda::attention::sparse_attention(p, nullptr), Error);
  p.kernel = Kernel::kWgmmaPingPongPersistent;
  EXPECT_THROW(cuda::attention::sparse_attention(p, nullptr), Error);
  p.kernel = Kernel::kWgmmaLocalP;
  EXPECT_THROW(cuda::attention::sparse_attention(p, nullptr), Error);
  p.heads = 64;
  p.kernel = static_cast<Kernel>(8);
  EXPECT_THROW(cuda::attention::sparse_attention(p, nullptr), Error);
  p.kernel = Kernel::kWgmma;
  p.kv_splits = 2;  // no workspace
  EXPECT_THROW(cuda::attention::sparse_attention(p, nullptr), Error);
  p.kv_splits = 65;
  EXPECT_THROW(cuda::attention::sparse_attention(p, nullptr), Error);
  p.kv_splits = 2;  // workspace one float short
  p.split_workspace = fake_f;
  p.split_workspace_floats = cuda::attention::sparse_attention_workspace_floats(1, 64, 2) - 1;
  EXPECT_THROW(cuda::attention::sparse_attention(p, nullptr), Error);
  p.kv_splits = 0;
  p.split_workspace = nullptr;
  p.split_workspace_floats = 0;

  // q_bf16: the message names what is wrong.
  auto expect_error = [&](const char* what, const std::string& needle) {
    SCOPED_TRACE(what);
    try {
      cuda::attention::sparse_attention(p, nullptr);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  p.q = nullptr;
  p.q_bf16 = nullptr;
  p.kernel = Kernel::kWgmmaPingPong;
  expect_error("q and q_bf16 null", "both are null");
  p.q_bf16 = fake_kv;
  for (Kernel kernel : {Kernel::kSimple, Kernel::kWgmma, Kernel::kWgmmaShareP}) {
    p.kernel = kernel;
    expect_error("q_bf16 alone, FP32-q kernel", "needs the FP32 q");
  }
  p.heads = 8;  // kAuto: only the FP32 kernel takes it
  p.kernel = Kernel::kAuto;
  expect_error("q_bf16 alone, kAuto on 8 heads", "needs the FP32 q");
  p.heads = 64;
  p.kernel = Kernel::kWgmmaPipelined;
  p.q_bf16 = fake_kv + 1;  // 2-byte aligned only
  expect_error("misaligned q_bf16", "q_bf16 must be 16-byte aligned");
  // kWgmmaPingPongPersistent requires q_bf16 (the FP32 q alone is refused).
  p.q = fake_f;
  p.q_bf16 = nullptr;
  p.kernel = Kernel::kWgmmaPingPongPersistent;
  expect_error("persistent without q_bf16", "kWgmmaPingPongPersistent requires q_bf16");
  p.heads = 8;
  p.q_bf16 = fake_kv;
  expect_error("persistent on 8 heads", "heads % 64 == 0");
  // kWgmmaLocalP: q_bf16 required, heads % 64 and head_dim 512.
  p.kernel = Kernel::kWgmmaLocalP;
  expect_error("local P on 8 heads", "heads % 64 == 0");
  p.heads = 64;
  p.head_dim = 256;
  expect_error("local P on head_dim 256", "head_dim 512");
  p.head_dim = kDim;
  p.q_bf16 = nullptr;
  expect_error("local P without q_bf16", "kWgmmaLocalP requires q_bf16");
  // out_bf16: exactly one output, an aligned out_bf16.
  p.kernel = Kernel::kWgmma;
  alignas(16) static uint16_t fake_out_bf16[16] = {};
  p.out_bf16 = fake_out_bf16;
  expect_error("out and out_bf16", "exactly one of out (FP32) and out_bf16 must be set, got both");
  p.out = nullptr;
  p.out_bf16 = nullptr;
  expect_error("neither out nor out_bf16", "got neither");
  p.out_bf16 = fake_out_bf16 + 1;
  expect_error("misaligned out_bf16", "out_bf16 must be 16-byte aligned");
  p.out_bf16 = nullptr;
  p.out = fake_f;
}

}  // namespace
}  // namespace dsv4::attention_test

// kv_splits 0's choice (host arithmetic, internal.h): the rows the model was fitted to.
TEST(SparseAttentionWgmma, AutoSplitsFollowTheMeasuredModel) {
  using dsv4::cuda::attention::detail::sparse_attention_auto_splits;
  constexpr int kRowBf16 = 1024, kSms = 132;
  EXPECT_EQ(sparse_attention_auto_splits(1, 64, 640, kRowBf16, kSms, 16), 10);   // CSA decode, 1 token
  EXPECT_EQ(sparse_attention_auto_splits(16, 64, 640, kRowBf16, kSms, 16), 5);   // 16 tokens
  EXPECT_EQ(sparse_attention_auto_splits(64, 64, 160, kRowBf16, kSms, 16), 1);   // HCA 4k, 64 tokens: no split
  EXPECT_EQ(sparse_attention_auto_splits(16, 64, 160, kRowBf16, kSms, 16), 1);
  EXPECT_EQ(sparse_attention_auto_splits(64, 64, 1152, kRowBf16, kSms, 16), 2);  // HCA 128k, 64 tokens
  EXPECT_EQ(sparse_attention_auto_splits(8192, 64, 640, kRowBf16, kSms, 16), 1);  // prefill
  EXPECT_EQ(sparse_attention_auto_splits(1, 64, 640, kRowBf16, kSms, 3), 3);     // capped by the workspace
  EXPECT_EQ(sparse_attention_auto_splits(1, 64, 0, kRowBf16, kSms, 16), 1);      // no keys
}
