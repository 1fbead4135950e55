#include "golden_fixture.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "dsv4/error.h"
#include "dsv4/safetensors.h"

namespace dsv4::testing {

namespace fs = std::filesystem;

std::vector<fs::path> golden_model_dirs() {
  std::vector<fs::path> dirs;
  const fs::path root = fs::path(DSV4_FIXTURES_DIR) / "golden";
  if (!fs::is_directory(root)) return dirs;
  for (const auto& entry : fs::directory_iterator(root))
    if (entry.is_directory() && fs::exists(entry.path() / "golden.safetensors")) dirs.push_back(entry.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

namespace {

std::vector<int32_t> read_ids(const TensorView& view) {
  DSV4_CHECK(view.dtype == DType::kI64, "{}: expected I64 ids", view.name);
  std::vector<int32_t> ids(static_cast<size_t>(view.numel()));
  for (size_t i = 0; i < ids.size(); ++i) {
    int64_t value;
    std::memcpy(&value, view.data + i * 8, 8);
    ids[i] = static_cast<int32_t>(value);
  }
  return ids;
}

std::vector<float> read_floats(const TensorView& view) {
  DSV4_CHECK(view.dtype == DType::kF32, "{}: expected F32", view.name);
  std::vector<float> values(static_cast<size_t>(view.numel()));
  std::memcpy(values.data(), view.data, values.size() * 4);
  return values;
}

}  // namespace

GoldenModel load_golden(const fs::path& directory, int64_t vocab) {
  GoldenModel model;
  model.directory = directory;
  model.vocab = vocab;
  SafetensorsFile file(directory / "golden.safetensors");
  for (int i = 0;; ++i) {
    const std::string prefix = fmt::format("case{}.", i);
    auto find = [&](const std::string& name) -> const TensorView* {
      auto it = file.tensors().find(prefix + name);
      return it == file.tensors().end() ? nullptr : &it->second;
    };
    if (!find("prompt_ids")) break;
    GoldenCase c;
    c.name = fmt::format("case{}", i);
    c.prompt_ids = read_ids(*find("prompt_ids"));
    c.prompt_logits = read_floats(*find("prompt_logits"));
    c.generated_ids = read_ids(*find("generated_ids"));
    c.decode_logits = read_floats(*find("decode_logits"));
    if (const TensorView* margin = find("top2_margin")) c.top2_margin = read_floats(*margin);
    DSV4_CHECK(static_cast<int64_t>(c.prompt_logits.size()) == static_cast<int64_t>(c.prompt_ids.size()) * vocab,
               "{} {}: prompt_logits size {} != prompt length {} x vocab {}", directory.string(), c.name,
               c.prompt_logits.size(), c.prompt_ids.size(), vocab);
    model.cases.push_back(std::move(c));
  }
  return model;
}

Comparison compare(const float* ours, const float* reference, int64_t count) {
  Comparison result;
  double dot = 0, ours_sq = 0, ref_sq = 0;
  for (int64_t i = 0; i < count; ++i) {
    dot += static_cast<double>(ours[i]) * reference[i];
    ours_sq += static_cast<double>(ours[i]) * ours[i];
    ref_sq += static_cast<double>(reference[i]) * reference[i];
    const double diff = std::fabs(static_cast<double>(ours[i]) - reference[i]);
    result.max_abs_ref = std::max(result.max_abs_ref, std::fabs(static_cast<double>(reference[i])));
    if (diff > result.max_abs_diff || result.worst_index < 0 || std::isnan(diff)) {
      result.max_abs_diff = std::isnan(diff) ? INFINITY : diff;
      result.worst_index = i;
      result.worst_ours = ours[i];
      result.worst_ref = reference[i];
    }
  }
  result.cosine = (ours_sq == 0 && ref_sq == 0) ? 1.0 : dot / std::sqrt(ours_sq * ref_sq);
  return result;
}

std::string Comparison::describe() const {
  return fmt::format("cosine {:.8f}, max|diff| {:.3e} at flat index {} (ours {:.6f}, reference {:.6f}), max|ref| {:.3e}",
                     cosine, max_abs_diff, worst_index, worst_ours, worst_ref, max_abs_ref);
}

}  // namespace dsv4::testing
