"""Training speed on one CUDA GPU: gpt2_core's GPT-2 124M against transformers', same batch, same run.

    python -m benchmarks.gpu_training [--quick] [--batch 16] [--seq 1024]

One step is forward, cross-entropy, backward and a fused AdamW update on a random token batch.
Measured: both models in fp32 (TF32 matmuls, as `gpt2_core.launch` sets) and under bf16
autocast, then gpt2_core under bf16 autocast and `torch.compile`. MFU divides the model FLOPs
per second by a bf16 matmul's FLOP/s measured in the same run. Also checked: the model's
attention runs when PyTorch may use only the flash-attention kernel.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.common import hf_model, matmul_peak, save_results
from gpt2_core.model import GPT, GPTConfig, flops_per_token


def step_times(model, idx: torch.Tensor, *, hf: bool, bf16: bool, warmup: int, steps: int) -> list[float]:
    """Seconds per training step (forward, loss, backward, AdamW) after `warmup` untimed steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            logits = model(idx).logits if hf else model(idx)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), idx[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def flash_only_runs(config: GPTConfig, idx: torch.Tensor) -> bool:
    """Whether a bf16 forward and backward of the model run with only the flash kernel allowed."""
    model = GPT(config).cuda()
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast("cuda", dtype=torch.bfloat16):
            model(idx).float().sum().backward()
    except RuntimeError as error:
        print("flash attention only:", error)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 timed steps per setting instead of 10")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=1024)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("skipped: this benchmark needs a CUDA GPU, and there is none")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    warmup, steps = (2, 3) if args.quick else (3, 10)
    config = GPTConfig()                                   # 124M, dropout 0
    idx = torch.randint(0, config.vocab_size, (args.batch, args.seq), device="cuda")
    tokens = idx.numel()
    flops = flops_per_token(config, args.seq)
    peak = matmul_peak(8192, device="cuda", dtype=torch.bfloat16)

    rates = {}
    for name, hf, bf16 in [("gpt2_core fp32", False, False), ("transformers fp32", True, False),
                           ("gpt2_core bf16", False, True), ("transformers bf16", True, True)]:
        model = (hf_model(config)[0] if hf else GPT(config)).cuda().train()
        rates[name] = tokens / statistics.median(step_times(model, idx, hf=hf, bf16=bf16, warmup=warmup, steps=steps))
        del model
    model = GPT(config).cuda().train()
    compiled = torch.compile(model)
    started = time.perf_counter()
    step_times(compiled, idx, hf=False, bf16=True, warmup=1, steps=0)
    compile_seconds = time.perf_counter() - started
    rates["gpt2_core bf16 + compile"] = tokens / statistics.median(
        step_times(compiled, idx, hf=False, bf16=True, warmup=warmup, steps=steps))
    flash = flash_only_runs(config, idx)

    for name, rate in rates.items():
        print(f"{name:<26}{rate:>12,.0f} tokens/s   MFU {flops * rate / peak:6.1%}")
    print(f"bf16 matmul peak {peak / 1e12:.0f} TFLOP/s; first compiled step {compile_seconds:.0f} s; "
          f"flash attention only: {'runs' if flash else 'fails'}")
    shape = f"124M, batch {args.batch} x {args.seq}"
    figures = [
        {"metric": f"training tokens/s, {shape}, bf16 autocast: gpt2_core / transformers",
         "value": round(rates["gpt2_core bf16"] / rates["transformers bf16"], 3),
         "reference": f"transformers GPT2LMHeadModel, same batch ({rates['transformers bf16']:,.0f} tokens/s)",
         "goal": ">= 1.0"},
        {"metric": f"training tokens/s, {shape}, fp32 (TF32 matmuls): gpt2_core / transformers",
         "value": round(rates["gpt2_core fp32"] / rates["transformers fp32"], 3),
         "reference": f"transformers GPT2LMHeadModel, same batch ({rates['transformers fp32']:,.0f} tokens/s)",
         "goal": ">= 1.0"},
        {"metric": "bf16 autocast speed-up over fp32 (gpt2_core)",
         "value": round(rates["gpt2_core bf16"] / rates["gpt2_core fp32"], 3),
         "reference": "gpt2_core fp32 with TF32 matmuls", "goal": "> 1.0"},
        {"metric": "torch.compile speed-up under bf16 (gpt2_core)",
         "value": round(rates["gpt2_core bf16 + compile"] / rates["gpt2_core bf16"], 3),
         "reference": f"gpt2_core bf16 eager; compiling took {compile_seconds:.0f} s", "goal": "> 1.0"},
        {"metric": "gpt2_core MFU, bf16 + compile (6N + attention FLOPs)",
         "value": round(flops * rates["gpt2_core bf16 + compile"] / peak, 3),
         "reference": f"measured bf16 matmul peak, {peak / 1e12:.0f} TFLOP/s", "goal": "report"},
        {"metric": "attention runs with only the flash-attention kernel allowed (bf16, causal)",
         "value": flash, "reference": "torch.nn.attention.sdpa_kernel([FLASH_ATTENTION])", "goal": "True"},
    ]
    save_results("gpu_training", figures, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
