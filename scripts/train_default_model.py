#!/usr/bin/env python3
"""Trains the bundled default model: a tiny DeepseekV4ForCausalLM on the King James Bible.

  * tokenizer: byte-level BPE (HF `tokenizers`), vocab 3072, trained on the training verses;
    special tokens <|begin_of_text|> = 0 (BOS) and <|end_of_text|> = 1 (EOS), matching the
    DeepseekV4Config defaults bos_token_id 0 / eos_token_id 1.
  * text: one verse per line, "Book C:V text\\n" (e.g. "John 3:16 For God so loved ...").
    A training sample is BOS followed by consecutive verses from a random verse start;
    EOS follows the last verse of each book.
  * model (~4.1M parameters): 6 layers: sliding, sliding, CSA, HCA, CSA, HCA (the V4-Flash
    pattern and rates: CSA 4 with a lightning indexer, HCA 128, window 128, YaRN on the compress
    RoPE); hash MoE in layers 0-1 and routed MoE (8 experts, top-2, aux-loss-free bias
    balancing) after; mHC with 4 streams and 20 Sinkhorn iterations.
  * the last 2% of verses are held out; held-out perplexity (per token, and bits per byte) is
    printed, written to README.md and training_log.json. The best checkpoint by held-out loss
    is kept. The held-out verses are written to heldout.txt (EOS spelled out where the token
    stream has it), for `dsv4 perplexity` and scripts/eval_default_model.sh.
  * saved with save_pretrained in BF16, except the tensors the official release keeps in FP32
    (mHC fn/base/scale, attention sinks, compressor position biases (ape), router bias); plus
    tokenizer.json, tokenizer_config.json, heldout.txt, README.md and training_log.json.

Text input (--text): either the output of the Debian bible-kjv reader,
    bible -l100000 'Gen1:1-Rev22:21' > kjv.txt
or a file with one "Book C:V text" verse per line; `--export-text kjv.txt` writes the
latter from the locally installed reader (package bible-kjv + bible-kjv-text) and exits.

Usage:
    python3 scripts/train_default_model.py --text kjv.txt --out models/default --device cuda --minutes 5
    python3 scripts/train_default_model.py --text kjv.txt --out /tmp/m --device cpu --minutes 0.2   # smoke test
"""
import argparse
import copy
import json
import math
import os
import re
import subprocess
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # --export-text needs only bible(1); training needs torch
    torch = F = None


def no_grad(fn):
    """torch.no_grad() as a decorator that also lets this file load without torch."""
    def wrapper(*args, **kwargs):
        with torch.no_grad():
            return fn(*args, **kwargs)
    return wrapper

SW, CSA, HCA = "sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"
BOS_TOKEN, EOS_TOKEN = "<|begin_of_text|>", "<|end_of_text|>"
BOS, EOS = 0, 1
HELD_OUT = 0.02
# Tensors the official checkpoints store in FP32 (everything else is saved in BF16).
FP32_KEEP = ("attn_hc.", "ffn_hc.", "hc_head.", "sinks", "position_bias", "e_score_correction_bias")
YARN = {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536, "beta_fast": 32, "beta_slow": 1}


def model_config(vocab_size):
    from transformers import DeepseekV4Config
    return DeepseekV4Config(
        vocab_size=vocab_size, hidden_size=160, num_hidden_layers=6,
        num_attention_heads=4, head_dim=128, q_lora_rank=96, o_groups=2, o_lora_rank=64,   # rope dim 16
        moe_intermediate_size=64, n_routed_experts=8, num_experts_per_tok=2, routed_scaling_factor=1.5,
        index_n_heads=8, index_head_dim=64, index_topk=64, sliding_window=128,
        layer_types=[SW, SW, CSA, HCA, CSA, HCA],
        mlp_layer_types=["hash_moe", "hash_moe", "moe", "moe", "moe", "moe"],
        compress_rates={CSA: 4, HCA: 128}, rope_scaling=dict(YARN), max_position_embeddings=16 * 65536,
        bos_token_id=BOS, eos_token_id=EOS, tie_word_embeddings=False)


# --------------------------------------------------------------------------- text

HEADING = re.compile(r"^(\S.*\S) (\d+)$")          # "Genesis 1", "1 Kings 3", "Song of Solomon 2"
VERSE = re.compile(r"^\s+(\d+) (.*)$")              # "  1 In the beginning ..."
CANONICAL = re.compile(r"^(.+) (\d+):(\d+) (.*)$")  # "Genesis 1:1 In the beginning ..."


def read_verses(path):
    """Returns [(book, chapter, verse, text)] from bible(1) output or canonical lines."""
    verses, book, chapter = [], None, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            m = CANONICAL.match(line)
            if m and not line.startswith(" "):
                verses.append((m.group(1), int(m.group(2)), int(m.group(3)), m.group(4).strip()))
                continue
            m = VERSE.match(line)
            if m and book is not None:
                verses.append((book, chapter, int(m.group(1)), m.group(2).strip()))
                continue
            m = HEADING.match(line)
            if m and not line.startswith(" "):
                book, chapter = m.group(1), int(m.group(2))
                continue
            if verses:  # wrapped continuation line (bible without -l)
                b, c, v, t = verses[-1]
                verses[-1] = (b, c, v, t + " " + line.strip())
    verses = [(b, c, v, " ".join(t.split())) for b, c, v, t in verses]  # the data has some double spaces
    if len(verses) < 1000:
        raise SystemExit(f"{path}: only {len(verses)} verses parsed; expected the KJV (31102 verses)")
    return verses


def export_text(path):
    out = subprocess.run(["bible", "-l100000", "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True).stdout
    tmp = path + ".raw"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(out)
    verses = read_verses(tmp)
    os.remove(tmp)
    with open(path, "w", encoding="utf-8") as f:
        for b, c, v, t in verses:
            f.write(f"{b} {c}:{v} {t}\n")
    print(f"wrote {len(verses)} verses to {path}")


def verse_line(v):
    return f"{v[0]} {v[1]}:{v[2]} {v[3]}\n"


# --------------------------------------------------------------------------- tokenizer

def train_tokenizer(lines, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[BOS_TOKEN, EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    assert tok.token_to_id(BOS_TOKEN) == BOS and tok.token_to_id(EOS_TOKEN) == EOS
    # encode(text) -> BOS + ids (add_special_tokens=True, the default)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B",
                                                       special_tokens=[(BOS_TOKEN, BOS)])
    return tok


def tokenizer_config(max_len):
    return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN,
            "add_bos_token": True, "add_eos_token": False, "model_max_length": max_len, "clean_up_tokenization_spaces": False}


def heldout_text(verses):
    """The held-out verses as one text whose encoding (special tokens parsed, none added) is exactly
    encode_stream's token stream: verse lines, and EOS spelled out after each book's last verse.
    Written to the model directory as heldout.txt for `dsv4 perplexity --text`."""
    parts = []
    for i, v in enumerate(verses):
        parts.append(verse_line(v))
        if i + 1 == len(verses) or verses[i + 1][0] != v[0]:
            parts.append(EOS_TOKEN)
    return "".join(parts)


def encode_stream(tok, verses):
    """Token stream of verse lines (EOS after each book's last verse), each verse's start offset, and a
    mask of the tokens that spell verse text (" text\n"), as opposed to the "Book C:V" reference or EOS."""
    refs = tok.encode_batch([f"{b} {c}:{v}" for b, c, v, _ in verses], add_special_tokens=False)
    texts = tok.encode_batch([f" {t}\n" for _, _, _, t in verses], add_special_tokens=False)
    stream, starts, mask = [], [], []
    for i, (v, r, t) in enumerate(zip(verses, refs, texts)):
        starts.append(len(stream))
        stream.extend(r.ids + t.ids)  # == encoding the whole line: the pre-tokenizer splits at the space
        mask.extend([False] * len(r.ids) + [True] * len(t.ids))
        if i + 1 == len(verses) or verses[i + 1][0] != v[0]:
            stream.append(EOS)
            mask.append(False)
    return (torch.tensor(stream, dtype=torch.long), torch.tensor(starts, dtype=torch.long),
            torch.tensor(mask, dtype=torch.bool))


# --------------------------------------------------------------------------- model helpers

def init_model(cfg, seed):
    from transformers import DeepseekV4ForCausalLM
    torch.manual_seed(seed)
    model = DeepseekV4ForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.model.layers:
            g = layer.mlp.gate
            if hasattr(g, "tid2eid"):  # fixed random token -> experts table (distinct experts per token)
                g.tid2eid.copy_(torch.stack([torch.randperm(cfg.n_routed_experts)[: cfg.num_experts_per_tok]
                                             for _ in range(cfg.vocab_size)]))
    return model


class BiasBalancer:
    """DeepSeek-V3 style auxiliary-loss-free balancing: nudge e_score_correction_bias toward equal load."""

    def __init__(self, model, rate):
        from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4TopKRouter
        self.rate, self.loads, self.routers = rate, {}, []
        for layer in model.model.layers:
            if isinstance(layer.mlp.gate, DeepseekV4TopKRouter):
                self.routers.append(layer.mlp.gate)
                layer.mlp.gate.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if module.training:
            counts = torch.bincount(output[2].reshape(-1), minlength=module.num_experts).float()
            self.loads[id(module)] = self.loads.get(id(module), 0) + counts

    @no_grad
    def step(self):
        imbalance = 0.0
        for r in self.routers:
            load = self.loads.pop(id(r), None)
            if load is None:
                continue
            r.e_score_correction_bias += self.rate * torch.sign(load.mean() - load)
            imbalance = max(imbalance, float(load.max() / load.mean()))
        return imbalance


def batch_from(stream, offsets, seq):
    """BOS + seq tokens from each (verse start) offset -> [B, seq + 1]."""
    return torch.stack([torch.cat([torch.tensor([BOS]), stream[int(o): int(o) + seq]]) for o in offsets])


@no_grad
def evaluate(model, stream, seq, device, amp, max_windows=None, text_mask=None):
    """NLL over BOS-prefixed windows that tile the held-out stream (BOS not scored).
    Returns (mean NLL per token, scored tokens, summed NLL of the text_mask tokens)."""
    was_training = model.training
    model.eval()
    total, count, text_total = 0.0, 0, 0.0
    windows = list(range(0, len(stream) - 1, seq))
    if max_windows:
        windows = windows[:max_windows]
    for w in range(0, len(windows), 16):
        starts = windows[w:w + 16]
        chunk = [torch.cat([torch.tensor([BOS]), stream[s:s + seq]]) for s in starts]
        n = max(len(c) for c in chunk)
        ids = torch.full((len(chunk), n), EOS, dtype=torch.long)
        tgt = torch.full((len(chunk), n), -100, dtype=torch.long)
        tmask = torch.zeros((len(chunk), n), dtype=torch.bool)
        for r, (s, c) in enumerate(zip(starts, chunk)):
            ids[r, :len(c)] = c
            tgt[r, :len(c) - 1] = c[1:]
            if text_mask is not None:
                tmask[r, :len(c) - 1] = text_mask[s:s + len(c) - 1]
        ids, tgt = ids.to(device), tgt.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(ids, use_cache=False).logits
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                              ignore_index=-100, reduction="none").cpu()
        total += float(nll.sum())
        text_total += float(nll[tmask.reshape(-1)].sum())
        count += int((tgt != -100).sum())
    model.train(was_training)
    return total / max(count, 1), count, text_total


def pick_experts_impl(model, stream, offsets, args, device, amp):
    """Fastest experts backend that runs forward+backward here."""
    candidates = [args.experts_impl] if args.experts_impl != "auto" else ["grouped_mm", "batched_mm", "eager"]
    best = None
    batch = batch_from(stream, offsets[:min(args.batch, 8)], args.seq).to(device)
    for impl in candidates:
        try:
            model.set_experts_implementation(impl)
            times = []
            for _ in range(3):
                t = time.time()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(batch[:, :-1], use_cache=False).logits
                F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)).backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.time() - t)
            model.zero_grad(set_to_none=True)
            print(f"experts_implementation {impl}: {min(times) * 1e3:.1f} ms per small step", flush=True)
            if best is None or min(times) < best[1]:
                best = (impl, min(times))
        except Exception as e:  # noqa: BLE001 - report and try the next backend
            print(f"experts_implementation {impl} unusable: {type(e).__name__}: {e}", flush=True)
            model.zero_grad(set_to_none=True)
    if best is None:
        raise SystemExit("no experts implementation works")
    model.set_experts_implementation(best[0])
    return best[0]


def save_model(model, out):
    """BF16 except the FP32-kept tensors (as the official checkpoints store them)."""
    m = copy.deepcopy(model).cpu().to(torch.bfloat16)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if any(k in name for k in FP32_KEEP):
                p.data = p.data.float()
        for name, b in m.named_buffers():
            if "e_score_correction_bias" in name:
                parent = m.get_submodule(name.rsplit(".", 1)[0])
                parent.e_score_correction_bias = b.float()
    m.save_pretrained(out)


def greedy(model, tok, prompt, n, device):
    from transformers import DynamicCache
    ids = torch.tensor([tok.encode(prompt).ids], device=device)
    cache = DynamicCache(config=model.config)
    out = []
    with torch.no_grad():
        logits = model(ids, past_key_values=cache, use_cache=True).logits[0, -1]
        for _ in range(n):
            t = int(logits.argmax())
            out.append(t)
            if t == EOS:
                break
            logits = model(torch.tensor([[t]], device=device), past_key_values=cache, use_cache=True).logits[0, -1]
    return out


# --------------------------------------------------------------------------- main

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", help="KJV text (bible -l100000 output, or one 'Book C:V text' verse per line)")
    p.add_argument("--out", help="output model directory")
    p.add_argument("--export-text", metavar="PATH", help="write the KJV (from the local bible(1)) to PATH and exit")
    p.add_argument("--device", default="cuda" if torch is not None and torch.cuda.is_available() else "cpu")
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget (evaluation excluded)")
    p.add_argument("--vocab", type=int, default=3072)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--eval-seconds", type=float, default=30.0, help="held-out check interval (keeps the best)")
    p.add_argument("--fp32", action="store_true", help="no BF16 autocast on CUDA")
    p.add_argument("--experts-impl", default="auto", choices=["auto", "grouped_mm", "batched_mm", "eager"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    args = p.parse_args()
    if args.export_text:
        return export_text(args.export_text)
    if not args.text or not args.out:
        p.error("--text and --out are required")
    if torch is None:
        raise SystemExit("training needs torch, transformers and tokenizers (pip install torch transformers tokenizers)")
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers
    t_start = time.time()
    device = torch.device(args.device)
    amp = device.type == "cuda" and not args.fp32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)

    verses = read_verses(args.text)
    split = int(len(verses) * (1 - HELD_OUT))
    train_v, held_v = verses[:split], verses[split:]
    tok = train_tokenizer([verse_line(v) for v in train_v], args.vocab)
    train_stream, train_starts, _ = encode_stream(tok, train_v)
    held_stream, _, held_text = encode_stream(tok, held_v)
    held_file = heldout_text(held_v)
    if tok.encode(held_file, add_special_tokens=False).ids != held_stream.tolist():
        raise SystemExit("heldout.txt does not encode to the held-out token stream")
    held_bytes = sum(len(verse_line(v).encode("utf-8")) for v in held_v)
    held_text_bytes = sum(len(v[3].encode("utf-8")) + 1 for v in held_v)  # verse text + newline
    train_bytes = sum(len(verse_line(v).encode("utf-8")) for v in train_v)
    usable = train_starts[train_starts < len(train_stream) - args.seq]
    print(f"verses: {len(train_v)} train / {len(held_v)} held out (from {held_v[0][0]} {held_v[0][1]}:{held_v[0][2]}); "
          f"tokens: {len(train_stream)} train ({train_bytes / len(train_stream):.2f} bytes/token), "
          f"{len(held_stream)} held out; vocab {tok.get_vocab_size()}", flush=True)

    cfg = model_config(tok.get_vocab_size())
    model = init_model(cfg, args.seed).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters, layers {cfg.layer_types}, mlp {cfg.mlp_layer_types}", flush=True)
    model.train()
    impl = pick_experts_impl(model, train_stream, usable, args, device, amp)
    balancer = BiasBalancer(model, rate=1e-3)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda")
    budget = args.minutes * 60
    gen = torch.Generator().manual_seed(args.seed + 1)
    log, best = [], None
    step, trained, last_eval, t0 = 0, 0.0, 0.0, time.time()
    loss_ema, bad_steps = None, 0
    while trained < budget:
        t = time.time()
        frac = trained / budget
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        offsets = usable[torch.randint(0, len(usable), (args.batch,), generator=gen)]
        batch = batch_from(train_stream, offsets, args.seq).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(batch[:, :-1], use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if not (math.isfinite(float(loss.detach())) and math.isfinite(float(gnorm))):
            # Skip the update; BF16 autocast that keeps failing is switched off (one run must finish).
            opt.zero_grad(set_to_none=True)
            balancer.loads.clear()
            bad_steps += 1
            trained += time.time() - t
            print(f"step {step + 1}: non-finite loss/grad ({float(loss.detach())}, {float(gnorm)}), skipped", flush=True)
            if bad_steps >= 10 and amp:
                amp, bad_steps = False, 0
                print("10 non-finite steps in a row under BF16 autocast: continuing in FP32/TF32", flush=True)
            elif bad_steps >= 50:
                raise SystemExit("training diverged: 50 non-finite steps in a row")
            continue
        bad_steps = 0
        opt.step()
        imbalance = balancer.step()
        step += 1
        lv = float(loss.detach())
        loss_ema = lv if loss_ema is None else 0.98 * loss_ema + 0.02 * lv
        trained += time.time() - t
        if step % 50 == 0 or step == 1:
            print(f"step {step:5d}  {trained:6.0f}s  loss {lv:.3f} (ema {loss_ema:.3f})  lr {lr:.2e}  "
                  f"gnorm {float(gnorm):.2f}  max expert load/mean {imbalance:.2f}", flush=True)
        if trained - last_eval >= args.eval_seconds or trained >= budget:
            last_eval = trained
            nll, _, _ = evaluate(model, held_stream, args.seq, device, amp, max_windows=32)
            log.append(dict(step=step, seconds=round(trained, 1), train_loss_ema=loss_ema, held_out_nll_subset=nll))
            improved = best is None or nll < best[0]
            if improved:
                best = (nll, step, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
            print(f"  held-out (subset) nll {nll:.4f} ppl {math.exp(nll):.2f}{'  *best' if improved else ''}",
                  flush=True)

    if best is None:
        raise SystemExit("no training step finished within the budget: nothing to save")
    model.load_state_dict(best[2])
    model.eval()
    nll_amp, n_tok, _ = evaluate(model, held_stream, args.seq, device, amp)
    nll_fp32, _, _ = evaluate(model, held_stream, args.seq, device, False)
    print(f"best step {best[1]} of {step}: held-out perplexity {math.exp(nll_fp32):.3f} per token (fp32), "
          f"{math.exp(nll_amp):.3f} ({'bf16 autocast' if amp else 'fp32'}); "
          f"{nll_fp32 * n_tok / held_bytes / math.log(2):.4f} bits per byte", flush=True)

    os.makedirs(args.out, exist_ok=True)
    stale = os.path.join(args.out, "byte_tokenizer.json")  # left by the earlier byte-vocabulary default model
    if os.path.exists(stale):
        os.remove(stale)
        print(f"removed {stale}: this model uses tokenizer.json (BPE)", flush=True)
    save_model(model, args.out)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write(held_file)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(cfg.max_position_embeddings), f, indent=1)

    # Reload what was saved (BF16 weights, computed in FP32) and measure it again.
    from transformers import DeepseekV4ForCausalLM
    saved = DeepseekV4ForCausalLM.from_pretrained(args.out, dtype=torch.float32).to(device).eval()
    nll_saved, _, text_nll = evaluate(saved, held_stream, args.seq, device, False, text_mask=held_text)
    ppl_saved = math.exp(nll_saved)
    bpb_saved = nll_saved * n_tok / held_bytes / math.log(2)
    text_bpb = text_nll / held_text_bytes / math.log(2)
    print(f"saved checkpoint (BF16 weights, FP32 compute): held-out perplexity {ppl_saved:.3f} per token, "
          f"{bpb_saved:.4f} bits per byte; verse text only (references excluded): {text_bpb:.4f} bits per byte "
          f"= perplexity {2 ** text_bpb:.3f} per byte", flush=True)
    samples = {}
    for prompt in ["In the beginning", "John 3:16", "Psalms 23:1 The LORD is my shepherd"]:
        ids = greedy(saved, tok, prompt, 48, device)
        samples[prompt] = tok.decode(ids, skip_special_tokens=False)
        print(f"greedy: {prompt!r} -> {samples[prompt]!r}", flush=True)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    info = dict(parameters=n_params, vocab_size=tok.get_vocab_size(), steps=step, best_step=best[1],
                train_seconds=round(trained, 1), total_seconds=round(time.time() - t_start, 1), device=device_name,
                batch=args.batch, seq=args.seq, lr=args.lr, bf16_autocast=amp, experts_implementation=impl,
                train_tokens_seen=step * args.batch * args.seq, train_tokens=len(train_stream),
                held_out_verses=len(held_v), held_out_first_verse=f"{held_v[0][0]} {held_v[0][1]}:{held_v[0][2]}",
                held_out_file="heldout.txt", eval_context=args.seq,
                held_out_tokens=n_tok, held_out_bytes=held_bytes,
                held_out_ppl_fp32=math.exp(nll_fp32), held_out_ppl_saved_bf16_weights=ppl_saved,
                held_out_bits_per_byte_saved=bpb_saved, held_out_text_bytes=held_text_bytes,
                held_out_text_bits_per_byte_saved=text_bpb, torch=torch.__version__,
                transformers=transformers.__version__, greedy_samples=samples, evals=log)
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(info, f, indent=1)
    write_readme(args.out, cfg, info)
    print(f"wrote {args.out}: " + ", ".join(sorted(os.listdir(args.out))), flush=True)


def write_readme(out, cfg, info):
    samples = "\n".join(f"    {k!r} -> {v!r}" for k, v in info["greedy_samples"].items())
    text = f"""# dsv4 default model

A tiny DeepSeek-V4 (`DeepseekV4ForCausalLM`, {info['parameters'] / 1e6:.2f} M parameters) trained on the
King James Bible by `scripts/train_default_model.py`. It trained for {info['train_seconds']:.0f} s on {info['device']}
({info['steps']} steps of {info['batch']} x {info['seq']} tokens; the best held-out checkpoint is from step {info['best_step']}).
It is a demo model for the engine and knows nothing but KJV-style text.

## Architecture (config.json)
* hidden {cfg.hidden_size}; {cfg.num_hidden_layers} layers: {', '.join(cfg.layer_types)}.
  These are V4-Flash's rates: CSA 4 with a lightning indexer ({cfg.index_n_heads} heads x {cfg.index_head_dim}, top-{cfg.index_topk}),
  HCA 128, and sliding window 128. The compress RoPE uses YaRN with Flash's parameters.
* {cfg.num_attention_heads} query heads x {cfg.head_dim} (rope dim {cfg.qk_rope_head_dim}), q_lora {cfg.q_lora_rank},
  o_groups {cfg.o_groups} x o_lora {cfg.o_lora_rank}.
* MoE: {cfg.n_routed_experts} experts, top-{cfg.num_experts_per_tok}, intermediate {cfg.moe_intermediate_size}, plus one shared expert.
  Layers 0-1 use hash routing (random `tid2eid`); the rest are routed with sqrtsoftplus scores.
  The router bias is balanced without an auxiliary loss.
* mHC: hc_mult {cfg.hc_mult}, {cfg.hc_sinkhorn_iters} Sinkhorn iterations.
* Weights are BF16. The mHC tensors, attention sinks, compressor `ape` and router `bias` are FP32, as in the official
  checkpoints. Key names are the ones transformers' `save_pretrained` writes.
* The indexer got no training signal: its top-k only selects, and is not differentiable. Its weights are the
  random init, so CSA selection is content-dependent but untrained. For the tensors to load with transformers,
  use `from_pretrained(dir, dtype=torch.float32)`: transformers 5.17 crashes on `dtype=torch.bfloat16`.

## Tokenizer (tokenizer.json)
* Byte-level BPE (`tokenizers`, GPT-2 pre-tokenizer regex, no prefix space) with {info['vocab_size']} tokens,
  trained on the training verses.
* Special tokens: `{BOS_TOKEN}` = {BOS} (BOS) and `{EOS_TOKEN}` = {EOS} (EOS).
  These are `bos_token_id`/`eos_token_id` in config.json.
* `tokenizer.json`'s post-processor prepends BOS. An engine that does its own encoding should prepend id {BOS}.

## Prompt format
Training text is one verse per line, `Book C:V text` followed by a newline, for example `John 3:16 For God so loved ...`.
Every training sample starts with BOS, then a verse reference.
EOS appears only after the last verse of each book.
* Plain text, such as `In the beginning`, is continued in KJV style, and the model then goes on to the next verses.
* A reference, such as `Psalms 23:1`, makes the model write that verse, usually as it is in the KJV for well-known verses.
* The model rarely emits EOS, so limit the length with `--max-new-tokens`.

Greedy samples (saved checkpoint):
{samples}

## Held-out quality
The held-out set is the last 2% of verses, {info['held_out_verses']} verses from the end of the Bible
({info['held_out_tokens']} tokens, {info['held_out_bytes']} bytes).
* Perplexity per token: {info['held_out_ppl_saved_bf16_weights']:.3f} with the saved BF16 weights computed in FP32,
  and {info['held_out_ppl_fp32']:.3f} with the FP32 training weights.
* Bits per byte: {info['held_out_bits_per_byte_saved']:.4f} over whole lines.
  Over the verse text alone (references excluded, {info['held_out_text_bytes']} bytes): {info['held_out_text_bits_per_byte_saved']:.4f}.
  That is a perplexity of {2 ** info['held_out_text_bits_per_byte_saved']:.3f} per byte, comparable with a byte-level model on the same verses.

The held-out verses are in `heldout.txt` (from {info['held_out_first_verse']} on; EOS is spelled `{EOS_TOKEN}` after
each book's last verse, so the text encodes to exactly the evaluated tokens). The engine measures the same thing:
`dsv4 perplexity --model DIR --text DIR/heldout.txt --context {info['eval_context']}`, and
`scripts/eval_default_model.sh DIR` measures BF16, NVFP4 and MXFP4 experts.

Details are in `training_log.json`. To retrain (GPU machine, from the repo root, KJV text exported by
`python3 scripts/train_default_model.py --export-text .deps/kjv/kjv.txt`): `bash scripts/device_train_default.sh 4`.
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
