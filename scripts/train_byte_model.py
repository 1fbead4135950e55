#!/usr/bin/env python3
"""Trains the bundled default model: a tiny DeepseekV4ForCausalLM on the KJV Bible.

Byte-level vocabulary (no merges): id 0 = BOS, 1 = EOS, 2 + b = byte b; the model
directory gets `byte_tokenizer.json` describing this so `dsv4 generate` can encode
and decode text. All three attention types (sliding, CSA, HCA), hash and routed
MoE, mHC. The last 2% of verses are held out; held-out perplexity (per byte) is
printed and written to the model's README.

Text: `bible -f 'Gen1:1-Rev22:21' | sed 's/^[^ ]* //' > kjv.txt` (Debian package
bible-kjv). Run on the GPU machine: python3 scripts/train_byte_model.py --text kjv.txt --out DIR
"""
import argparse
import json
import math
import os
import time

import torch
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

S, C, H = "sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"
BOS, EOS, OFFSET = 0, 1, 2


def model_config():
    return DeepseekV4Config(
        vocab_size=258, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, head_dim=64,
        q_lora_rank=64, o_groups=2, o_lora_rank=32, moe_intermediate_size=128, n_routed_experts=8,
        num_experts_per_tok=2, index_n_heads=8, index_head_dim=32, index_topk=16, sliding_window=64,
        layer_types=[S, C, H, C], mlp_layer_types=["hash_moe", "moe", "moe", "moe"],
        compress_rates={C: 4, H: 16}, bos_token_id=BOS, eos_token_id=EOS, max_position_embeddings=4096)


def encode(text):
    return [OFFSET + b for b in text.encode("utf-8")]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--text", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    verses = [line.strip() for line in open(args.text, encoding="utf-8") if line.strip()]
    split = int(len(verses) * 0.98)
    train_ids = torch.tensor(encode("".join(v + "\n" for v in verses[:split])), dtype=torch.long)
    held_ids = torch.tensor(encode("".join(v + "\n" for v in verses[split:])), dtype=torch.long)
    device = torch.device(args.device)
    cfg = model_config()
    model = DeepseekV4ForCausalLM(cfg).to(device)
    with torch.no_grad():  # give the zero-initialised routing/sink/bias paths something to learn from
        for layer in model.model.layers:
            g = layer.mlp.gate
            if hasattr(g, "tid2eid"):
                g.tid2eid.copy_(torch.stack([torch.randperm(cfg.n_routed_experts)[: cfg.num_experts_per_tok]
                                             for _ in range(cfg.vocab_size)]).to(device))
    params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {params/1e6:.2f} M, train bytes {len(train_ids)}, held-out bytes {len(held_ids)}", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01, betas=(0.9, 0.95))
    deadline = time.time() + args.minutes * 60
    step = 0
    model.train()
    while time.time() < deadline:
        starts = torch.randint(0, len(train_ids) - args.seq - 1, (args.batch,))
        batch = torch.stack([train_ids[s:s + args.seq + 1] for s in starts]).to(device)
        frac = min(1.0, (time.time() - (deadline - args.minutes * 60)) / (args.minutes * 60))
        for group in optimizer.param_groups:
            group["lr"] = 2e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))) * min(1.0, (step + 1) / 100)
        logits = model(batch[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size).float(), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
        step += 1
    model.eval()
    with torch.no_grad():
        total, count = 0.0, 0
        for s in range(0, len(held_ids) - args.seq - 1, args.seq):
            chunk = held_ids[s:s + args.seq + 1][None].to(device)
            logits = model(chunk[:, :-1], use_cache=False).logits
            total += torch.nn.functional.cross_entropy(logits[0].float(), chunk[0, 1:], reduction="sum").item()
            count += args.seq
        ppl = math.exp(total / count)
    print(f"steps {step}; held-out perplexity per byte (fp32): {ppl:.3f}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(args.out)
    with open(os.path.join(args.out, "byte_tokenizer.json"), "w") as f:
        json.dump({"type": "bytes", "bos_token_id": BOS, "eos_token_id": EOS, "byte_offset": OFFSET}, f, indent=1)
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(f"""# dsv4 default model

A tiny DeepseekV4ForCausalLM ({params/1e6:.2f} M parameters, BF16) trained by
`scripts/train_byte_model.py` for {args.minutes} minutes ({step} steps of {args.batch}x{args.seq} bytes)
on the King James Bible (Debian package bible-kjv), on {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}.
Layers: sliding, CSA (rate 4, indexer top-16), HCA (rate 16), CSA; hash MoE then routed MoE; mHC with 4 streams.

Tokenizer: bytes (`byte_tokenizer.json`): id 0 = BOS, 1 = EOS, 2 + b = byte b. No chat format:
prompts are plain text continued verse-style; each verse ends with a newline.

Held-out perplexity per byte (last 2% of verses, fp32 weights before the BF16 cast): {ppl:.3f}
""")


if __name__ == "__main__":
    main()
