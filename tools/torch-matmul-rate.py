#!/usr/bin/env python3
"""PyTorch's own matmul rate on this CPU (MKL for f32, oneDNN for bf16), to
set beside `tmoe bench cpu-gemm`'s peaks when reading a same-run comparison:
MKL picks its code path by CPU vendor, so PyTorch's f32 products can run far
below the FMA peak on AMD. Best of 10 calls per cell, after 3 warm-ups.

usage: python tools/torch-matmul-rate.py [--sizes 512,1024,2048] [--threads 1,N]
"""
import argparse
import os
import platform
import time

import torch


def rate(n: int, dtype: torch.dtype) -> float:
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="512,1024,2048")
    p.add_argument("--threads", default=f"1,{os.cpu_count()}")
    a = p.parse_args()
    print(f"# torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    print("threads  n      f32 GFLOP/s  bf16 GFLOP/s  (square n x n x n products)")
    for t in (int(x) for x in a.threads.split(",")):
        torch.set_num_threads(t)
        for n in (int(x) for x in a.sizes.split(",")):
            print(f"{t:7d}  {n:5d}  {rate(n, torch.float32):11.1f}  {rate(n, torch.bfloat16):12.1f}")


if __name__ == "__main__":
    main()
