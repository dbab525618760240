"""Training-step speed of gpt2_core's GPT vs transformers' GPT2LMHeadModel (124M, fp32, CPU).

    python -m benchmarks.model_speed [--quick] [--threads 2] [--batch 4] [--seq 256]

Both models get the same random token batch; one step is forward, cross-entropy loss and
backward. Steps of the two models alternate, so a busy shared CPU slows both alike; the ratio
of median step times is the figure to trust. MFU divides the model FLOPs per second by the
FLOP/s of a square fp32 matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.common import hf_model, matmul_peak, save_results
from gpt2_core.model import GPT, GPTConfig, flops_per_token


def train_step(model, idx: torch.Tensor, hf: bool) -> float:
    start = time.perf_counter()
    logits = model(idx).logits if hf else model(idx)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 warmup and 3 timed steps per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    warmup, steps = (1, 3) if args.quick else (2, 8)

    config = GPTConfig()  # 124M, dropout 0
    ours = GPT(config).train()
    theirs, attn_impl = hf_model(config)
    theirs.train()
    idx = torch.randint(0, config.vocab_size, (args.batch, args.seq))
    tokens = idx.numel()

    peak = matmul_peak()
    for _ in range(warmup):
        train_step(ours, idx, hf=False)
        train_step(theirs, idx, hf=True)
    times_ours, times_hf = [], []
    for _ in range(steps):   # alternate, so both see the same machine load
        times_ours.append(train_step(ours, idx, hf=False))
        times_hf.append(train_step(theirs, idx, hf=True))
    t_ours, t_hf = statistics.median(times_ours), statistics.median(times_hf)
    peak = max(peak, matmul_peak())   # before and after the steps: the CPU is shared

    n_nonemb = ours.num_parameters(non_embedding=True)
    attention = 12 * config.n_layer * args.seq * config.n_embd        # training FLOPs/token, full T x T
    spec_flops = 6 * n_nonemb + attention                             # 6N + attention (no LM head)
    full_flops = flops_per_token(config, args.seq)                    # + LM head matmul
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch} x {args.seq}, "
          f"{warmup} warmup + {steps} timed steps each, transformers attention: {attn_impl}")
    print(f"matmul peak (2048^2 fp32, best of 20): {peak / 1e9:.1f} GFLOP/s")
    for name, t in (("gpt2_core", t_ours), ("transformers", t_hf)):
        tps = tokens / t
        print(f"{name:13} median step {t:.3f} s  {tps:8.1f} tokens/s  "
              f"MFU (6N+attn) {spec_flops * tps / peak:6.1%}  MFU (incl. LM head) {full_flops * tps / peak:6.1%}")
    ratio = t_hf / t_ours
    print(f"speed ratio gpt2_core / transformers: {ratio:.3f} (goal >= 1.0)")
    save_results("model_speed", [
        {"metric": f"training tokens/s at 124M, fp32, batch {args.batch} x {args.seq}, "
                   f"{args.threads} threads: gpt2_core / transformers", "value": round(ratio, 3),
         "reference": f"transformers GPT2LMHeadModel ({attn_impl} attention)", "goal": ">= 1.0"},
        {"metric": "gpt2_core MFU (6N + attention FLOPs)", "value": round(spec_flops * tokens / t_ours / peak, 3),
         "reference": f"measured fp32 matmul peak, {peak / 1e9:.0f} GFLOP/s", "goal": "report"},
    ], args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
