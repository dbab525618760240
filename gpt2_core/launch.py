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
``train`` runs chapter 4's pretraining job (`gpt2_core.pretrained.pretrain`, the same as
``gpt2-core pretrain``) on a recipe made of the prepared folder's shards (memory-mapped,
`gpt2_core.shards.Shards`), the model named by ``--model`` and the book's `TrainConfig` with the
flags given replaced. ``--out`` is a run directory (`gpt2_core.runs`): metrics, checkpoints (with
the data position), the validation score, the model and its card. Under torchrun every process
joins the process group (NCCL on CUDA, gloo on CPU), reads its own windows of each global batch,
and rank 0 logs, checkpoints and writes the run.
On CUDA, TF32 matmuls are enabled and attention uses PyTorch's flash kernel through
``scaled_dot_product_attention``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, fields

import torch
import torch.distributed as dist

from gpt2_core import data
from gpt2_core import prepare as prepare_module
from gpt2_core.errors import GPT2CoreError
from gpt2_core.model import GPTConfig, flops_per_token
from gpt2_core.pretrained import BOOK_RECIPE, PRETRAIN_KIND, Recipe, pretrain
from gpt2_core.runs import Run
from gpt2_core.shards import Shards
from gpt2_core.train import TrainConfig, rank_and_world


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
    except (GPT2CoreError, OSError) as e:
        raise SystemExit(f"prepare: error: {e}") from None


def recipe(args: argparse.Namespace) -> Recipe:
    """The pretraining recipe of a `train` command line: the folder's shards, the model named by
    --model, and the book's TrainConfig with the flags given replaced."""
    vocab_size = Shards(args.data, "train").vocab_size
    if args.model == "book":
        model = GPTConfig(**{**asdict(BOOK_RECIPE.model), "vocab_size": vocab_size})
    else:
        model = GPTConfig.from_name(args.model, vocab_size=vocab_size,
                                    block_size=max(1024, args.block_size or 0))
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    try:
        return Recipe(dataset=str(args.data), vocab_size=vocab_size, model=model,
                      train=TrainConfig(**{**asdict(BOOK_RECIPE.train), **overrides}))
    except ValueError as e:
        raise SystemExit(f"train: error: {e}") from None


def run_train(args: argparse.Namespace) -> None:
    """`gpt2_core.pretrained.pretrain` on a folder of shards, in every process of torchrun."""
    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = rank_and_world()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
    job = recipe(args)
    if rank == 0:
        Run.create(args.out, PRETRAIN_KIND, job, resume=args.resume)
    if distributed:
        dist.barrier()                               # the run exists before the others open it
    run = Run.open(args.out)
    flops = flops_per_token(job.model, job.train.block_size)

    def log(record: dict) -> None:
        if record["step"] % args.log_interval == 0 or "val_loss" in record:
            tokens_per_s = record["tokens_per_s"] * world
            val = f" val {record['val_loss']:.4f}" if "val_loss" in record else ""
            print(f"step {record['step']:6d} loss {record['loss']:.4f}{val} lr {record['lr']:.2e} "
                  f"{tokens_per_s:,.0f} tok/s MFU {flops * tokens_per_s / args.peak_flops:.1%}",
                  flush=True)

    pretrain(job, run, device=device, on_log=log)
    if rank == 0:
        print(json.dumps(run.evaluations["validation"]))
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
