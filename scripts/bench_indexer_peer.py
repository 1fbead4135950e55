#!/usr/bin/env python3
"""Peer for bench/indexer: the Lightning indexer + top-k in torch.

Same cases as bench_indexer (64 heads x 128, rate 4, top-k 512; contexts 4096 / 32768;
a prefill chunk of one sequence, and decode batches of one token per sequence):
  scores[t, w] = sum_h relu(q[t,h] . key[w]) / sqrt(128) * weights[t,h] / sqrt(64)
over w < (p + 1) / 4 (later keys masked to -inf), then torch.topk(512) and a sort of the
picked indices. q and keys are BF16 (einsum on tensor cores), the epilogue FP32. The
prefill chunk is processed in slices of --slice tokens so the [tokens, heads, keys]
product fits in memory (the peer materialises it; the dsv4 kernel does not).
Median CUDA-event milliseconds after warm-up, L2 flushed before each iteration.
Usage: python3 scripts/bench_indexer_peer.py [--json PATH] [--contexts 4096,32768]
       [--chunk 2048] [--batches 1,16,64] [--slice 256] [--chunk-rows N (ignored)]
"""
import argparse
import datetime
import functools
import json
import math

import torch

import bench_peer_util

HEADS, DIM, RATE, TOP_K = 64, 128, 4, 512


median_ms = functools.partial(bench_peer_util.median_ms, warmup=2)  # this peer's warm-up runs


def indexer(q, weights, keys, visible, slice_tokens):
    """q [T, H, D] bf16, weights [T, H] f32, keys [T or 1, W, D] bf16, visible [T] int64."""
    tokens, width = q.shape[0], keys.shape[1]
    scale = 1.0 / (math.sqrt(DIM) * math.sqrt(HEADS))
    out = []
    arange = torch.arange(width, device=q.device)
    for begin in range(0, tokens, slice_tokens):
        end = min(tokens, begin + slice_tokens)
        k = keys if keys.shape[0] == 1 else keys[begin:end]
        if k.shape[0] == 1:
            dots = torch.einsum("thd,wd->thw", q[begin:end], k[0])
        else:
            dots = torch.einsum("thd,twd->thw", q[begin:end], k)
        scores = (dots.float().relu_() * (weights[begin:end, :, None] * scale)).sum(dim=1)
        scores.masked_fill_(arange[None, :] >= visible[begin:end, None], float("-inf"))
        picked = torch.topk(scores, min(TOP_K, width), dim=1).indices
        out.append(torch.sort(picked, dim=1).values)
    return torch.cat(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="")
    parser.add_argument("--contexts", default="4096,32768")
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--slice", type=int, default=256)
    # bench_indexer's forced token chunks of the bounded workspace; accepted so both take
    # the same arguments (the peer's own slicing is --slice).
    parser.add_argument("--chunk-rows", type=int, default=256)
    # bench_indexer's score-kernel choice (mma, wgmma); accepted for the same reason.
    parser.add_argument("--kernels", default="mma,wgmma")
    args = parser.parse_args()
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=device)
    generator = torch.Generator(device=device).manual_seed(7)
    out = open(args.json, "a") if args.json else None

    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    peak = 2 * 8192**3 / (median_ms(lambda: a @ b, 10, flush) * 1e-3) / 1e12
    del a, b
    print(f"device {name}; torch BF16 matmul 8192^3 {peak:.0f} TFLOP/s")

    print(f"{'mode':8} {'context':>7} {'tokens':>6} {'ms':>9} {'TFLOP/s':>8} {'of_peak':>8}")
    for context in [int(x) for x in args.contexts.split(",")]:
        modes = [("prefill", args.chunk)] + [("decode", int(b)) for b in args.batches.split(",")]
        for mode, tokens in modes:
            width = context // RATE
            sequences = 1 if mode == "prefill" else tokens
            if mode == "prefill":
                positions = torch.arange(context - tokens, context, device=device)
            else:
                positions = torch.full((tokens,), context - 1, device=device)
            visible = torch.clamp((positions + 1) // RATE, max=width)
            keys = torch.rand(sequences, width, DIM, device=device, generator=generator).mul_(2).sub_(1)
            keys = keys.to(torch.bfloat16)
            q = torch.rand(tokens, HEADS, DIM, device=device, generator=generator).mul_(2).sub_(1).to(torch.bfloat16)
            weights = torch.rand(tokens, HEADS, device=device, generator=generator).mul_(2).sub_(1)
            iters = 10 if mode == "prefill" else 30
            ms = median_ms(lambda: indexer(q, weights, keys, visible, args.slice), iters, flush)
            flops = 2.0 * HEADS * DIM * float(visible.sum().item())
            tflops = flops / (ms * 1e-3) / 1e12
            print(f"{mode:8} {context:7d} {tokens:6d} {ms:9.4f} {tflops:8.1f} {100 * tflops / peak:7.1f}%")
            if out:
                out.write(json.dumps({"bench": "indexer_peer_torch", "device": name, "date": date, "mode": mode,
                                      "context": context, "tokens": tokens, "keys": width, "heads": HEADS,
                                      "dim": DIM, "top_k": TOP_K, "ms": round(ms, 5), "gemm_flops": flops,
                                      "tflops": round(tflops, 2), "peak_tflops": round(peak, 1),
                                      "of_peak": round(tflops / peak, 4)}) + "\n")
            del keys, q, weights
    if out:
        out.close()


if __name__ == "__main__":
    main()
