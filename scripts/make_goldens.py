#!/usr/bin/env python3
"""Golden fixtures from Hugging Face transformers' DeepseekV4ForCausalLM (FP32, eager).

For each tiny random config (fixed seeds, weights built on the CPU so every device gets
the same checkpoint) this writes tests/fixtures/golden/<config>/:

  config.json, generation_config.json, model.safetensors   save_pretrained output
  golden.safetensors   per case i: case{i}.prompt_ids I64[S], case{i}.prompt_logits F32[S,V],
                       case{i}.generated_ids I64[64], case{i}.decode_logits F32[64,V],
                       case{i}.top2_margin F32[64]
  golden.json          what each case exercises, the measured checks, versions, device
  debug.safetensors    (one config only) per-layer intermediates of one short prompt

Every case is checked before it is written; a case whose prompt violates a check is
re-drawn with the next prompt seed (the attempt number is recorded):
  * cached prefill + 64 cached greedy steps == one no-cache forward over prompt+generated
    (max |diff| < 1e-4 * max|logit|);
  * no tie (relative gap >= INDEXER_TOL) at the k-th indexer score, in the prefill,
    in every decode step and in the full forward; no near-tie (gap >= ROUTER_TOL) at the
    router's k-th biased score in every "moe" layer;
  * greedy is not fragile: top-2 margin >= MIN_MARGIN at every one of the 64 choices;
  * greedy is not degenerate: >= 8 distinct tokens in 64 and >= 6 in the last 32;
  * logits have real spread (std >= 0.5).
Batch groups: two prompts of different lengths run as one right-padded batch (no cache,
attention_mask marks the padding); each row's logits on its real tokens must equal the
single-prompt run.

Usage: make_goldens.py [--device cpu|cuda] [--out DIR] [--only NAME] [--compare REF_DIR]
See docs/GOLDENS.md.
"""
import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (before CUDA init)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM, DynamicCache  # noqa: E402
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as mdl  # noqa: E402

SW, CSA, HCA = "sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"
STEPS = 64
MIN_MARGIN = 2e-3      # absolute logit gap between greedy top-1 and top-2, every step
INDEXER_TOL = 1e-4     # (s[k-1] - s[k]) / max|s| over visible entries, when > k are visible
ROUTER_TOL = 1e-5      # absolute gap between the k-th and (k+1)-th biased router score
DIFF_TOL = 1e-4        # relative to max |logit|
MAX_ATTEMPTS = 40
FLASH_YARN = {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
              "beta_fast": 32, "beta_slow": 1}

# name -> dict(kwargs, lengths, batch (pair of lengths or None), seed, debug (prompt length or None), about)
CONFIGS = {
    "small_rates": dict(
        about="small rates (CSA 4, HCA 8, window 8) so short prompts cross many group/window boundaries; "
              "index_topk 3 < #entries (16 indexer heads, ties asserted absent); plain compress RoPE (no YaRN)",
        kwargs=dict(vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, head_dim=64,
                    q_lora_rank=32, o_groups=2, o_lora_rank=16, moe_intermediate_size=16, n_routed_experts=8,
                    num_experts_per_tok=2, index_n_heads=16, index_head_dim=32, index_topk=3, sliding_window=8,
                    layer_types=[SW, CSA, HCA, CSA],
                    mlp_layer_types=["hash_moe", "hash_moe", "moe", "moe"],
                    compress_rates={CSA: 4, HCA: 8}),
        lengths=[1, 3, 4, 5, 8, 9, 17, 33], batch=(7, 18), seed=1, debug=17),
    "flash_rates_yarn": dict(
        about="the real rates (CSA 4, HCA 128, window 128) and V4-Flash YaRN on the compress RoPE; prompts "
              "127/128/129/330 cross the first HCA window and window boundary in prefill or decode; "
              "index_topk 128 >= #entries (all visible entries selected)",
        kwargs=dict(vocab_size=128, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, head_dim=64,
                    q_lora_rank=32, o_groups=2, o_lora_rank=16, moe_intermediate_size=16, n_routed_experts=8,
                    num_experts_per_tok=2, index_n_heads=4, index_head_dim=32, index_topk=128,
                    sliding_window=128, layer_types=[SW, CSA, HCA],
                    mlp_layer_types=["hash_moe", "moe", "moe"], compress_rates={CSA: 4, HCA: 128},
                    rope_scaling=dict(FLASH_YARN)),
        lengths=[127, 128, 129, 330], batch=None, seed=2, debug=None),
    "wide_heads": dict(
        about="head_dim 128 (rope dim 16), 16 experts top-4, swiglu_limit 1.5 (clamp active), CSA 4 / HCA 16 / "
              "window 16, index_topk 6 < #entries (32 indexer heads), a second YaRN parameterisation "
              "(factor 8, original 64: the YaRN ramp covers the rope pairs at these positions)",
        kwargs=dict(vocab_size=256, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, head_dim=128,
                    q_lora_rank=32, o_groups=2, o_lora_rank=16, moe_intermediate_size=8, n_routed_experts=16,
                    num_experts_per_tok=4, index_n_heads=32, index_head_dim=32, index_topk=6, sliding_window=16,
                    swiglu_limit=1.5, layer_types=[CSA, SW, HCA],
                    mlp_layer_types=["hash_moe", "moe", "moe"], compress_rates={CSA: 4, HCA: 16},
                    rope_scaling={"type": "yarn", "factor": 8, "original_max_position_embeddings": 64,
                                  "beta_fast": 32, "beta_slow": 1}, max_position_embeddings=512),
        lengths=[2, 16, 17, 70], batch=None, seed=3, debug=None),
}


class CheckFailed(Exception):
    pass


# --------------------------------------------------------------------------- model setup

def init_weights(model, cfg, seed):
    """Deterministic (CPU) init with unit-variance projections; randomise what transformers zero-inits."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("sinks", "position_bias", ".base", "hc_base")):
                p.normal_(0, 0.5)
            elif name.endswith((".scale", "hc_scale")):
                p.uniform_(0.5, 1.5)
            elif name.endswith((".fn", "hc_fn")):
                p.normal_(0, 0.5 / p.shape[-1] ** 0.5)
            elif p.dim() >= 2:
                p.normal_(0, 1.0 / p.shape[-1] ** 0.5)  # [out, in] and experts [E, out, in]
            elif "norm" in name:
                p.uniform_(0.8, 1.2)
        for layer in model.model.layers:
            g = layer.mlp.gate
            if hasattr(g, "tid2eid"):
                # distinct experts per token (what a real table holds)
                g.tid2eid.copy_(torch.stack([torch.randperm(cfg.n_routed_experts)[: cfg.num_experts_per_tok]
                                             for _ in range(cfg.vocab_size)]))
            else:
                g.e_score_correction_bias.normal_(0, 0.1)


def build_model(spec, device, experts_impl):
    cfg = DeepseekV4Config(**spec["kwargs"])
    torch.manual_seed(spec["seed"])
    model = DeepseekV4ForCausalLM(cfg).eval()
    init_weights(model, cfg, spec["seed"])
    model.set_experts_implementation(experts_impl)
    return cfg, model.to(device)


# --------------------------------------------------------------------------- tie checks

class TieChecker:
    """Forward hooks that measure the gap at every discrete top-k boundary (indexer, router)."""

    def __init__(self, model):
        self.enabled = True
        self.reset()
        self.handles = []
        self._scores = None
        for layer in model.model.layers:
            attn = layer.self_attn
            if attn.compressor is not None and hasattr(attn.compressor, "indexer"):
                idx = attn.compressor.indexer
                self.handles.append(idx.scorer.register_forward_hook(self._on_scores))
                self.handles.append(idx.register_forward_hook(self._on_indexer))
            if isinstance(layer.mlp.gate, mdl.DeepseekV4TopKRouter):
                self.handles.append(layer.mlp.gate.register_forward_hook(self._on_router))

    def reset(self):
        self.min_indexer_gap = float("inf")
        self.indexer_decisions = 0
        self.min_router_gap = float("inf")
        self.router_decisions = 0

    def _on_scores(self, module, args, output):
        self._scores = output.detach()

    def _on_indexer(self, module, args, output):
        if not self.enabled:
            return
        scores, position_ids = self._scores.float(), args[2]
        total = scores.shape[-1]
        k = min(module.index_topk, total)
        if total == 0 or k >= total:
            return
        thr = (position_ids + 1) // module.compress_rate                       # [B,S] visible entry count
        future = torch.arange(total, device=scores.device).view(1, 1, -1) >= thr.unsqueeze(-1)
        masked = scores.masked_fill(future, float("-inf"))
        top = masked.topk(k + 1, dim=-1).values                                 # sorted descending
        scale = scores.masked_fill(future, 0).abs().amax(-1).clamp_min(1e-30)
        rel = (top[..., k - 1] - top[..., k]) / scale
        choice = thr > k                                                         # only then is k-th a real choice
        if choice.any():
            self.indexer_decisions += int(choice.sum())
            self.min_indexer_gap = min(self.min_indexer_gap, float(rel[choice].min()))

    def _on_router(self, module, args, output):
        if not self.enabled:
            return
        flat = args[0].reshape(-1, module.hidden_dim)
        biased = module.score_fn(F.linear(flat, module.weight)) + module.e_score_correction_bias
        top = biased.float().topk(module.top_k + 1, dim=-1).values
        self.router_decisions += flat.shape[0]
        self.min_router_gap = min(self.min_router_gap, float((top[:, -2] - top[:, -1]).min()))

    def verify(self):
        if self.min_indexer_gap < INDEXER_TOL:
            raise CheckFailed(f"indexer near-tie at the k-th score (relative gap {self.min_indexer_gap:.2e})")
        if self.min_router_gap < ROUTER_TOL:
            raise CheckFailed(f"router near-tie at the k-th score (gap {self.min_router_gap:.2e})")


# --------------------------------------------------------------------------- one case

def greedy_case(model, ids, checker):
    """ids: [1, S] on the model's device. Prefill with a DynamicCache, STEPS cached greedy steps, checks."""
    device = ids.device
    checker.reset()
    cache = DynamicCache(config=model.config)
    prompt_logits = model(ids, past_key_values=cache, use_cache=True).logits[0].float()
    rows = [prompt_logits[-1]]  # rows[k] chose generated[k]
    generated, decode_logits = [], []
    for _ in range(STEPS):
        token = int(rows[-1].argmax())
        generated.append(token)
        step = model(torch.tensor([[token]], device=device), past_key_values=cache, use_cache=True).logits[0, -1]
        decode_logits.append(step.float())
        rows.append(step.float())
    decode_logits = torch.stack(decode_logits)
    top2 = torch.stack(rows[:STEPS]).topk(2, dim=-1).values
    margins = (top2[:, 0] - top2[:, 1]).cpu()

    # Cached prefill + decode == one stateless forward over prompt + generated.
    full_ids = torch.cat([ids[0], torch.tensor(generated, device=device)])[None]
    full = model(full_ids, use_cache=False).logits[0].float()
    s = ids.shape[1]
    scale = float(full.abs().max())
    prompt_diff = float((full[:s] - prompt_logits).abs().max())
    decode_diff = float((full[s:s + STEPS] - decode_logits).abs().max())
    if max(prompt_diff, decode_diff) >= DIFF_TOL * max(scale, 1.0):
        raise CheckFailed(f"cached vs full forward differ: prompt {prompt_diff:.2e}, decode {decode_diff:.2e}")
    checker.verify()
    if float(margins.min()) < MIN_MARGIN:
        raise CheckFailed(f"greedy near-tie: top-2 margin {float(margins.min()):.2e}")
    distinct, tail = len(set(generated)), len(set(generated[STEPS // 2:]))
    if distinct < 8 or tail < 6:
        raise CheckFailed(f"degenerate greedy sequence ({distinct} distinct, {tail} in the last {STEPS // 2})")
    std = float(torch.cat([prompt_logits, decode_logits]).std(dim=-1).mean())
    if std < 0.5:
        raise CheckFailed(f"logits have too little spread (std {std:.3f})")
    return dict(prompt_logits=prompt_logits.cpu(), generated_ids=torch.tensor(generated, dtype=torch.int64),
                decode_logits=decode_logits.cpu(), top2_margin=margins.to(torch.float32),
                stats=dict(max_abs_logit=scale, prompt_diff_vs_full=prompt_diff, decode_diff_vs_full=decode_diff,
                           logit_std=std, min_top2_margin=float(margins.min()), distinct_generated=distinct,
                           distinct_in_last_32=tail,
                           min_indexer_rel_gap=None if checker.indexer_decisions == 0 else checker.min_indexer_gap,
                           indexer_topk_decisions=checker.indexer_decisions,
                           min_router_gap=None if checker.router_decisions == 0 else checker.min_router_gap,
                           router_decisions=checker.router_decisions))


def batch_rows(model, prompts, checker):
    """Right-padded batch forward (no cache); returns per-row logits on the real tokens."""
    longest = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), longest, dtype=torch.int64)
    mask = torch.zeros(len(prompts), longest, dtype=torch.int64)
    for r, p in enumerate(prompts):
        ids[r, :len(p)] = p
        mask[r, :len(p)] = 1
    device = next(model.parameters()).device
    checker.enabled = False  # padded tokens may tie; real rows are checked in their single runs
    try:
        logits = model(ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float().cpu()
        logits_nomask = model(ids.to(device), use_cache=False).logits.float().cpu()
    finally:
        checker.enabled = True
    return [logits[r, :len(p)] for r, p in enumerate(prompts)], [logits_nomask[r, :len(p)]
                                                                  for r, p in enumerate(prompts)]


def describe_case(cfg, s):
    """What a prompt of length s (+ STEPS decode) exercises."""
    notes = []
    w = cfg.sliding_window
    notes.append(f"window {w}: " + ("prefill exceeds window" if s > w else
                                    "window fills during decode" if s + STEPS > w else "within window"))
    for kind, short in ((CSA, "CSA"), (HCA, "HCA")):
        if kind not in cfg.layer_types:
            continue
        m = cfg.compress_rates[kind]
        pre, total = s // m, (s + STEPS) // m
        notes.append(f"{short} rate {m}: {pre} entries after prefill ({s % m} buffered), {total} after decode")
        if kind == CSA:
            k = cfg.index_topk
            notes.append(f"index_topk {k} " + ("< visible entries (real top-k choice)" if total > k else
                                                ">= entries (all visible selected)"))
    return "; ".join(notes)


# --------------------------------------------------------------------------- debug intermediates

def debug_dump(model, cfg, ids):
    """Per-layer intermediates for prefill (names without prefix) and the first decode step (prefix decode0.)."""
    out, handles, prefix = {}, [], [""]

    def put(name, t):
        t = t.detach()
        out[prefix[0] + name] = (t.to(torch.int64) if not t.is_floating_point() else t.float()).cpu().contiguous().clone()

    def add(module, fn):
        handles.append(module.register_forward_hook(fn))

    m = model.model
    add(m.embed_tokens, lambda mod, a, o: put("embed", o[0]))
    for L, layer in enumerate(m.layers):
        def hc(tag, L=L):
            def f(mod, a, o):
                post, comb, collapsed = o
                put(f"layer{L}.{tag}.post", post[0])
                put(f"layer{L}.{tag}.comb", comb[0])
                put(f"layer{L}.{tag}.collapsed", collapsed[0])
            return f
        add(layer.attn_hc, hc("attn_hc"))
        add(layer.ffn_hc, hc("ffn_hc"))
        handles.append(layer.ffn_hc.register_forward_pre_hook(lambda mod, a, L=L: put(f"layer{L}.mid", a[0][0])))
        add(layer.input_layernorm, lambda mod, a, o, L=L: put(f"layer{L}.attn_norm", o[0]))
        add(layer.post_attention_layernorm, lambda mod, a, o, L=L: put(f"layer{L}.ffn_norm", o[0]))
        attn = layer.self_attn
        add(attn.q_a_norm, lambda mod, a, o, L=L: put(f"layer{L}.attn.q_residual", o[0]))
        add(attn.kv_norm, lambda mod, a, o, L=L: put(f"layer{L}.attn.kv_normed", o[0]))

        def attn_out(mod, a, o, L=L):
            put(f"layer{L}.attn.out", o[0][0])
            put(f"layer{L}.attn.probs", o[1][0])  # [NH, S, kv_len] without the sink column
        add(attn, attn_out)
        if attn.compressor is not None:
            def comp(mod, a, o, L=L):
                ckv, bias = o
                put(f"layer{L}.attn.compressed_kv", ckv[0, 0])
            add(attn.compressor, comp)
            if hasattr(attn.compressor, "indexer"):
                idx = attn.compressor.indexer
                add(idx.scorer, lambda mod, a, o, L=L: put(f"layer{L}.attn.indexer.scores", o[0]))
                add(idx, lambda mod, a, o, L=L: put(f"layer{L}.attn.indexer.topk", o[0]))

        def gate(mod, a, o, L=L):
            logits, weights, indices = o
            put(f"layer{L}.moe.router_logits", logits)
            put(f"layer{L}.moe.weights", weights)
            put(f"layer{L}.moe.indices", indices)
        add(layer.mlp.gate, gate)
        add(layer.mlp.shared_experts, lambda mod, a, o, L=L: put(f"layer{L}.moe.shared_out", o[0]))
        add(layer.mlp, lambda mod, a, o, L=L: put(f"layer{L}.moe.out", o[0]))
        add(layer, lambda mod, a, o, L=L: put(f"layer{L}.out", o[0]))
    add(m.hc_head, lambda mod, a, o: put("hc_head.out", o[0]))
    add(m.norm, lambda mod, a, o: put("norm.out", o[0]))
    try:
        cache = DynamicCache(config=cfg)
        logits = model(ids, past_key_values=cache, use_cache=True).logits[0]
        put("logits", logits)
        put("prompt_ids", ids[0])
        for L, cl in enumerate(cache.layers):
            put(f"layer{L}.cache.window_kv", cl.keys[0, 0])
            for name in getattr(cl, "compressed_kv", {}):
                put(f"layer{L}.cache.{name}.entries", cl.compressed_kv[name][0])
                put(f"layer{L}.cache.{name}.buffer_kv", cl.buffer_kv[name][0])
                put(f"layer{L}.cache.{name}.buffer_gate", cl.buffer_gate[name][0])
                if getattr(cl, "overlap_kv", {}).get(name) is not None:
                    put(f"layer{L}.cache.{name}.overlap_kv", cl.overlap_kv[name][0])
                    put(f"layer{L}.cache.{name}.overlap_gate", cl.overlap_gate[name][0])
        prefix[0] = "decode0."
        token = logits[-1].argmax().view(1, 1)
        put("fed_id", token[0])
        step = model(token, past_key_values=cache, use_cache=True).logits[0]
        put("logits", step)
    finally:
        for h in handles:
            h.remove()
    return out


# --------------------------------------------------------------------------- driver

def make_config(name, spec, args, device):
    cfg, model = build_model(spec, device, args.experts_impl)
    out_dir = os.path.join(args.out, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir)
    checker = TieChecker(model)
    groups = [[n] for n in spec["lengths"]] + ([list(spec["batch"])] if spec["batch"] else [])
    tensors, cases, summary = {}, [], []
    index = 0
    for gi, lengths in enumerate(groups):
        for attempt in range(MAX_ATTEMPTS):
            gen = torch.Generator().manual_seed(spec["seed"] * 1_000_003 + gi * 1009 + attempt)
            prompts = [torch.randint(0, cfg.vocab_size, (n,), generator=gen) for n in lengths]
            try:
                results = [greedy_case(model, p[None].to(device), checker) for p in prompts]
                batch_diff = batch_diff_nomask = None
                if len(prompts) > 1:
                    rows, rows_nomask = batch_rows(model, prompts, checker)
                    batch_diff = max(float((r - res["prompt_logits"]).abs().max()) for r, res in zip(rows, results))
                    batch_diff_nomask = max(float((r - res["prompt_logits"]).abs().max())
                                            for r, res in zip(rows_nomask, results))
                    scale = max(res["stats"]["max_abs_logit"] for res in results)
                    if max(batch_diff, batch_diff_nomask) >= DIFF_TOL * max(scale, 1.0):
                        raise CheckFailed(f"batch rows differ from single runs by {batch_diff:.2e}")
                break
            except CheckFailed as e:
                print(f"  {name} group {gi} lengths {lengths} attempt {attempt}: {e}; redrawing the prompt",
                      flush=True)
        else:
            raise SystemExit(f"{name}: no prompt of lengths {lengths} passed the checks in {MAX_ATTEMPTS} attempts")
        for row, (p, res) in enumerate(zip(prompts, results)):
            key = f"case{index}"
            tensors[f"{key}.prompt_ids"] = p.to(torch.int64).contiguous()
            for field in ("prompt_logits", "generated_ids", "decode_logits", "top2_margin"):
                tensors[f"{key}.{field}"] = res[field].contiguous()
            entry = dict(case=key, prompt_length=len(p), prompt_attempt=attempt,
                         batch_group=gi if len(prompts) > 1 else None, batch_row=row if len(prompts) > 1 else None,
                         exercises=describe_case(cfg, len(p)), **res["stats"])
            if len(prompts) > 1:
                entry.update(batch_rows_vs_single_max_diff=batch_diff,
                             batch_rows_vs_single_max_diff_without_mask=batch_diff_nomask,
                             batch_lengths=list(lengths))
            cases.append(entry)
            summary.append((name, key, len(p), "B" if len(prompts) > 1 else "", attempt, res["stats"]))
            index += 1
    save_file(tensors, os.path.join(out_dir, "golden.safetensors"))

    # Cross-check the experts backend on the longest case (eager vs grouped_mm).
    longest = max(range(index), key=lambda i: tensors[f"case{i}.prompt_ids"].numel())
    other = "grouped_mm" if args.experts_impl == "eager" else "eager"
    model.set_experts_implementation(other)
    with torch.no_grad():
        alt = model(tensors[f"case{longest}.prompt_ids"][None].to(device), use_cache=False).logits[0].float().cpu()
    model.set_experts_implementation(args.experts_impl)
    backend_diff = float((alt - tensors[f"case{longest}.prompt_logits"]).abs().max())

    debug_info = None
    if spec["debug"]:
        case = next(i for i in range(index) if tensors[f"case{i}.prompt_ids"].numel() == spec["debug"])
        with torch.no_grad():
            dbg = debug_dump(model, cfg, tensors[f"case{case}.prompt_ids"][None].to(device))
        d = float((dbg["logits"] - tensors[f"case{case}.prompt_logits"]).abs().max())
        d0 = float((dbg["decode0.logits"] - tensors[f"case{case}.decode_logits"][0]).abs().max())
        assert d == 0 and d0 == 0, (d, d0)
        save_file(dbg, os.path.join(out_dir, "debug.safetensors"))
        debug_info = dict(case=f"case{case}", prompt_length=spec["debug"], tensors=len(dbg))

    meta = dict(config=name, about=spec["about"], seed=spec["seed"], steps=STEPS, device=str(device),
                torch=torch.__version__, transformers=transformers.__version__, dtype="float32",
                tf32=False, attn_implementation=model.config._attn_implementation,
                experts_implementation=args.experts_impl,
                experts_backend_cross_check=dict(other=other, max_abs_diff=backend_diff, case=f"case{longest}"),
                thresholds=dict(min_top2_margin=MIN_MARGIN, indexer_rel_gap=INDEXER_TOL, router_gap=ROUTER_TOL,
                                diff_rel=DIFF_TOL),
                layer_types=cfg.layer_types, mlp_layer_types=cfg.mlp_layer_types,
                compress_rates=cfg.compress_rates, sliding_window=cfg.sliding_window, index_topk=cfg.index_topk,
                rope_parameters=cfg.rope_parameters, debug=debug_info, cases=cases,
                top2_margin_semantics="top2_margin[k] = top1 - top2 of the logits row whose argmax is "
                                      "generated_ids[k] (k=0: last prompt row, k>0: decode_logits[k-1])")
    with open(os.path.join(out_dir, "golden.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return summary, backend_diff


def compare(out_root, ref_root):
    """Compare freshly made fixtures against a reference set (e.g. CUDA run vs committed CPU fixtures)."""
    worst = 0.0
    for name in sorted(os.listdir(out_root)):
        a_path, b_path = os.path.join(out_root, name), os.path.join(ref_root, name)
        if not os.path.exists(os.path.join(b_path, "golden.safetensors")):
            continue
        with open(os.path.join(a_path, "model.safetensors"), "rb") as fa, \
                open(os.path.join(b_path, "model.safetensors"), "rb") as fb:
            same_model = fa.read() == fb.read()
        a, b = load_file(os.path.join(a_path, "golden.safetensors")), load_file(os.path.join(b_path, "golden.safetensors"))
        print(f"compare {name}: model.safetensors bit-identical: {same_model}; same tensor names: {a.keys() == b.keys()}")
        for key in sorted(a):
            if key not in b:
                continue
            if a[key].dtype == torch.int64:
                eq = torch.equal(a[key], b[key])
                if not eq:
                    print(f"  {key}: DIFFERENT ids")
                    worst = float("inf")
            elif a[key].shape == b[key].shape:
                d = float((a[key] - b[key]).abs().max())
                worst = max(worst, d) if "margin" not in key else worst
                if key.endswith("logits"):
                    print(f"  {key}: max|diff| {d:.3e}")
    print(f"compare: worst logits max|diff| {worst:.3e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                                      "fixtures", "golden"))
    parser.add_argument("--only", default=None, help="make only this config")
    parser.add_argument("--experts-impl", default="eager", choices=["eager", "grouped_mm", "batched_mm"])
    parser.add_argument("--compare", default=None, help="after making, compare against fixtures in this folder")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: fast for these tiny tensors, "
                                                               "and a fixed reduction order)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}")
    os.makedirs(args.out, exist_ok=True)

    rows, backend = [], {}
    with torch.no_grad():
        for name, spec in CONFIGS.items():
            if args.only and name != args.only:
                continue
            summary, backend[name] = make_config(name, spec, args, device)
            rows += summary

    print(f"\n{'config':<17} {'case':<7} {'len':>4} {'b':>1} {'try':>3} {'distinct':>8} {'logit std':>9} "
          f"{'min margin':>10} {'idx gap':>8} {'rt gap':>8} {'prompt diff':>11} {'decode diff':>11}")
    for name, key, n, b, attempt, st in rows:
        ig = "-" if st["min_indexer_rel_gap"] is None else f"{st['min_indexer_rel_gap']:.1e}"
        rg = "-" if st["min_router_gap"] is None else f"{st['min_router_gap']:.1e}"
        print(f"{name:<17} {key:<7} {n:>4} {b:>1} {attempt:>3} {st['distinct_generated']:>8} {st['logit_std']:>9.3f} "
              f"{st['min_top2_margin']:>10.4f} {ig:>8} {rg:>8} {st['prompt_diff_vs_full']:>11.2e} "
              f"{st['decode_diff_vs_full']:>11.2e}")
    for name, d in backend.items():
        print(f"{name}: experts backend cross-check max|diff| {d:.2e}")
    total = 0
    for root, _, files in os.walk(args.out):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"total fixture size: {total / 2**20:.2f} MiB in {args.out}")
    if args.compare:
        compare(args.out, args.compare)


if __name__ == "__main__":
    sys.exit(main())
