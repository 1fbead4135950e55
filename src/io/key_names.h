// Tensor names: DeepSeek's official keys (unprefixed: `layers.3.attn.wq_a.weight`),
// the hybrid keys transformers' save_pretrained writes (`model.` prefix, e.g.
// `model.layers.3.attn.norm.weight` for kv_norm, `model.embed_tokens.weight`,
// `model.hc_head.hc_fn`) and transformers' state-dict keys
// (`model.layers.3.self_attn.q_a_proj.weight`). The loader asks by official name.
//
// Not covered by the table: transformers' fused routed experts
// `model.layers.N.mlp.experts.{gate_up_proj [E, 2I, H], down_proj [E, H, I]}`, each of
// which holds several official tensors (w1 = gate_up_proj[e, :I], w3 = [e, I:],
// w2 = down_proj[e]); weights.cpp binds views into them.
#pragma once
#include <string>
#include <vector>

namespace dsv4 {

// Every name under which the tensor with this official name may be stored, most
// likely first. Includes the official name itself.
std::vector<std::string> candidate_names(const std::string& official_name);

// The official name for any accepted name ("" when the name is not a V4 tensor, e.g.
// `mtp.*` or a fused expert tensor). Quantization companions map too:
// `X.weight_scale_inv` (transformers' FP8 rename) -> official `X.scale`;
// `.scale`, `.weight_scale`, `.weight_scale_2`, `.input_scale` keep their suffix.
std::string official_name_for(const std::string& any_name);

}  // namespace dsv4
