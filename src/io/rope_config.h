// config.json's RoPE fields -> ModelConfig::rope_main / rope_compress, resolved the
// way transformers 5.17 resolves them (convert_rope_params_to_dict,
// standardize_rope_params, DeepseekV4Config.__post_init__, _compute_yarn_parameters).
#pragma once
#include "dsv4/config.h"
#include "io/json_fields.h"

namespace dsv4 {

// Needs config.head_dim, qk_rope_head_dim and max_position_embeddings already set.
// `partial_rotary_factor` is the resolved top-level value.
void parse_rope_configs(const JsonFields& fields, double partial_rotary_factor, ModelConfig& config);

}  // namespace dsv4
