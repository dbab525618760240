"""Decoding speed: gpt2_core.generate (KV cache) vs transformers' generate, against the memory-bandwidth limit, and int8 weights.

    python -m benchmarks.decoding [--quick] [--threads 2] [--prompt 32] [--new 128] [--profile]

The 124M GPT-2 shape with random weights (speed does not depend on the values), on the CPU, batch 1,
greedy decoding of `--new` tokens after a `--prompt`-token prompt. Timed, in alternation so that a
busy shared CPU slows all alike: our `generate` as it runs by default (fp32, the weight layout that
`tune_layout` measured fastest on this machine), the same with the weights as stored
(`tune_layout=False`), transformers' `generate`, and our `generate` on `quantize_model`'s int8 copy.

Batch-1 decoding reads every weight once per token, so tokens/s can be at most
(memory read bandwidth) / (weight bytes per token): 495 MB in fp32, about a quarter of it in int8.
The bound holds for the decoding steps, not for the prompt, which is one compute-bound forward pass
over all its tokens; so the bandwidth fraction times the steps alone: each run also generates 1 token
(the prompt's pass), and the steps' rate is (new - 1) / (time of `new` tokens - time of 1 token).
Tokens/s against transformers are end to end, prompt included, for both. The bandwidth is measured by
summing a 1 GiB tensor just before and just after each timed run (the higher of the two is that
run's limit); each figure is the best over the repeats. The
int8 quality cost is bits per character on held-out text (the last 10% of Tiny Shakespeare): the
book's model (trained first if not cached), and the random-weight 124M model with GPT-2's tokenizer.

One run measures three instruction sets, each in its own process: the CPU's own, then
MKL_ENABLE_INSTRUCTIONS=AVX2, then MKL_ENABLE_INSTRUCTIONS=SSE4_2 ATEN_CPU_CAPABILITY=default.
Under ATEN_CPU_CAPABILITY=default the bandwidth sum runs ATen's scalar kernel and reads slower than
the memory can deliver, so that run's fractions are too high; its ratios still hold.
A full run saves the figures to benchmarks/results/decoding.json (quick runs are not saved).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from benchmarks.common import hf_model, read_bandwidth, save_results
from gpt2_core.evaluate import score_text
from gpt2_core.generate import generate, quantize_model
from gpt2_core.layout import tune_layout
from gpt2_core.model import GPT, GPTConfig

INSTRUCTION_SETS = {
    "native": {},
    "MKL AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "MKL SSE4.2, ATen default": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default"},
}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes a batch-1 decode step reads: every parameter and buffer once, except the two embedding
    tables, of which it reads one row each (the fp32 model's tied LM head reads all of wte)."""
    wte, wpe = model.transformer.wte.weight, model.transformer.wpe.weight
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}
    total = sum(t.nbytes for t in tensors.values())
    head_is_wte = getattr(model.lm_head, "weight", None) is wte
    rows = wpe.nbytes // wpe.shape[0] + (0 if head_is_wte else wte.nbytes // wte.shape[0])
    return total - wpe.nbytes - (0 if head_is_wte else wte.nbytes) + rows


def instruction_sets() -> str:
    """What the kernels may use: ATen's CPU capability, and MKL's limit if one is set."""
    aten = torch.backends.cpu.get_cpu_capability()
    mkl = os.environ.get("MKL_ENABLE_INSTRUCTIONS")
    return f"ATen {aten}" + (f", MKL_ENABLE_INSTRUCTIONS={mkl}" if mkl else ", MKL unrestricted")


def quality(model: GPT, int8: torch.nn.Module, tokenizer, text: str) -> tuple[float, float]:
    """Bits per character of `text` under the fp32 model and its int8 copy."""
    return tuple(score_text(m, tokenizer, text, batch_size=8).bits_per_char for m in (model, int8))


def measure(args: argparse.Namespace) -> dict:
    """Every figure of one instruction set, in this process."""
    from gpt2_core.pretrained import BOOK_RECIPE, load_base_model, split_text
    from gpt2_core.tokenizer import gpt2_tokenizer
    import transformers

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = 1 if args.quick else 3
    config = GPTConfig()   # 124M
    ours = GPT(config).eval()
    start = time.perf_counter()
    plan = tune_layout(ours)
    tune_seconds = time.perf_counter() - start
    int8 = quantize_model(ours)
    theirs, _ = hf_model(config)
    theirs.eval()
    hf_config = transformers.GenerationConfig(do_sample=False, eos_token_id=None, pad_token_id=0,
                                              max_new_tokens=args.new)
    prompt = torch.randint(0, config.vocab_size, (1, args.prompt))
    N = args.new

    def run_hf(n: int) -> None:
        with torch.inference_mode():
            out = theirs.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                  generation_config=hf_config, max_new_tokens=n)
        assert out.shape == (1, args.prompt + n)

    runs = {"default": lambda n: generate(ours, prompt, n),
            "as stored": lambda n: generate(ours, prompt, n, tune_layout=False),
            "transformers": run_hf,
            "int8": lambda n: generate(int8, prompt, n)}
    wbytes = {"default": bytes_per_token(ours), "as stored": bytes_per_token(ours),
              "transformers": bytes_per_token(ours), "int8": bytes_per_token(int8)}
    for fn in runs.values():    # warm-up
        fn(N)
    seconds = {name: [] for name in runs}
    fractions = {name: [] for name in runs}
    step_rates = {name: [] for name in runs}
    bandwidths = []
    for _ in range(repeats):
        for name, fn in runs.items():
            before = read_bandwidth(repeats=2)
            first = timed(lambda: fn(1))            # the prompt's forward pass and 1 token
            seconds[name].append(timed(lambda: fn(N)))
            bw = max(before, read_bandwidth(repeats=2))
            bandwidths.append(bw)
            step_rates[name].append((N - 1) / max(seconds[name][-1] - first, 1e-9))
            fractions[name].append(step_rates[name][-1] / (bw / wbytes[name]))
    tokens = {name: N / min(s) for name, s in seconds.items()}
    steps = {name: max(r) for name, r in step_rates.items()}
    assert generate(int8, prompt, 8).tokens.shape == (1, 8)

    # Quality of int8 weights: bits per character of held-out text.
    val_text = split_text(BOOK_RECIPE)[1]
    book = load_base_model()
    book_bpc = quality(book.model.eval(), quantize_model(book.model), book.tokenizer, val_text)
    sample = val_text[: 2000 if args.quick else 8000]
    big_bpc = quality(ours, int8, gpt2_tokenizer(), sample)
    return {"instruction_sets": instruction_sets(), "plan": plan, "tune_seconds": tune_seconds,
            "tokens_per_s": tokens, "steps_per_s": steps, "fractions": {k: max(v) for k, v in fractions.items()},
            "all_fractions": fractions, "bandwidths": bandwidths, "bytes_per_token": wbytes,
            "book_bpc": book_bpc, "gpt2_bpc": big_bpc, "sample_chars": len(sample),
            "book_chars": len(val_text), "load": os.getloadavg()[0]}


def report(name: str, r: dict, args: argparse.Namespace) -> list[dict]:
    """Print one instruction set's figures; return them as saved figures."""
    t, f = r["tokens_per_s"], r["fractions"]
    gb = ", ".join(f"{b / 1e9:.1f}" for b in r["bandwidths"])
    print(f"\n== {name}: {r['instruction_sets']}; load average {r['load']:.1f}")
    print(f"layout chosen in {r['tune_seconds']:.1f} s: " + "; ".join(f"{s}: {k}" for s, k in r["plan"].items()))
    print(f"read bandwidth around the runs: {gb} GB/s; weights per token: fp32 "
          f"{r['bytes_per_token']['default'] / 1e6:.0f} MB, int8 {r['bytes_per_token']['int8'] / 1e6:.0f} MB")
    for run in ("default", "as stored", "transformers", "int8"):
        print(f"{run:13}: {t[run]:6.1f} tokens/s end to end; decoding steps {r['steps_per_s'][run]:6.1f}/s, "
              f"best {f[run]:5.1%} of the bandwidth limit at its time "
              f"({', '.join(f'{x:.0%}' for x in r['all_fractions'][run])})")
    print(f"default / transformers: {t['default'] / t['transformers']:.2f}x; default / as stored: "
          f"{t['default'] / t['as stored']:.2f}x; int8 / default: {t['int8'] / t['default']:.2f}x")
    book, big = r["book_bpc"], r["gpt2_bpc"]
    print(f"int8 quality: book model {book[0]:.4f} -> {book[1]:.4f} bits/char ({book[1] / book[0] - 1:+.2%}); "
          f"random 124M {big[0]:.4f} -> {big[1]:.4f} ({big[1] / big[0] - 1:+.3%})")
    setting = f"124M, batch 1, {args.prompt}-token prompt, {args.new} greedy tokens, {args.threads} thread{'s' if args.threads != 1 else ''}, {name}"
    bw = f"read bandwidth measured around each run ({min(r['bandwidths']) / 1e9:.1f} to {max(r['bandwidths']) / 1e9:.1f} GB/s)"
    return [
        {"metric": f"decoding tokens/s, default generate ({setting}): gpt2_core / transformers",
         "value": round(t["default"] / t["transformers"], 3),
         "reference": f"transformers GPT2LMHeadModel.generate with its KV cache ({t['transformers']:.1f} tokens/s)",
         "goal": ">= 1.5"},
        {"metric": f"default generate, fp32, decoding steps as a fraction of the bandwidth limit ({name}; "
                   f"{r['steps_per_s']['default']:.1f} steps/s, {t['default']:.1f} tokens/s end to end)",
         "value": round(f["default"], 3),
         "reference": f"{bw} / {r['bytes_per_token']['default'] / 1e6:.0f} MB of weights per token",
         "goal": ">= 0.75"},
        {"metric": f"layout tune_layout chose ({name}), speed-up over the weights as stored",
         "value": round(t["default"] / t["as stored"], 3),
         "reference": "generate(tune_layout=False); chosen: "
                      + "; ".join(f"{s}: {k}" for s, k in r["plan"].items()),
         "goal": ">= 1.0"},
        {"metric": f"int8 weights (quantize_model) tokens/s / fp32 default ({name}; {t['int8']:.1f} tokens/s, "
                   f"steps at {f['int8']:.1%} of its limit)",
         "value": round(t["int8"] / t["default"], 3),
         "reference": f"the fp32 default in the same run; {r['bytes_per_token']['int8'] / 1e6:.0f} MB per token in int8",
         "goal": ">= 2.5"},
        {"metric": f"int8 quality cost, book model, bits/char of held-out text ({name})",
         "value": round(book[1] / book[0] - 1, 5),
         "reference": f"fp32: {book[0]:.4f} bits/char over {r['book_chars']:,} characters",
         "goal": "within +-0.01"},
        {"metric": f"int8 quality cost, random-weight 124M, bits/char ({name})",
         "value": round(big[1] / big[0] - 1, 5),
         "reference": f"fp32: {big[0]:.4f} bits/char over {r['sample_chars']:,} characters, GPT-2 tokenizer",
         "goal": "within +-0.01"},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 timed run each and 32 new tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's table for our decoding")
    parser.add_argument("--only", choices=INSTRUCTION_SETS, help="measure one instruction set, in this "
                                                                 "process, and print its figures as JSON")
    args = parser.parse_args(argv)
    args.new = args.new or (32 if args.quick else 128)
    if args.only:
        print("RESULT " + json.dumps(measure(args)))
        return 0

    figures = []
    for name, env in INSTRUCTION_SETS.items():
        command = [sys.executable, "-m", "benchmarks.decoding", "--only", name, "--threads", str(args.threads),
                   "--prompt", str(args.prompt), "--new", str(args.new)] + (["--quick"] if args.quick else [])
        out = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
        figures += report(name, json.loads(line[len("RESULT "):]), args)
    save_results("decoding", figures, args.quick)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        torch.set_num_threads(args.threads)
        model = GPT(GPTConfig()).eval()
        generate(model, [0], 4)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            generate(model, [0], 16)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
