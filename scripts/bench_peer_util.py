"""Timing shared by the torch peer scripts (scripts/bench_*_peer.py), as the dsv4
benchmarks time (bench/common/bench_util.h): median CUDA-event milliseconds of `iters`
runs after `warmup` untimed ones, the L2 flushed (flush.zero_()) before each timed run."""
import torch


def median_ms(fn, iters, flush, warmup):
    for _ in range(warmup):
        fn()
    times = []
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(iters):
        flush.zero_()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]
