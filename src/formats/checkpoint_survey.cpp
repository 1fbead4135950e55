// Grouping of stored tensors into weight matrices + companions, and their roles.
#include "formats/checkpoint_survey.h"

#include <cctype>
#include <map>
#include <set>

#include "dsv4/error.h"
#include "io/key_names.h"
#include "io/stored_matrix.h"

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
    const MatrixCompanions c = find_matrix_companions(checkpoint, base);
    const TensorView& weight = checkpoint.get(name);
    SurveyEntry e;
    e.name = name;
    e.parts.push_back(&weight);
    const bool dense_matrix = weight.shape.size() == 2 && dense_weight_format(weight.dtype).has_value();
    if (c.quantized() || dense_matrix) {
      // Shapes from the stored tensors (no config here).
      e.matrix = bind_stored_matrix(weight, c, nullptr);
      e.is_matrix = true;
      // NVFP4 claims its block and tensor scales (and input_scale); a .scale beside
      // them is not its companion.
      for (const TensorView* part : {c.block_scales ? nullptr : c.scale, c.block_scales, c.tensor_scale, c.input_scale})
        if (part && c.quantized()) {
          e.parts.push_back(part);
          companions.insert(part->name);
        }
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
