// FP8 KV cache (src/cuda/attention/kv_fp8.h) vs the CPU codec (src/cpu/kv_fp8.h):
//   QuantizeRowsMatchesCpuBytes: kv_fp8_quantize_rows on 83 ragged rows (zero blocks,
//     -0, +-inf, NaN, values from 2^-140 to 2^126 incl. saturating ones) gives the CPU
//     encoder's bytes exactly; kv_fp8_dequantize_rows (BF16 and FP32) gives the CPU
//     decoder's values exactly; the decode is within max(|x| / 16, 2^(k - 10)) of x.
//   QuantizeTiesAndCodePointsMatchCpuBytes: blocks at k = 0 holding every code point,
//     midpoint (ties to even) and its float neighbours, -0 and negatives rounding to -0:
//     the hardware cvt gives the CPU RNE's bytes.
//   WriteWindowRing / WriteEntries: the ring rows / closed entries of a batch (several
//     slots, ring wrap, skipped tokens, entry overflow) hold the CPU bytes; every other
//     row keeps its 0xee poison.
//   SparseAttentionReadsFp8: sparse_attention with kv_fp8 (kSimple; kAuto = the FP32 kernel
//     at heads % 64 != 0, kWgmmaPingPong at 64-head multiples) on rows
//     written by the CPU encoder vs an FP64 loop over the CPU-decoded rows (1e-4), and
//     bitwise equal to the BF16 path fed the decoded rows (same BF16 tile); unused rows
//     are 0xff (NaN BF16 tail); none / all-visible / selected with junk picks.
//     Where heads % 64 == 0 also kWgmmaPipelined (split-KV off and 3): within 2e-2 of the
//     FP64 loop and bitwise equal to its run on the BF16 decoded rows; and kWgmmaPingPong
//     (same producer): the same bounds, bitwise equal to its BF16-row run and to
//     kWgmmaPipelined's FP8 run. Both ring kernels' FP8 runs again with q = nullptr and
//     q_bf16 = the CPU RNE (float_to_bf16) of q (not BF16-exact here): bitwise the FP32-q runs;
//     kWgmmaPingPongPersistent with that q_bf16 (FP8 and BF16 rows): bitwise kWgmmaPingPong's
//     q_bf16 runs; kWgmmaLocalP with that q_bf16: within the same bounds of the FP64 loop and
//     bitwise its own BF16-row run. One case has 300 tokens x 2 head groups (more items
//     than 2 x SMs).
//   Fp8RefusedByWgmma: kv_fp8 with kWgmma / kWgmmaShareP or head_dim != 512 is an error.
#include "cuda/attention/kv_fp8.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention/attention_test_util.h"
#include "cpu/kv_fp8.h"
#include "cuda/attention/attention.h"
#include "dsv4/error.h"

namespace dsv4::attention_test {
namespace {

static_assert(cuda::attention::kKvFp8RowBytes == cpu::kKvFp8RowBytes &&
                  cuda::attention::kKvFp8ScaleOffset == cpu::kKvFp8ScaleOffset &&
                  cuda::attention::kKvFp8RopeOffset == cpu::kKvFp8RopeOffset &&
                  cuda::attention::kKvFp8MinScaleExponent == cpu::kKvFp8MinScaleExponent &&
                  cuda::attention::kKvFp8MaxScaleExponent == cpu::kKvFp8MaxScaleExponent,
              "CUDA and CPU FP8 KV layouts agree");
constexpr int kDim = cpu::kKvFp8HeadDim;
constexpr int kRowBytes = cpu::kKvFp8RowBytes;

// Ragged rows as in tests/cpu/kv_fp8_test.cpp (specials only in the E4M3 part).
std::vector<float> hard_rows(int rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-140, 126), pick(0, 63);
  std::vector<float> out(static_cast<size_t>(rows) * kDim);
  for (int r = 0; r < rows; ++r) {
    float* row = out.data() + static_cast<size_t>(r) * kDim;
    for (int b = 0; b < 8; ++b) {
      const int e = b == 7 ? 0 : exponent(rng);
      for (int c = 0; c < 64; ++c) row[b * 64 + c] = std::ldexp(unit(rng), e);
    }
    switch (r % 7) {
      case 0: for (int c = 0; c < 64; ++c) row[64 + c] = 0.0f; break;
      case 1: row[pick(rng)] = -0.0f; row[128 + pick(rng)] = std::numeric_limits<float>::infinity(); break;
      case 2: row[192 + pick(rng)] = std::numeric_limits<float>::quiet_NaN(); row[pick(rng)] = -1e38f; break;
      case 3: for (int c = 0; c < 64; ++c) row[256 + c] = c == 5 ? 3e38f : 1e-3f; break;
      case 4: for (int c = 0; c < 64; ++c) row[320 + c] = (c % 2 ? -0.0f : 0x1p-130f); break;
      case 5: row[384 + pick(rng)] = -std::numeric_limits<float>::infinity(); row[460] = -0.0f; break;
      default: break;
    }
  }
  return out;
}

std::vector<uint8_t> cpu_encode(const std::vector<float>& rows) {
  const size_t count = rows.size() / kDim;
  std::vector<uint8_t> out(count * kRowBytes);
  for (size_t r = 0; r < count; ++r) cpu::kv_fp8_encode_row(rows.data() + r * kDim, out.data() + r * kRowBytes);
  return out;
}

// First differing byte of row-major [rows, 584] arrays, as "row r byte b: got g want w".
void expect_bytes_equal(const std::string& what, const std::vector<uint8_t>& got, const std::vector<uint8_t>& want) {
  ASSERT_EQ(got.size(), want.size());
  size_t differing = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && differing++ == 0) first = i;
  if (differing > 0)
    ADD_FAILURE() << what << ": " << differing << " of " << got.size() << " bytes differ; first at row "
                  << first / kRowBytes << " byte " << first % kRowBytes << ": got " << int(got[first]) << ", want "
                  << int(want[first]);
}

TEST(KvFp8, QuantizeRowsMatchesCpuBytes) {
  const int rows = 83;
  const std::vector<float> input = hard_rows(rows, 11);
  const std::vector<uint8_t> want = cpu_encode(input);
  DeviceArray<float> d_input(input.size());
  d_input.upload(input);
  DeviceArray<uint8_t> d_bytes(want.size() + kRowBytes);  // one row of guard after the last
  d_bytes.fill(0xee);
  cuda::attention::kv_fp8_quantize_rows(d_input.get(), rows, d_bytes.get(), nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint8_t> got = d_bytes.download();
  for (size_t i = want.size(); i < got.size(); ++i) ASSERT_EQ(got[i], 0xee) << "wrote past the last row";
  got.resize(want.size());
  expect_bytes_equal("kv_fp8_quantize_rows", got, want);

  // Decode of the CPU bytes on the GPU == CPU decode (BF16 and FP32 outputs).
  std::vector<float> decoded(input.size());
  for (int r = 0; r < rows; ++r) cpu::kv_fp8_decode_row(want.data() + static_cast<size_t>(r) * kRowBytes,
                                                        decoded.data() + static_cast<size_t>(r) * kDim);
  DeviceArray<uint8_t> d_want(want.size());
  d_want.upload(want);
  DeviceArray<float> d_f32(input.size());
  DeviceArray<uint16_t> d_bf16(input.size());
  d_f32.fill(kNaN);
  d_bf16.fill(kBf16NaN);
  cuda::attention::kv_fp8_dequantize_rows(d_want.get(), rows, d_f32.get(), false, nullptr);
  cuda::attention::kv_fp8_dequantize_rows(d_want.get(), rows, d_bf16.get(), true, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> f32 = d_f32.download();
  const std::vector<uint16_t> bf16 = d_bf16.download();
  size_t mismatches = 0;
  for (size_t i = 0; i < decoded.size(); ++i) {
    uint32_t want_bits, got_bits;
    std::memcpy(&want_bits, &decoded[i], 4);
    std::memcpy(&got_bits, &f32[i], 4);
    const bool ok = got_bits == want_bits && bf16[i] == (want_bits >> 16) && (want_bits & 0xffffu) == 0;
    if (!ok && mismatches++ < 5)
      ADD_FAILURE() << "dequantize row " << i / kDim << " channel " << i % kDim << ": FP32 " << f32[i] << " BF16 "
                    << bf16_to_float(bf16[i]) << ", want " << decoded[i];
  }
  EXPECT_EQ(mismatches, 0u);

  // Round trip bound on the finite, unsaturated inputs.
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cpu::kKvFp8NopeDim; ++c) {
      const size_t i = static_cast<size_t>(r) * kDim + c;
      const int k = int(want[static_cast<size_t>(r) * kRowBytes + cpu::kKvFp8ScaleOffset + c / 64]) - 127;
      ASSERT_FALSE(std::isnan(f32[i])) << "row " << r << " channel " << c;
      if (!std::isfinite(input[i]) || std::fabs(input[i]) > std::ldexp(448.0f, cpu::kKvFp8MaxScaleExponent)) continue;
      const double bound = std::max(std::fabs(static_cast<double>(input[i])) / 16, std::ldexp(1.0, k - 10));
      EXPECT_LE(std::fabs(static_cast<double>(f32[i]) - input[i]), bound) << "row " << r << " channel " << c;
    }
}

// The hardware cvt.rn.satfinite.e4m3x2.f32 vs the CPU's RNE where random rows almost never
// land: every block holds 448 (so k = 0 and the other 63 channels reach the cvt as they
// are), then every positive / negative code point, every midpoint (ties to even) and the
// floats just above / below it, -0, negatives that round to -0 (-2^-10 is a tie to 0),
// FP32 subnormals, 448 and the float below it. The RoPE tail holds BF16 ties (1 + c 2^-8).
TEST(KvFp8, QuantizeTiesAndCodePointsMatchCpuBytes) {
  std::vector<float> values;
  for (int b = 0; b < 0x7e; ++b) {
    const double lo = cpu::e4m3_to_float(static_cast<uint8_t>(b)), hi = cpu::e4m3_to_float(static_cast<uint8_t>(b + 1));
    const float mid = static_cast<float>((lo + hi) / 2);
    for (float v : {static_cast<float>(lo), mid, std::nextafter(mid, 1000.0f), std::nextafter(mid, 0.0f)}) {
      values.push_back(v);
      values.push_back(-v);
    }
  }
  for (float v : {448.0f, -448.0f, std::nextafter(448.0f, 0.0f), -0.0f, -0x1p-10f, -0x1p-11f, -0x1.000002p-10f, 0x1p-130f,
                  -0x1p-149f, 0x1.fffffcp-127f})
    values.push_back(v);
  const int per_row = cpu::kKvFp8Blocks * 63;
  const int rows = static_cast<int>((values.size() + per_row - 1) / per_row);
  std::vector<float> input(static_cast<size_t>(rows) * kDim, 0.0f);
  size_t next = 0;
  for (int r = 0; r < rows; ++r) {
    float* row = input.data() + static_cast<size_t>(r) * kDim;
    for (int b = 0; b < cpu::kKvFp8Blocks; ++b) {
      row[b * 64 + (r + 5 * b) % 64] = (b % 2 ? -448.0f : 448.0f);  // amax 448: k = 0
      for (int c = 0; c < 64; ++c)
        if (c != (r + 5 * b) % 64 && next < values.size()) row[b * 64 + c] = values[next++];
    }
    for (int c = 0; c < cpu::kKvFp8RopeDim; ++c) row[cpu::kKvFp8NopeDim + c] = (r % 2 ? -1.0f : 1.0f) + c * 0x1p-8f;
  }
  ASSERT_EQ(next, values.size());
  const std::vector<uint8_t> want = cpu_encode(input);
  for (int r = 0; r < rows; ++r)
    for (int b = 0; b < cpu::kKvFp8Blocks; ++b)
      ASSERT_EQ(want[static_cast<size_t>(r) * kRowBytes + cpu::kKvFp8ScaleOffset + b], 127) << "k must be 0";
  DeviceArray<float> d_input(input.size());
  d_input.upload(input);
  DeviceArray<uint8_t> d_bytes(want.size());
  d_bytes.fill(0xee);
  cuda::attention::kv_fp8_quantize_rows(d_input.get(), rows, d_bytes.get(), nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  expect_bytes_equal("kv_fp8_quantize_rows (ties, code points)", d_bytes.download(), want);
}

TEST(KvFp8, WriteWindowRing) {
  const int ring_rows = 13, slots = 5;
  BatchArrays batch;
  batch.add_sequence(1, 0, 9);     // prefill chunk, first window
  batch.add_sequence(3, 20, 13);   // wraps the ring (20 .. 32 -> rows 7 .. 12, 0 .. 6)
  batch.add_sequence(4, 1000, 1);  // decode
  batch.add_sequence(0, 5, 2);
  batch.slots[3] = -1;             // skipped tokens
  batch.positions[12] = -1;
  const int tokens = batch.tokens();
  const cuda::TokenBatch d_batch = batch.upload();
  const std::vector<float> kv = hard_rows(tokens, 21);
  DeviceArray<float> d_kv(kv.size());
  d_kv.upload(kv);
  std::vector<uint8_t> want(static_cast<size_t>(slots) * ring_rows * kRowBytes, 0xee);
  for (int t = 0; t < tokens; ++t) {
    if (batch.slots[t] < 0 || batch.positions[t] < 0) continue;
    const size_t row = static_cast<size_t>(batch.slots[t]) * ring_rows + batch.positions[t] % ring_rows;
    cpu::kv_fp8_encode_row(kv.data() + static_cast<size_t>(t) * kDim, want.data() + row * kRowBytes);
  }
  DeviceArray<uint8_t> d_window(want.size());
  d_window.fill(0xee);
  cuda::attention::kv_fp8_write_window(d_kv.get(), d_window.get(), ring_rows, d_batch, nullptr);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  expect_bytes_equal("kv_fp8_write_window", d_window.download(), want);
}

TEST(KvFp8, WriteEntries) {
  const int rate = 4, max_entries = 6, slots = 4;
  BatchArrays batch;
  batch.add_sequence(2, 0, 11);   // closes entries 0, 1 (positions 3, 7)
  batch.add_sequence(0, 17, 11);  // closes 4 (19), 5 (23); 27 is entry 6 >= max_entries: not written
  batch.add_sequence(3, 15, 1);   // decode closing entry 3
  batch.add_sequence(1, 13, 1);   // decode, no window closes
  batch.slots[3] = -1;            // position 3 of slot 2 skipped: entry 0 not written
  const int tokens = batch.tokens();
  const cuda::TokenBatch d_batch = batch.upload();
  const size_t source_rows = static_cast<size_t>(slots) * max_entries;
  const std::vector<float> source = hard_rows(static_cast<int>(source_rows), 31);
  for (bool source_bf16 : {false, true}) {
    SCOPED_TRACE(source_bf16 ? "BF16 source" : "FP32 source");
    std::vector<float> values = source;
    std::vector<uint16_t> source_bits(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      source_bits[i] = float_to_bf16(source[i]);
      if (source_bf16) values[i] = bf16_to_float(source_bits[i]);
    }
    std::vector<uint8_t> want(source_rows * kRowBytes, 0xee);
    for (int t = 0; t < tokens; ++t) {
      const int slot = batch.slots[t], p = batch.positions[t];
      if (slot < 0 || p < 0 || (p + 1) % rate != 0 || (p + 1) / rate - 1 >= max_entries) continue;
      const size_t row = static_cast<size_t>(slot) * max_entries + (p + 1) / rate - 1;
      cpu::kv_fp8_encode_row(values.data() + row * kDim, want.data() + row * kRowBytes);
    }
    DeviceArray<float> d_f32(source.size());
    DeviceArray<uint16_t> d_bf16(source.size());
    d_f32.upload(source);
    d_bf16.upload(source_bits);
    DeviceArray<uint8_t> d_entries(want.size());
    d_entries.fill(0xee);
    const void* d_source = source_bf16 ? static_cast<const void*>(d_bf16.get()) : d_f32.get();
    cuda::attention::kv_fp8_write_entries(d_source, source_bf16, d_entries.get(), max_entries, rate, d_batch, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    expect_bytes_equal("kv_fp8_write_entries", d_entries.download(), want);
  }
}

using cuda::attention::CompressedKeys;
using Kernel = cuda::attention::SparseAttentionParams::Kernel;

struct Fp8Case {
  int heads = 13, window = 8, ring_rows = 11, rate = 4, max_entries = 40, top_k = 6;
  CompressedKeys mode = CompressedKeys::kNone;
  std::vector<int> positions;  // one token per slot (slot = 2 i + 1)
};

void run_fp8_case(const Fp8Case& c, uint64_t seed) {
  Random random(seed);
  const int tokens = static_cast<int>(c.positions.size()), slots = 2 * tokens + 1;
  BatchArrays rows;
  for (int t = 0; t < tokens; ++t) rows.add_sequence(2 * t + 1, c.positions[t], 1);
  const cuda::TokenBatch batch = rows.upload();

  std::vector<uint8_t> window(static_cast<size_t>(slots) * c.ring_rows * kRowBytes, 0xff);
  std::vector<uint8_t> entries(static_cast<size_t>(slots) * c.max_entries * kRowBytes, 0xff);
  // The BF16 twin arrays hold the decoded rows (exact), NaN elsewhere.
  std::vector<uint16_t> window_bf16(static_cast<size_t>(slots) * c.ring_rows * kDim, kBf16NaN);
  std::vector<uint16_t> entries_bf16(static_cast<size_t>(slots) * c.max_entries * kDim, kBf16NaN);
  std::vector<int32_t> selected(static_cast<size_t>(tokens) * c.top_k, -1);
  std::vector<std::vector<std::vector<float>>> keys(tokens);  // per token: decoded key rows
  auto random_row = [&](uint8_t* bytes, uint16_t* bf16) {
    std::vector<float> x(kDim), key(kDim);
    for (int b = 0; b < 8; ++b) {
      const float magnitude = std::exp2(random.uniform(-3.0f, 1.0f));
      const bool zero_block = random.uniform(0.0f, 1.0f) < 0.05f;
      for (int d = b * 64; d < b * 64 + 64; ++d) x[d] = zero_block ? 0.0f : magnitude * random.uniform(-1.0f, 1.0f);
    }
    cpu::kv_fp8_encode_row(x.data(), bytes);
    cpu::kv_fp8_decode_row(bytes, key.data());
    for (int d = 0; d < kDim; ++d) bf16[d] = float_to_bf16(key[d]);
    return key;
  };
  for (int t = 0; t < tokens; ++t) {
    const int p = c.positions[t], slot = 2 * t + 1;
    for (int pos = std::max(0, p - c.window + 1); pos <= p; ++pos) {
      const size_t row = static_cast<size_t>(slot) * c.ring_rows + pos % c.ring_rows;
      keys[t].push_back(random_row(window.data() + row * kRowBytes, window_bf16.data() + row * kDim));
    }
    const int visible = c.mode == CompressedKeys::kNone ? 0 : std::min((p + 1) / c.rate, c.max_entries);
    std::vector<std::vector<float>> entry_keys;
    for (int w = 0; w < visible; ++w) {
      const size_t row = static_cast<size_t>(slot) * c.max_entries + w;
      entry_keys.push_back(random_row(entries.data() + row * kRowBytes, entries_bf16.data() + row * kDim));
    }
    if (c.mode == CompressedKeys::kAllVisible) keys[t].insert(keys[t].end(), entry_keys.begin(), entry_keys.end());
    if (c.mode == CompressedKeys::kSelected)
      for (int w : fill_selected_with_junk(visible, c.max_entries, c.top_k,
                                           selected.data() + static_cast<size_t>(t) * c.top_k))
        keys[t].push_back(entry_keys[w]);
  }
  const std::vector<float> q = random.vector(static_cast<size_t>(tokens) * c.heads * kDim, -0.5f, 0.5f);
  const std::vector<float> sinks = random.vector(c.heads, -1.0f, 2.0f);

  DeviceArray<uint8_t> d_window(window.size()), d_entries(entries.size());
  d_window.upload(window);
  d_entries.upload(entries);
  DeviceArray<uint16_t> d_window_bf16(window_bf16.size()), d_entries_bf16(entries_bf16.size());
  d_window_bf16.upload(window_bf16);
  d_entries_bf16.upload(entries_bf16);
  DeviceArray<int32_t> d_selected(selected.size());
  d_selected.upload(selected);
  DeviceArray<float> d_q(q.size()), d_sinks(sinks.size()), d_out(q.size());
  d_q.upload(q);
  d_sinks.upload(sinks);
  std::vector<uint16_t> q_bf16(q.size());
  for (size_t i = 0; i < q.size(); ++i) q_bf16[i] = float_to_bf16(q[i]);
  DeviceArray<uint16_t> d_q_bf16(q.size());
  d_q_bf16.upload(q_bf16);
  cuda::attention::SparseAttentionParams p;
  p.q = d_q.get();
  p.heads = c.heads;
  p.head_dim = kDim;
  p.ring_rows = c.ring_rows;
  p.window = c.window;
  p.compressed = c.mode;
  p.max_entries = c.max_entries;
  p.rate = c.rate;
  p.selected = d_selected.get();
  p.top_k = c.top_k;
  p.sinks = d_sinks.get();
  p.scale = 1.0f / std::sqrt(static_cast<float>(kDim));
  p.batch = batch;
  p.out = d_out.get();
  const int max_splits = 3;
  DeviceArray<float> d_workspace(
      static_cast<size_t>(cuda::attention::sparse_attention_workspace_floats(tokens, c.heads, max_splits)));
  auto run = [&](bool fp8, Kernel kernel, int kv_splits = 0) {
    p.kv_fp8 = fp8;
    p.kernel = kernel;
    p.kv_splits = kv_splits;
    p.split_workspace = kv_splits > 1 ? d_workspace.get() : nullptr;
    p.split_workspace_floats = kv_splits > 1 ? static_cast<int64_t>(d_workspace.size()) : 0;
    p.window_kv = fp8 ? reinterpret_cast<const uint16_t*>(d_window.get()) : d_window_bf16.get();
    p.entries = fp8 ? reinterpret_cast<const uint16_t*>(d_entries.get()) : d_entries_bf16.get();
    d_out.fill(kNaN);
    cuda::attention::sparse_attention(p, nullptr);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    return d_out.download();
  };
  // The same run with q = nullptr and q_bf16 (the ring kernels' producer copy of Q).
  auto run_q_bf16 = [&](bool fp8, Kernel kernel, int kv_splits) {
    p.q = nullptr;
    p.q_bf16 = d_q_bf16.get();
    std::vector<float> out = run(fp8, kernel, kv_splits);
    p.q = d_q.get();
    p.q_bf16 = nullptr;
    return out;
  };
  auto count_differing = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() - count_identical_bits(a, b);  // sizes always match here (one output buffer)
  };
  const std::vector<float> out_fp8 = run(true, Kernel::kSimple);
  const std::vector<float> out_auto = run(true, Kernel::kAuto);
  const std::vector<float> out_bf16 = run(false, Kernel::kSimple);

  std::vector<float> want(out_fp8.size());
  for (int t = 0; t < tokens; ++t)
    for (int h = 0; h < c.heads; ++h) {
      const float* qh = q.data() + (static_cast<size_t>(t) * c.heads + h) * kDim;
      std::vector<double> weights(keys[t].size());
      double max_logit = sinks[h];
      for (size_t k = 0; k < keys[t].size(); ++k) {
        double dot = 0;
        for (int d = 0; d < kDim; ++d) dot += static_cast<double>(qh[d]) * keys[t][k][d];
        weights[k] = dot / std::sqrt(static_cast<double>(kDim));
        max_logit = std::max(max_logit, weights[k]);
      }
      double denominator = std::exp(sinks[h] - max_logit);
      for (double& w : weights) denominator += (w = std::exp(w - max_logit));
      for (int d = 0; d < kDim; ++d) {
        double sum = 0;
        for (size_t k = 0; k < keys[t].size(); ++k) sum += weights[k] * keys[t][k][d];
        want[(static_cast<size_t>(t) * c.heads + h) * kDim + d] = static_cast<float>(sum / denominator);
      }
    }
  auto where = [&](size_t i) {
    const size_t t = i / (static_cast<size_t>(c.heads) * kDim);
    return "token " + std::to_string(t) + " (position " + std::to_string(c.positions[t]) + ", " +
           std::to_string(keys[t].size()) + " keys) head " + std::to_string((i / kDim) % c.heads) + " channel " +
           std::to_string(i % kDim);
  };
  expect_close("FP8 attention output (kSimple)", out_fp8.data(), want.data(), want.size(), 1e-4, 1e-4, where);
  EXPECT_EQ(std::memcmp(out_fp8.data(), out_bf16.data(), out_fp8.size() * sizeof(float)), 0)
      << "FP8 rows decoded into the tile differ from the BF16 path on the decoded rows";
  // kAuto with kv_fp8: the FP32 kernel where the wgmma kernels do not fit (heads % 64 != 0),
  // else kWgmmaPingPong (without a split workspace: one split).
  if (c.heads % 64 != 0) {
    expect_close("FP8 attention output (kAuto)", out_auto.data(), want.data(), want.size(), 1e-4, 1e-4, where);
    EXPECT_EQ(std::memcmp(out_fp8.data(), out_auto.data(), out_fp8.size() * sizeof(float)), 0)
        << "kAuto with kv_fp8 and heads % 64 != 0 must be the FP32 kernel";
    return;
  }
  {
    const std::vector<float> pingpong_one_split = run(true, Kernel::kWgmmaPingPong, 1);
    expect_close("FP8 attention output (kAuto)", out_auto.data(), want.data(), want.size(), 2e-2, 2e-2, where);
    EXPECT_EQ(std::memcmp(pingpong_one_split.data(), out_auto.data(), out_auto.size() * sizeof(float)), 0)
        << "kAuto with kv_fp8 and heads % 64 == 0 must be kWgmmaPingPong";
  }
  // kWgmmaPipelined: the producer decodes FP8 rows into the BF16 tile, so the output is
  // bitwise the BF16-row run's (same kernel, same tile bytes); split-KV off and 3 splits.
  for (int splits : {1, max_splits}) {
    SCOPED_TRACE("kWgmmaPipelined, kv_splits " + std::to_string(splits));
    const std::vector<float> pipe_fp8 = run(true, Kernel::kWgmmaPipelined, splits);
    const std::vector<float> pipe_bf16 = run(false, Kernel::kWgmmaPipelined, splits);
    expect_close("pipelined FP8 attention output", pipe_fp8.data(), want.data(), want.size(), 2e-2, 2e-2, where);
    size_t differing = 0, first = 0;
    for (size_t i = 0; i < pipe_fp8.size(); ++i)
      if (std::memcmp(&pipe_fp8[i], &pipe_bf16[i], sizeof(float)) != 0 && differing++ == 0) first = i;
    EXPECT_EQ(differing, 0u) << "pipelined FP8 vs BF16 rows differ first at " << where(first) << ": "
                             << pipe_fp8[first] << " vs " << pipe_bf16[first];
    SCOPED_TRACE("kWgmmaPingPong");
    const std::vector<float> pingpong_fp8 = run(true, Kernel::kWgmmaPingPong, splits);
    const std::vector<float> pingpong_bf16 = run(false, Kernel::kWgmmaPingPong, splits);
    expect_close("ping-pong FP8 attention output", pingpong_fp8.data(), want.data(), want.size(), 2e-2, 2e-2, where);
    const size_t vs_bf16 = count_differing(pingpong_fp8, pingpong_bf16);
    const size_t vs_pipe = count_differing(pingpong_fp8, pipe_fp8);
    EXPECT_EQ(vs_bf16, 0u) << "ping-pong FP8 vs BF16 rows: " << vs_bf16 << " elements differ";
    EXPECT_EQ(vs_pipe, 0u) << "ping-pong vs pipelined FP8 runs: " << vs_pipe << " elements differ";
    const size_t pipe_q_bf16 = count_differing(run_q_bf16(true, Kernel::kWgmmaPipelined, splits), pipe_fp8);
    EXPECT_EQ(pipe_q_bf16, 0u) << "pipelined FP8 with q_bf16 (q null) vs FP32 q: " << pipe_q_bf16
                               << " elements differ";
    const std::vector<float> pingpong_fp8_q_bf16 = run_q_bf16(true, Kernel::kWgmmaPingPong, splits);
    const size_t pingpong_q_bf16 = count_differing(pingpong_fp8_q_bf16, pingpong_fp8);
    EXPECT_EQ(pingpong_q_bf16, 0u) << "ping-pong FP8 with q_bf16 (q null) vs FP32 q: " << pingpong_q_bf16
                                   << " elements differ";
    // kWgmmaPingPongPersistent (q_bf16 required): bitwise kWgmmaPingPong's q_bf16 runs, FP8
    // and BF16 rows.
    SCOPED_TRACE("kWgmmaPingPongPersistent");
    const size_t persist_fp8 =
        count_differing(run_q_bf16(true, Kernel::kWgmmaPingPongPersistent, splits), pingpong_fp8_q_bf16);
    EXPECT_EQ(persist_fp8, 0u) << "persistent vs ping-pong FP8 (q_bf16): " << persist_fp8 << " elements differ";
    const std::vector<float> pingpong_bf16_q_bf16 = run_q_bf16(false, Kernel::kWgmmaPingPong, splits);
    const size_t persist_bf16 =
        count_differing(run_q_bf16(false, Kernel::kWgmmaPingPongPersistent, splits), pingpong_bf16_q_bf16);
    EXPECT_EQ(persist_bf16, 0u) << "persistent vs ping-pong BF16 rows (q_bf16): " << persist_bf16
                                << " elements differ";
    // kWgmmaLocalP (q_bf16 required; its own tiles and roundings): within the FP8 bounds of
    // the FP64 loop, and bitwise its own BF16-row run (the producer decodes into the same
    // BF16 tile).
    SCOPED_TRACE("kWgmmaLocalP");
    const std::vector<float> local_p_fp8 = run_q_bf16(true, Kernel::kWgmmaLocalP, splits);
    expect_close("local-P FP8 attention output", local_p_fp8.data(), want.data(), want.size(), 2e-2, 2e-2, where);
    const size_t local_p_vs_bf16 = count_differing(local_p_fp8, run_q_bf16(false, Kernel::kWgmmaLocalP, splits));
    EXPECT_EQ(local_p_vs_bf16, 0u) << "local-P FP8 vs BF16 rows (q_bf16): " << local_p_vs_bf16 << " elements differ";
  }
}

TEST(KvFp8, SparseAttentionReadsFp8) {
  for (int heads : {13, 64}) {
    Fp8Case c;
    c.heads = heads;
    c.positions = {0, 1, 6, 7, 8, 30, 101};
    SCOPED_TRACE("sliding only, heads " + std::to_string(heads));
    run_fp8_case(c, 5 + heads);
  }
  {
    Fp8Case c;
    c.mode = CompressedKeys::kAllVisible;
    c.rate = 8;
    c.window = 16;
    c.ring_rows = 19;
    c.max_entries = 20;
    c.heads = 64;
    c.positions = {3, 7, 8, 15, 100, 159, 170};
    SCOPED_TRACE("all visible");
    run_fp8_case(c, 6);
  }
  {
    // Many 48-key tiles (the pipelined ring wraps; split-KV ranges): HCA-like.
    Fp8Case c;
    c.mode = CompressedKeys::kAllVisible;
    c.rate = 4;
    c.window = 16;
    c.ring_rows = 20;
    c.max_entries = 300;
    c.heads = 128;
    c.positions = {15, 200, 1000, 1203};  // 4, 50, 250, 300 (capped) entries
    SCOPED_TRACE("all visible, many tiles");
    run_fp8_case(c, 8);
  }
  {
    // More work items than 2 x SMs (300 tokens x 2 head groups, x 3 with split-KV): the
    // persistent kernel's CTAs loop over several items each, 1..4 tiles per item.
    Fp8Case c;
    c.mode = CompressedKeys::kAllVisible;
    c.rate = 2;
    c.window = 16;
    c.ring_rows = 19;
    c.max_entries = 150;
    c.heads = 128;
    for (int t = 0; t < 300; ++t) c.positions.push_back(t * 37 % 300);  // 1 .. 166 keys
    SCOPED_TRACE("all visible, 300 tokens");
    run_fp8_case(c, 9);
  }
  for (int top_k : {3, 128}) {
    Fp8Case c;
    c.mode = CompressedKeys::kSelected;
    c.max_entries = 30;
    c.top_k = top_k;
    c.heads = top_k == 128 ? 64 : 9;
    c.positions = {2, 3, 9, 40, 119, 130, 500};
    SCOPED_TRACE("selected, top_k " + std::to_string(top_k));
    run_fp8_case(c, 7 + top_k);
  }
}

TEST(KvFp8, Fp8RefusedByWgmma) {
  DeviceArray<float> d_q(64 * kDim), d_out(64 * kDim);
  DeviceArray<uint8_t> d_window(4 * kRowBytes);
  BatchArrays rows;
  rows.add_sequence(0, 0, 1);
  cuda::attention::SparseAttentionParams p;
  p.q = d_q.get();
  p.heads = 64;
  p.head_dim = kDim;
  p.window_kv = reinterpret_cast<const uint16_t*>(d_window.get());
  p.ring_rows = 4;
  p.window = 4;
  p.scale = 0.05f;
  p.batch = rows.upload();
  p.out = d_out.get();
  p.kv_fp8 = true;
  for (Kernel kernel : {Kernel::kWgmma, Kernel::kWgmmaShareP}) {
    p.kernel = kernel;
    EXPECT_THROW(cuda::attention::sparse_attention(p, nullptr), Error) << "kernel " << static_cast<int>(kernel);
  }
  p.kernel = Kernel::kSimple;
  p.head_dim = 256;
  EXPECT_THROW(cuda::attention::sparse_attention(p, nullptr), Error);
}

}  // namespace
}  // namespace dsv4::attention_test
