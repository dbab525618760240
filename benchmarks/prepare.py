"""Preparing a corpus: prepare's speed against a plain tiktoken loop, its memory, and shard reading.

    python -m benchmarks.prepare [--quick] [--mb 32] [--memory-mb 64] [--num-proc 2]

The corpus is synthetic: the Brown Corpus's 500 documents (registered as ``brown``; non-commercial
use only) repeated, one JSON line each, to the size asked for, in a temporary folder.

1. Speed: `gpt2_core.prepare.prepare` with `--num-proc` processes (reading the JSON lines,
   tokenizing, writing shards and manifest) against the loop one would write by hand over the
   same file: read each line, batch about 1 MiB of text, `encode_ordinary_batch` (tiktoken's
   threads, so it too uses every core), keep nothing. The two alternate, best of two each; the
   ratio of their bytes/s is the figure.
2. Memory: prepare runs in a child process on a corpus of --memory-mb and on one a quarter of
   that, with 1M-token shards; the peak resident memory (VmHWM, Linux) of its main process and
   of its largest worker is read from /proc. Streaming means the two runs peak alike; the bound is the two
   shard buffers (2 bytes a token), at most 2 * num_proc + 1 batches in flight (about 3 bytes a
   character: the text, its pickled copy, its uint32 tokens), one JSON line, and the interpreter
   with numpy and tiktoken's ranks (each worker: its tokenizer and one batch).
3. Reading: tokens/s that `gpt2_core.shards` delivers from the prepared shards, through
   `WindowReader` and through train()'s own batches (`get_batch` on `Shards`), against the tokens/s
   the training loop consumes with the book's model (GPT-2's vocabulary) on this CPU.
4. Cutting: seconds `gpt2_core.corpora.text_pieces` takes on 8, 16 and 32 Mi characters of CJK
   text with no place to cut (read in chunks of 256 Ki characters, about a 1 MiB read), and its
   longest piece: linear time, memory bounded by 4 * piece_chars and a chunk.

A full run saves the figures to benchmarks/results/prepare.json (quick runs are not saved).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gpt2_core.corpora import BROWN_LICENSE, brown_documents, open_source, text_pieces
from gpt2_core.prepare import BATCH_CHARS, prepare
from gpt2_core.shards import Shards, WindowReader
from gpt2_core.tokenizer import gpt2_encoding

# torch is imported only where it is used, so that the memory runs' child process, like
# `gpt2-core prepare`'s workers, holds no more than prepare needs.

MEMORY_SHARD_TOKENS = 1 << 20


def brown_jsonl(path: Path, megabytes: float) -> int:
    """Write the Brown documents, repeated, as JSON lines until `megabytes` MB; the bytes."""
    lines = [(json.dumps({"text": d.text}) + "\n").encode() for d in brown_documents()]
    written = 0
    with open(path, "wb") as f:
        for line in itertools.cycle(lines):
            if written >= megabytes * 1e6:
                return written
            f.write(line)
            written += len(line)
    return written


def plain_loop(path: Path) -> None:
    """What one would write by hand: read, batch about 1 MiB, encode_ordinary_batch."""
    encoding = gpt2_encoding()
    batch, chars = [], 0
    with open(path, "rb") as f:
        for line in f:
            text = json.loads(line)["text"]
            batch.append(text)
            chars += len(text)
            if chars >= BATCH_CHARS:
                encoding.encode_ordinary_batch(batch)
                batch, chars = [], 0
    if batch:
        encoding.encode_ordinary_batch(batch)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def memory_run(corpus: Path, out: Path, num_proc: int) -> dict:
    """prepare in a child process: its seconds and peak RSS (MB) of the main process and worker."""
    result = subprocess.run([sys.executable, "-m", "benchmarks.prepare", "--child", str(corpus),
                             str(out), str(num_proc)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def peak_mb(pid: int | str = "self") -> float:
    """Peak resident memory of a process, MB: VmHWM, which (unlike getrusage's ru_maxrss) does
    not carry over the parent's peak across fork and exec. Linux only."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def child(corpus: Path, out: Path, num_proc: int) -> None:
    """Run prepare here, sampling the workers' peaks; print seconds, tokens and peaks as JSON."""
    workers: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            for tasks in Path("/proc/self/task").iterdir():
                for pid in (tasks / "children").read_text().split():
                    try:
                        workers[int(pid)] = peak_mb(pid)
                    except (OSError, RuntimeError):
                        pass                           # it ended meanwhile
    monitor = threading.Thread(target=sample, daemon=True)
    monitor.start()
    start = time.perf_counter()
    manifest = prepare(open_source(corpus), out, num_proc=num_proc,
                       shard_tokens=MEMORY_SHARD_TOKENS)
    seconds = time.perf_counter() - start
    done.set()
    monitor.join()
    print(json.dumps({"seconds": seconds, "tokens": sum(manifest["tokens"].values()),
                      "main_mb": peak_mb(), "worker_mb": max(workers.values(), default=0.0)}))


def reading_rates(folder: Path, block: int, batch: int, steps: int) -> tuple[float, float]:
    """Tokens/s of WindowReader batches and of train()'s get_batch on Shards."""
    from gpt2_core.train import TrainConfig, batch_starts, get_batch
    tokens = Shards(folder)
    reader = WindowReader(tokens, block, batch, seed=0)
    window_s = timed(lambda: [reader.next_batch() for _ in range(steps)])
    cfg = TrainConfig(block_size=block, batch_size=batch)
    batches_s = timed(lambda: [get_batch(tokens, batch_starts(s, len(tokens), cfg), block)
                               for s in range(steps)])
    return steps * batch * block / window_s, steps * batch * block / batches_s


def training_rate(folder: Path, steps: int) -> float:
    """Tokens/s of train() with the book's model and batch on GPT-2's vocabulary (median step)."""
    from gpt2_core.model import GPT, GPTConfig
    from gpt2_core.pretrained import BOOK_RECIPE
    from gpt2_core.runtime import seed_everything
    from gpt2_core.train import TrainConfig, train
    tokens = Shards(folder)
    config = GPTConfig(**{**asdict(BOOK_RECIPE.model), "vocab_size": tokens.vocab_size})
    cfg = TrainConfig(**{**asdict(BOOK_RECIPE.train), "max_steps": steps, "eval_interval": 0})
    seed_everything(0)
    log = train(GPT(config), tokens, Shards(folder, "val"), cfg)
    return float(np.median([r["tokens_per_s"] for r in log[1:]]))


def cutting_seconds(mebichars: int) -> tuple[float, int]:
    """Seconds `text_pieces` takes on `mebichars` Mi characters with no safe cut; longest piece."""
    chunk = 1 << 18
    chunks = ("\u4e2d" * chunk for _ in range((mebichars << 20) // chunk))
    started, longest = time.perf_counter(), 0
    for piece, _ in text_pieces(chunks):
        longest = max(longest, len(piece))
    return time.perf_counter() - started, longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 MB corpora, one repeat")
    parser.add_argument("--mb", type=float, default=32, help="corpus size for the speed ratio")
    parser.add_argument("--memory-mb", type=float, default=64,
                        help="the larger corpus of the memory runs (the other: a quarter)")
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("CORPUS", "OUT", "NUM_PROC"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(Path(args.child[0]), Path(args.child[1]), int(args.child[2]))
    import torch

    from benchmarks.common import save_results
    if args.quick:
        args.mb = args.memory_mb = 4
    repeats = 1 if args.quick else 2
    print(f"corpus: the Brown Corpus repeated ({BROWN_LICENSE})")
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        tmp = Path(tmp)
        size = brown_jsonl(tmp / "speed.jsonl", args.mb)
        plain_s, ours_s = float("inf"), float("inf")
        for repeat in range(repeats):
            plain_s = min(plain_s, timed(lambda: plain_loop(tmp / "speed.jsonl")))
            ours_s = min(ours_s, timed(lambda: prepare(open_source(tmp / "speed.jsonl"),
                                                       tmp / f"speed-{repeat}",
                                                       num_proc=args.num_proc)))
        print(f"speed on {size / 1e6:.0f} MB: plain loop {size / plain_s / 1e6:.2f} MB/s, "
              f"prepare ({args.num_proc} processes) {size / ours_s / 1e6:.2f} MB/s: "
              f"{plain_s / ours_s:.2f}x")

        runs = {}
        for megabytes in (args.memory_mb / 4, args.memory_mb):
            corpus = tmp / f"memory-{megabytes:g}.jsonl"
            brown_jsonl(corpus, megabytes)
            runs[megabytes] = memory_run(corpus, tmp / f"memory-{megabytes:g}", args.num_proc)
            corpus.unlink()
            run = runs[megabytes]
            print(f"memory, {megabytes:g} MB corpus: {run['tokens']:,} tokens in "
                  f"{run['seconds']:.0f} s, peak RSS main {run['main_mb']:.0f} MB, worker "
                  f"{run['worker_mb']:.0f} MB")
        small, large = runs[args.memory_mb / 4], runs[args.memory_mb]
        bound_mb = (2 * MEMORY_SHARD_TOKENS * 2 + (2 * args.num_proc + 1) * BATCH_CHARS * 3) / 1e6

        read_steps = 20 if args.quick else 200
        window_tps, batch_tps = reading_rates(tmp / "speed-0", 64, 16, read_steps)
        window_gpt2, batch_gpt2 = reading_rates(tmp / "speed-0", 1024, 16, read_steps // 4)
        train_tps = training_rate(tmp / "speed-0", 3 if args.quick else 8)
        print(f"reading, block 64 x 16: WindowReader {window_tps:,.0f} tokens/s, train's "
              f"get_batch on Shards {batch_tps:,.0f} tokens/s; the training loop consumes "
              f"{train_tps:,.0f} tokens/s (book model, {torch.get_num_threads()} threads)")
        print(f"reading, block 1024 x 16: WindowReader {window_gpt2:,.0f} tokens/s, get_batch "
              f"{batch_gpt2:,.0f} tokens/s")
    sizes = (1, 2, 4) if args.quick else (8, 16, 32)
    cutting = {size: cutting_seconds(size) for size in sizes}
    print("cutting CJK text with no cut point: " + ", ".join(
        f"{size} Mi characters {seconds:.2f} s" for size, (seconds, _) in cutting.items())
        + f"; longest piece {max(longest for _, longest in cutting.values()):,} characters")
    save_results("prepare", [
        {"metric": f"prepare bytes/s ({args.num_proc} processes, JSON lines to shards) / plain "
                   "tiktoken encode_ordinary_batch loop over the same file",
         "value": round(plain_s / ours_s, 3),
         "reference": f"plain loop {size / plain_s / 1e6:.2f} MB/s on {size / 1e6:.0f} MB",
         "goal": ">= 0.9"},
        {"metric": f"prepare peak RSS of the main process, {args.memory_mb:g} MB corpus / "
                   f"{args.memory_mb / 4:g} MB corpus",
         "value": round(large["main_mb"] / small["main_mb"], 3),
         "reference": f"{small['main_mb']:.0f} MB and {large['main_mb']:.0f} MB (workers "
                      f"{small['worker_mb']:.0f} and {large['worker_mb']:.0f} MB)",
         "goal": "<= 1.1 (flat)"},
        {"metric": f"prepare peak RSS of the main process on {args.memory_mb:g} MB, MB",
         "value": round(large["main_mb"]),
         "reference": f"buffers and batches in flight {bound_mb:.0f} MB + the interpreter with "
                      f"numpy and tiktoken ({small['worker_mb']:.0f} MB, a worker's peak)",
         "goal": "report"},
        {"metric": "shard reading tokens/s (train's get_batch on Shards, block 64 x 16) / tokens/s "
                   "the CPU training loop consumes (book model, GPT-2 vocabulary)",
         "value": round(batch_tps / train_tps, 1),
         "reference": f"training {train_tps:,.0f} tokens/s; WindowReader {window_tps:,.0f} "
                      f"tokens/s; at block 1024 x 16: {batch_gpt2:,.0f} and {window_gpt2:,.0f}",
         "goal": ">= 10"},
        {"metric": f"text_pieces seconds on {sizes[-1]} Mi characters / on {sizes[0]} Mi (CJK "
                   "text with no cut point)",
         "value": round(cutting[sizes[-1]][0] / cutting[sizes[0]][0], 2),
         "reference": ", ".join(f"{size} Mi: {seconds:.2f} s" for size, (seconds, _)
                                in cutting.items()),
         "goal": f"<= {1.1 * sizes[-1] / sizes[0]:g} (linear)"},
    ], args.quick)


if __name__ == "__main__":
    main()
