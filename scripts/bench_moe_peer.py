#!/usr/bin/env python3
"""Peer for bench/moe: torch._grouped_mm on BF16 experts of the same shapes.

V4-Flash experts (hidden 4096, intermediate 2048, 256 routed + 1 shared, top-6): the
slots of a random top-6 routing plus every token on the shared expert (257 groups,
the same work as bench_moe). Times the two grouped GEMMs (gate/up as one [2I, H]
matrix, then down) as median CUDA-event milliseconds after warm-up with L2 flushed
before each iteration, and reports TFLOP/s and BF16 weight bytes / time.
Usage: python3 scripts/bench_moe_peer.py [--json PATH] [--tokens 1,8,64,4096,16384]
"""
import argparse
import datetime
import functools
import json

import torch

import bench_peer_util

HIDDEN, INTER, EXPERTS, TOP_K = 4096, 2048, 256, 6


median_ms = functools.partial(bench_peer_util.median_ms, warmup=3)  # this peer's warm-up runs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="")
    parser.add_argument("--tokens", default="1,8,64,4096,16384")
    args, _ = parser.parse_known_args()  # bench_moe options (--formats, --config) do not apply here
    dev = torch.device("cuda")
    torch.manual_seed(0)
    groups = EXPERTS + 1
    # nn.Linear layout [G, out, in]; _grouped_mm takes [G, in, out] views (column-major).
    w13 = (torch.randn(groups, 2 * INTER, HIDDEN, device=dev, dtype=torch.bfloat16) * 0.02)
    w2 = (torch.randn(groups, HIDDEN, INTER, device=dev, dtype=torch.bfloat16) * 0.02)
    b13, b2 = w13.transpose(1, 2), w2.transpose(1, 2)
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    name = torch.cuda.get_device_name()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = open(args.json, "a") if args.json else None
    print(f"device {name}; torch {torch.__version__}")
    print(f"{'tokens':>6} {'gemms_ms':>9} {'experts':>7} {'TFLOP/s':>8} {'GB/s':>7}")
    for tokens in [int(t) for t in args.tokens.split(",")]:
        x = torch.randn(tokens, HIDDEN, device=dev, dtype=torch.bfloat16)
        ids = torch.randn(tokens, EXPERTS, device=dev).topk(TOP_K, dim=1).indices
        ids = torch.cat([ids, torch.full((tokens, 1), EXPERTS, device=dev, dtype=ids.dtype)], dim=1).flatten()
        order = torch.argsort(ids, stable=True)
        counts = torch.bincount(ids, minlength=groups)
        offs = torch.cumsum(counts, 0).to(torch.int32)
        xs = x[order // (TOP_K + 1)].contiguous()
        h = torch.randn(xs.shape[0], INTER, device=dev, dtype=torch.bfloat16)

        def gemms():
            torch._grouped_mm(xs, b13, offs=offs)
            torch._grouped_mm(h, b2, offs=offs)

        iters = 5 if tokens >= 8192 else 10 if tokens >= 1024 else 30
        ms = median_ms(gemms, iters, flush)
        slots = xs.shape[0]
        active = int((counts > 0).sum())
        flops = 2.0 * slots * 3 * HIDDEN * INTER
        weight_bytes = active * 3 * HIDDEN * INTER * 2
        tflops = flops / (ms * 1e-3) / 1e12
        gbps = weight_bytes / (ms * 1e-3) / 1e9
        print(f"{tokens:>6} {ms:>9.4f} {active:>7} {tflops:>8.1f} {gbps:>7.0f}")
        if out:
            out.write(json.dumps({"bench": "moe_peer", "impl": "torch._grouped_mm bf16", "device": name,
                                  "date": date, "torch": torch.__version__, "tokens": tokens,
                                  "gemms_ms": round(ms, 5), "active_experts": active, "slots": slots,
                                  "tflops": round(tflops, 2), "weight_gbps": round(gbps, 1)}) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
