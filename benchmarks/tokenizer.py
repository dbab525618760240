"""Tokenizer speed: training our BPE, and encoding with our BPE (GPT-2 merges) against tiktoken.

    python -m benchmarks.tokenizer [--quick]
"""

import argparse
import time

from benchmarks.common import save_results
from gpt2_core import data
from gpt2_core.tokenizer import BPETokenizer, gpt2_bpe_files, gpt2_tokenizer


def best_of(fn, repeats: int) -> float:
    """The fastest of `repeats` runs of `fn()`, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 200 kB slice and one repeat")
    args = parser.parse_args()
    text = data.fetch("tinyshakespeare").read_text(encoding="utf-8")
    if args.quick:
        text = text[:200_000]
    repeats = 1 if args.quick else 3
    n_bytes = len(text.encode("utf-8"))
    print(f"text: Tiny Shakespeare{' (slice)' if args.quick else ''}, {n_bytes:,} bytes")

    train_s = best_of(lambda: BPETokenizer.train(text, vocab_size=1024), repeats)
    print(f"train our BPE to 1,024 tokens: {train_s:.2f} s")

    ours, fast = BPETokenizer.from_gpt2_files(*gpt2_bpe_files()), gpt2_tokenizer()
    cold_s = best_of(lambda: ours.encode(text), 1)  # first call: every distinct word runs BPE
    ours_s = best_of(lambda: ours.encode(text), repeats)  # later calls: words come from the cache
    fast_s = best_of(lambda: fast.encode(text), repeats)
    assert ours.encode(text) == fast.encode(text), "the two GPT-2 tokenizers disagree"
    rows = [("ours, empty word cache", cold_s), ("ours, warm word cache", ours_s),
            ("tiktoken (Rust)", fast_s)]
    for name, seconds in rows:
        print(f"encode, {name:40}: {n_bytes / seconds / 1e6:6.2f} MB/s")
    print(f"tiktoken / ours (warm): {ours_s / fast_s:.1f}x faster; "
          f"tiktoken / ours (cold): {cold_s / fast_s:.1f}x faster")
    save_results("tokenizer", [
        {"metric": "seconds to train our BPE to 1,024 tokens on Tiny Shakespeare", "value": round(train_s, 2),
         "reference": "none (absolute)", "goal": "seconds, not minutes"},
        {"metric": "encoding bytes/s, ours (warm word cache) / tiktoken", "value": round(fast_s / ours_s, 3),
         "reference": "tiktoken gpt2 encoding (Rust)", "goal": "report"},
        {"metric": "encoding bytes/s, ours (empty word cache) / tiktoken", "value": round(fast_s / cold_s, 3),
         "reference": "tiktoken gpt2 encoding (Rust)", "goal": "report"},
    ], args.quick)


if __name__ == "__main__":
    main()
