// The model's weights bound to a checkpoint, one struct per module. Matrices stay in
// their stored format (QuantMatrix views into the mapped files); small vectors
// (norms, biases, mHC parameters, sinks) are converted to owned FP32 at load.
// Names in comments are the official DeepSeek-V4 keys (transformers' saved keys are
// the same under a `model.` prefix, see io/key_names).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "dsv4/config.h"
#include "dsv4/safetensors.h"
#include "dsv4/weight_format.h"

namespace dsv4 {

// Owned FP32 tensor with its shape (row-major).
struct FloatTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
  int64_t numel() const { return static_cast<int64_t>(values.size()); }
};

struct HyperConnectionWeights {  // hc_{attn,ffn}_{fn,base,scale}; hc_head_{fn,base,scale}
  FloatTensor fn;     // [mix, hc_mult*hidden], mix = (2+n)*n for layers, n for the head
  FloatTensor base;   // [mix]
  FloatTensor scale;  // [3] for layers, [1] for the head
};

struct CompressorWeights {  // attn.compressor.* or attn.indexer.compressor.*
  QuantMatrix wkv;          // [coff*dim, hidden], coff = 2 for CSA (overlap), 1 for HCA
  QuantMatrix wgate;        // [coff*dim, hidden]
  FloatTensor ape;          // [rate, coff*dim] position bias
  FloatTensor norm;         // [dim]
};

struct IndexerWeights {     // attn.indexer.*
  QuantMatrix wq_b;         // [index_n_heads*index_head_dim, q_lora_rank]
  QuantMatrix weights_proj; // [index_n_heads, hidden]
  CompressorWeights compressor;  // dim = index_head_dim
};

struct AttentionWeights {   // attn.*
  QuantMatrix wq_a;         // [q_lora_rank, hidden]
  FloatTensor q_norm;       // [q_lora_rank]
  QuantMatrix wq_b;         // [heads*head_dim, q_lora_rank]
  QuantMatrix wkv;          // [head_dim, hidden]
  FloatTensor kv_norm;      // [head_dim]
  QuantMatrix wo_a;         // [o_groups*o_lora_rank, heads*head_dim/o_groups]
  QuantMatrix wo_b;         // [hidden, o_groups*o_lora_rank]
  FloatTensor attn_sink;    // [heads]
  bool has_compressor = false;   // CSA and HCA layers
  CompressorWeights compressor;  // dim = head_dim
  bool has_indexer = false;      // CSA layers
  IndexerWeights indexer;
};

struct ExpertWeights {      // ffn.experts.E.* and ffn.shared_experts.*
  QuantMatrix w1;           // gate [intermediate, hidden]
  QuantMatrix w2;           // down [hidden, intermediate]
  QuantMatrix w3;           // up   [intermediate, hidden]
};

struct MoEWeights {         // ffn.*
  QuantMatrix gate;                   // [n_routed_experts, hidden]
  FloatTensor gate_bias;              // [n_routed_experts] (moe layers), selection only
  std::vector<int32_t> tid2eid;       // [vocab, top_k] (hash_moe layers)
  std::vector<ExpertWeights> experts; // n_routed_experts
  ExpertWeights shared;
};

struct LayerWeights {
  AttentionType attention_type;
  MlpType mlp_type;
  FloatTensor attn_norm;    // [hidden]
  FloatTensor ffn_norm;     // [hidden]
  HyperConnectionWeights hc_attn;
  HyperConnectionWeights hc_ffn;
  AttentionWeights attn;
  MoEWeights ffn;
};

// Owns the mapped checkpoint and any converted buffers the views point into.
struct ModelWeights {
  ModelConfig config;
  std::shared_ptr<const Checkpoint> checkpoint;
  std::vector<std::shared_ptr<std::vector<uint8_t>>> owned_buffers;  // e.g. fused tensors split at load
  QuantMatrix embed;        // [vocab, hidden]
  QuantMatrix head;         // [vocab, hidden]
  FloatTensor norm;         // [hidden]
  HyperConnectionWeights hc_head;
  std::vector<LayerWeights> layers;
};

// Binds every tensor the config requires, accepting official names, transformers'
// saved names (`model.` prefix, hybrid names) and transformers' state-dict names.
// Validates presence, dtype and shape of every tensor before returning; throws
// dsv4::Error naming the tensor, the file and the expected vs actual dtype/shape.
ModelWeights load_model_weights(std::shared_ptr<const Checkpoint> checkpoint, const ModelConfig& config);

// Convenience: config.json + safetensors from one directory.
ModelWeights load_model(const std::filesystem::path& directory);

}  // namespace dsv4
