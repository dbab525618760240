"""Pretraining entry point for one CPU, one GPU, or many GPUs/nodes through ``torchrun``.

    python -m gpt2_core.launch prepare --dataset tinyshakespeare --out data/shakespeare
    python -m gpt2_core.launch prepare corpus.jsonl --out data/web --num-proc 16
    python -m gpt2_core.launch train --data data/shakespeare --out runs/shakespeare
    torchrun --nproc_per_node=8 -m gpt2_core.launch train --data data/web --model gpt2 \\
        --batch-size 512 --block-size 1024 --dtype bfloat16 --compile

``prepare`` is `gpt2_core.prepare` (the same as ``gpt2-core prepare``): a corpus into token
shards and a manifest. The older form ``--dataset NAME`` names a registered data set; for one that
is a single text (tinyshakespeare) it cuts the text into documents at blank lines unless
``--separator`` says otherwise, since the train/validation split is by document.
``train`` memory-maps a prepared folder's shards (`gpt2_core.shards.Shards`; a folder with the
older ``train.bin`` / ``val.bin`` still works) and runs `gpt2_core.train.train`: under
torchrun every process joins the process group (NCCL on CUDA, gloo on CPU), seeds its own
dropout generator, computes its slice of each global batch, and rank 0 logs and checkpoints.
On CUDA, TF32 matmuls are enabled and attention uses PyTorch's flash kernel through
``scaled_dot_product_attention``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from gpt2_core import data
from gpt2_core import prepare as prepare_module
from gpt2_core.files import atomic_write_json
from gpt2_core.model import GPT, GPTConfig, flops_per_token
from gpt2_core.pretrained import BOOK_RECIPE
from gpt2_core.runtime import seed_everything
from gpt2_core.shards import MANIFEST, Shards
from gpt2_core.tokenizer import BPETokenizer, gpt2_tokenizer
from gpt2_core.train import TrainConfig, train


def prepare(args: argparse.Namespace) -> None:
    """`gpt2_core.prepare.run`, with the older ``--dataset NAME`` mapped onto SOURCE."""
    if args.source is None:
        args.source = args.dataset
        one_text = args.source in data.REGISTRY and data.REGISTRY[args.source].filename.endswith(
            ".txt")
        if one_text and args.separator is None:
            args.separator = r"\n\n"
    try:
        prepare_module.run(args)
    except (data.DataError, ValueError, OSError) as e:
        raise SystemExit(f"prepare: error: {e}") from None


def load_tokens(folder: Path) -> tuple[Shards | np.ndarray, Shards | np.ndarray, int]:
    """Train and validation tokens of a prepared folder, and the vocabulary size."""
    if (folder / MANIFEST).exists():
        train_ids, val_ids = Shards(folder, "train"), Shards(folder, "val")
        return train_ids, val_ids, train_ids.vocab_size
    train_ids = np.memmap(folder / "train.bin", dtype=np.uint16, mode="r")    # the older layout
    val_ids = np.memmap(folder / "val.bin", dtype=np.uint16, mode="r")
    tokenizer_file = folder / "tokenizer.json"
    vocab_size = (BPETokenizer.load(tokenizer_file).vocab_size if tokenizer_file.exists()
                  else gpt2_tokenizer().vocab_size)
    return train_ids, val_ids, vocab_size


def _model_config(args: argparse.Namespace, vocab_size: int) -> GPTConfig:
    if args.model == "book":
        return GPTConfig(**{**asdict(BOOK_RECIPE.model), "vocab_size": vocab_size})
    return GPTConfig.from_name(args.model, vocab_size=vocab_size, block_size=max(1024, args.block_size))


def run_train(args: argparse.Namespace) -> None:
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
    train_ids, val_ids, vocab_size = load_tokens(Path(args.data))
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    cfg = TrainConfig(**{**asdict(BOOK_RECIPE.train), **overrides})
    seed_everything(cfg.seed + rank)                   # weights are broadcast from rank 0 by DDP
    model = GPT(_model_config(args, vocab_size)).to(device)

    def log(record: dict) -> None:
        if record["step"] % args.log_interval == 0 or "val_loss" in record:
            mfu = flops_per_token(model.config, cfg.block_size) * record["tokens_per_s"] * world / args.peak_flops
            val = f" val {record['val_loss']:.4f}" if "val_loss" in record else ""
            print(f"step {record['step']:6d} loss {record['loss']:.4f}{val} lr {record['lr']:.2e} "
                  f"{record['tokens_per_s'] * world:,.0f} tok/s MFU {mfu:.1%}", flush=True)

    world = dist.get_world_size() if distributed else 1
    started = time.perf_counter()
    history = train(model, train_ids, val_ids, cfg, out_dir=args.out, resume=args.resume, on_log=log)
    if rank == 0:
        seconds = time.perf_counter() - started
        Path(args.out).mkdir(parents=True, exist_ok=True)
        summary = {"steps": len(history), "seconds": seconds, "final": history[-1] if history else None}
        atomic_write_json(Path(args.out) / "summary.json", summary)
        print(json.dumps(summary))
    if distributed:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpt2_core.launch", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help=prepare_module.HELP)
    p.add_argument("source", nargs="?", help=prepare_module.SOURCE_HELP)
    p.add_argument("--dataset", default=BOOK_RECIPE.dataset,
                   help="without SOURCE: a registered data set (default: %(default)s)")
    prepare_module.add_options(p)
    t = commands.add_parser("train", help="pretrain (under torchrun for several processes)")
    t.add_argument("--data", required=True, help="a folder written by prepare")
    t.add_argument("--out", required=True, help="run folder for checkpoints")
    t.add_argument("--model", default="book", help="'book' or an OpenAI size: gpt2, gpt2-medium, ...")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    t.add_argument("--log-interval", type=int, default=50)
    t.add_argument("--peak-flops", type=float, default=100e9, help="for MFU: the device's peak FLOP/s")
    for f in fields(TrainConfig):                      # every TrainConfig field is a flag
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            t.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            t.add_argument(flag, type=f.type, default=None)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args)
    else:
        run_train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
