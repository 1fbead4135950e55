#!/usr/bin/env python3
"""Peer for bench/attention: torch SDPA (memory-efficient backend), dense MQA.

The same shapes as bench_attention (64 heads, head_dim 512, one KV head, window 128,
CSA top-k 512 at rate 4, HCA at rate 128) as dense attention with the same number of
attended keys per query: prefill of `tokens` queries as tokens / 128 independent groups
of 128 queries over `keys` = the mean attended key count of bench_attention's prefill
(so the attended (query, key) pairs match); decode of `batch` queries over `keys` =
window + compressed entries at `context`. BF16 q/k/v/out, the KV head expanded to 64
(a stride-0 view; a materialised copy if the backend refuses it: "kv" says which). Median CUDA-event milliseconds after warm-up, L2 flushed before
each iteration. Figures as bench_attention: useful TFLOP/s = 4 * 64 * 512 * attended /
time (prefill), bytes = KV rows + q + out and GB/s (decode), and the same limits
(HBM copy of 1 GiB, BF16 matmul 8192^3) measured in this run.
Usage: python3 scripts/bench_attention_peer.py [--json PATH] [--quick 1]
"""
import argparse
import datetime
import functools
import json

import torch

import bench_peer_util
import torch.nn.functional as F

HEADS, DIM, WINDOW, TOP_K, CSA_RATE, HCA_RATE = 64, 512, 128, 512, 4, 128


median_ms = functools.partial(bench_peer_util.median_ms, warmup=2)  # this peer's warm-up runs


def attended_prefill(tokens, csa):
    total = 0
    for t in range(tokens):
        visible = (t + 1) // (CSA_RATE if csa else HCA_RATE)
        total += min(t + 1, WINDOW) + (min(TOP_K, visible) if csa else visible)
    return total


def time_sdpa(q, kv, iters, flush):
    """Median ms of SDPA with the KV head expanded as a stride-0 view, or (if the backend
    refuses that view) materialised; returns (ms, "view" | "copy")."""
    k = kv.expand(kv.shape[0], HEADS, kv.shape[2], DIM)
    try:
        return median_ms(lambda: F.scaled_dot_product_attention(q, k, k), iters, flush), "view"
    except RuntimeError as error:
        print(f"  stride-0 KV refused ({str(error).splitlines()[0][:100]}); materialised copy")
    k = k.contiguous()
    return median_ms(lambda: F.scaled_dot_product_attention(q, k, k), iters, flush), "copy"


def sdpa_backend():
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION)
    except ImportError:  # older torch
        return torch.backends.cuda.sdp_kernel(enable_flash=False, enable_math=False, enable_mem_efficient=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="")
    parser.add_argument("--quick", default="0")
    args, _ = parser.parse_known_args()
    quick = args.quick != "0"
    dev = torch.device("cuda")
    torch.manual_seed(0)
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    name = torch.cuda.get_device_name()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = open(args.json, "a") if args.json else None

    def emit(obj):
        obj = {"bench": "attention_peer", "device": name, "date": date, **obj}
        if out:
            out.write(json.dumps(obj) + "\n")

    a = torch.empty(1 << 29, dtype=torch.int16, device=dev)
    b = torch.empty_like(a)
    copy_gbps = 2 * a.numel() * 2 / (median_ms(lambda: b.copy_(a), 10, flush) * 1e-3) / 1e9
    del a, b
    m = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    peak = 2 * 8192 ** 3 / (median_ms(lambda: m @ m, 5, flush) * 1e-3) / 1e12
    del m
    print(f"device {name}; torch {torch.__version__}; HBM copy {copy_gbps:.0f} GB/s; BF16 matmul {peak:.0f} TFLOP/s")
    emit({"case": "hbm_copy", "gbps": round(copy_gbps, 1)})
    emit({"case": "gemm_peak", "tflops": round(peak, 1)})

    print(f"{'case':7} {'layer':5} {'tokens':>6} {'keys':>6} {'ms':>9} {'TFLOP/s':>8} {'of_peak':>7}")
    with sdpa_backend():
        for tokens in ([8192] if quick else [8192, 32768]):
            for csa in (True, False):
                attended = attended_prefill(tokens, csa)
                keys = max(1, round(attended / tokens))
                groups, per_group = tokens // 128, 128
                q = torch.randn(groups, HEADS, per_group, DIM, device=dev, dtype=torch.bfloat16)
                kv = torch.randn(groups, 1, keys, DIM, device=dev, dtype=torch.bfloat16)
                iters = 5 if tokens > 8192 else 10
                try:
                    ms, kv_mode = time_sdpa(q, kv, iters, flush)
                except RuntimeError as error:
                    print(f"prefill {tokens} {'csa' if csa else 'hca'}: SDPA failed: {error}")
                    continue
                done = tokens * keys
                tflops = 4 * HEADS * DIM * done / (ms * 1e-3) / 1e12
                layer = "csa" if csa else "hca"
                print(f"{'prefill':7} {layer:5} {tokens:6d} {keys:6d} {ms:9.3f} {tflops:8.1f} {tflops / peak:7.3f}")
                emit({"case": "prefill", "layer": layer, "kernel": "torch_sdpa_efficient", "kv": kv_mode, "tokens": tokens,
                      "heads": HEADS, "head_dim": DIM, "keys_per_query": keys, "iters": iters, "ms": round(ms, 4),
                      "attended_keys": done, "tflops": round(tflops, 2), "gemm_peak_tflops": round(peak, 1),
                      "of_peak": round(tflops / peak, 4)})
                del q, kv

        print(f"{'case':7} {'layer':5} {'batch':>6} {'context':>7} {'keys':>6} {'ms':>9} {'GB/s':>8} {'of_HBM':>7}")
        for context in ([4096, 32768] if quick else [4096, 32768, 131072]):
            for batch in (1, 16, 64):
                for csa in (True, False):
                    keys = WINDOW + (min(TOP_K, context // CSA_RATE) if csa else context // HCA_RATE)
                    q = torch.randn(batch, HEADS, 1, DIM, device=dev, dtype=torch.bfloat16)
                    kv = torch.randn(batch, 1, keys, DIM, device=dev, dtype=torch.bfloat16)
                    iters = 10 if context >= 131072 else 20
                    try:
                        ms, kv_mode = time_sdpa(q, kv, iters, flush)
                    except RuntimeError as error:
                        print(f"decode {batch} {context}: SDPA failed: {error}")
                        continue
                    kv_bytes = batch * keys * DIM * 2
                    total = kv_bytes + 2 * batch * HEADS * DIM * 2
                    gbps = total / (ms * 1e-3) / 1e9
                    layer = "csa" if csa else "hca"
                    print(f"{'decode':7} {layer:5} {batch:6d} {context:7d} {keys:6d} {ms:9.4f} {gbps:8.0f} "
                          f"{gbps / copy_gbps:7.3f}")
                    emit({"case": "decode", "layer": layer, "kernel": "torch_sdpa_efficient", "kv": kv_mode, "batch": batch,
                          "context": context, "heads": HEADS, "head_dim": DIM, "iters": iters, "ms": round(ms, 5),
                          "attended_keys": batch * keys, "kv_bytes": kv_bytes, "bytes": total,
                          "gbps": round(gbps, 1), "hbm_copy_gbps": round(copy_gbps, 1),
                          "of_hbm": round(gbps / copy_gbps, 4)})
                    del q, kv
    if out:
        out.close()


if __name__ == "__main__":
    main()
