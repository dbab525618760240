"""Measurements that several benchmarks share: this machine's peak rates."""

import time

import torch


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an (n x n) @ (n x n) fp32 matmul (best of `repeats`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best
