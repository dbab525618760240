"""Measurements that several benchmarks share: this machine's peak rates; saving results."""

import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

from gpt2_core.model import GPTConfig


def matmul_peak(n: int = 2048, repeats: int = 10, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of an (n x n) @ (n x n) matmul on `device` in `dtype` (best of `repeats`)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        if a.is_cuda:                             # CUDA runs asynchronously: time finished work
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if a.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def read_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes/s read by x.sum() over a `gib` GiB fp32 tensor, far larger than the caches (best of `repeats`)."""
    x = torch.ones(int(gib * 2**30) // 4)
    x.sum()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.nbytes / best


RESULTS = Path(__file__).resolve().parent / "results"


def save_results(benchmark: str, figures: list[dict], quick: bool) -> Path | None:
    """Record a full run's figures in benchmarks/results/<benchmark>.json (quick runs are not kept).

    Each figure is a dict with "metric", "value", "reference" (what it is measured against, in the
    same run) and "goal"; `scripts/performance_page.py` turns the files into the book's page.
    """
    if quick:
        return None
    RESULTS.mkdir(exist_ok=True)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name()
    record = {"benchmark": benchmark, "date": datetime.date.today().isoformat(), "machine": machine,
              "figures": figures}
    path = RESULTS / f"{benchmark}.json"
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"saved {path}")
    return path


def hf_model(config: GPTConfig):
    """transformers' GPT2LMHeadModel of the same shape, with SDPA attention when available."""
    import transformers

    kwargs = dict(vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                  n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                  attn_pdrop=0.0)
    try:
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kwargs, attn_implementation="sdpa"))
    except (TypeError, ValueError, ImportError):
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kwargs))
    return model, getattr(model.config, "_attn_implementation", "eager")
