"""Quality per CPU-minute: the book's pretraining recipe against nanoGPT's CPU recipe, same wall time.

The reference is nanoGPT's published CPU recipe for Tiny Shakespeare (character-level, n_layer=4,
n_head=4, n_embd=128, block 64, batch 12, lr 1e-3 cosine to 1e-4 over 2,000 iterations, 100
warmup steps, beta2 0.99, weight decay 0.1, dropout 0), run here with gpt2_core's model and loop.
Its wall time W becomes the budget of the book's recipe, whose step count is set so that it
finishes in W (its cosine schedule fitted to that count). Both are scored on the whole validation
split in bits per character. Also printed: training tokens/s and MFU against the measured peak.

    python -m benchmarks.pretraining            # full comparison (a few minutes)
    python -m benchmarks.pretraining --quick    # 200 reference steps, for a smoke test
"""

import argparse
import math
import time
from dataclasses import replace

import numpy as np
import torch

from benchmarks.common import matmul_peak, save_results
from gpt2_core.model import GPT, GPTConfig, flops_per_token
from gpt2_core.pretrained import BOOK_RECIPE, prepare_corpus, split_text
from gpt2_core.runtime import configure_threads, seed_everything
from gpt2_core.train import TrainConfig, evaluate_loss, train


def run(name: str, model_config: GPTConfig, cfg: TrainConfig, train_ids, val_ids, val_chars: int,
        peak: float) -> dict:
    seed_everything(cfg.seed)
    model = GPT(model_config)
    start = time.perf_counter()
    log = train(model, train_ids, val_ids, cfg)
    seconds = time.perf_counter() - start
    total, _ = evaluate_loss(model, val_ids, cfg.block_size)
    tokens_per_s = cfg.max_steps * cfg.batch_size * cfg.block_size / seconds
    mfu = flops_per_token(model_config, cfg.block_size) * tokens_per_s / peak
    result = {"name": name, "steps": cfg.max_steps, "seconds": seconds, "tokens_per_s": tokens_per_s,
              "mfu": mfu, "bits_per_char": total / val_chars / math.log(2), "last_loss": log[-1]["loss"]}
    print(f"{name:>22}: {cfg.max_steps:5d} steps in {seconds:6.1f} s, {tokens_per_s:8,.0f} tok/s, "
          f"MFU {mfu:5.1%}, val {result['bits_per_char']:.4f} bits/char", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 reference steps instead of 2,000")
    args = parser.parse_args()
    configure_threads()
    peak = matmul_peak()
    print(f"threads {torch.get_num_threads()}, measured matmul peak {peak / 1e9:.0f} GFLOP/s")

    train_text, val_text = split_text(BOOK_RECIPE)
    chars = sorted(set(train_text + val_text))
    index = {c: i for i, c in enumerate(chars)}
    encode = lambda s: np.array([index[c] for c in s], dtype=np.uint16)  # noqa: E731
    char_train, char_val = encode(train_text), encode(val_text)
    ref_steps = 200 if args.quick else 2000
    ref_model = GPTConfig(vocab_size=len(chars), block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
    ref_cfg = TrainConfig(max_steps=ref_steps, batch_size=12, block_size=64, lr=1e-3, min_lr=1e-4,
                          warmup_steps=100, beta2=0.99, weight_decay=0.1, eval_interval=0, seed=1337)
    reference = run("nanoGPT CPU recipe", ref_model, ref_cfg, char_train, char_val, len(char_val) - 1, peak)

    corpus = prepare_corpus(BOOK_RECIPE)
    probe_cfg = replace(BOOK_RECIPE.train, max_steps=20, eval_interval=0)
    probe = run("(book step-time probe)", BOOK_RECIPE.model, probe_cfg, corpus.train_ids, corpus.val_ids,
                corpus.val_chars, peak)
    steps = max(BOOK_RECIPE.train.warmup_steps + 1, int(reference["seconds"] / (probe["seconds"] / 20)))
    book_cfg = replace(BOOK_RECIPE.train, max_steps=steps, eval_interval=0)
    ours = run("book recipe", BOOK_RECIPE.model, book_cfg, corpus.train_ids, corpus.val_ids,
               corpus.val_chars, peak)
    ratio = ours["bits_per_char"] / reference["bits_per_char"]
    print(f"\nequal wall time ({reference['seconds']:.0f} s vs {ours['seconds']:.0f} s): "
          f"book {ours['bits_per_char']:.4f} / reference {reference['bits_per_char']:.4f} bits/char "
          f"= {ratio:.3f} (goal <= 0.93)")
    figures = [
        {"metric": "val bits/char at equal wall time, book recipe / nanoGPT CPU recipe", "value": round(ratio, 3),
         "reference": f"nanoGPT char-level CPU recipe, {reference['bits_per_char']:.3f} bits/char "
                      f"in {reference['seconds']:.0f} s", "goal": "<= 0.93"},
        {"metric": "book recipe training tokens/s", "value": round(ours["tokens_per_s"]),
         "reference": f"MFU {ours['mfu']:.1%} of the measured {peak / 1e9:.0f} GFLOP/s", "goal": "report"},
    ]
    if not args.quick:
        full = run("book recipe, full", BOOK_RECIPE.model, replace(BOOK_RECIPE.train, eval_interval=0),
                   corpus.train_ids, corpus.val_ids, corpus.val_chars, peak)
        print(f"full book recipe: {full['seconds']:.0f} s (goal <= 300), "
              f"{full['bits_per_char']:.4f} bits/char (goal <= 2.35)")
        figures.append({"metric": "book recipe, full run: seconds / val bits/char",
                        "value": f"{full['seconds']:.0f} s / {full['bits_per_char']:.3f}",
                        "reference": "none (absolute)", "goal": "<= 300 s / <= 2.35"})
    save_results("pretraining", figures, args.quick)

if __name__ == "__main__":
    main()
