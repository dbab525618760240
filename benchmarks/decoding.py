"""Decoding speed: gpt2_core.generate (KV cache) vs transformers' generate, against the memory-bandwidth limit.

    python -m benchmarks.decoding [--quick] [--threads 2] [--prompt 32] [--new 128] [--profile]

Both models are the 124M GPT-2 shape with random weights (speed does not depend on the values),
fp32 on the CPU, batch 1, greedy decoding of `--new` tokens after a `--prompt`-token prompt.
Runs of the two alternate, so a busy shared CPU slows both alike; the ratio of the best times is
the figure to trust. Batch-1 decoding reads every weight once per token, so tokens/s can be at
most (memory read bandwidth) / (weight bytes per token); the bandwidth is measured in the same
run by summing a 1 GiB tensor, far larger than the caches. On a shared machine it moves by half
from minute to minute, so each timed run of ours is compared with the bandwidth measured just
before and just after it (the higher of the two), and the best such fraction is reported.

Our model gets decode_layout() (the opt-in: weights stored transposed, each product split across the
threads; generate() never applies it).
Also reported: the same generation without the KV cache (shorter, it is slow), our decoding
without decode_layout() (an ablation), and the throughput of 8 prompts at once. A full run saves
the headline figures to benchmarks/results/decoding.json (quick runs are not saved).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks.common import hf_model, read_bandwidth, save_results
from gpt2_core.generate import decode_layout, generate
from gpt2_core.model import GPT, GPTConfig


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def weight_bytes_per_token(model: GPT) -> int:
    """Bytes of weights a batch-1 decode step reads: every parameter once; of the two embedding
    tables only the tied LM head (all of wte) counts, the position table gives one row."""
    n = model.num_parameters() - model.transformer.wpe.weight.numel()
    return n * model.transformer.wte.weight.element_size()


def hf_generator(config: GPTConfig):
    """transformers' model of the same shape, in eval mode, and a greedy generation config."""
    import transformers

    model, _ = hf_model(config)
    return model.eval(), transformers.GenerationConfig(do_sample=False, eos_token_id=None, pad_token_id=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 timed run each, shorter no-cache and batch runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's table for our decoding")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = 1 if args.quick else 4

    config = GPTConfig()   # 124M
    ours = decode_layout(GPT(config).eval())   # the opt-in reordering, once, in place
    plain = GPT(config).eval()                 # the ablation: left in (out, in) weight order
    theirs, hf_config = hf_generator(config)
    prompt = torch.randint(0, config.vocab_size, (1, args.prompt))
    N = args.new

    def run_ours():
        out = generate(ours, prompt, N)
        assert out.tokens.shape == (1, N)

    def run_plain():
        generate(plain, prompt, N)

    def run_hf():
        with torch.inference_mode():
            out = theirs.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                  max_new_tokens=N, generation_config=hf_config)
        assert out.shape == (1, args.prompt + N)

    for fn in (run_ours, run_plain, run_hf):   # warm-up
        fn()
    wbytes = weight_bytes_per_token(ours)
    t_ours, t_plain, t_hf, fractions, bws = [], [], [], [], []
    for _ in range(repeats):
        before = read_bandwidth(repeats=2)
        t_ours.append(timed(run_ours))
        after = read_bandwidth(repeats=2)
        bws.append(max(before, after))
        fractions.append(N / t_ours[-1] / (bws[-1] / wbytes))
        t_hf.append(timed(run_hf))
        t_plain.append(timed(run_plain))
    best = max(range(repeats), key=fractions.__getitem__)
    bandwidth, fraction = bws[best], fractions[best]
    limit = bandwidth / wbytes
    tok_ours, tok_hf, tok_plain = N / min(t_ours), N / min(t_hf), N / min(t_plain)

    print(f"124M GPT-2, fp32, {args.threads} threads, batch 1, {args.prompt}-token prompt, {N} new tokens, greedy; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"memory read bandwidth around our runs: {', '.join(f'{b / 1e9:.1f}' for b in bws)} GB/s; "
          f"weights read per token: {wbytes / 1e6:.0f} MB")
    print(f"our runs as fractions of the limit at their time: {', '.join(f'{f:.1%}' for f in fractions)}")
    print(f"best: {fraction:.1%} of {limit:.1f} tokens/s ({bandwidth / 1e9:.1f} GB/s); "
          f"the others below against that limit")
    print(f"gpt2_core (KV cache)         : {tok_ours:6.2f} tokens/s")
    print(f"transformers (its cache)     : {tok_hf:6.2f} tokens/s = {tok_hf / limit:5.1%} of the limit")
    print(f"gpt2_core, (out, in) weights : {tok_plain:6.2f} tokens/s = {tok_plain / limit:5.1%} of the limit")
    print(f"speed-up vs transformers     : {tok_ours / tok_hf:.2f}x   (decode_layout alone: {tok_ours / tok_plain:.2f}x)")

    # Without the cache every step recomputes the whole prefix: measure a shorter run.
    n_short = 16 if args.quick else 64
    t_cache = min(timed(lambda: generate(ours, prompt, n_short)) for _ in range(2))
    t_nocache = min(timed(lambda: generate(ours, prompt, n_short, use_cache=False)) for _ in range(1 if args.quick else 2))
    cache_speedup = t_nocache / t_cache
    print(f"{n_short} new tokens: with cache {n_short / t_cache:.2f} tokens/s, without {n_short / t_nocache:.2f} "
          f"tokens/s: cache speed-up {cache_speedup:.1f}x")

    # Batched: 8 prompts of different lengths, left-padded.
    n_batch = 32 if args.quick else N
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, config.vocab_size, (n,), generator=g).tolist() for n in range(args.prompt - 14, args.prompt + 1, 2)]
    t_batch = min(timed(lambda: generate(ours, prompts, n_batch)) for _ in range(2))
    t_single = min(timed(lambda: generate(ours, prompt, n_batch)) for _ in range(2))
    batch_gain = len(prompts) * t_single / t_batch
    print(f"batch of {len(prompts)} prompts ({len(prompts[0])}-{len(prompts[-1])} tokens), {n_batch} new each: "
          f"{len(prompts) * n_batch / t_batch:.1f} tokens/s vs {n_batch / t_single:.1f} at batch 1 "
          f"({batch_gain:.1f}x throughput)")

    setting = f"124M, fp32, batch 1, {args.prompt}-token prompt, {N} greedy tokens, {args.threads} threads"
    save_results("decoding", [
        {"metric": f"decoding tokens/s ({setting}): gpt2_core / transformers", "value": round(tok_ours / tok_hf, 3),
         "reference": "transformers GPT2LMHeadModel.generate with its KV cache", "goal": ">= 2.0"},
        {"metric": "gpt2_core decoding tokens/s as a fraction of the memory-bandwidth limit",
         "value": round(fraction, 3),
         "reference": f"read bandwidth measured around the run, {bandwidth / 1e9:.1f} GB/s / "
                      f"{wbytes / 1e6:.0f} MB of weights per token",
         "goal": ">= 0.75"},
        {"metric": "decode_layout() speed-up (ablation)", "value": round(tok_ours / tok_plain, 3),
         "reference": "gpt2_core without decode_layout()", "goal": "> 1.0"},
        {"metric": f"KV cache speed-up, {n_short} new tokens", "value": round(cache_speedup, 2),
         "reference": "gpt2_core generate(use_cache=False)", "goal": "> 1.0"},
        {"metric": f"batched throughput, {len(prompts)} left-padded prompts, {n_batch} new tokens each",
         "value": round(batch_gain, 2), "reference": "the same tokens generated at batch 1", "goal": "> 1.0"},
    ], args.quick)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            generate(ours, prompt, 16)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
