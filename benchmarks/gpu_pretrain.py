"""Pretraining from shards on GPUs: `gpt2-core prepare`, then `launch train` under torchrun.

    python -m benchmarks.gpu_pretrain [--gpus 1] [--steps 300]     # on a CUDA machine
    python -m benchmarks.gpu_pretrain --quick                       # a CPU smoke test

The Brown Corpus (non-commercial use only) is tokenized with GPT-2's tokenizer into shards, and
GPT-2 124M trains on them through the same job as the book's model (`gpt2_core.pretrained.pretrain`,
windows read by `gpt2_core.shards.WindowReader`), in bf16 with `torch.compile`, one process per
GPU. Figures: the training tokens per second after warm-up (the median of the logged steps past
the first tenth) against the tokens per second of a bf16 matmul at the measured peak, as MFU
(the model's FLOPs per token, `flops_per_token`, times tokens per second, over that peak).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import matmul_peak, save_results
from gpt2_core.model import GPTConfig, flops_per_token
from gpt2_core.runs import Run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=max(1, torch.cuda.device_count()))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per step, all GPUs")
    parser.add_argument("--quick", action="store_true", help="the book's model, 6 steps on the "
                                                             "CPU, nothing saved")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpu-pretrain-"))
    python = sys.executable
    subprocess.run([python, "-m", "gpt2_core", "prepare", "brown", "--out", str(work / "data"),
                    "--num-proc", str(min(8, os.cpu_count() or 1))], check=True)
    if args.quick:
        train = ["--model", "book", "--max-steps", "6", "--batch-size", "4", "--block-size", "64",
                 "--warmup-steps", "2", "--eval-interval", "3", "--eval-batches", "1"]
        launcher = [python, "-m", "gpt2_core.launch"]
        config, block = None, 64
    else:
        train = ["--model", "gpt2", "--max-steps", str(args.steps), "--batch-size",
                 str(args.batch_size), "--block-size", "1024", "--warmup-steps", "50",
                 "--lr", "6e-4", "--min-lr", "6e-5", "--beta2", "0.95", "--eval-interval",
                 str(args.steps), "--eval-batches", "20", "--dtype", "bfloat16", "--compile"]
        launcher = ["torchrun", "--standalone", f"--nproc_per_node={args.gpus}", "-m",
                    "gpt2_core.launch"]
        config, block = GPTConfig.from_name("gpt2"), 1024
    subprocess.run([*launcher, "train", "--data", str(work / "data"), "--out", str(work / "run"),
                    "--log-interval", "50", *train], check=True)
    metrics = Run.open(work / "run").metrics()
    steady = metrics[len(metrics) // 10:]
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in steady) * (1 if args.quick
                                                                            else args.gpus)
    print(f"{len(metrics)} steps; median {tokens_per_s:,.0f} tokens/s after warm-up; "
          f"final loss {metrics[-1]['loss']:.3f}")
    if args.quick:
        return 0
    peak = matmul_peak(8192, device="cuda", dtype=torch.bfloat16)
    mfu = flops_per_token(config, block) * tokens_per_s / (peak * args.gpus)
    print(f"bf16 matmul peak {peak / 1e12:.0f} TFLOP/s per GPU; MFU {mfu:.1%}")
    save_results("gpu_pretrain", [
        {"metric": f"GPT-2 124M pretraining tokens/s from shards, {args.gpus} GPU(s), bf16 + "
                   f"compile, batch {args.batch_size} x 1024", "value": round(tokens_per_s),
         "reference": "launch train under torchrun, median of the steps past the first tenth",
         "goal": "report"},
        {"metric": "MFU of that run (flops_per_token x tokens/s)", "value": round(mfu, 3),
         "reference": f"bf16 matmul peak measured in the same run, {peak / 1e12:.0f} TFLOP/s",
         "goal": "report"},
    ], quick=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
