// Grouping of stored tensors into weight matrices + companions, and their roles.
#include "formats/checkpoint_survey.h"

#include <cctype>
#include <cstring>
#include <map>
#include <set>

#include "dsv4/error.h"
#include "io/key_names.h"

namespace dsv4::formats {

namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool starts_with(const std::string& text, const std::string& prefix) { return text.compare(0, prefix.size(), prefix) == 0; }

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Binds `weight` (+ companions) as a QuantMatrix, mirroring src/io/weights.cpp but
// taking the logical [out, in] from the stored shapes instead of a config.
QuantMatrix bind(const TensorView& weight, const TensorView* scale, const TensorView* nv_scale,
                 const TensorView* nv_global) {
  QuantMatrix m;
  m.name = weight.name;
  m.data = weight.data;
  auto check = [&](bool ok, const TensorView& view, const std::string& expected) {
    DSV4_CHECK(ok, "tensor {} in {}: {} {} but {} (companion of {})", view.name, view.file, dtype_name(view.dtype),
               view.shape_string(), expected, weight.name);
  };
  DSV4_CHECK(weight.shape.size() == 2, "tensor {} in {}: a quantized weight must be 2-D, got {}", weight.name,
             weight.file, weight.shape_string());
  const int64_t rows = weight.shape[0];
  if (nv_scale) {
    check(weight.dtype == DType::kU8 || weight.dtype == DType::kI8, weight, "NVFP4 data must be U8 packed E2M1");
    const int64_t cols = 2 * weight.shape[1];
    check(nv_scale->dtype == DType::kF8_E4M3, *nv_scale, "NVFP4 block scales must be F8_E4M3");
    check(cols % 16 == 0 && nv_scale->shape == std::vector<int64_t>{rows, cols / 16}, *nv_scale,
          "NVFP4 needs one scale per 16 inputs: [" + std::to_string(rows) + ", " + std::to_string(cols / 16) + "]");
    DSV4_CHECK(nv_global && nv_global->dtype == DType::kF32 && nv_global->numel() == 1,
               "NVFP4 weight {} in {}: its weight_scale_2 (the F32 per-tensor scale) is missing or not one F32 value",
               weight.name, weight.file);
    std::memcpy(&m.tensor_scale, nv_global->data, 4);
    m.format = WeightFormat::kNVFP4;
    m.rows = rows;
    m.cols = cols;
    m.scales = nv_scale->data;
    m.scale_dtype = DType::kF8_E4M3;
    m.scale_rows = rows;
    m.scale_cols = cols / 16;
  } else if (scale && weight.dtype == DType::kF8_E4M3) {
    const int64_t cols = weight.shape[1];
    check(scale->dtype == DType::kF8_E8M0 || scale->dtype == DType::kF32, *scale, "FP8 block scales must be F8_E8M0 or F32");
    const std::vector<int64_t> grid = {(rows + 127) / 128, (cols + 127) / 128};
    check(scale->shape == grid, *scale,
          "FP8 needs one scale per 128x128 block: [" + std::to_string(grid[0]) + ", " + std::to_string(grid[1]) + "]");
    m.format = WeightFormat::kFP8Block;
    m.rows = rows;
    m.cols = cols;
    m.scales = scale->data;
    m.scale_dtype = scale->dtype;
    m.scale_rows = grid[0];
    m.scale_cols = grid[1];
  } else if (scale && (weight.dtype == DType::kI8 || weight.dtype == DType::kU8 || weight.dtype == DType::kF4)) {
    const int64_t cols = weight.dtype == DType::kF4 ? weight.shape[1] : 2 * weight.shape[1];
    check(weight.dtype != DType::kF4 || cols % 2 == 0, weight, "packed F4 needs an even number of columns");
    check(scale->dtype == DType::kF8_E8M0 || scale->dtype == DType::kU8, *scale, "MXFP4 scales must be F8_E8M0");
    check(cols % 32 == 0 && scale->shape == std::vector<int64_t>{rows, cols / 32}, *scale,
          "MXFP4 needs one scale per 32 inputs: [" + std::to_string(rows) + ", " + std::to_string(cols / 32) + "]");
    m.format = WeightFormat::kMXFP4;
    m.rows = rows;
    m.cols = cols;
    m.scales = scale->data;
    m.scale_dtype = DType::kF8_E8M0;
    m.scale_rows = rows;
    m.scale_cols = cols / 32;
  } else {
    fail("tensor {} in {}: dtype {} with scale companion {} (expected F8_E4M3 for FP8 blocks or I8/U8/F4 for MXFP4)",
         weight.name, weight.file, dtype_name(weight.dtype), scale ? scale->name : "?");
  }
  return m;
}

}  // namespace

const char* tensor_role_name(TensorRole role) {
  switch (role) {
    case TensorRole::kRoutedExpert: return "routed_expert";
    case TensorRole::kDenseProjection: return "dense";
    case TensorRole::kKeep: return "keep";
  }
  return "?";
}

TensorRole tensor_role(const std::string& official) {
  if (!starts_with(official, "layers.") || !ends_with(official, ".weight")) return TensorRole::kKeep;
  const size_t dot = official.find('.', 7);
  if (dot == std::string::npos) return TensorRole::kKeep;
  const std::string rest = official.substr(dot + 1);
  if (starts_with(rest, "ffn.experts.")) return TensorRole::kRoutedExpert;
  static const std::set<std::string> kDense = {
      "attn.wq_a.weight", "attn.wq_b.weight", "attn.wkv.weight", "attn.wo_a.weight", "attn.wo_b.weight",
      "attn.indexer.wq_b.weight", "ffn.shared_experts.w1.weight", "ffn.shared_experts.w2.weight",
      "ffn.shared_experts.w3.weight"};
  return kDense.count(rest) ? TensorRole::kDenseProjection : TensorRole::kKeep;
}

int64_t layer_of_name(const std::string& name) {
  std::string_view rest = name;
  if (rest.substr(0, 6) == "model.") rest.remove_prefix(6);
  if (rest.substr(0, 4) == "mtp.") return -2;
  if (rest.substr(0, 7) != "layers.") return -1;
  rest.remove_prefix(7);
  int64_t layer = 0;
  size_t digits = 0;
  while (digits < rest.size() && std::isdigit(static_cast<unsigned char>(rest[digits]))) {
    layer = layer * 10 + (rest[digits] - '0');
    ++digits;
  }
  return digits == 0 ? -1 : layer;
}

std::vector<SurveyEntry> survey_checkpoint(const Checkpoint& checkpoint) {
  const std::vector<std::string> names = checkpoint.names();
  std::set<std::string> companions;
  std::map<std::string, SurveyEntry> entries;
  // Weights with companions first, so that every companion is claimed before the rest.
  for (const std::string& name : names) {
    if (!ends_with(name, ".weight")) continue;
    const std::string base = name.substr(0, name.size() - 7);
    const TensorView* scale = checkpoint.find(base + ".scale");
    if (!scale) scale = checkpoint.find(base + ".weight_scale_inv");
    const TensorView* nv_scale = checkpoint.find(base + ".weight_scale");
    const TensorView* nv_global = checkpoint.find(base + ".weight_scale_2");
    const TensorView* input_scale = checkpoint.find(base + ".input_scale");
    const TensorView& weight = checkpoint.get(name);
    SurveyEntry e;
    e.name = name;
    e.parts.push_back(&weight);
    if (scale || nv_scale) {
      e.matrix = bind(weight, nv_scale ? nullptr : scale, nv_scale, nv_global);
      e.is_matrix = true;
      for (const TensorView* c : {nv_scale ? nullptr : scale, nv_scale, nv_global, input_scale})
        if (c) {
          e.parts.push_back(c);
          companions.insert(c->name);
        }
    } else if (weight.shape.size() == 2 &&
               (weight.dtype == DType::kF32 || weight.dtype == DType::kBF16 || weight.dtype == DType::kF16)) {
      e.is_matrix = true;
      e.matrix.name = name;
      e.matrix.format = weight.dtype == DType::kF32 ? WeightFormat::kF32
                        : weight.dtype == DType::kBF16 ? WeightFormat::kBF16
                                                       : WeightFormat::kF16;
      e.matrix.rows = weight.shape[0];
      e.matrix.cols = weight.shape[1];
      e.matrix.data = weight.data;
    }
    entries.emplace(name, std::move(e));
  }
  for (const std::string& name : names) {
    if (companions.count(name) || entries.count(name)) continue;
    SurveyEntry e;
    e.name = name;
    e.parts.push_back(&checkpoint.get(name));
    entries.emplace(name, std::move(e));
  }
  std::vector<SurveyEntry> out;
  out.reserve(entries.size());
  for (auto& [name, e] : entries) {
    e.official = official_name_for(name);
    e.layer = layer_of_name(name);
    for (const TensorView* p : e.parts) e.bytes += p->nbytes;
    const TensorView& main = *e.parts.front();
    if (e.is_matrix) {
      e.format = weight_format_name(e.matrix.format);
      e.role = e.official.empty() ? TensorRole::kKeep : tensor_role(e.official);
    } else {
      e.format = lower(dtype_name(main.dtype));
    }
    // transformers' fused routed experts: [E, 2I, H] / [E, H, I] dense tensors.
    if (e.official.empty() && e.layer >= 0 && main.shape.size() == 3 &&
        (ends_with(name, ".mlp.experts.gate_up_proj") || ends_with(name, ".mlp.experts.down_proj"))) {
      e.role = TensorRole::kRoutedExpert;
      e.format += " (fused experts)";
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace dsv4::formats
