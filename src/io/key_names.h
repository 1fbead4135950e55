// Tensor names: DeepSeek's official keys (unprefixed: `layers.3.attn.wq_a.weight`),
// the hybrid keys transformers' save_pretrained writes (`model.` prefix, e.g.
// `model.layers.3.attn.norm.weight` for kv_norm) and transformers' state-dict keys
// (`model.layers.3.self_attn.q_a_proj.weight`). The loader asks by official name.
#pragma once
#include <string>
#include <vector>

namespace dsv4 {

// Every name under which the tensor with this official name may be stored, most
// likely first. Includes the official name itself.
std::vector<std::string> candidate_names(const std::string& official_name);

// The official name for any accepted name ("" when the name is not a V4 tensor).
std::string official_name_for(const std::string& any_name);

}  // namespace dsv4
