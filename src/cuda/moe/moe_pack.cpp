// Fragment-layout packer: kernel scale codes per source matrix, then every fragment
// block's 32 lanes x 4 words and its scale bytes (layout: fragment.h).
#include "cuda/moe/moe_pack.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "dsv4/error.h"

namespace dsv4::cuda::moe {

namespace {

int block_of(ExpertFormat format) { return format == ExpertFormat::kNVFP4 ? 16 : 32; }

// NVFP4 E4M3 block scale -> UE5M3 kernel code (value 2^(E-10) * (1 + m/8)); 0 = zero block.
uint8_t nvfp4_kernel_code(uint8_t e4m3, const std::string& name) {
  DSV4_CHECK((e4m3 & 0x80) == 0 && e4m3 != 0x7f, "{}: NVFP4 block scale code {:#04x} is negative or NaN", name, e4m3);
  if (e4m3 == 0) return 0;
  const int exponent = e4m3 >> 3, mantissa = e4m3 & 7;
  if (exponent > 0) return static_cast<uint8_t>(((exponent + 3) << 3) | mantissa);
  // Subnormal m * 2^-9, renormalised.
  switch (mantissa) {
    case 1: return static_cast<uint8_t>(1 << 3);
    case 2: return static_cast<uint8_t>(2 << 3);
    case 3: return static_cast<uint8_t>((2 << 3) | 4);
    default: return static_cast<uint8_t>((3 << 3) | ((mantissa - 4) * 2));
  }
}

// Kernel codes [rows, cols / block] of one source matrix and its epilogue factor.
struct SourceMatrix {
  const QuantMatrix* matrix = nullptr;
  std::vector<uint8_t> codes;
  float factor = 1.0f;
};

SourceMatrix prepare(const QuantMatrix& m, ExpertFormat format, PackStats* stats) {
  const int block = block_of(format);
  DSV4_CHECK(m.cols % kFragCols == 0, "{}: {} columns, a multiple of {} expected", m.name, m.cols, kFragCols);
  DSV4_CHECK(m.scale_cols >= m.cols / block, "{}: scale grid has {} columns, {} expected", m.name, m.scale_cols,
             m.cols / block);
  SourceMatrix src;
  src.matrix = &m;
  const int64_t blocks = m.cols / block;
  src.codes.resize(static_cast<size_t>(m.rows * blocks));
  if (format == ExpertFormat::kNVFP4) {
    for (int64_t r = 0; r < m.rows; ++r)
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t code = nvfp4_kernel_code(m.scales[r * m.scale_cols + b], m.name);
        src.codes[r * blocks + b] = code;
        if (code == 0 && stats) ++stats->zero_blocks;
      }
    src.factor = m.tensor_scale * kNvfp4EpilogueShift;
  } else {
    int e_max = 0;
    for (int64_t r = 0; r < m.rows; ++r)
      for (int64_t b = 0; b < blocks; ++b) {
        const int e = m.scales[r * m.scale_cols + b];
        DSV4_CHECK(e != 0xff, "{}: MXFP4 scale NaN (0xff) at row {} block {}", m.name, r, b);
        e_max = std::max(e_max, e);
      }
    for (int64_t r = 0; r < m.rows; ++r)
      for (int64_t b = 0; b < blocks; ++b) {
        const int e = m.scales[r * m.scale_cols + b];
        // Below 2^-125 of the matrix max the decoded BF16 would be subnormal: flush.
        int code = e + 254 - e_max;
        if (e < e_max - 125) {
          code = 0;
          if (stats) ++stats->flushed_blocks;
        }
        src.codes[r * blocks + b] = static_cast<uint8_t>(code);
      }
    src.factor = std::ldexp(1.0f, e_max - 128);
  }
  return src;
}

// Packs rows given by row_source(n) -> (source index, row) into the fragment layout.
template <typename RowSource>
void pack_rows(ExpertFormat format, int64_t rows, int64_t cols, const std::array<const SourceMatrix*, 2>& sources,
               RowSource row_source, uint8_t* data, uint8_t* scales) {
  const int block = block_of(format);
  const int64_t blocks_per_row = cols / block;
  const int64_t kb_count = cols / kFragCols;
  const int scale_bytes = frag_scale_bytes(format);
  const int64_t nb_count = rows / kFragRows;
#pragma omp parallel for schedule(static)
  for (int64_t nb = 0; nb < nb_count; ++nb) {
    std::array<const uint8_t*, kFragRows> row_data;
    std::array<const uint8_t*, kFragRows> row_codes;
    for (int rl = 0; rl < kFragRows; ++rl) {
      const auto [which, row] = row_source(nb * kFragRows + rl);
      const SourceMatrix& src = *sources[which];
      row_data[rl] = src.matrix->data + row * (src.matrix->cols / 2);
      row_codes[rl] = src.codes.data() + row * blocks_per_row;
    }
    for (int64_t kb = 0; kb < kb_count; ++kb) {
      const int64_t fb = nb * kb_count + kb;
      uint8_t* out = data + fb * kFragBytes;
      for (int lane = 0; lane < 32; ++lane)
        for (int s = 0; s < 4; ++s) {
          uint32_t word = 0;
          for (int r = 0; r < 4; ++r)
            for (int h = 0; h < 2; ++h) {
              const int rl = frag_row(lane, r);
              const int64_t col = kb * kFragCols + frag_col(lane, s, r, h);
              uint32_t nibble = (row_data[rl][col / 2] >> (4 * (col & 1))) & 0xf;
              if (row_codes[rl][col / block] == 0) nibble = 0;  // zero / flushed block
              word |= nibble << (4 * frag_nibble(r, h));
            }
          std::memcpy(out + lane * 16 + s * 4, &word, 4);
        }
      uint8_t* out_scales = scales + fb * scale_bytes;
      for (int g = 0; g < 8; ++g)
        for (int s = 0; s < 4; ++s)
          for (int hr = 0; hr < 2; ++hr) {
            const int rl = g + 8 * hr;
            const int64_t col = kb * kFragCols + 16 * s;
            out_scales[frag_scale_offset(format, g, s, hr)] = row_codes[rl][col / block];
          }
    }
  }
}

void check_4bit(const QuantMatrix& m, ExpertFormat format) {
  DSV4_CHECK(expert_format_of(m.format) == format, "{}: format {} where {} was expected", m.name,
             weight_format_name(m.format), format == ExpertFormat::kNVFP4 ? "nvfp4" : "mxfp4");
  DSV4_CHECK(m.data != nullptr && m.scales != nullptr, "{}: no data or scales", m.name);
}

}  // namespace

int64_t packed_data_bytes(int64_t rows, int64_t cols) { return rows * cols / 2; }

int64_t packed_scale_bytes(ExpertFormat format, int64_t rows, int64_t cols) {
  return (rows / kFragRows) * (cols / kFragCols) * frag_scale_bytes(format);
}

ExpertFormat expert_format_of(WeightFormat format) {
  if (format == WeightFormat::kMXFP4) return ExpertFormat::kMXFP4;
  if (format == WeightFormat::kNVFP4) return ExpertFormat::kNVFP4;
  fail("MoE grouped GEMM: expert weights must be mxfp4 or nvfp4, got {}", weight_format_name(format));
}

void pack_w13(const QuantMatrix& w1, const QuantMatrix& w3, uint8_t* data, uint8_t* scales, float* gate_factor,
              float* up_factor, PackStats* stats) {
  const ExpertFormat format = expert_format_of(w1.format);
  check_4bit(w1, format);
  check_4bit(w3, format);
  DSV4_CHECK(w1.rows == w3.rows && w1.cols == w3.cols, "{} [{}, {}] and {} [{}, {}] differ", w1.name, w1.rows, w1.cols,
             w3.name, w3.rows, w3.cols);
  DSV4_CHECK(w1.rows % 8 == 0, "{}: {} rows, a multiple of 8 expected", w1.name, w1.rows);
  const SourceMatrix gate = prepare(w1, format, stats), up = prepare(w3, format, stats);
  pack_rows(format, 2 * w1.rows, w1.cols, {&gate, &up},
            [](int64_t n) { return std::pair<int, int64_t>{(n % 16) < 8 ? 0 : 1, (n / 16) * 8 + n % 8}; }, data,
            scales);
  *gate_factor = gate.factor;
  *up_factor = up.factor;
}

void pack_w2(const QuantMatrix& w2, uint8_t* data, uint8_t* scales, float* down_factor, PackStats* stats) {
  const ExpertFormat format = expert_format_of(w2.format);
  check_4bit(w2, format);
  DSV4_CHECK(w2.rows % kFragRows == 0, "{}: {} rows, a multiple of 16 expected", w2.name, w2.rows);
  const SourceMatrix down = prepare(w2, format, stats);
  pack_rows(format, w2.rows, w2.cols, {&down, &down}, [](int64_t n) { return std::pair<int, int64_t>{0, n}; }, data,
            scales);
  *down_factor = down.factor;
}

}  // namespace dsv4::cuda::moe
