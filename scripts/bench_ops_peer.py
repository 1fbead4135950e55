#!/usr/bin/env python3
"""Peer for bench/ops: the same engine ops written in eager PyTorch, V4-Flash width.

mHC collapse + RMSNorm (FP32: flattened unweighted RMSNorm, mixing matmul [T, 16384] x
[16384, 24], sigmoid pre/post, Sinkhorn 20 iterations, weighted collapse, RMSNorm),
expand, and the BF16 linears (x rounded to BF16, BF16 output widened to FP32; one GEMM,
not the engine's hi + lo split) at the engine's shapes,
including the grouped wo_a as one torch.bmm. Median CUDA-event milliseconds after
warm-up, L2 flushed (256 MB) before each iteration; bytes as in bench_ops (compulsory
traffic) -> GB/s. Not bit-comparable with the engine (a timing peer only).
Usage: python3 scripts/bench_ops_peer.py [--json PATH] [--tokens 1,8,64,8192]
"""
import argparse
import datetime
import functools
import json

import torch

import bench_peer_util

HIDDEN, N, ITERS_SINKHORN = 4096, 4, 20
MIX, FLAT = (2 + N) * N, N * HIDDEN
HEADS, HEAD_DIM, Q_RANK, GROUPS, O_RANK, VOCAB = 64, 512, 1024, 8, 1024, 129280
EPS = 1e-6


median_ms = functools.partial(bench_peer_util.median_ms, warmup=3)  # this peer's warm-up runs


def collapse_norm(streams, fn, base, scale, norm_w):
    t = streams.shape[0]
    flat = streams.reshape(t, FLAT)
    inv = torch.rsqrt(flat.pow(2).mean(dim=1, keepdim=True) + EPS)
    mixes = (flat * inv) @ fn.t()  # [T, 24]
    pre = torch.sigmoid(mixes[:, :N] * scale[0] + base[:N]) + EPS
    post = 2 * torch.sigmoid(mixes[:, N:2 * N] * scale[1] + base[N:2 * N])
    comb = (mixes[:, 2 * N:] * scale[2] + base[2 * N:]).reshape(t, N, N).softmax(dim=2) + EPS
    comb = comb / (comb.sum(dim=1, keepdim=True) + EPS)
    for _ in range(ITERS_SINKHORN - 1):
        comb = comb / (comb.sum(dim=2, keepdim=True) + EPS)
        comb = comb / (comb.sum(dim=1, keepdim=True) + EPS)
    x = (pre.unsqueeze(2) * streams).sum(dim=1)
    x = norm_w * (x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + EPS))
    return x, post, comb


def expand(streams, post, comb, out):
    # new[k] = post[k] out + sum_j comb[j, k] old[j]
    return post.unsqueeze(2) * out.unsqueeze(1) + torch.einsum("tjk,tjd->tkd", comb, streams)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default="")
    parser.add_argument("--tokens", default="1,8,64,8192")
    args, _ = parser.parse_known_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    name = torch.cuda.get_device_name()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = open(args.json, "a") if args.json else None
    print(f"device {name}; torch {torch.__version__}")

    def report(op, variant, tokens, ms, nbytes):
        gbps = nbytes / (ms * 1e-3) / 1e9
        print(f"{op:<26} {variant:<14} T={tokens:<5} {ms:9.4f} ms  {nbytes / 1e6:8.1f} MB  {gbps:7.1f} GB/s")
        if out:
            out.write(json.dumps({"bench": "ops_peer", "device": name, "date": date, "op": op, "variant": variant,
                                  "tokens": tokens, "ms": ms, "bytes": nbytes, "gbps": gbps}) + "\n")

    fn = torch.randn(MIX, FLAT, device=dev) * 0.01
    base = torch.randn(MIX, device=dev) * 0.5
    scale = torch.ones(3, device=dev)
    norm_w = 1 + 0.1 * torch.randn(HIDDEN, device=dev)
    tokens_list = [int(t) for t in args.tokens.split(",")]
    for t in tokens_list:
        iters = 10 if t >= 4096 else 30
        streams = torch.randn(t, N, HIDDEN, device=dev)
        out_x = torch.randn(t, HIDDEN, device=dev)
        ms = median_ms(lambda: collapse_norm(streams, fn, base, scale, norm_w), iters, flush)
        report("mhc.collapse_norm", "torch", t, ms, 4.0 * t * FLAT + 4.0 * MIX * FLAT + 4.0 * t * HIDDEN)
        _, post, comb = collapse_norm(streams, fn, base, scale, norm_w)
        ms = median_ms(lambda: expand(streams, post, comb, out_x), iters, flush)
        report("mhc.expand", "torch", t, ms, 2 * 4.0 * t * FLAT + 4.0 * t * HIDDEN)
        del streams, out_x

    shapes = [("wq_a", Q_RANK, HIDDEN), ("wq_b", HEADS * HEAD_DIM, Q_RANK), ("wkv", HEAD_DIM, HIDDEN),
              ("wo_b", HIDDEN, GROUPS * O_RANK), ("head", VOCAB, HIDDEN)]
    for op, rows, cols in shapes:
        w = (torch.randn(rows, cols, device=dev) * 0.02).to(torch.bfloat16)
        for t in tokens_list:
            if rows == VOCAB and t > 64:
                continue
            x = torch.randn(t, cols, device=dev)
            ms = median_ms(lambda: (x.to(torch.bfloat16) @ w.t()).float(), 5 if t >= 4096 else 20, flush)
            report(f"linear.{op}", "torch_bf16", t, ms, 2.0 * rows * cols + 4.0 * t * (rows + cols))
            del x
        del w
    gw = HEADS * HEAD_DIM // GROUPS
    wo_a = (torch.randn(GROUPS, O_RANK, gw, device=dev) * 0.02).to(torch.bfloat16)
    for t in tokens_list:
        x = torch.randn(t, GROUPS, gw, device=dev)
        ms = median_ms(lambda: torch.bmm(x.to(torch.bfloat16).transpose(0, 1), wo_a.transpose(1, 2)).float(),
                       5 if t >= 4096 else 20, flush)
        report("linear.wo_a", "torch_bmm", t, ms, 2.0 * GROUPS * O_RANK * gw + 4.0 * t * (HEADS * HEAD_DIM + GROUPS * O_RANK))
    if out:
        out.close()


if __name__ == "__main__":
    main()
