"""Writes rope_expected.inc: RoPE inv_freq bits from transformers 5.17 for the configs
below, under each torch CPU capability (the pow kernel decides the last bit).

    for cap in avx512 avx2 default; do
      ATEN_CPU_CAPABILITY=$cap python tests/io/gen_rope_expected.py $cap; done > tests/io/rope_expected.inc
"""
import json, struct, sys
import torch, transformers
from transformers import DeepseekV4Config
from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4RotaryEmbedding

transformers.logging.set_verbosity_error()
BASE = {"model_type": "deepseek_v4", "vocab_size": 64, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "index_head_dim": 512}
YARN = {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536, "beta_fast": 32, "beta_slow": 1}
CASES = {
    "flash_flat_yarn": {"head_dim": 512, "qk_rope_head_dim": 64, "rope_scaling": YARN},
    "tiny_flat_yarn": {"head_dim": 64, "rope_scaling": YARN},
    "nested_yarn_rd128": {"head_dim": 512, "partial_rotary_factor": 0.25, "rope_parameters": {
        "main": {"rope_type": "default", "rope_theta": 50000.0, "partial_rotary_factor": 0.25},
        "compress": {**YARN, "rope_type": "yarn", "rope_theta": 160000.0, "partial_rotary_factor": 0.25,
                     "attention_factor": 1.0}}},
    "rd48_tail": {"head_dim": 384, "rope_theta": 12345.0, "compress_rope_theta": 1000000.0,
                  "rope_scaling": {"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": 4096}},
    "rd80_tail": {"head_dim": 640, "rope_theta": 50000, "compress_rope_theta": 160000.0},
    "rd256_yarn": {"head_dim": 512, "partial_rotary_factor": 0.5, "rope_scaling": YARN},
    "factor_null": {"head_dim": 512, "max_position_embeddings": 262144,
                    "rope_scaling": {**YARN, "factor": None, "beta_fast": 0, "beta_slow": None}},
    "low_equals_high": {"head_dim": 64, "compress_rope_theta": 10000.0,
                        "rope_scaling": {**YARN, "original_max_position_embeddings": 6400000000}},
}

def bits(t):
    return " ".join("%08x" % struct.unpack("<I", struct.pack("<f", v))[0] for v in t.tolist())

cap = sys.argv[1]
assert torch.backends.cpu.get_cpu_capability().lower() == cap, torch.backends.cpu.get_cpu_capability()
for name, extra in CASES.items():
    config = {**BASE, **extra}
    rotary = DeepseekV4RotaryEmbedding(DeepseekV4Config(**json.loads(json.dumps(config))))
    assert rotary.main_attention_scaling == 1.0 and rotary.compress_attention_scaling == 1.0, name
    print('{"%s", "%s", R"(%s)",\n "%s",\n "%s"},' % (name, cap, json.dumps(config), bits(rotary.main_inv_freq),
                                                    bits(rotary.compress_inv_freq)))
