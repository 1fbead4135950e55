// RoPE parameters and inverse frequencies, following transformers 5.17:
//   * convert_rope_params_to_dict: `rope_scaling` (when non-empty) wins over `rope_parameters`.
//   * flat dict (official config.json): main = default RoPE at rope_theta; compress =
//     the dict's keys with rope_theta := compress_rope_theta, partial_rotary_factor :=
//     the model's, rope_type := rope_type | type | "default", and for YaRN
//     attention_factor defaulting to 1.0 (V4 applies no YaRN mscale).
//   * nested {"main": {...}, "compress": {...}} (what save_pretrained writes): each
//     sub-dict as given; missing rope_theta defaults to the top-level rope_theta (for
//     "compress" too), missing attention_factor is YaRN's mscale.
//   * YaRN: original_max_position_embeddings defaults to max_position_embeddings,
//     factor null -> max_position_embeddings / original, beta_fast/slow `or 32/1`,
//     truncation always on (5.17 reads `truncate` from the outer dict only).
#include "io/rope_config.h"

#include <algorithm>
#include <cmath>

#include "dsv4/error.h"
#include "io/torch_powf.h"

namespace dsv4 {

using nlohmann::json;

namespace {

// get_mscale of _compute_yarn_parameters.
double yarn_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

// One RoPE dict. `flat` = the official flat form for "compress", whose theta and
// partial_rotary_factor are forced by __post_init__.
RopeConfig parse_rope_dict(const JsonFields& f, const std::string& label, double theta, double partial_rotary_factor,
                           bool flat, const ModelConfig& config) {
  const std::string& source = f.source();
  RopeConfig rope;
  f.read("type", rope.rope_type);
  f.read("rope_type", rope.rope_type);
  DSV4_CHECK(rope.rope_type == "default" || rope.rope_type == "yarn",
             "{}: RoPE type '{}' of the '{}' table is not supported (expected default or yarn)", source, rope.rope_type,
             label);
  rope.theta = theta;
  double factor_of_dict = partial_rotary_factor;
  if (!flat) {
    f.read("rope_theta", rope.theta);
    f.read("partial_rotary_factor", factor_of_dict);
  }
  DSV4_CHECK(rope.theta > 0.0, "{}: rope_theta of the '{}' RoPE must be positive, got {}", source, label, rope.theta);
  DSV4_CHECK(factor_of_dict == partial_rotary_factor,
             "{}: field '{}' = {} disagrees with the model's partial_rotary_factor {} (the RoPE table would not fit "
             "the {}-channel rope slice)",
             source, f.field_name("partial_rotary_factor"), factor_of_dict, partial_rotary_factor, config.qk_rope_head_dim);
  rope.rope_dim = config.qk_rope_head_dim;
  if (rope.rope_type != "yarn") return rope;

  rope.original_max_position_embeddings = config.max_position_embeddings;
  f.read("original_max_position_embeddings", rope.original_max_position_embeddings);
  DSV4_CHECK(rope.original_max_position_embeddings > 0, "{}: field '{}' must be positive, got {}", source,
             f.field_name("original_max_position_embeddings"), rope.original_max_position_embeddings);
  DSV4_CHECK(f.contains("factor"),
             "{}: the '{}' RoPE is yarn but has no field '{}'", source, label, f.field_name("factor"));
  if (f.has("factor")) {
    f.read("factor", rope.factor);
  } else {  // explicit null: the ratio of the context lengths
    rope.factor = static_cast<double>(config.max_position_embeddings) /
                  static_cast<double>(rope.original_max_position_embeddings);
  }
  DSV4_CHECK(rope.factor > 0.0, "{}: field '{}' must be positive, got {}", source, f.field_name("factor"), rope.factor);
  f.read("beta_fast", rope.beta_fast);
  f.read("beta_slow", rope.beta_slow);
  if (rope.beta_fast == 0.0) rope.beta_fast = 32.0;  // python `or 32`
  if (rope.beta_slow == 0.0) rope.beta_slow = 1.0;
  DSV4_CHECK(rope.beta_fast > 0.0 && rope.beta_slow > 0.0, "{}: yarn beta_fast {} and beta_slow {} of the '{}' RoPE must be positive",
             source, rope.beta_fast, rope.beta_slow, label);
  bool derived = false;
  if (f.has("attention_factor")) {
    f.read("attention_factor", rope.attention_factor);
  } else if (flat) {
    rope.attention_factor = 1.0;
  } else {
    derived = true;
    double mscale = 0.0, mscale_all_dim = 0.0;
    f.read("mscale", mscale);
    f.read("mscale_all_dim", mscale_all_dim);
    rope.attention_factor = (mscale != 0.0 && mscale_all_dim != 0.0)
                                ? yarn_mscale(rope.factor, mscale) / yarn_mscale(rope.factor, mscale_all_dim)
                                : yarn_mscale(rope.factor, 1.0);
  }
  DSV4_CHECK(rope.attention_factor == 1.0,
             "{}: the '{}' RoPE has attention_factor {}{}; transformers multiplies cos and sin by it, the engine "
             "supports only 1.0 (set \"attention_factor\": 1.0 as V4's official config does)",
             source, label, rope.attention_factor, derived ? " (YaRN's mscale, since the field is not set)" : "");
  return rope;
}

}  // namespace

void parse_rope_configs(const JsonFields& fields, double partial_rotary_factor, ModelConfig& config) {
  const std::string& source = fields.source();
  double rope_theta = 10000.0, compress_rope_theta = 160000.0;
  fields.read("rope_theta", rope_theta);
  fields.read("compress_rope_theta", compress_rope_theta);

  std::string key;
  if (fields.has("rope_scaling")) {
    if (!fields.at("rope_scaling").is_object()) fields.fail_type("rope_scaling", "an object");
    if (!fields.at("rope_scaling").empty()) key = "rope_scaling";
  }
  if (key.empty() && fields.has("rope_parameters")) key = "rope_parameters";
  if (key.empty()) {
    config.rope_main = parse_rope_dict(JsonFields(json::object(), source, "rope_parameters.main."), "main", rope_theta,
                                       partial_rotary_factor, true, config);
    config.rope_compress = parse_rope_dict(JsonFields(json::object(), source, "rope_parameters.compress."), "compress",
                                           compress_rope_theta, partial_rotary_factor, true, config);
    return;
  }
  const JsonFields dict = fields.object(key);
  const bool has_main = dict.has("main"), has_compress = dict.has("compress");
  if (has_main || has_compress) {
    DSV4_CHECK(has_main && has_compress && dict.at("main").is_object() && dict.at("compress").is_object(),
               "{}: field '{}' must hold both 'main' and 'compress' objects (or be one flat RoPE dict)", source, key);
    config.rope_main = parse_rope_dict(dict.object("main"), "main", rope_theta, partial_rotary_factor, false, config);
    config.rope_compress =
        parse_rope_dict(dict.object("compress"), "compress", rope_theta, partial_rotary_factor, false, config);
  } else {
    config.rope_main = parse_rope_dict(JsonFields(json::object(), source, key + ".main."), "main", rope_theta,
                                       partial_rotary_factor, true, config);
    config.rope_compress =
        parse_rope_dict(dict, "compress", compress_rope_theta, partial_rotary_factor, true, config);
  }
}

std::vector<float> rope_inv_freq(const RopeConfig& rope) { return rope_inv_freq(rope, detect_torch_cpu_kernel()); }

std::vector<float> rope_inv_freq(const RopeConfig& rope, TorchCpuKernel kernel) {
  const int64_t dim = rope.rope_dim, pairs = dim / 2;
  DSV4_CHECK(dim > 0 && dim % 2 == 0, "rope_inv_freq: rope_dim {} must be even and positive", dim);
  // base ** (arange(0, dim, 2).float() / dim), with torch's pow kernel split.
  std::vector<float> exponents(static_cast<size_t>(pairs)), pos_freqs(static_cast<size_t>(pairs));
  for (int64_t i = 0; i < pairs; ++i) exponents[i] = static_cast<float>(2 * i) / static_cast<float>(dim);
  torch_pow_scalar_base(static_cast<float>(rope.theta), exponents.data(), pairs, kernel, pos_freqs.data());
  std::vector<float> inv_freq(static_cast<size_t>(pairs));
  if (rope.rope_type != "yarn") {
    for (int64_t i = 0; i < pairs; ++i) inv_freq[i] = 1.0f / pos_freqs[i];
    return inv_freq;
  }
  // _compute_yarn_parameters (truncate): a linear ramp over [low, high] blends the
  // interpolated (1/(factor*f)) into the extrapolated (1/f) frequencies.
  auto correction_dim = [&](double rotations) {
    return (static_cast<double>(dim) *
            std::log(static_cast<double>(rope.original_max_position_embeddings) / (rotations * 2 * M_PI))) /
           (2 * std::log(rope.theta));
  };
  double low = std::max(std::floor(correction_dim(rope.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(rope.beta_slow)), static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // "Prevent singularity"
  const float low_f = static_cast<float>(low), span = static_cast<float>(high - low);
  const float factor = static_cast<float>(rope.factor);
  for (int64_t i = 0; i < pairs; ++i) {
    const float ramp = std::clamp((static_cast<float>(i) - low_f) / span, 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    const float extrapolation = 1.0f / pos_freqs[i];
    const float interpolation = 1.0f / (factor * pos_freqs[i]);
    // Two products and a sum, each rounded (no FMA: see CMakeLists.txt).
    inv_freq[i] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  return inv_freq;
}

}  // namespace dsv4
