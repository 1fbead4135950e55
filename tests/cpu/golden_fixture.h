// Reads the golden fixtures made by scripts/make_goldens.py (transformers 5.17, FP32):
// tests/fixtures/golden/<config>/{config.json, model.safetensors, golden.safetensors, golden.json}.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace dsv4::testing {

struct GoldenCase {
  std::string name;                     // "case3"
  std::vector<int32_t> prompt_ids;      // [S]
  std::vector<float> prompt_logits;     // [S, V]
  std::vector<int32_t> generated_ids;   // [steps]
  std::vector<float> decode_logits;     // [steps, V]: after feeding generated_ids[k]
  std::vector<float> top2_margin;       // [steps]
};

struct GoldenModel {
  std::filesystem::path directory;
  int64_t vocab = 0;
  std::vector<GoldenCase> cases;
};

std::vector<std::filesystem::path> golden_model_dirs();  // sorted; empty if none
GoldenModel load_golden(const std::filesystem::path& directory, int64_t vocab);

// Tolerance report of one logits row set against the reference.
struct Comparison {
  double cosine = 1;
  double max_abs_diff = 0;
  double max_abs_ref = 0;
  int64_t worst_index = -1;
  double worst_ours = 0, worst_ref = 0;
  std::string describe() const;
};
Comparison compare(const float* ours, const float* reference, int64_t count);

}  // namespace dsv4::testing
